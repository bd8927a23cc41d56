"""The CLI's commands and the web app's blueprints come from plugins through pluggy
(``bootbox.hooks.calls``): wrappers run around the call, and fewer arguments are fine."""

from __future__ import annotations

from typing import Callable

import typer
from flask import Blueprint, Flask
from typer.testing import CliRunner

from bootbox import hookimpl
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from tests.hooks.conftest import Services, assert_wrapped

Around = Callable[[str], object]


def _pm(**plugins: object):  # type: ignore[no-untyped-def]
    pm = make_plugin_manager(load_entrypoints=False)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    return pm


def test_hook_bootbox_register_commands_runs_inside_a_wrapper(around: Around, events: list[str]) -> None:
    racks = typer.Typer(help="Racks.")

    @racks.command("list")
    def list_racks() -> None:
        typer.echo("r12 r13")

    class Racks:
        @hookimpl
        def bootbox_register_commands(self, register: Callable[..., None]) -> None:
            events.append("commands")
            register(racks, name="rack")

    app = build_cli(_pm(racks=Racks(), around=around("bootbox_register_commands")))
    assert events == ["before", "commands", "after"]
    result = CliRunner().invoke(app, ["rack", "list"])
    assert result.exit_code == 0 and result.output == "r12 r13\n"


def test_hook_bootbox_register_commands_without_register(events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_commands(self) -> None:
            events.append("asked")

    app = build_cli(_pm(bare=Bare()))
    assert events == ["asked"]
    assert CliRunner().invoke(app, ["host", "--help"]).exit_code == 0


def test_hook_bootbox_register_routes_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    blueprint = Blueprint("inventory", __name__, url_prefix="/api/v1/inventory")
    blueprint.add_url_rule("/", "everything", lambda: {"racks": 3})

    class Inventory:
        @hookimpl
        def bootbox_register_routes(self, register: Callable[..., None]) -> None:
            events.append("routes")
            register(blueprint)

    service = services.start(inventory=Inventory(), around=around("bootbox_register_routes"))
    blueprints = service.plugin_blueprints()  # what create_app registers
    assert_wrapped(events, "routes")
    assert blueprint in blueprints  # beside the shipped plugins' own (bootbox_linux's image API)
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    assert app.test_client().get("/api/v1/inventory/").json == {"racks": 3}


def test_hook_bootbox_register_routes_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_routes(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert [b.name for b in service.plugin_blueprints()] == [b.name for b in services.start().plugin_blueprints()]  # nothing added
    assert events == ["asked"]
