"""``bootbox plugin …``: which plugins are installed and which hooks each implements."""

from __future__ import annotations

import typer

from bootbox.cli.common import JsonOption, print_json, print_table, state
from bootbox.hooks.manager import make_plugin_manager, plugin_infos



def list_plugins(ctx: typer.Context, json: JsonOption = False) -> None:
    """List plugins (built-in and from the `bootbox` entry-point group), versions and hooks."""
    settings = state(ctx).settings()
    infos = plugin_infos(make_plugin_manager(blocked=settings.disable_plugins))
    if json:
        print_json([info.to_dict() for info in infos])
        return
    print_table(["name", "version", "source", "hooks"], [[i.name, i.version, i.source, ", ".join(i.hooks)] for i in infos])


def build() -> typer.Typer:
    """A fresh sub-app for this noun (plugins may add verbs to it)."""
    app = typer.Typer(help="Installed plugins.", no_args_is_help=True)
    app.command("list")(list_plugins)
    return app
