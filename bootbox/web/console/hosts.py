"""Hosts: the paged, searchable list and one host's page with its live boot timeline and actions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Response, render_template, request

from bootbox.errors import BootboxError
from bootbox.model import Host, normalize_mac
from bootbox.web.console import session
from bootbox.web.console.common import back, blueprint, clock, page
from bootbox.web.console.timeline import timeline
from bootbox.web.deps import get_service, int_arg

FILTERS = ("state", "profile", "firmware")
SEARCHED_ATTRS = ("hostname", "ipv4", "serial", "uuid", "vendor", "model", "asset")
TIMELINE_LENGTH = 200
"""Steps of a host's timeline on its page (the API's ``/hosts/<mac>/events`` has them all)."""


def firmware(host: Host) -> str:
    return host.attrs.get("firmware") or host.attrs.get("platform") or "-"


def address(host: Host) -> str:
    """The address the network vouched for, else the one the host reported."""
    return host.verified.get("ipv4") or host.verified.get("ipv6") or host.attrs.get("ipv4") or "-"


def last_push(host: Host) -> dict[str, Any] | None:
    """The newest push of any plugin, with its plugin's name."""
    pushes = [{"plugin": name, **push} for name, push in host.pushes.items()]
    return max(pushes, key=lambda p: float(p.get("time") or 0), default=None)


def _matches(host: Host, query: str) -> bool:
    if not query:
        return True
    values = [host.mac, host.name, host.profile, str(host.state), *(host.attrs.get(a, "") for a in SEARCHED_ATTRS),
              *host.verified.values()]
    return any(query in value.lower() for value in values if isinstance(value, str))


_FACETS: dict[str, Callable[[Host], str]] = {"state": lambda h: str(h.state), "profile": lambda h: h.profile or "-",
                                             "firmware": firmware}


@dataclass(frozen=True)
class Listing:
    """One page of the filtered host list, and what the filters can choose from."""

    hosts: list[Host]
    total: int
    matched: int
    page: int
    pages: int
    choices: dict[str, list[str]]


def listing(all_hosts: Iterable[Host], args: Any, page_size: int) -> Listing:
    """Filter (``state``, ``profile``, ``firmware``), search (``q``) and page (``page``) the hosts,
    newest activity first."""
    every = list(all_hosts)
    query = str(args.get("q", "")).strip().lower()[:100]
    chosen = {name: str(args.get(name, "")) for name in FILTERS if args.get(name)}
    rows = [h for h in every if _matches(h, query) and all(_FACETS[k](h) == v for k, v in chosen.items())]
    rows.sort(key=lambda h: (-h.last_seen, h.mac))
    pages = max(1, math.ceil(len(rows) / page_size))
    number = min(int_arg("page", minimum=1, maximum=10**6) or 1, pages)
    choices = {name: sorted({facet(h) for h in every}) for name, facet in _FACETS.items()}
    return Listing(rows[(number - 1) * page_size:number * page_size], len(every), len(rows), number, pages, choices)


def _list_values() -> dict[str, Any]:
    """What the host list (the page, and its live fragment) is rendered from."""
    service = get_service()
    shown = listing(service.list_hosts(), request.args, service.settings.ui.page_size)
    args = {k: v for k, v in request.args.items() if k in (*FILTERS, "q") and v}
    return {"listing": shown, "args": args, "firmware": firmware, "address": address, "last_push": last_push}


def _fragment(template: str, **values: Any) -> Response:
    """A piece of a page for its script to swap in (no layout): the elements marked ``data-live``,
    rendered by the same macros as the page, so the live view and a reload never differ."""
    reply = Response(render_template(template, clock=clock, **values), mimetype="text/html")
    reply.headers["Cache-Control"] = "no-store"
    return reply


@blueprint.get("/hosts")
def hosts() -> str:
    return page("console/hosts.html", **_list_values())


@blueprint.get("/hosts/live")
def hosts_live() -> Response:
    """The host list's count, rows and pager for the same query: the page's script fetches it when
    events arrive, to add hosts it has not shown and refresh the rows it has."""
    return _fragment("console/hosts_live.html", **_list_values())


def _host_values(mac: str) -> dict[str, Any]:
    """What a host page's parts other than its timeline are rendered from."""
    service = get_service()
    found = service.host(mac)
    return {"host": found, "firmware": firmware(found), "address": address(found),
            "explanation": service.explain(found.attrs),
            "drift": [d for d in service.compliance() if d.host == found.mac],
            "answers": service.host_answers(found.mac)}


@blueprint.get("/hosts/<mac>")
def host(mac: str) -> str:
    values = _host_values(mac)
    steps = timeline(get_service().host_events(values["host"].mac, limit=TIMELINE_LENGTH))
    return page("console/host.html", steps=steps, extra_kinds={s.event.kind for s in steps}, **values)


@blueprint.get("/hosts/<mac>/live")
def host_live(mac: str) -> Response:
    """A host page's header, attributes, associations, compliance, rules, answers and pushes: the
    page's script fetches it after the host's events (the timeline itself grows from the events)."""
    return _fragment("console/host_live.html", **_host_values(mac))


def _act(mac: str, action: Callable[[str], str]) -> Response:
    """Run one host action for a logged-in writer and go back to the host's page with the outcome."""
    session.require_writer()
    mac = normalize_mac(mac)
    try:
        message = action(mac)
    except BootboxError as exc:
        return back("console.host", mac=mac, err=str(exc))
    return back("console.host", mac=mac, msg=message)


@blueprint.post("/hosts/<mac>/repair")
def repair(mac: str) -> Response:
    def run(m: str) -> str:
        drifts = get_service().repair([m])
        changes = "; ".join(f"{i.item_type}: {i.stored or '-'} → {i.expected or '-'}" for d in drifts for i in d.items)
        return f"repaired ({changes}); applies at its next boot" if drifts else "already compliant: nothing to repair"
    return _act(mac, run)


@blueprint.post("/hosts/<mac>/push")
def push(mac: str) -> Response:
    return _act(mac, lambda m: f"re-push started (state {get_service().push(m).state})")


@blueprint.post("/hosts/<mac>/adopt")
def adopt(mac: str) -> Response:
    hostname = request.form.get("hostname", "")

    def run(m: str) -> str:
        adopted = get_service().adopt(m, hostname)
        return f"adopted {m}" + (f" as {adopted.name}" if adopted.name else "") + "; it boots with its profile"
    return _act(mac, run)


@blueprint.post("/hosts/<mac>/forget")
def forget(mac: str) -> Response:
    session.require_writer()
    mac = normalize_mac(mac)
    try:
        get_service().remove_host(mac)
    except BootboxError as exc:
        return back("console.host", mac=mac, err=str(exc))
    return back("console.hosts", msg=f"forgot {mac}; it is a new host if it boots again")
