"""``bootbox config …``: the effective configuration after file, environment and defaults."""

from __future__ import annotations

import typer

from bootbox.cli.common import JsonOption, print_json, state



def _flatten(prefix: str, value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        items: list[tuple[str, object]] = []
        for key, inner in value.items():
            items += _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return items
    return [(prefix, value)]


def show_config(ctx: typer.Context, json: JsonOption = False) -> None:
    """Print every setting with its effective value (validates the config on the way)."""
    data = state(ctx).settings().to_dict()
    if json:
        print_json(data)
        return
    for key, value in _flatten("", data):
        typer.echo(f"{key} = {value!r}")


def build() -> typer.Typer:
    """A fresh sub-app for this noun (plugins may add verbs to it)."""
    app = typer.Typer(help="The appliance's configuration.", no_args_is_help=True)
    app.command("show")(show_config)
    return app
