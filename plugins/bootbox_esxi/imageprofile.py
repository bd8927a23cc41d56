"""Image profiles: the spec of an ``esxi`` profile, and Image Builder's rules over it.

A bootbox profile of kind ``esxi`` *is* an image profile. Its spec (``docs/esxi.md``)::

    vibs:       VIB IDs (names are accepted on input and resolved to the newest imported version)
    acceptance: the profile's level (default: plugins.esxi.acceptance, else PartnerSupported)
    mode:       "stateless" (default; ESXi runs from memory) or "install" (runweasel ks=<the
                host's kickstart, rendered from its host profile of kind kickstart>)
    kernelopt:  extra kernel options for boot.cfg
    vendor:     the image profile's creator (default "bootbox")
    loaders:    per-profile mboot.efi / mboot.c32 / pxelinux.0 / ldlinux.c32 paths (override the config)
    build:      boot.cfg's build= (default: the version of the VIB carrying the kernel)
    source:     where it was cloned from (informational)

The rules (facts §5 and VMware's "Image Profile Requirements"), each refusal saying what to do:
acceptance levels are ordered and the profile's level is at most every VIB's; one version per
VIB name; dependencies present, conflicts and replaced VIBs absent; every VIB stateless-ready
when the mode is stateless; at least one bootable kernel payload; no two payloads loading under
one module name (the last two are checked by ``image.allocate_modules``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from bootbox import NotFound, ValidationError
from bootbox_esxi import image
from bootbox_esxi.catalog import Catalog
from bootbox_esxi.config import LOADER_NAMES
from bootbox_esxi.versions import compare, long_name, normalize_level, rank, satisfies
from bootbox_esxi.vib import Relation, Vib

MODES = ("stateless", "install")
FIELDS = ("vibs", "acceptance", "mode", "kernelopt", "vendor", "loaders", "build", "source")


@dataclass(frozen=True)
class Rules:
    """The problems of a set of VIBs under a level and mode; empty means the image is valid."""

    problems: tuple[str, ...]

    def raise_first(self, field: str = "spec.vibs") -> None:
        if self.problems:
            raise ValidationError(field, self.problems[0])


def _line(field: str, value: Any, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ValidationError(field, "expected a single-line string")
    return value.strip()


def normalize_spec(spec: Mapping[str, Any], catalog: Catalog, default_acceptance: str) -> dict[str, Any]:
    """Validate an ``esxi`` spec against the imported depots and return its normal form."""
    if "kickstart" in spec:
        raise ValidationError("spec.kickstart", (
            "an image profile no longer carries the kickstart (anyone who knew a MAC could read it): put the ks.cfg "
            "in a host profile of kind kickstart (bootbox hostprofile add), give the hosts a rule item "
            "host_profile=NAME, and remove kickstart from this spec"))
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise ValidationError(f"spec.{unknown[0]}", f"unknown field; known: {', '.join(FIELDS)}")
    raw_vibs = spec.get("vibs")
    if not isinstance(raw_vibs, list) or not raw_vibs or not all(isinstance(v, str) and v for v in raw_vibs):
        raise ValidationError("spec.vibs", "expected a non-empty list of VIB IDs (or names)")
    ids: list[str] = []
    for i, ref in enumerate(raw_vibs):
        try:
            ids.append(catalog.resolve(ref).id)
        except NotFound as exc:
            raise ValidationError(f"spec.vibs[{i}]", str(exc)) from None
    acceptance = normalize_level(spec.get("acceptance") or default_acceptance, "spec.acceptance")
    mode = spec.get("mode") or "stateless"
    if mode not in MODES:
        raise ValidationError("spec.mode", f"{mode!r} is not one of {', '.join(MODES)}")
    kernelopt = _line("spec.kernelopt", spec.get("kernelopt"))
    if "runweasel" in kernelopt.split():
        raise ValidationError("spec.kernelopt", "runweasel starts the installer; use mode=install instead")
    loaders = spec.get("loaders") or {}
    if not isinstance(loaders, Mapping):
        raise ValidationError("spec.loaders", "expected {efi, c32, pxelinux, ldlinux: absolute paths}")
    for key, path in loaders.items():
        if key not in LOADER_NAMES:
            raise ValidationError(f"spec.loaders.{key}", f"unknown loader; known: {', '.join(LOADER_NAMES)}")
        if not isinstance(path, str) or not Path(path).is_absolute() or not Path(path).is_file():
            raise ValidationError(f"spec.loaders.{key}", f"{path!r} is not an existing absolute file path")
    vibs = [catalog.vib(vib_id) for vib_id in dict.fromkeys(ids)]
    check(vibs, acceptance, mode).raise_first()
    return {
        "vibs": [v.id for v in vibs],
        "acceptance": acceptance,
        "mode": mode,
        "kernelopt": kernelopt,
        "vendor": _line("spec.vendor", spec.get("vendor"), "bootbox") or "bootbox",
        "loaders": dict(loaders),
        "build": _line("spec.build", spec.get("build")),
        "source": _line("spec.source", spec.get("source")),
    }


def _provides(vibs: Iterable[Vib]) -> dict[str, list[str | None]]:
    """Name → versions available: every VIB provides itself, plus its ``provides`` entries."""
    table: dict[str, list[str | None]] = {}
    for vib in vibs:
        table.setdefault(vib.name, []).append(vib.version)
        for p in vib.provides:
            table.setdefault(p.name, []).append(p.version or None)
    return table


def _met(rel: Relation, table: Mapping[str, list[str | None]]) -> bool:
    return any(satisfies(v, rel.relation, rel.version) for v in table.get(rel.name, []))


def check(vibs: list[Vib], acceptance: str, mode: str) -> Rules:
    """Every rule over the VIB set, as a list of messages that say what to do."""
    problems: list[str] = []
    by_name: dict[str, Vib] = {}
    for vib in vibs:
        if vib.name in by_name:
            problems.append(f"two versions of VIB {vib.name} ({by_name[vib.name].version} and {vib.version}); "
                            "keep one (`profile add-vib` replaces the older)")
        by_name[vib.name] = vib
    for vib in vibs:
        if rank(vib.acceptance) < rank(acceptance):
            problems.append(
                f"VIB {vib.id} is {long_name(vib.acceptance)}, below the profile's {long_name(acceptance)}; "
                f"lower the profile's acceptance to {long_name(vib.acceptance)} to include it"
            )
    table = _provides(vibs)
    for vib in vibs:
        for dep in vib.depends:
            if not _met(dep, table):
                problems.append(f"VIB {vib.id} depends on {dep}, which no VIB in the profile provides; add it")
        for conflict in vib.conflicts:
            others = [v for v in vibs if v is not vib]
            if _met(conflict, _provides(others)):
                problems.append(f"VIB {vib.id} conflicts with {conflict}; remove one of them")
        for old in vib.replaces:
            victims = [v for v in vibs if v.name == old.name and v is not vib
                       and satisfies(v.version, old.relation, old.version)]
            if victims:
                problems.append(f"VIB {vib.id} replaces {victims[0].id}; remove {victims[0].name}")
    if mode == "stateless":
        for vib in vibs:
            if not vib.stateless_ready:
                problems.append(f"VIB {vib.id} is not stateless-ready, so it cannot be in a profile that boots "
                                "stateless; remove it or use mode=install")
    try:
        image.allocate_modules(vibs)
    except ValueError as exc:
        problems.append(str(exc))
    return Rules(tuple(problems))


def add_vib(spec: Mapping[str, Any], vib: Vib, catalog: Catalog, acceptance: str | None = None
            ) -> tuple[dict[str, Any], list[str]]:
    """The spec with ``vib`` added (replacing another version of it); the changes, for people."""
    level = spec["acceptance"]
    changes: list[str] = []
    if acceptance is not None:
        new_level = normalize_level(acceptance, "acceptance")
        if new_level != level:
            changes.append(f"acceptance {long_name(level)} -> {long_name(new_level)}")
            level = new_level
    if rank(vib.acceptance) < rank(level):
        raise ValidationError("vib", f"VIB {vib.id} is {long_name(vib.acceptance)}, below the profile's "
                              f"{long_name(level)}; add it with --acceptance {long_name(vib.acceptance)} to lower "
                              "the profile explicitly")
    ids = []
    for vib_id in spec["vibs"]:
        current = catalog.vib(vib_id)
        if current.name == vib.name and current.id != vib.id:
            word = "upgraded" if compare(vib.version, current.version) > 0 else "downgraded"
            changes.append(f"{word} {vib.name} {current.version} -> {vib.version}")
            continue
        ids.append(vib_id)
    if vib.id in ids:
        raise ValidationError("vib", f"VIB {vib.id} is already in the profile")
    if not any(c.startswith(("upgraded", "downgraded")) for c in changes):
        changes.append(f"added {vib.id}")
    ids.append(vib.id)
    return {**spec, "vibs": ids, "acceptance": level}, changes


def remove_vib(spec: Mapping[str, Any], ref: str, catalog: Catalog) -> tuple[dict[str, Any], list[str]]:
    """The spec without the VIB named ``ref`` (ID or name); refused while others depend on it."""
    vibs = [catalog.vib(vib_id) for vib_id in spec["vibs"]]
    target = next((v for v in vibs if ref in (v.id, v.name)), None)
    if target is None:
        raise ValidationError("vib", f"the profile has no VIB {ref!r}")
    rest = [v for v in vibs if v is not target]
    table = _provides(rest)
    for vib in rest:
        for dep in vib.depends:
            if not _met(dep, table) and _met(dep, _provides([target])):
                raise ValidationError("vib", f"{target.name} is required by {vib.id} ({dep}); remove {vib.name} first")
    return {**spec, "vibs": [v.id for v in rest]}, [f"removed {target.id}"]


def diff(a: Mapping[str, Any], b: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """What differs between two image views (``{"name", "acceptance", "mode", "vibs"}``)."""

    def named(view: Mapping[str, Any]) -> dict[str, str]:
        found = {}
        for vib_id in view["vibs"]:
            vib = catalog.vib(vib_id) if catalog.has(vib_id) else None
            found[vib.name if vib else vib_id] = vib.version if vib else "(not imported)"
        return found

    left, right = named(a), named(b)
    return {
        "a": a["name"],
        "b": b["name"],
        "only_a": sorted(f"{n} {v}" for n, v in left.items() if n not in right),
        "only_b": sorted(f"{n} {v}" for n, v in right.items() if n not in left),
        "changed": sorted(f"{n} {left[n]} -> {right[n]}" for n in left if n in right and left[n] != right[n]),
        "same": sum(1 for n in left if n in right and left[n] == right[n]),
        "settings": {key: [a.get(key), b.get(key)] for key in ("acceptance", "mode")
                     if a.get(key) != b.get(key)},
    }

