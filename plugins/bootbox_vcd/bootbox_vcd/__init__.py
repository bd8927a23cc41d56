"""The vCloud Director agent plugin for bootbox (see README.md).

A stateless ESXi host forgets everything at each reboot, so vCD's agent must come back with the
image (the VIB is injected for hosts of a vCD group) and its configuration must be pushed again
after every boot (``bootbox_host_up``, retried by bootbox's push pool). What vCD prepared is
remembered in the plugin's own store, per host: a host prepared as stateful (an ``install``-mode
profile) that now boots stateless is refused until it is unprepared, because vCD would otherwise
manage it with the wrong expectations (facts §6: stateful hosts get the agent through ``esxcli``
during Prepare Host, stateless ones through the image).

Imports only ``bootbox``'s public API (plus Flask and Typer, which bootbox ships with).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import typer
from flask import Blueprint, Response, jsonify

from bootbox import (
    BootboxError,
    BootEvent,
    Host,
    NotFound,
    PluginContext,
    PluginError,
    Profile,
    PushRefused,
    api_client,
    hookimpl,
    normalize_mac,
)
from bootbox_vcd.client import VcdClient
from bootbox_vcd.config import VcdConfig, parse_config

__version__ = "0.1.0"

NAME = "vcd"
HOSTS = "hosts"
USERNAME, PASSWORD = "vcd_host_username", "vcd_host_password"


def _key(mac: str) -> str:
    return normalize_mac(mac).replace(":", "")


class VcdPlugin:
    """Hook implementations; the configuration arrives in ``bootbox_configure``."""

    def __init__(self) -> None:
        self.__name__ = NAME
        self.config = VcdConfig()
        self.context: PluginContext | None = None

    # ------------------------------------------------------------------ lifecycle

    @hookimpl
    def bootbox_configure(self, settings: Any) -> None:
        self.config = parse_config(settings.plugins.get(NAME))

    @hookimpl
    def bootbox_startup(self, context: PluginContext) -> None:
        self.context = context

    @hookimpl
    def bootbox_shutdown(self) -> None:
        self.context = None

    def in_scope(self, host: Host) -> bool:
        """Is the host in a group marked for vCD?"""
        return self.config.enabled and host.associations.get("group", "") in self.config.groups

    # ------------------------------------------------------------------ image and answers

    @hookimpl
    def bootbox_image_packages(self, host: Host, profile: Profile) -> list[str] | None:
        if profile.kind != "esxi" or not self.in_scope(host):
            return None
        return [self.config.vib]

    @hookimpl
    def bootbox_register_answer_inputs(self, register: Callable[..., None]) -> None:
        if not self.config.enabled:
            return
        register(USERNAME, default="root", description="the host account vCloud Director prepares it with",
                 applies_to=self.in_scope)
        register(PASSWORD, secret=True, description="that account's password (sent to vCD at each prepare)",
                 applies_to=self.in_scope)

    # ------------------------------------------------------------------ after boot

    def _mode(self, host: Host) -> str:
        """``stateful`` for hosts booted with an install-mode profile, else ``stateless``."""
        context = self.context
        if context is None or not host.profile:
            return "stateless"
        try:
            spec = context.profile(host.profile).spec
        except NotFound:
            return "stateless"
        return "stateful" if spec.get("mode") == "install" else "stateless"

    def record_of(self, mac: str) -> dict[str, Any] | None:
        context = self._started()
        key = _key(mac)
        return context.store.get(HOSTS, key) if context.store.has(HOSTS, key) else None

    def _started(self) -> PluginContext:
        if self.context is None:
            raise PluginError("the vcd plugin is not started (bootbox serve starts it)")
        return self.context

    @hookimpl
    def bootbox_host_up(self, host: Host, event: BootEvent, answers: Mapping[str, Any], timeout: float) -> str | None:
        """Prepare the host in vCD: push the agent configuration, again after every boot."""
        if not self.in_scope(host):
            return None
        if not self.config.url:
            raise PushRefused("plugins.vcd.url is not set: there is no vCD endpoint to push to")
        context = self._started()
        mode = self._mode(host)
        previous = self.record_of(host.mac)
        if previous and previous.get("prepared") and previous.get("mode") == "stateful" and mode == "stateless":
            raise PushRefused(f"{host.mac} was prepared in vCloud Director as a stateful host; unprepare it first "
                              f"(bootbox vcd unprepare {host.mac}), then boot it stateless")
        boot_id = str(event.data.get("boot_id", ""))
        body = {
            "host": host.mac,
            "address": event.data.get("ip") or host.attrs.get("ipv4", ""),
            "hostname": event.data.get("hostname") or host.attrs.get("hostname", ""),
            "boot_id": boot_id,
            "mode": mode,
            "group": host.associations.get("group", ""),
            "agent": {"vib": self.config.vib, "username": answers.get(USERNAME) or "root",
                      "password": answers.get(PASSWORD) or ""},
        }
        status, _ = VcdClient(self.config).post(f"/hosts/{host.mac}/prepare", body, min(timeout, self.config.timeout))
        context.store.put(HOSTS, _key(host.mac), {"mac": host.mac, "prepared": True, "mode": mode, "boot_id": boot_id,
                                                   "status": status, "time": time.time()})
        return f"agent configuration pushed to {self.config.url} ({mode}, HTTP {status})"

    def unprepare(self, mac: str) -> dict[str, Any]:
        """Tell vCD to let go of the host; forget that it was prepared."""
        context = self._started()
        mac = normalize_mac(mac)
        if not self.config.url:
            raise BootboxError("plugins.vcd.url is not set")
        status, _ = VcdClient(self.config).post(f"/hosts/{mac}/unprepare", {"host": mac}, self.config.timeout)
        if context.store.has(HOSTS, _key(mac)):
            context.store.delete(HOSTS, _key(mac))
        context.record(mac, "state", f"vcd: unprepared in vCloud Director (HTTP {status})")
        return {"host": mac, "unprepared": True, "status": status}

    # ------------------------------------------------------------------ API and CLI

    @hookimpl
    def bootbox_register_routes(self, register: Callable[..., None]) -> None:
        blueprint = Blueprint("vcd", __name__, url_prefix="/api/v1/vcd")

        @blueprint.get("/hosts")
        def hosts() -> Response:
            return jsonify(list(self._started().store.all(HOSTS).values()))

        @blueprint.post("/hosts/<mac>/unprepare")
        def unprepare(mac: str) -> Response:
            return jsonify(self.unprepare(mac))

        register(blueprint)

    @hookimpl
    def bootbox_register_commands(self, register: Callable[..., None]) -> None:
        app = typer.Typer(help="vCloud Director agent: prepared hosts, unprepare.", no_args_is_help=True)

        @app.command("hosts")
        def hosts(ctx: typer.Context) -> None:
            """Hosts vCD prepared: mode (stateful/stateless), last boot pushed."""
            for doc in api_client(ctx).get("/vcd/hosts"):
                typer.echo(f"{doc['mac']}  {doc['mode']}  boot {doc.get('boot_id') or '-'}  HTTP {doc.get('status')}")

        @app.command("unprepare")
        def unprepare(ctx: typer.Context, mac: str = typer.Argument(..., help="The host's MAC.")) -> None:
            """Unprepare a host in vCD (needed before a stateful host boots stateless)."""
            result = api_client(ctx).post(f"/vcd/hosts/{normalize_mac(mac)}/unprepare", {})
            typer.echo(f"unprepared {result['host']} (HTTP {result['status']})")

        register(app, name="vcd")


plugin = VcdPlugin()
"""What the ``bootbox`` entry point loads (an entry point names an object, not a factory)."""
