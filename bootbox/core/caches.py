"""Which URLs a host fetches its immutable boot files from: its group's caches, then the appliance.

Only content-addressed files (a kernel, an initrd, a root image, an ESXi module) may come
through a cache: their URL carries the SHA-256 of their bytes, so a cache that keeps a copy
forever can never serve a stale one, and one copy serves every host. Host-bound files (scripts,
answer files, call-in modules) carry a host's tokens and never get a cache URL.

Which caches a host uses is a group setting (``[groups.NAME] cache_urls``, the group being the
host's ``group`` rule item); a host without one fetches from the appliance as before. Pure
functions on values: the service hashes files and fills :attr:`BootContext.cache_urls`, the
boot kinds turn a list of URLs into script lines (docs/caching.md).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

BLOB_PREFIX = "/boot/blobs"
"""Where the appliance serves content-addressed files: ``/boot/blobs/<sha256>/<name>``."""

DIGEST = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A blob's name: one safe path component (iPXE's image name, a module's file name)."""

IMMUTABLE = "public, max-age=31536000, immutable"
"""Cache-Control of a content-addressed URL: its bytes never change, so keep it a year."""


def group_cache_urls(groups: Mapping[str, Mapping[str, Any]], associations: Mapping[str, str]) -> tuple[str, ...]:
    """The caches of the host's group (``[groups.NAME] cache_urls``), in configured order; ``()``
    for a host without a group or a group without caches."""
    group = associations.get("group", "")
    table = groups.get(group) if group else None
    return tuple(table.get("cache_urls", ())) if table else ()


def blob_path(digest: str, name: str) -> str:
    """The path of a content-addressed file, the same on every cache and on the appliance."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a SHA-256 in hex")
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain file name")
    return f"{BLOB_PREFIX}/{digest}/{name}"


def fetch_urls(cache_urls: Sequence[str], digest: str, name: str, fallback: str) -> list[str]:
    """Every URL a host may fetch the file from, in the order to try: each cache's copy of the
    blob, then ``fallback`` (the appliance's own URL for the host, which always works)."""
    path = blob_path(digest, name)
    return [f"{url.rstrip('/')}{path}" for url in cache_urls] + [fallback]


def ipxe_fetch(command: str, urls: Sequence[str], args: str = "") -> str:
    """One iPXE line trying each URL in turn: ``kernel --name k URL1 ARGS || kernel --name k URL2 ARGS``.

    ``command`` is everything before the URL (``kernel --name kernel``, ``initrd --name initrd-0``),
    ``args`` what follows it (the kernel command line). The caller appends its own failure branch
    (``|| goto failed``), taken only when the last URL (the appliance) fails too.

    Only ``||``: iPXE decides whether to run each command from the status of the last command it
    ran, so after a skipped command an ``&&`` would run again (``a && b || c && d`` runs ``d``
    when ``a`` and ``b`` succeed); a chain of ``||`` stops at the first success."""
    if not urls:
        raise ValueError("no URL to fetch from")
    tail = f" {args}" if args else ""
    return " || ".join(f"{command} {url}{tail}" for url in urls)
