"""The vCloud Director agent plugin for bootbox (see README.md).

A stateless ESXi host forgets everything at each reboot, so vCD's agent must come back with the
image (the VIB is injected for hosts of a vCD group), its settings come back with the host
profile and its answers (the ESXi plugin applies them after every boot), and vCD must see the
host ready again. That last part is this plugin's push (``bootbox_host_up``, retried by
bootbox's push pool): through the vCloud API's host extension (1.5–9.1; :mod:`bootbox_vcd.client`)
it finds the host among vCD's hosts by the name or address vCenter knows it under, then
*prepares* a host vCD has not prepared, or *repairs* one that is prepared but not ``Ready``
after a stateless reboot, and follows vCD's task to its end.

What vCD prepared is remembered in the plugin's own store, per host: a host prepared as stateful
(an ``install``-mode profile) that now boots stateless is refused until it is unprepared, because
vCD would otherwise manage it with the wrong expectations (facts §6: stateful hosts get the
agent through ``esxcli`` during Prepare Host, stateless ones through the image).

Imports only ``bootbox``'s public API (plus Flask and Typer, which bootbox ships with).
"""

from __future__ import annotations

import json as jsonlib
import re
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
    PushRefused,
    api_client,
    hookimpl,
    normalize_mac,
)
from bootbox_vcd import vcloud
from bootbox_vcd.client import session
from bootbox_vcd.config import VcdConfig, parse_config

__version__ = "0.1.0"

NAME = "vcd"
HOSTS = "hosts"
USERNAME, PASSWORD = "vcd_host_username", "vcd_host_password"
NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")
"""What a host's name or address may look like in a query filter (FIQL's , ; ( ) never appear)."""
SLACK = 0.9
"""The share of an attempt's timeout the session may use, leaving time to log out."""


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
    def bootbox_image_inject(self, image_kind: str, host: Host | None) -> list[str] | None:
        if image_kind != "esxi" or host is None or not self.in_scope(host):
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

    def vcd_names(self, host: Host, event: BootEvent | None, answers: Mapping[str, Any]) -> list[str]:
        """The names vCD may know the host by, in order: its host-profile hostname (fully qualified
        with the ``domain`` answer, then as given), then its address."""
        hostname = str(answers.get(self.config.hostname_answer) or "").strip()
        domain = str(answers.get(self.config.domain_answer) or "").strip().strip(".")
        names = [f"{hostname}.{domain}"] if hostname and domain and "." not in hostname else []
        names.append(hostname)
        names.append(str((event.data.get("ip") if event else "") or host.attrs.get("ipv4", "")))
        return [n for n in dict.fromkeys(names) if n and NAME_CHARS.fullmatch(n)]

    @hookimpl
    def bootbox_host_up(self, host: Host, event: BootEvent, answers: Mapping[str, Any], timeout: float) -> str | None:
        """Make vCD see the host ready: prepare it, or repair it after a stateless reboot."""
        if not self.in_scope(host):
            return None
        if not self.config.url:
            raise PushRefused("plugins.vcd.url is not set: there is no vCloud Director to tell")
        context = self._started()
        mode = self._mode(host)
        previous = self.record_of(host.mac)
        if previous and previous.get("prepared") and previous.get("mode") == "stateful" and mode == "stateless":
            raise PushRefused(f"{host.mac} was prepared in vCloud Director as a stateful host; unprepare it first "
                              f"(bootbox vcd unprepare {host.mac}), then boot it stateless")
        names = self.vcd_names(host, event, answers)
        if not names:
            raise PushRefused(f"no name or address to look {host.mac} up in vCD by: give it the answer "
                              f"{self.config.hostname_answer} (the name vCenter has it under)")
        with session(self.config, timeout * SLACK) as vcd:
            record = vcd.find_host(names)
            if record is None:
                raise PushRefused(f"not in vCD; is it in vCenter? (no vCD host is named {' or '.join(names)}; once "
                                  f"vCD lists it: bootbox host push {host.mac})")
            state = vcd.host(record.href)
            if record.busy or state.busy:
                raise BootboxError(f"vCD says host {record.name} is busy (a task of its own runs on it)")
            verb, result, task = "", "ready", None
            if not record.prepared:
                verb = "prepare"
                task = vcd.action(state, record.href, verb, vcloud.prepare_params(
                    str(answers.get(USERNAME) or "root"), str(answers.get(PASSWORD) or "")), vcloud.PREPARE_PARAMS)
            elif record.hung or not state.ready:
                verb = "repair"
                task = vcd.action(state, record.href, verb)
            if task is not None:
                task = vcd.wait(task)
                if task.failed:
                    raise BootboxError(f"vCD's {verb} task for host {record.name} ended {task.status}: {task.error}")
                result = task.status
            version = vcd.version
        context.store.put(HOSTS, _key(host.mac), {
            "mac": host.mac, "prepared": True, "mode": mode, "boot_id": str(event.data.get("boot_id", "")),
            "vcd_name": record.name, "vcd_href": record.href, "action": verb or "none", "result": result,
            "api_version": version, "time": time.time()})
        if not verb:
            return f"host {record.name} is prepared and ready in vCD already (API {version}, {mode})"
        done = {"prepare": "prepared", "repair": "repaired"}[verb]
        return f"host {record.name} {done} in vCD: task {result} (API {version}, {mode})"

    def unprepare(self, mac: str) -> dict[str, Any]:
        """Unprepare the host in vCD (its own ``unprepare`` action); forget that it was prepared."""
        context = self._started()
        mac = normalize_mac(mac)
        if not self.config.url:
            raise BootboxError("plugins.vcd.url is not set")
        record = self.record_of(mac)
        if not record or not record.get("vcd_href"):
            raise NotFound(f"bootbox has not prepared {mac} in vCloud Director (bootbox vcd hosts lists those it has)")
        with session(self.config, self.config.timeout * 3) as vcd:
            state = vcd.host(record["vcd_href"])
            task = vcd.wait(vcd.action(state, record["vcd_href"], "unprepare"))
        if task.failed:
            raise BootboxError(f"vCD's unprepare task for host {record['vcd_name']} ended {task.status}: {task.error}")
        context.store.delete(HOSTS, _key(mac))
        context.record(mac, "state", f"vcd: unprepared in vCloud Director (host {record['vcd_name']}, task {task.status})")
        return {"host": mac, "unprepared": True, "vcd_name": record["vcd_name"], "result": task.status}

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
        def hosts(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
            """Hosts bootbox prepared in vCD: mode (stateful/stateless), vCD's name, last action, boot."""
            docs = api_client(ctx).get("/vcd/hosts")
            if json:
                typer.echo(jsonlib.dumps(docs, indent=2))
                return
            for doc in docs:
                typer.echo(f"{doc['mac']}  {doc['mode']}  {doc.get('vcd_name') or '-'}  {doc.get('action')} "
                           f"{doc.get('result')}  boot {doc.get('boot_id') or '-'}")

        @app.command("unprepare")
        def unprepare(ctx: typer.Context, mac: str = typer.Argument(..., help="The host's MAC.")) -> None:
            """Unprepare a host in vCD (needed before a stateful host boots stateless)."""
            result = api_client(ctx).post(f"/vcd/hosts/{normalize_mac(mac)}/unprepare", {})
            typer.echo(f"unprepared {result['host']} ({result['vcd_name']} in vCD, task {result['result']})")

        register(app, name="vcd")


plugin = VcdPlugin()
"""What the ``bootbox`` entry point loads (an entry point names an object, not a factory)."""
