"""What the esxi API answers, as plain dicts (``web.py`` only routes and serialises).

Profiles are bootbox profiles of kind ``esxi``, which the core stores; this plugin cannot write
them (the plugin context has no profile writes). So ``profile add-vib``, ``remove-vib`` and
``clone`` are *plans*: the appliance computes the new spec under Image Builder's rules and
validates it, and the CLI writes it through the core's ``PUT /api/v1/profiles/<name>``, which
validates it once more with the same rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from bootbox import NotFound, ValidationError, normalize_mac
from bootbox_esxi.callin import MODULE as CALLIN_MODULE
from bootbox_esxi import export, imageprofile
from bootbox_esxi import xmlutil as X
from bootbox_esxi.catalog import Catalog
from bootbox_esxi.kind import KIND, firmware_of
from bootbox_esxi.state import ServedPlugin
from bootbox_esxi.vib import MAX_DESCRIPTOR_BYTES
from bootbox_esxi.versions import normalize_level, rank


class Views:
    def __init__(self, plugin: ServedPlugin) -> None:
        self._plugin = plugin

    @property
    def catalog(self) -> Catalog:
        return self._plugin.state.catalog

    # ------------------------------------------------------------------ depots and VIBs

    def depots(self) -> list[dict[str, Any]]:
        return [{**d, "vib_count": len(d.get("vibs", []))} for d in self.catalog.depots()]

    def depot_profiles(self, depot: str | None) -> list[dict[str, Any]]:
        if depot:
            self.catalog.depot(depot)
        return [{**p.to_doc(), "key": p.key, "missing": [v for v in p.vibs if not self.catalog.has(v)]}
                for p in self.catalog.depot_profiles(depot)]

    def vibs(self, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        unknown = set(filters) - {"depot", "name", "vendor", "acceptance", "stateless"}
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown filter; use depot, name, vendor, acceptance, stateless")
        in_depot = set(self.catalog.depot(filters["depot"])["vibs"]) if "depot" in filters else None
        minimum = rank(normalize_level(filters["acceptance"])) if "acceptance" in filters else None
        rows = []
        for vib in self.catalog.vibs():
            if in_depot is not None and vib.id not in in_depot:
                continue
            if "name" in filters and filters["name"].lower() not in vib.name.lower():
                continue
            if "vendor" in filters and filters["vendor"].lower() != vib.vendor.lower():
                continue
            if minimum is not None and rank(vib.acceptance) < minimum:
                continue
            if "stateless" in filters and vib.stateless_ready != (filters["stateless"].lower() in ("1", "true", "yes")):
                continue
            rows.append({"id": vib.id, "name": vib.name, "version": vib.version, "vendor": vib.vendor,
                         "acceptance": vib.acceptance, "stateless_ready": vib.stateless_ready, "size": vib.size,
                         "depots": self.catalog.depots_of(vib.id)})
        return rows

    def vib(self, ref: str) -> dict[str, Any]:
        vib = self.catalog.resolve(ref)
        root = X.parse_xml(self.catalog.descriptor(vib), f"VIB {vib.id}", MAX_DESCRIPTOR_BYTES)
        files = [X.text(f) for f in X.children(X.child(root, "file-list"), "file")]
        return {**vib.to_doc(), "depots": self.catalog.depots_of(vib.id), "file_list": files}

    # ------------------------------------------------------------------ profiles

    def profile(self, name: str) -> dict[str, Any]:
        """A bootbox esxi profile, else a depot's image profile, as one view."""
        context = self._plugin.state.context
        try:
            profile = context.profile(name)
        except NotFound:
            profile = None
        if profile is not None:
            if profile.kind != KIND:
                raise ValidationError("profile", f"profile {name} is of kind {profile.kind}, not an ESXi image profile")
            return {"name": profile.name, "kind": "bootbox", "description": profile.description, **profile.spec,
                    "missing": [v for v in profile.spec.get("vibs", []) if not self.catalog.has(v)]}
        depot = self.catalog.depot_profile(name)
        return {"name": depot.key, "kind": "depot", "description": depot.description, "vendor": depot.vendor,
                "acceptance": depot.acceptance, "mode": "stateless", "vibs": list(depot.vibs),
                "missing": [v for v in depot.vibs if not self.catalog.has(v)]}

    def _validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return imageprofile.normalize_spec(spec, self.catalog, self._plugin.config.acceptance)

    def plan(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The new spec for clone / add-vib / remove-vib, already checked against every rule."""
        if action == "clone":
            source = self.profile(_required(body, "source"))
            if source["missing"]:
                raise ValidationError("source", f"{source['name']} lists VIBs no imported depot has: "
                                      f"{', '.join(source['missing'][:3])}; import the depot that brings them")
            spec = {key: source[key] for key in imageprofile.FIELDS if key in source}
            for key in ("mode", "acceptance", "kernelopt", "vendor"):
                if body.get(key):
                    spec[key] = body[key]
            spec["source"] = f"{source['kind']}:{source['name']}"
            return {"spec": self._validate(spec), "changes": [f"cloned from {source['kind']} profile {source['name']}"]}
        if action not in ("add-vib", "remove-vib"):
            raise NotFound(f"no plan {action!r}; known: clone, add-vib, remove-vib")
        current = self.profile(_required(body, "profile"))
        if current["kind"] != "bootbox":
            raise ValidationError("profile", f"{current['name']} is a depot's image profile (read-only); "
                                  "clone it first")
        spec = {key: current[key] for key in imageprofile.FIELDS if key in current}
        if action == "add-vib":
            vib = self.catalog.resolve(_required(body, "vib"))
            spec, changes = imageprofile.add_vib(spec, vib, self.catalog, body.get("acceptance") or None)
        else:
            spec, changes = imageprofile.remove_vib(spec, _required(body, "vib"), self.catalog)
        return {"spec": self._validate(spec), "changes": changes}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        if not a or not b:
            raise ValidationError("a" if not a else "b", "name two profiles: ?a=NAME&b=NAME")
        return imageprofile.diff(self.profile(a), self.profile(b), self.catalog)

    def bundle(self, name: str) -> Path:
        """The offline bundle of a profile, built once per content and kept under exports/."""
        view = self.profile(name)
        if view["missing"]:
            raise ValidationError("profile", f"{view['name']} lists VIBs that are not imported: {view['missing'][0]}")
        vibs = [self.catalog.vib(v) for v in view["vibs"]]
        vendor = view.get("vendor") or "bootbox"
        level = view.get("acceptance") or "partner"
        key = json.dumps([view["name"], vendor, view["description"], level, [v.sha256 for v in vibs]])
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", view["name"])[:64]
        exports = self._plugin.state.context.data_dir / "exports"
        exports.mkdir(exist_ok=True, mode=0o700)
        path = exports / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.zip"
        if not path.is_file():
            for old in exports.iterdir():  # this profile's older exports only, not "lab-2-…" for "lab"
                if re.fullmatch(rf"{re.escape(slug)}-[0-9a-f]{{16}}\.zip", old.name):
                    old.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=self.catalog.blobs.tmp)
            os.close(fd)
            try:
                export.write_bundle(Path(tmp), name=slug, vendor=vendor, description=view["description"],
                                    acceptance=level, vibs=vibs, catalog=self.catalog)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ hosts

    def host_image(self, mac: str) -> dict[str, Any]:
        """What ``host`` boots: profile VIBs + injected ones (and any left out, with why), and
        whether its boot.cfg adds the per-boot call-in module (stateless)."""
        context = self._plugin.state.context
        host = context.host(normalize_mac(mac))
        name = host.profile
        if not name:
            raise NotFound(f"host {host.mac} has not been given a profile yet (it has not fetched its script)")
        profile = context.profile(name)
        if profile.kind != KIND:
            raise ValidationError("mac", f"host {host.mac} boots profile {name} of kind {profile.kind}, not ESXi")
        image = self._plugin.image_for(host, profile)
        return {**image.to_doc(), "mac": host.mac, "firmware": firmware_of(host),
                "requested": self._plugin.injected_for(host, profile),
                "callin_module": CALLIN_MODULE if image.mode == "stateless" else None}


def _required(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(key, "required")
    return value
