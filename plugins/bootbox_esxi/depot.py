"""``bootbox depot add``: import an offline bundle, an online depot or a directory of VIBs.

One import reads each VIB once, as a stream, verifying it on the way (the whole file against
the depot metadata's sha-256 and size, each payload against its descriptor), and writes each
payload once into the content-addressed blob store. Only when every VIB has verified is the
catalog updated, in one store batch; if anything fails, the blobs this import created are
removed again and the catalog is untouched. The error names the VIB and what was wrong.

Nothing is written outside the plugin's data directory: members are never extracted by name,
downloads and metadata zips go to its ``tmp`` folder, and blobs are named by their sha-256.

Community VIBs are rebuilt without a new version, so a VIB ID can arrive again with other bytes.
A plain import refuses that (two files under one ID would make "the image of this profile"
ambiguous); ``replace=True`` (``bootbox depot add --replace``) takes the new build instead: it is
verified like any VIB, the catalog then holds it under the same ID, the result lists each
replaced VIB with its old and new sha-256, and blobs only the old build used are deleted after
the catalog moved on. ``remove`` forgets a depot (see :mod:`bootbox_esxi.housekeeping` for the
checks against image profiles in use).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bootbox_esxi import metadata as M
from bootbox_esxi import sources, zipsafe
from bootbox_esxi.catalog import Catalog, DepotProfile
from bootbox_esxi.sources import DirSource, Source, UrlSource, ZipSource
from bootbox_esxi.vib import Vib
from bootbox_esxi.vibread import read_vib
from bootbox_esxi.xmlutil import DepotError


@dataclass(frozen=True)
class Limits:
    """Size limits for untrusted input (``plugins.esxi.max_vib_bytes``)."""

    max_vib_bytes: int = 4 << 30
    max_bundle_bytes: int = 64 << 30


@dataclass
class Progress:
    """What an import has done so far; the API reports it and the CLI draws a bar from it."""

    total: int = 0
    done: int = 0
    phase: str = "starting"
    current: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)

    def advance(self, count: int) -> None:
        if self.cancelled.is_set():
            raise DepotError("the import was cancelled (the appliance is stopping)")
        self.done += count

    def snapshot(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "phase": self.phase, "current": self.current}


@dataclass(frozen=True)
class _Planned:
    entry: M.VibEntry
    ref: str


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug[:64] or "depot"


class Importer:
    """Runs one import at a time against a catalog (imports are serialised by a lock)."""

    _lock = threading.Lock()

    def __init__(self, catalog: Catalog, limits: Limits) -> None:
        self.catalog = catalog
        self.limits = limits
        self._replace = False
        self._replaced: dict[str, Vib] = {}

    def run(self, source: str, progress: Progress | None = None, *, replace: bool = False) -> dict[str, Any]:
        """Import ``source`` (absolute path or http(s) URL); return the depot record, plus
        ``replaced`` (``[{vib, old_sha256, new_sha256}]``) when ``replace`` took rebuilt VIBs."""
        progress = progress or Progress()
        with self._lock:
            blobs = self.catalog.blobs
            blobs.created = set()
            self._replace, self._replaced = replace, {}
            temps: list[Path] = []
            try:
                depot = self._import(source, progress, temps)
            except BaseException:
                blobs.remove(blobs.created)
                raise
            finally:
                blobs.created = None
                for temp in temps:
                    sources.remove_quietly(temp)
            replaced = [{"vib": vib_id, "old_sha256": old.sha256, "new_sha256": self.catalog.vib(vib_id).sha256}
                        for vib_id, old in sorted(self._replaced.items())]
            self._forget_blobs(self._replaced.values())
        progress.phase = "done"
        return {**depot, "replaced": replaced} if replace else depot

    def remove(self, depot_id: str, vib_ids: list[str]) -> list[Vib]:
        """Forget ``depot_id`` and ``vib_ids`` (serialised with imports); delete their blobs."""
        with self._lock:
            gone = self.catalog.remove_depot(depot_id, vib_ids)
            self._forget_blobs(gone)
        return gone

    def _forget_blobs(self, vibs: Iterable[Vib]) -> None:
        """Delete the blobs of ``vibs`` that no VIB in the catalog is made of any more."""
        orphans = {m.sha256 for vib in vibs for m in vib.members} - self.catalog.referenced()
        self.catalog.blobs.remove(orphans)

    # ------------------------------------------------------------------ dispatch

    def _import(self, source: str, progress: Progress, temps: list[Path]) -> dict[str, Any]:
        tmp = self.catalog.blobs.tmp
        if source.startswith(("http://", "https://")):
            if urllib.parse.urlsplit(source).path.endswith(".zip"):
                progress.phase = "downloading"

                def start(size: int | None) -> None:
                    progress.total = size or 0

                temp = sources.download(source, tmp, self.limits.max_bundle_bytes, start, progress.advance)
                temps.append(temp)
                return self._bundle(str(temp), source, "bundle", progress, temps)
            return self._tree(UrlSource(source), source, source, "online", progress, temps)
        path = Path(source)
        if not path.is_absolute():
            raise DepotError(f"{source!r}: give an absolute path on the appliance or an http(s) URL")
        if path.is_dir():
            if (path / "index.xml").is_file():
                return self._tree(DirSource(path), "index.xml", source, "directory", progress, temps)
            return self._loose([p for p in sorted(path.iterdir()) if p.name.endswith(".vib")], source, progress)
        if not path.is_file():
            raise DepotError(f"{source} does not exist on the appliance")
        if path.name.endswith(".vib"):
            return self._loose([path], source, progress)
        return self._bundle(str(path), source, "bundle", progress, temps)

    def _bundle(self, path: str, source: str, kind: str, progress: Progress, temps: list[Path]) -> dict[str, Any]:
        name = Path(urllib.parse.urlsplit(source).path).name or source
        zf = zipsafe.open_zip(path, name)
        with zf:
            zsource = ZipSource(zf, name)
            if zipsafe.has(zf, "index.xml"):
                return self._tree(zsource, "index.xml", source, kind, progress, temps)
            if zipsafe.has(zf, "metadata.zip"):  # a bundle without indexes: still readable
                return self._from_metadata(zsource, ["metadata.zip"], source, kind, progress, temps)
            raise DepotError(f"{name} has neither index.xml nor metadata.zip; it is not an offline bundle")

    # ------------------------------------------------------------------ depot trees

    def _tree(self, src: Source, index: str, source: str, kind: str, progress: Progress,
              temps: list[Path]) -> dict[str, Any]:
        progress.phase = "reading metadata"
        meta_refs = []
        for vendor_path in M.parse_index(src.read(index, M.MAX_XML), f"{src.name}:index.xml"):
            vendor_ref = src.join(index, vendor_path)
            for url in M.parse_vendor_index(src.read(vendor_ref, M.MAX_XML), f"{src.name}:{vendor_path}"):
                meta_refs.append(src.join(vendor_ref, url))
        return self._from_metadata(src, meta_refs, source, kind, progress, temps)

    def _from_metadata(self, src: Source, meta_refs: list[str], source: str, kind: str, progress: Progress,
                       temps: list[Path]) -> dict[str, Any]:
        planned: dict[str, _Planned] = {}
        profiles: list[DepotProfile] = []
        bulletins: dict[str, list[str]] = {}
        for ref in dict.fromkeys(meta_refs):
            stream, _ = src.open(ref, M.MAX_METADATA_ZIP)
            with stream:
                temp = sources.copy_to_temp(stream, self.catalog.blobs.tmp, M.MAX_METADATA_ZIP, ref)
            temps.append(temp)
            with zipsafe.open_zip(str(temp), ref) as zf:
                meta = M.parse_metadata_zip(zf, f"{src.name}:{ref}")
            for vib_id, entry in meta.vibs.items():
                if not entry.relative_path and not entry.source_url:
                    raise DepotError(f"{src.name}: the metadata does not say where VIB {vib_id} is")
                target = entry.source_url if entry.source_url and isinstance(src, UrlSource) else entry.relative_path
                planned.setdefault(vib_id, _Planned(entry, src.join(ref, target)))
            profiles += meta.profiles
            bulletins.update(meta.bulletins)
        if not planned:
            raise DepotError(f"{src.name}: the depot metadata lists no VIBs")
        progress.phase = "verifying VIBs"
        progress.total, progress.done = sum(p.entry.packed_size or 0 for p in planned.values()), 0
        vibs = [self._vib(src, planned[vib_id], progress) for vib_id in sorted(planned)]
        return self._commit(source, kind, vibs, profiles, bulletins)

    def _vib(self, src: Source, plan: _Planned, progress: Progress) -> Vib:
        entry = plan.entry
        what = f"VIB {entry.id}"
        progress.current = entry.id
        if entry.packed_size is not None and entry.packed_size > self.limits.max_vib_bytes:
            raise DepotError(f"{what} declares {entry.packed_size} bytes, more than the "
                             f"{self.limits.max_vib_bytes}-byte limit (plugins.esxi.max_vib_bytes)")
        known = self._known(entry)
        if known is not None:
            progress.advance(known.size)
            return known
        stream, size = src.open(plan.ref, self.limits.max_vib_bytes)
        with stream:
            if entry.packed_size is not None and size is not None and size != entry.packed_size:
                raise DepotError(f"{what} is corrupt: {plan.ref} is {size} bytes, the depot metadata says "
                                 f"{entry.packed_size}")
            vib = read_vib(stream, what, limit=self.limits.max_vib_bytes, new_blob=self.catalog.blobs.writer,
                           expected=entry.descriptor, progress=progress.advance)
        if vib.id != entry.id:
            raise DepotError(f"{what}: the file at {plan.ref} is VIB {vib.id}, not the one the metadata names")
        if entry.sha256 and vib.sha256 != entry.sha256:
            raise DepotError(f"{what} is corrupt: its sha-256 is {vib.sha256}, the depot metadata says {entry.sha256}")
        if entry.packed_size is not None and vib.size != entry.packed_size:
            raise DepotError(f"{what} is corrupt: it is {vib.size} bytes, the depot metadata says {entry.packed_size}")
        self._rebuilt(vib, plan.ref)
        return vib

    def _rebuilt(self, vib: Vib, where: str) -> None:
        """A VIB whose ID the catalog has with other bytes: noted for replacement, or refused."""
        if not self.catalog.has(vib.id) or self.catalog.vib(vib.id).sha256 == vib.sha256:
            return
        if not self._replace:
            raise DepotError(f"{where}: VIB {vib.id} was already imported with different content; to take this "
                             "rebuild in its place, import with --replace")
        self._replaced.setdefault(vib.id, self.catalog.vib(vib.id))

    def _known(self, entry: M.VibEntry) -> Vib | None:
        """An already-imported, identical VIB (skip reading it again), or None."""
        if not self.catalog.has(entry.id):
            return None
        old = self.catalog.vib(entry.id)
        if entry.sha256 and entry.sha256 != old.sha256:
            if self._replace:
                return None
            raise DepotError(f"VIB {entry.id} was already imported with sha-256 {old.sha256}; this depot's copy "
                             f"has {entry.sha256}. Two different files cannot share one VIB ID: to take this "
                             "rebuild in its place, import with --replace")
        if not entry.sha256 or not all(self.catalog.blobs.has(m.sha256) for m in old.members):
            return None
        return old

    # ------------------------------------------------------------------ loose VIBs

    def _loose(self, files: list[Path], source: str, progress: Progress) -> dict[str, Any]:
        files = [f for f in files if f.is_file() and not f.is_symlink()]
        if not files:
            raise DepotError(f"{source}: no .vib files found")
        progress.phase = "verifying VIBs"
        progress.total, progress.done = sum(f.stat().st_size for f in files), 0
        vibs: dict[str, Vib] = {}
        for path in files:
            progress.current = path.name
            with path.open("rb") as stream:
                vib = read_vib(stream, f"VIB file {path.name}", limit=self.limits.max_vib_bytes,
                               new_blob=self.catalog.blobs.writer, progress=progress.advance)
            self._rebuilt(vib, path.name)
            vibs[vib.id] = vib
        return self._commit(source, "vibs", list(vibs.values()), [], {})

    # ------------------------------------------------------------------ the record

    def _commit(self, source: str, kind: str, vibs: list[Vib], profiles: list[DepotProfile],
                bulletins: dict[str, list[str]]) -> dict[str, Any]:
        depot_id = self._depot_id(source)
        depot = {
            "id": depot_id,
            "source": source,
            "kind": kind,
            "imported_at": time.time(),
            "vibs": sorted(v.id for v in vibs),
            "profiles": sorted(p.name for p in profiles),
            "bulletins": bulletins,
            "bytes": sum(v.size for v in vibs),
        }
        self.catalog.commit(depot, vibs, [DepotProfile(**{**p.to_doc(), "depot": depot_id}) for p in profiles])
        return depot

    def _depot_id(self, source: str) -> str:
        for depot in self.catalog.depots():
            if depot["source"] == source:
                return str(depot["id"])
        path = urllib.parse.urlsplit(source).path.rstrip("/")
        stem = Path(path).name
        if stem in ("index.xml", "") or stem.endswith(".xml"):
            stem = Path(path).parent.name or urllib.parse.urlsplit(source).netloc
        for suffix in (".zip", ".vib"):
            stem = stem.removesuffix(suffix)
        base = _slug(stem)
        taken = {d["id"] for d in self.catalog.depots()}
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

