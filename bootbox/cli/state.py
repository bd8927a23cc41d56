"""``bootbox state backup FILE`` / ``bootbox state restore FILE``: the appliance's state in one file.

A backup is taken while bootbox serves, by reading the state directory (run it as root on the
appliance); restore needs bootbox stopped. How the snapshot stays consistent, and what is in it:
:mod:`bootbox.store.backup` and docs/durability.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, state
from bootbox.config import DEFAULT_CONFIG_PATH, Settings
from bootbox.store.backup import backup, restore
from bootbox.store.secretbox import KEY_FILE


def _key_path(settings: Settings) -> Path:
    return Path(settings.secrets_key_file or settings.state_path / KEY_FILE)


def _pg_dsn(settings: Settings) -> str:
    """The PostgreSQL store's DSN (pg_dump/pg_restore then carry the store), or "" for TinyDB."""
    return settings.store.dsn if settings.store.backend == "postgresql" else ""


def _config_path(ctx: typer.Context) -> Path | None:
    path = state(ctx).config or os.environ.get("BOOTBOX_CONFIG") or DEFAULT_CONFIG_PATH
    return Path(path) if Path(path).exists() else None


def backup_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The backup file to write (a .tar.gz, mode 0600).")],
    no_images: Annotated[bool, typer.Option("--no-images", help="Leave image payloads out (restore lists what to re-import).")] = False,
    json: JsonOption = False,
) -> None:
    """Back up config, store, host log, leases, keys and images, while bootbox serves.

    The file holds the secrets key: keep it as you keep the secrets it protects.
    """
    settings = state(ctx).settings()
    report = backup(file, state_dir=settings.state_path, config_path=_config_path(ctx), key_path=_key_path(settings),
                    images=not no_images, pg_dsn=_pg_dsn(settings))
    if json:
        print_json(report.to_dict())
        return
    typer.echo(f"wrote {file}: {report.files} files, {report.bytes} bytes (mode 0600)")
    typer.echo("it holds the secrets key and the API token: store it as you store those secrets")
    if report.images_to_reimport:
        typer.echo("image payloads left out; after a restore, import again: " + ", ".join(report.images_to_reimport))
    if settings.store.backend == "postgresql":
        typer.echo("the store is in PostgreSQL: the file holds a pg_dump of its schema (docs/postgresql.md)")


def restore_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file written by `bootbox state backup`.")],
    config_to: Annotated[Optional[Path], typer.Option("--config-to", help="Also write the backup's config here (the old one is kept as .before-restore).")] = None,
    json: JsonOption = False,
) -> None:
    """Put a backup back into the state directory (and a PostgreSQL store's dump into its
    database). bootbox must be stopped, and with PostgreSQL every appliance sharing the database."""
    settings = state(ctx).settings()
    report = restore(file, state_dir=settings.state_path, key_path=_key_path(settings), config_to=config_to,
                     pg_dsn=_pg_dsn(settings))
    if json:
        print_json(report.to_dict())
        return
    typer.echo(f"restored {report.files} files into {settings.state_path}")
    if report.kept_previous:
        typer.echo(f"what the state directory held before is kept in {report.kept_previous}")
    for note in report.notes:
        typer.echo(note)
    typer.echo("start bootbox again (systemctl start bootbox)")


def build() -> typer.Typer:
    """A fresh ``state`` sub-app."""
    app = typer.Typer(help="The appliance's state: back it up, restore it.", no_args_is_help=True)
    app.command("backup")(backup_cmd)
    app.command("restore")(restore_cmd)
    return app
