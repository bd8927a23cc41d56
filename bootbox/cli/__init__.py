"""The ``bootbox`` command: one typer sub-app per noun, verbs under it.

Commands are thin: they call the running appliance's API (or, for ``serve``, start it). This is
the only place a :class:`bootbox.BootboxError` becomes a message and exit status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bootbox import __version__
from bootbox.cli import config_cmd, hosts, plugins, profiles, serve
from bootbox.cli.common import CliState, JsonOption, print_json, state
from bootbox.errors import BootboxError


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bootbox {__version__}")
        raise typer.Exit()


def build_cli() -> typer.Typer:
    """A fresh CLI application (tests build their own)."""
    app = typer.Typer(
        help="bootbox: stateless network boot (proxyDHCP, TFTP, HTTP, rules) for labs and edge sites.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def main_options(
        ctx: typer.Context,
        config: Annotated[Optional[Path], typer.Option("--config", "-c", envvar="BOOTBOX_CONFIG", help="Config file (default /etc/bootbox/bootbox.toml if present).")] = None,
        url: Annotated[Optional[str], typer.Option("--url", envvar="BOOTBOX_URL", help="API of the running appliance (default http://127.0.0.1:<http.port>).")] = None,
        state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="State directory (default /var/lib/bootbox).")] = None,
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    ) -> None:
        ctx.obj = CliState(config=config, url=url, state_dir=state_dir)

    app.command("serve")(serve.serve)

    @app.command("status")
    def status(ctx: typer.Context, json: JsonOption = False) -> None:
        """Is the appliance running? Version, counts and per-server counters."""
        data = state(ctx).client().get("/status")
        if json:
            print_json(data)
            return
        typer.echo(f"bootbox {data['version']}: {data['hosts']} hosts, {data['profiles']} profiles")
        for name, stats in data["servers"].items():
            typer.echo(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))

    app.add_typer(hosts.app, name="host")
    app.add_typer(profiles.app, name="profile")
    app.add_typer(plugins.app, name="plugin")
    app.add_typer(config_cmd.app, name="config")
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bootbox`` console script."""
    app = build_cli()
    try:
        app(args=argv, prog_name="bootbox", standalone_mode=False)
    except BootboxError as exc:
        typer.echo(f"bootbox: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
