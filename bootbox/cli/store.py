"""``bootbox store migrate --to postgresql|tinydb``: move the appliance's documents between backends.

Run it with bootbox stopped (the state-dir lock refuses it otherwise), then switch ``[store]
backend`` (and ``dsn``) in the config and start bootbox again. What moves, what stays a file and
how it is verified: :mod:`bootbox.store.migrate` and docs/postgresql.md.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, state
from bootbox.config import mask_dsn
from bootbox.store.migrate import BACKENDS, migrate


def migrate_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The backend to move the documents into: postgresql or tinydb.")],
    dsn: Annotated[Optional[str], typer.Option("--dsn", envvar="BOOTBOX_STORE_DSN", help="The PostgreSQL side (default: the config's store.dsn). May hold a password; it is never printed.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite the documents the target already holds (refused otherwise).")] = False,
    json: JsonOption = False,
) -> None:
    """Copy every table from the other backend into TO, in one write, and verify counts and content hash.

    bootbox must be stopped. The host log and the boot journal stay files in the state directory.
    """
    if to not in BACKENDS:
        raise typer.BadParameter(f"{to!r}: use one of {', '.join(BACKENDS)}", param_hint="--to")
    settings = state(ctx).settings()
    report = migrate(to=to, state_dir=settings.state_path, dsn=dsn if dsn is not None else settings.store.dsn,
                     replace=replace, connect_timeout=settings.store.connect_timeout)
    if json:
        print_json(report.to_dict())
        return
    typer.echo(f"moved {report.documents} documents from {report.source} to {report.target}")
    for table, count in report.tables.items():
        typer.echo(f"  {table}: {count}")
    typer.echo(f"verified: same tables, counts and content (sha256 {report.sha256})")
    if report.replaced:
        typer.echo(f"replaced {report.replaced} documents the target held before")
    typer.echo("these stay files in the state directory: " + ", ".join(report.files_that_stay))
    if to == "postgresql":
        typer.echo(f'now set [store] backend = "postgresql" and dsn = "{mask_dsn(dsn or settings.store.dsn)}" '
                   "(with the real password, or use ~/.pgpass), then start bootbox")
    else:
        typer.echo('now set [store] backend = "tinydb" (or remove it), then start bootbox')


def build() -> typer.Typer:
    """A fresh ``store`` sub-app."""
    app = typer.Typer(help="The document store: move it between backends.", no_args_is_help=True)
    app.command("migrate")(migrate_cmd)
    return app
