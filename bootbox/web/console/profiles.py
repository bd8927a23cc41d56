"""Profiles and images: boot (image) profiles with their spec and a diff of two, and host
profiles with their inputs and a render preview (secrets masked) for a chosen host.

A profile's spec is what its kind's plugin validated: an ESXi image profile's VIB list, a Linux
profile's kernel, initrd and packages. The console shows any spec generically, so a new kind
needs nothing here; the diff compares two specs key by key, lists as sets (VIBs, packages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, request, url_for

from bootbox.errors import BootboxError
from bootbox.web.console.common import blueprint, page
from bootbox.web.deps import base_url, get_service


@dataclass(frozen=True)
class SpecChange:
    """One key that differs between two specs: removed and added list entries, or two values."""

    key: str
    before: Any
    after: Any
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


def spec_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[SpecChange]:
    """What differs from spec ``a`` to spec ``b``: lists compared as sets of their entries."""
    changes = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before == after:
            continue
        if isinstance(before, (list, type(None))) and isinstance(after, (list, type(None))):
            old, new = [str(x) for x in before or []], [str(x) for x in after or []]
            changes.append(SpecChange(key, before, after, tuple(x for x in old if x not in new),
                                      tuple(x for x in new if x not in old)))
        else:
            changes.append(SpecChange(key, before, after))
    return changes


def plugin_view(kind: str, view: str, **args: str) -> str:
    """The URL of what the plugin of ``kind`` says about profiles in its own API, when it has one:
    the view ``view`` of its ``<kind>_api`` blueprint (the esxi plugin's ``/api/v1/esxi/diff``
    compares VIBs by name and version, ``/api/v1/esxi/profiles/NAME`` lists missing VIBs). The
    page links to it and its script shows it; "" when the plugin has no such view."""
    endpoint = f"{kind}_api.{view}"
    return url_for(endpoint, **args) if endpoint in current_app.view_functions else ""


@blueprint.get("/profiles")
def profiles() -> str:
    service = get_service()
    return page("console/profiles.html", profiles=service.profiles(), kinds=service.profile_kinds(),
                host_profiles=service.host_profiles())


@blueprint.get("/profiles/diff")
def profiles_diff() -> str:
    service = get_service()
    a, b = request.args.get("a", ""), request.args.get("b", "")
    left, right = service.profile(a), service.profile(b)
    return page("console/profile_diff.html", a=left, b=right, changes=spec_diff(left.spec, right.spec),
                names=[p.name for p in service.profiles()],
                plugin_diff=plugin_view(left.kind, "diff", a=a, b=b) if left.kind == right.kind else "")


@blueprint.get("/profiles/<name>")
def profile(name: str) -> str:
    service = get_service()
    found = service.profile(name)
    users = [h for h in service.list_hosts() if h.profile == name or h.associations.get("image") == name]
    return page("console/profile.html", profile=found, hosts=users[:50], host_count=len(users),
                others=[p.name for p in service.profiles() if p.name != name],
                plugin_view=plugin_view(found.kind, "profile", name=name))


@blueprint.get("/hostprofiles/<name>")
def host_profile(name: str) -> str:
    """A host profile's inputs and templates; ``?host=MAC``: what that host would get, masked."""
    service = get_service()
    found = service.host_profile(name)
    mac = request.args.get("host", "").strip()
    preview: dict[str, str] = {}
    preview_error = ""
    if mac:
        try:
            _, preview = service.render_answer_files(service.host(mac), base_url=base_url(), profile_name=name,
                                                     masked=True)
        except BootboxError as exc:
            preview_error = str(exc)
    hosts = [h.mac for h in service.list_hosts() if h.associations.get("host_profile") == name][:200]
    return page("console/hostprofile.html", profile=found, mac=mac, preview=preview, preview_error=preview_error,
                hosts=hosts)
