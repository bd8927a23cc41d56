"""What one host boots: its image profile plus the VIBs plugins inject, as boot modules.

The boot modules of an image are the payloads of its VIBs whose type ESXi's loader loads:
``boot`` (``.b00``: the kernel and early modules), ``vgz``/``tgz`` (``.v00``/``.t00``: vmtar
archives) and ``gz`` (``jumpstrt.gz``-style). Each is loaded under an 8.3 name:

* the payload's ``vfatname`` when the descriptor gives one (two payloads asking for the same
  name make the image invalid: the loader would load one and silently drop the other);
* otherwise ``<payload name, 8 chars, [a-z0-9_]>.<type letter><NN>``, NN counting up from 00
  past names already taken. That is the pattern real ESXi media show (``lsi_msgp.v00``,
  ``lsi_msgp.v01`` … for several VIBs whose payloads share a name) [I]; real VIBs built by
  vibauthor, like the shared ghettoVCB one, carry no ``vfatname`` at all.

Order (boot.cfg's ``modules=``): ``gz`` payloads, then ``boot``, then ``vgz``/``tgz``; within a
type by the payload's ``bootorder`` attribute when present, then by the profile's VIB order. The
first ``boot`` payload is the ``kernel=``. This reproduces the 7.0.3 ISO's
``kernel=b.b00`` / ``jumpstrt.gz --- useropts.gz --- features.gz --- k.b00 …`` for a base VIB
whose payloads come in that order; it was not checked against VMware's own ordering code.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from bootbox_esxi.callin import MODULE as CALLIN_MODULE
from bootbox_esxi.vib import Payload, Vib

TYPE_LETTERS = {"boot": "b", "vgz": "v", "tgz": "t"}
TYPE_RANK = {"gz": 0, "boot": 1, "vgz": 2, "tgz": 2}
IMGDB = "imgdb.tgz"
RESERVED = frozenset({IMGDB, CALLIN_MODULE, "boot.cfg", "mboot.efi", "mboot.c32", "pxelinux.0", "ldlinux.c32",
                      "pxelinux.cfg"})
"""Names bootbox itself loads or serves beside the payloads (imgdb.tgz, the stateless call-in
module, boot.cfg, the loaders); no payload may take them, since ESXi would then see two
modules of one name."""


@dataclass(frozen=True)
class Module:
    """One boot module: the file name it loads under and the payload blob behind it."""

    name: str
    vib: str
    payload: str
    type: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Image:
    """The resolved image of one host: profile VIBs + injected ones, as modules."""

    profile: str
    acceptance: str
    mode: str
    vendor: str
    kernelopt: str
    build: str
    vibs: tuple[Vib, ...]
    kernel: Module
    modules: tuple[Module, ...]
    injected: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    loaders: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Digest of everything that shapes the served files (imgdb.tgz included)."""
        doc = {
            "profile": self.profile, "acceptance": self.acceptance, "vendor": self.vendor,
            "vibs": [v.id for v in self.vibs], "injected": list(self.injected),
            "modules": [[m.name, m.sha256] for m in (self.kernel, *self.modules)],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    def module(self, name: str) -> Module | None:
        return next((m for m in (self.kernel, *self.modules) if m.name == name), None)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "profile": self.profile,
            "acceptance": self.acceptance,
            "mode": self.mode,
            "vibs": [{"id": v.id, "name": v.name, "version": v.version, "acceptance": v.acceptance,
                      "injected": v.id in self.injected} for v in self.vibs],
            "refused": [{"vib": ref, "reason": reason} for ref, reason in self.refused],
            "kernel": self.kernel.name,
            "modules": [{"name": m.name, "vib": m.vib, "payload": m.payload, "size": m.size, "sha256": m.sha256}
                        for m in (self.kernel, *self.modules)],
        }


def _base(payload: Payload) -> str:
    return re.sub(r"[^a-z0-9_]", "_", payload.name.lower())[:8] or "payload"


def allocate_modules(vibs: Sequence[Vib]) -> tuple[Module, tuple[Module, ...]]:
    """Name and order the boot modules of ``vibs``: ``(kernel, other modules)``.

    :raises ValueError: two payloads claim one module name, or there is no kernel.
    """
    modules = name_modules(vibs)
    kernel = next((m for m in modules if m.type == "boot"), None)
    if kernel is None:
        raise ValueError("the image has no bootable kernel (a payload of type boot); add the base ESXi VIB (esx-base)")
    return kernel, tuple(m for m in modules if m is not kernel)


def name_modules(vibs: Sequence[Vib]) -> list[Module]:
    """Every boot module of ``vibs``, named and in boot order (no kernel required).

    :raises ValueError: two payloads claim one module name.
    """
    candidates: list[tuple[tuple[int, int, int], Vib, Payload]] = []
    index = 0
    for vib in vibs:
        for payload in vib.payloads:
            if payload.type in TYPE_RANK:
                key = (TYPE_RANK[payload.type], payload.bootorder if payload.bootorder is not None else 10**6, index)
                candidates.append((key, vib, payload))
                index += 1
    taken: dict[str, str] = {name: "bootbox" for name in RESERVED}
    names: dict[int, str] = {}
    for i, (_, vib, payload) in enumerate(candidates):
        wanted = payload.vfatname or (f"{_base(payload)}.gz" if payload.type == "gz" else None)
        if wanted is None:
            continue
        owner = taken.get(wanted.lower())
        if owner is not None:
            other = "bootbox's own files" if owner == "bootbox" else f"VIB {owner}"
            raise ValueError(f"VIB {vib.id} payload {payload.name} would load as module {wanted}, which "
                             f"{other} already uses; remove one of them")
        taken[wanted.lower()] = vib.id
        names[i] = wanted
    for i, (_, vib, payload) in enumerate(candidates):
        if i in names:
            continue
        n = 0
        while f"{_base(payload)}.{TYPE_LETTERS[payload.type]}{n:02d}" in taken:
            n += 1
        name = f"{_base(payload)}.{TYPE_LETTERS[payload.type]}{n:02d}"
        taken[name] = vib.id
        names[i] = name
    ordered = sorted(range(len(candidates)), key=lambda i: candidates[i][0])
    return [
        Module(name=names[i], vib=candidates[i][1].id, payload=candidates[i][2].name, type=candidates[i][2].type,
               sha256=candidates[i][2].sha256, size=candidates[i][2].size)
        for i in ordered
    ]
