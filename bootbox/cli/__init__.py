"""The ``bootbox`` command: one typer sub-app per noun, verbs under it.

Commands are thin: they call the running appliance's API (or, for ``serve``, start it). This is
the only place a :class:`bootbox.BootboxError` becomes a message and exit status 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import pluggy
import typer
from typer.core import TyperGroup

from bootbox import __version__
from bootbox.cli import answers, config_cmd, doctor, hostprofiles, hosts, lab, lint, plugins, profiles, rules, serve
from bootbox.cli import state as cli_state
from bootbox.cli import webhooks as cli_webhooks
from bootbox.cli import store as cli_store
from bootbox.cli import users as cli_users
from bootbox.cli.common import CliState, JsonOption, print_json, state
from bootbox.errors import BootboxError, PluginError
from bootbox.hooks import calls
from bootbox.hooks.manager import make_plugin_manager


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bootbox {__version__}")
        raise typer.Exit()


class BootboxGroup(TyperGroup):
    """The root command group: the one place a BootboxError becomes one line and exit status 1."""

    def invoke(self, ctx: Any) -> object:
        try:
            return super().invoke(ctx)
        except BootboxError as exc:
            typer.echo(f"bootbox: {exc}", err=True)
            raise typer.Exit(1) from None


def build_cli(pm: pluggy.PluginManager | None = None) -> typer.Typer:
    """A fresh CLI application; plugins add commands to it (tests pass their own ``pm``)."""
    app = typer.Typer(
        cls=BootboxGroup,
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
        ca: Annotated[Optional[Path], typer.Option("--ca", envvar="BOOTBOX_CA", help="PEM CA (or certificate) to verify an https:// --url with (default: the system's trust store).")] = None,
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    ) -> None:
        ctx.obj = CliState(config=config, url=url, state_dir=state_dir, ca=ca)

    app.command("serve")(serve.serve)
    app.command("doctor")(doctor.doctor)
    app.command("lint")(lint.lint)

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
        if data.get("refused"):  # requests for a host from another machine, new-host limits (docs/security.md)
            typer.echo("  refused: " + ", ".join(f"{k}={v}" for k, v in data["refused"].items()))

    nouns = {
        "host": hosts.build(),
        "profile": profiles.build(),
        "rule": rules.build(),
        "plugin": plugins.build(),
        "config": config_cmd.build(),
        "lab": lab.build(),
    }
    nouns["hostprofile"] = hostprofiles.build()
    nouns["state"] = cli_state.build()
    nouns["store"] = cli_store.build()
    nouns["answer"] = answers.build()
    nouns["webhook"] = cli_webhooks.build()
    nouns["user"] = cli_users.build()
    hostprofiles.add_host_verbs(nouns["host"])
    nouns["plugin"].command("new")(hostprofiles.plugin_new)
    _add_plugin_commands(app, nouns, pm)
    for name, sub_app in nouns.items():
        app.add_typer(sub_app, name=name)
    return app


def _add_plugin_commands(app: typer.Typer, nouns: dict[str, typer.Typer], pm: pluggy.PluginManager | None) -> None:
    """Let plugins add nouns and verbs (``bootbox_register_commands``)."""
    if pm is None:
        try:
            blocked = [n for n in os.environ.get("BOOTBOX_DISABLE_PLUGINS", "").split(",") if n.strip()]
            pm = make_plugin_manager(blocked=blocked)
        except BootboxError as exc:
            typer.echo(f"bootbox: warning: plugins not loaded: {exc}", err=True)
            return

    def register(command: object, *, name: str, noun: str | None = None) -> None:
        if noun is None:
            if name in nouns or not isinstance(command, typer.Typer):
                raise PluginError(f"a plugin's command noun {name!r} clashes or is not a typer app")
            nouns[name] = command
        elif noun in nouns:
            nouns[noun].command(name)(command)  # type: ignore[arg-type]
        else:
            raise PluginError(f"a plugin adds {name!r} to an unknown noun {noun!r}")

    calls.register_commands(pm, register)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bootbox`` console script."""
    try:
        app = build_cli()
    except BootboxError as exc:
        typer.echo(f"bootbox: {exc}", err=True)
        sys.exit(1)
    app(args=argv, prog_name="bootbox")
