"""Resolving a host's image: its ``esxi`` profile plus the VIBs plugins inject for it.

Injection happens at boot (``bootbox_image_inject``: e.g. the vCloud Director agent for hosts
in a vCD group), so it cannot be validated when the profile is saved. Each injected VIB is
applied as ``profile add-vib`` would (a newer version replaces the profile's) and checked
against the same rules; one that would break the image (below the profile's acceptance level,
not stateless-ready, a conflict, a module-name clash, not imported) is left out and reported in
``refused``, so the host still boots its profile and the operator sees why the VIB is missing
(``bootbox host image MAC`` and the host's timeline).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from bootbox import BootboxError, NotFound
from bootbox_esxi import image
from bootbox_esxi.catalog import Catalog
from bootbox_esxi.imageprofile import check
from bootbox_esxi.versions import long_name, rank
from bootbox_esxi.vib import Vib


class ImageError(BootboxError):
    """The profile cannot be turned into a bootable image any more (e.g. a depot was replaced)."""


def resolve(profile: str, spec: Mapping[str, Any], catalog: Catalog, injected: Sequence[str]) -> image.Image:
    """The image ``profile`` (with ``spec``) gives a host that plugins add ``injected`` to."""
    try:
        vibs = [catalog.vib(vib_id) for vib_id in spec.get("vibs", [])]
    except NotFound as exc:
        raise ImageError(f"image profile {profile}: {exc}") from None
    acceptance, mode = spec.get("acceptance", "partner"), spec.get("mode", "stateless")
    problems = check(vibs, acceptance, mode).problems
    if problems:
        raise ImageError(f"image profile {profile} is no longer valid: {problems[0]}")
    added: list[str] = []
    refused: list[tuple[str, str]] = []
    for ref in dict.fromkeys(injected):
        try:
            vib = catalog.resolve(ref)
        except NotFound as exc:
            refused.append((ref, str(exc)))
            continue
        if any(v.id == vib.id for v in vibs):
            continue
        reason = _why_not(vib, vibs, acceptance, mode)
        if reason:
            refused.append((vib.id, reason))
            continue
        vibs = [v for v in vibs if v.name != vib.name] + [vib]
        added.append(vib.id)
    kernel, modules = image.allocate_modules(vibs)
    base = next(v for v in vibs if v.id == kernel.vib)
    return image.Image(
        profile=profile,
        acceptance=acceptance,
        mode=mode,
        vendor=spec.get("vendor", "bootbox"),
        kernelopt=spec.get("kernelopt", ""),
        build=spec.get("build") or base.version,
        vibs=tuple(vibs),
        kernel=kernel,
        modules=modules,
        injected=tuple(added),
        refused=tuple(refused),
        loaders=dict(spec.get("loaders") or {}),
    )


def _why_not(vib: Vib, vibs: list[Vib], acceptance: str, mode: str) -> str:
    """Why ``vib`` cannot join ``vibs`` (empty when it can)."""
    if rank(vib.acceptance) < rank(acceptance):
        return (f"{long_name(vib.acceptance)} is below the profile's {long_name(acceptance)}; lower the profile's "
                "acceptance to inject it")
    candidate = [v for v in vibs if v.name != vib.name] + [vib]
    problems = check(candidate, acceptance, mode).problems
    return problems[0] if problems else ""
