"""Hosts on disk as an append-only JSON-lines log, compacted now and then.

Hosts change on the boot path (every DHCP answer, script and report-in), and a site may know tens
of thousands of them. Rewriting one big document per change — as TinyDB does — costs time in
proportion to *all* hosts and, worse, holds the interpreter lock for the whole ``json.dumps``,
stalling the DHCP and HTTP threads (measured: OFFER p99 of 1–2 s at 100,000 hosts). Here a round
of changes costs in proportion to the hosts that changed: one line each, appended, fsynced. When
the log has grown to several times the live hosts it is rewritten once, atomically (temp file,
fsync, rename), so disk use stays bounded.

Each line is ``{"key": <12 hex digits>, "host": <Host.to_dict()> | null}``; ``null`` removes the
host. The last line of a crashed write may be torn: it is skipped on load.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from bootbox.runtime.atomic import atomic_write_bytes

log = logging.getLogger("bootbox.hostlog")

COMPACT_FACTOR = 4
"""Compact when the log holds this many lines per live host (and at least ``COMPACT_MIN``)."""
COMPACT_MIN = 10_000


class HostLog:
    """The hosts' persistent copy; ``path=None`` keeps nothing on disk (tests, --ephemeral)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._lines = 0
        self._live = 0

    def load(self) -> dict[str, dict[str, Any]]:
        """Replay the log: the last line for each key wins, ``null`` removes it."""
        hosts: dict[str, dict[str, Any]] = {}
        if self.path is None or not self.path.exists():
            return hosts
        skipped = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                self._lines += 1
                try:
                    entry = json.loads(raw)
                    key, doc = entry["key"], entry["host"]
                except (ValueError, KeyError, TypeError):
                    skipped += 1  # a torn last line after a crash
                    continue
                if doc is None:
                    hosts.pop(key, None)
                else:
                    hosts[key] = doc
        if skipped:
            log.warning("skipped %d unreadable line(s) in %s (a write torn by a crash)", skipped, self.path)
        self._live = len(hosts)
        return hosts

    def append(self, changes: Mapping[str, dict[str, Any] | None]) -> None:
        """Write one line per changed host (``None``: removed) and fsync; durable on return."""
        if changes:
            self.append_lines(encode_lines(changes), len(changes))

    def append_lines(self, data: bytes, count: int) -> None:
        """Append ``count`` lines made by :func:`encode_lines` and fsync; durable on return."""
        if not data or self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if _ends_torn(fd):
                    os.write(fd, b"\n")  # never glue a new line onto a torn one
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines += count

    def wants_compaction(self, live_hosts: int) -> bool:
        self._live = live_hosts
        return self.path is not None and self._lines > max(COMPACT_MIN, COMPACT_FACTOR * live_hosts)

    def compact(self, hosts: Mapping[str, dict[str, Any]]) -> None:
        """Rewrite the log as one line per live host, atomically."""
        self.replace_lines(encode_lines(hosts), len(hosts))

    def replace_lines(self, data: bytes, count: int) -> None:
        """Replace the whole log with ``count`` lines made by :func:`encode_lines`, atomically."""
        if self.path is None:
            return
        with self._lock:
            atomic_write_bytes(self.path, data)
            self._lines = count
        log.info("compacted the host log to %d hosts", count)


def encode_lines(changes: Mapping[str, dict[str, Any] | None]) -> bytes:
    """The log lines for ``changes`` (key → host document, ``None`` for a removed host)."""
    return b"".join(
        json.dumps({"key": key, "host": doc}, separators=(",", ":")).encode() + b"\n" for key, doc in changes.items()
    )


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
