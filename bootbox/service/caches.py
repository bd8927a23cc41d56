"""Content-addressed boot files: their SHA-256, the URLs a host fetches them by, and serving them.

When a host's group has caches (``[groups.NAME] cache_urls``), a boot kind asks
:func:`asset_urls` for a file's URLs while it renders the host's script. That hashes the file
(once per version of it: the digest is kept against the file's device, inode, size and mtime),
remembers the digest → file mapping in :data:`BLOBS`, and returns each cache's
``/boot/blobs/<sha256>/<name>`` followed by the host's own asset URL on the appliance. A cache
missing the blob asks the appliance for the same path, which :meth:`BlobIndex.resolve` answers
only for a file some script named and whose bytes still have that digest, so the URL can be
cached forever (docs/caching.md).

The index is memory: after a restart it fills again as hosts fetch their scripts; a request for
a blob no script has named since answers 404, and iPXE falls back to the appliance's own URL.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from bootbox.core.caches import DIGEST, NAME, fetch_urls
from bootbox.errors import NotFound
from bootbox.model import BootContext

MAX_BLOBS = 4096
"""Distinct file versions remembered; beyond it the oldest are forgotten (a profile with that many
boot files is a mistake, and a forgotten blob only makes a cache fall back to the appliance)."""


@dataclass(frozen=True)
class _Identity:
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "_Identity":
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class BlobIndex:
    """Digests of boot files, and which file a digest names (thread-safe; one hash per version)."""

    def __init__(self, limit: int = MAX_BLOBS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._hashing: dict[str, threading.Lock] = {}
        self._digests: dict[str, tuple[_Identity, str]] = {}  # path → (identity, digest)
        self._blobs: dict[str, tuple[Path, frozenset[str]]] = {}  # digest → (path, names)
        self._sent = 0

    def digest(self, path: Path) -> str:
        """The file's SHA-256 in hex, computed once per version of the file. Hosts of a storm
        asking at once wait for the one hash rather than each reading the file."""
        key = str(path)
        with self._lock:
            gate = self._hashing.setdefault(key, threading.Lock())
        with gate:
            identity = _Identity.of(path)
            with self._lock:
                known = self._digests.get(key)
            if known is not None and known[0] == identity:
                return known[1]
            sha = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
            if _Identity.of(path) != identity:
                raise OSError(f"{path} changed while it was hashed; fetch the script again")
            digest = sha.hexdigest()
            with self._lock:
                self._digests[key] = (identity, digest)
            return digest

    def register(self, path: Path, name: str) -> str:
        """Hash ``path`` and let ``/boot/blobs/<digest>/<name>`` serve it; returns the digest."""
        if not NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain file name")
        digest = self.digest(path)
        with self._lock:
            known = self._blobs.pop(digest, None)
            names = known[1] if known is not None and known[0] == path else frozenset()
            self._blobs[digest] = (path, names | {name})  # (re)inserted last: the newest
            while len(self._blobs) > self._limit:
                del self._blobs[next(iter(self._blobs))]
        return digest

    def resolve(self, digest: str, name: str) -> Path:
        """The file a blob URL names, if a script named it and its bytes still hash to ``digest``."""
        if not DIGEST.fullmatch(digest) or not NAME.fullmatch(name):
            raise NotFound("not a blob URL bootbox made")
        with self._lock:
            known = self._blobs.get(digest)
        if known is None or name not in known[1]:
            raise NotFound(f"no blob {digest[:12]}…/{name} here (the host falls back to the appliance)")
        path = known[0]
        try:
            current = self.digest(path)
        except OSError:
            current = ""
        if current != digest:
            with self._lock:
                self._blobs.pop(digest, None)
            raise NotFound(f"blob {digest[:12]}… changed on disk; hosts fetch their script again")
        return path

    def count_sent(self, size: int) -> None:
        """Add the body bytes of one blob response (a Range answer counts its part)."""
        with self._lock:
            self._sent += size

    @property
    def sent_bytes(self) -> int:
        """Bytes of blobs sent since start (``bootbox_http_blob_bytes_total``): with caches in
        front, one copy of each file however many hosts boot it (docs/caching.md)."""
        with self._lock:
            return self._sent

    def __len__(self) -> int:
        with self._lock:
            return len(self._blobs)


BLOBS = BlobIndex()
"""The appliance's blob index (one per process: a digest names the same bytes for everyone)."""


def asset_urls(boot: BootContext, name: str, path: Path | str) -> list[str]:
    """The URLs a host fetches a profile's file from, in the order to try.

    Without caches for the host (``boot.cache_urls`` empty): just ``boot.asset_url(name)``, as
    before. With them: each cache's content-addressed URL of the file, then that same appliance
    URL as the fallback. Use only for immutable boot files (kernels, initrds, root images), never
    for anything carrying a token. Plugins call it as ``bootbox.asset_urls``."""
    fallback = boot.asset_url(name)
    if not boot.cache_urls:
        return [fallback]
    try:
        digest = BLOBS.register(Path(path), name)
    except OSError:  # gone or unreadable: the appliance's URL answers for it (404) as without caches
        return [fallback]
    return fetch_urls(boot.cache_urls, digest, name, fallback)
