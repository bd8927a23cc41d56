"""Depot housekeeping: removing a depot, taking rebuilt VIBs, and the hosts a rebuild leaves behind.

**Remove** (``bootbox depot remove ID``): the depot, its image profiles and the VIBs no other
depot lists are forgotten and their blobs deleted, unless an image profile in use still needs
one of those VIBs. "In use" means a bootbox ``esxi`` profile (what hosts boot; a depot's own
image profiles go with the depot): the refusal names each profile and the VIBs it needs, since
removing them would leave the profile unbootable.

**Replace** (``bootbox depot add --replace SOURCE``): community VIBs are rebuilt without a new
version, so the same VIB ID arrives with other bytes. The import takes the new build
(:class:`~bootbox_esxi.depot.Importer` with ``replace=True``); this module then says what it
changes: the ``esxi`` profiles that list the VIB and every host whose image holds it (listed by
its profile or injected by a plugin), from the catalog after the replacement.

**Compliance.** A host's association records the *name* of its image profile, and its image is
resolved from the catalog at each boot, so rule compliance (``bootbox rule compliance``) cannot
see that the bytes under that name changed. Each such host is therefore marked here, in the
plugin's store (``image_drift``), with the boot it was running: it stays non-compliant (its
running image is the old build) until it is repaired, which for a stateless host is its next
boot, since that boot loads the rebuilt VIB — the mark is spent once the host reports a new boot
ID (or, for a host that never reports in, fetches a boot script again). ``compliance`` lists the
hosts still marked; every mark also goes on the host's timeline.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from bootbox import Conflict, EventKind, Host, NotFound, Profile
from bootbox_esxi.depot import Progress
from bootbox_esxi.kind import KIND
from bootbox_esxi.state import ServedPlugin

DRIFT = "image_drift"


def _key(mac: str) -> str:
    return mac.replace(":", "")


def _esxi_profiles(plugin: ServedPlugin) -> list[Profile]:
    return [p for p in plugin.state.context.profiles() if p.kind == KIND]


def needed_by(plugin: ServedPlugin, vib_ids: Iterable[str]) -> dict[str, list[str]]:
    """``{esxi profile: [the VIBs of vib_ids it lists]}`` for the profiles that list any."""
    wanted = set(vib_ids)
    found = {p.name: sorted(wanted & set(p.spec.get("vibs", []))) for p in _esxi_profiles(plugin)}
    return {name: vibs for name, vibs in sorted(found.items()) if vibs}


def hosts_holding(plugin: ServedPlugin, vib_id: str) -> list[Host]:
    """Hosts whose image (profile VIBs plus injected ones) holds ``vib_id``."""
    profiles = {p.name: p for p in _esxi_profiles(plugin)}
    holding = []
    for host in plugin.state.context.hosts():
        profile = profiles.get(host.profile or host.associations.get("image", ""))
        if profile is None:
            continue
        try:
            image = plugin.image_for(host, profile)
        except Exception:  # a profile that no longer resolves boots nothing; it is not drifting
            continue
        if any(v.id == vib_id for v in image.vibs):
            holding.append(host)
    return holding


def remove_depot(plugin: ServedPlugin, depot_id: str) -> dict[str, Any]:
    """Forget a depot and the VIBs only it brought; refused while a profile in use needs them."""
    state = plugin.state
    depot = state.catalog.depot(depot_id)
    others = {v for d in state.catalog.depots() if d["id"] != depot_id for v in d.get("vibs", [])}
    exclusive = sorted(set(depot.get("vibs", [])) - others)
    needed = needed_by(plugin, exclusive)
    if needed:
        which = "; ".join(f"image profile {name} needs {', '.join(vibs)}" for name, vibs in needed.items())
        raise Conflict(f"depot {depot_id} is in use: {which}. Remove those VIBs from the profiles (bootbox profile "
                       "remove-vib) or delete the profiles, or import a depot that also brings them, then try again")
    gone = state.importer.remove(depot_id, exclusive)
    return {"id": depot_id, "removed_vibs": [v.id for v in gone], "kept_vibs": sorted(set(depot.get("vibs", [])) & others),
            "profiles": list(depot.get("profiles", [])), "unresolved_injections": _unresolved(plugin)}


def _unresolved(plugin: ServedPlugin) -> list[str]:
    """``[plugins.esxi.inject]`` VIBs that no longer resolve: hosts boot without them (and say so)."""
    names = {name for group in plugin.config.inject.values() for name in group}
    missing = []
    for name in sorted(names):
        try:
            plugin.state.catalog.resolve(name)
        except NotFound:
            missing.append(name)
    return missing


def import_replacing(plugin: ServedPlugin, source: str, progress: Progress) -> dict[str, Any]:
    """``depot add --replace``: import, then say (and mark) what each rebuilt VIB changes."""
    state = plugin.state
    result = state.importer.run(source, progress, replace=True)
    rows = []
    for replaced in result.get("replaced", []):
        vib_id = replaced["vib"]
        profiles = sorted(needed_by(plugin, [vib_id]))
        hosts = hosts_holding(plugin, vib_id)
        for host in hosts:
            _mark(plugin, host, vib_id, replaced)
        rows.append({**replaced, "profiles": profiles, "hosts": [h.mac for h in hosts]})
    return {**result, "replaced": rows}


def _mark(plugin: ServedPlugin, host: Host, vib_id: str, replaced: dict[str, Any]) -> None:
    context = plugin.state.context
    key = _key(host.mac)
    mark = context.store.get(DRIFT, key) if context.store.has(DRIFT, key) else None
    if mark is None or _repaired(host, mark):
        mark = {"mac": host.mac, "vibs": [], "since": time.time(), "boot_id": host.boot_id or "",
                "last_seen": host.last_seen}
    mark["vibs"] = sorted({*mark["vibs"], vib_id})
    mark["profile"] = host.profile or host.associations.get("image", "")
    context.store.put(DRIFT, key, mark)
    context.record(host.mac, EventKind.STATE,
                   f"esxi: VIB {vib_id} was rebuilt (sha-256 {replaced['old_sha256'][:12]}… → "
                   f"{replaced['new_sha256'][:12]}…): image profile {mark['profile']} changed; non-compliant until "
                   "the host boots again and loads it", vib=vib_id)


def _repaired(host: Host, mark: dict[str, Any]) -> bool:
    """Has the host booted since it was marked (and so loaded the rebuilt VIB)?"""
    if mark.get("boot_id"):
        return bool(host.boot_id) and host.boot_id != mark["boot_id"]
    return host.last_seen > float(mark.get("last_seen") or 0)


def compliance(plugin: ServedPlugin) -> list[dict[str, Any]]:
    """Hosts still running an image whose VIBs were rebuilt since they booted."""
    context = plugin.state.context
    rows = []
    for mark in context.store.all(DRIFT).values():
        try:
            host = context.host(mark["mac"])
        except NotFound:
            continue
        if _repaired(host, mark):
            continue
        rows.append({"mac": host.mac, "profile": mark.get("profile", ""), "vibs": mark["vibs"], "since": mark["since"],
                     "boot_id": mark.get("boot_id", ""),
                     "reason": f"rebuilt since it booted: {', '.join(mark['vibs'])}; reboot it to load them"})
    return sorted(rows, key=lambda r: r["mac"])
