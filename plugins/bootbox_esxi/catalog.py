"""What has been imported: VIB metadata in the plugin's store, payloads as content-addressed files.

Each payload (and each descriptor and signature) is written once to
``<data_dir>/blobs/<sha[:2]>/<sha256>`` no matter how many depots or profiles contain it, so
ten image profiles built from one depot cost one copy of the depot. Everything written goes
through a temporary file under ``<data_dir>/tmp`` and an atomic rename, so a crash mid-import
leaves no half-written blob under a real name.

The metadata lives in the plugin's own store tables (``vibs``, ``depots``, ``depot_profiles``)
and in memory. The boot path only reads memory; an import replaces the in-memory maps in one
assignment after its store batch has landed, so readers see the catalog before or after an
import, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from bootbox import NotFound, PluginStore
from bootbox_esxi.versions import compare
from bootbox_esxi.vib import Vib

VIBS = "vibs"
DEPOTS = "depots"
DEPOT_PROFILES = "depot_profiles"


class BlobStore:
    """Content-addressed files under one root directory (inside the plugin's data dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.blobs = root / "blobs"
        for path in (self.tmp, self.blobs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.created: set[str] | None = None
        """When a set, the sha of every blob this store creates is added (for rollback)."""

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(ch not in "0123456789abcdef" for ch in sha256):
            raise NotFound(f"{sha256!r} is not a content address")
        return self.blobs / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self) -> "BlobWriter":
        return BlobWriter(self)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            writer = self.writer()
            writer.write(data)
            writer.commit(sha)
        return sha

    def read_bytes(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def remove(self, shas: Iterable[str]) -> None:
        for sha in shas:
            try:
                self.path(sha).unlink()
            except FileNotFoundError:
                pass


class BlobWriter:
    """One blob being written: a temp file until ``commit`` renames it to its address."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(prefix="blob-", dir=store.tmp)
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    def commit(self, sha256: str) -> None:
        """Move the data to its content address (``sha256`` must be what was written)."""
        self._file.close()
        if self._hash.hexdigest() != sha256:
            self.abort()
            raise ValueError("blob written does not match its declared sha-256")
        target = self._store.path(sha256)
        if target.is_file():
            self._path.unlink()
            return
        target.parent.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self._path, 0o644)
        os.replace(self._path, target)
        if self._store.created is not None:
            self._store.created.add(sha256)

    def abort(self) -> None:
        self._file.close()
        try:
            self._path.unlink()
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class DepotProfile:
    """An image profile a depot brings (read-only; clone it to change it)."""

    depot: str
    name: str
    vendor: str = ""
    description: str = ""
    acceptance: str = "partner"
    vibs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.depot}/{self.name}"

    def to_doc(self) -> dict[str, Any]:
        return {"depot": self.depot, "name": self.name, "vendor": self.vendor, "description": self.description,
                "acceptance": self.acceptance, "vibs": list(self.vibs)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "DepotProfile":
        return cls(**{**doc, "vibs": tuple(doc.get("vibs", []))})


@dataclass
class _Snapshot:
    vibs: dict[str, Vib] = field(default_factory=dict)
    depots: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, DepotProfile] = field(default_factory=dict)
    generation: int = 0


class Catalog:
    """Imported VIBs, depots and depot profiles: store-backed, served from memory."""

    def __init__(self, store: PluginStore, blobs: BlobStore) -> None:
        self._store = store
        self.blobs = blobs
        self._lock = threading.Lock()
        self._snap = _Snapshot(
            vibs={key: Vib.from_doc(doc) for key, doc in store.all(VIBS).items()},
            depots=store.all(DEPOTS),
            profiles={key: DepotProfile.from_doc(doc) for key, doc in store.all(DEPOT_PROFILES).items()},
        )

    @property
    def generation(self) -> int:
        """Changes whenever the catalog does (caches of rendered images key on it)."""
        return self._snap.generation

    # ------------------------------------------------------------------ reading

    def vibs(self) -> list[Vib]:
        return sorted(self._snap.vibs.values(), key=lambda v: (v.name, v.vendor, v.version))

    def has(self, vib_id: str) -> bool:
        return vib_id in self._snap.vibs

    def vib(self, vib_id: str) -> Vib:
        try:
            return self._snap.vibs[vib_id]
        except KeyError:
            raise NotFound(f"VIB {vib_id!r} is not in any imported depot; `bootbox vib list` shows what is") from None

    def resolve(self, ref: str) -> Vib:
        """A VIB by ID, or by name (the newest version of that name among all depots)."""
        snap = self._snap
        if ref in snap.vibs:
            return snap.vibs[ref]
        named = [v for v in snap.vibs.values() if v.name == ref]
        if not named:
            raise NotFound(f"no imported VIB has the ID or name {ref!r}; `bootbox vib list` shows what is")
        newest = named[0]
        for candidate in named[1:]:
            if compare(candidate.version, newest.version) > 0:
                newest = candidate
        return newest

    def depots(self) -> list[dict[str, Any]]:
        return sorted(self._snap.depots.values(), key=lambda d: d["id"])

    def depot(self, depot_id: str) -> dict[str, Any]:
        try:
            return self._snap.depots[depot_id]
        except KeyError:
            raise NotFound(f"depot {depot_id!r} is not imported; `bootbox depot list` shows what is") from None

    def depot_profiles(self, depot: str | None = None) -> list[DepotProfile]:
        profiles = self._snap.profiles.values()
        return sorted((p for p in profiles if depot is None or p.depot == depot), key=lambda p: p.key)

    def depot_profile(self, name: str) -> DepotProfile:
        """By ``depot/name`` or by a name only one depot uses."""
        snap = self._snap
        if name in snap.profiles:
            return snap.profiles[name]
        matches = [p for p in snap.profiles.values() if p.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NotFound(f"several depots bring an image profile {name!r}; name it as DEPOT/{name}")
        raise NotFound(f"no image profile {name!r}: not a bootbox profile and no depot brings one")

    def depots_of(self, vib_id: str) -> list[str]:
        return sorted(d["id"] for d in self._snap.depots.values() if vib_id in d.get("vibs", []))

    def referenced(self) -> set[str]:
        """Every blob a VIB in the catalog is made of (descriptor, signature, payloads)."""
        return {m.sha256 for v in self._snap.vibs.values() for m in v.members}

    def descriptor(self, vib: Vib) -> bytes:
        return self.blobs.read_bytes(vib.descriptor_sha256)

    def payload_path(self, sha256: str) -> Path:
        return self.blobs.path(sha256)

    # ------------------------------------------------------------------ writing

    def commit(self, depot: dict[str, Any], vibs: list[Vib], profiles: list[DepotProfile]) -> None:
        """Record one import: its VIBs, the depot and its profiles, in one store batch."""
        with self._lock:
            old = self._snap
            stale = [key for key, p in old.profiles.items() if p.depot == depot["id"]]
            with self._store.batch():
                if vibs:
                    self._store.put_many(VIBS, {v.id: v.to_doc() for v in vibs})
                self._store.put(DEPOTS, depot["id"], depot)
                for key in stale:
                    self._store.delete(DEPOT_PROFILES, key)
                if profiles:
                    self._store.put_many(DEPOT_PROFILES, {p.key: p.to_doc() for p in profiles})
            new_profiles = {k: p for k, p in old.profiles.items() if k not in stale}
            new_profiles.update({p.key: p for p in profiles})
            self._snap = _Snapshot(
                vibs={**old.vibs, **{v.id: v for v in vibs}},
                depots={**old.depots, depot["id"]: depot},
                profiles=new_profiles,
                generation=old.generation + 1,
            )

    def remove_depot(self, depot_id: str, vib_ids: Iterable[str]) -> list[Vib]:
        """Forget a depot, its image profiles and ``vib_ids`` (those no other depot lists), in one
        store batch; returns the VIBs forgotten (their blobs are the caller's to delete)."""
        with self._lock:
            old = self._snap
            if depot_id not in old.depots:
                raise NotFound(f"depot {depot_id!r} is not imported; `bootbox depot list` shows what is")
            gone = [old.vibs[v] for v in vib_ids if v in old.vibs]
            stale = [key for key, p in old.profiles.items() if p.depot == depot_id]
            with self._store.batch():
                self._store.delete(DEPOTS, depot_id)
                for key in stale:
                    self._store.delete(DEPOT_PROFILES, key)
                for vib in gone:
                    self._store.delete(VIBS, vib.id)
            self._snap = _Snapshot(
                vibs={k: v for k, v in old.vibs.items() if k not in {g.id for g in gone}},
                depots={k: d for k, d in old.depots.items() if k != depot_id},
                profiles={k: p for k, p in old.profiles.items() if k not in stale},
                generation=old.generation + 1,
            )
        return gone
