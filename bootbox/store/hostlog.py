"""Hosts on disk as an append-only JSON-lines log, compacted now and then.

Hosts change on the boot path (every DHCP answer, script and report-in), and a site may know tens
of thousands of them. Rewriting one big document per change — as TinyDB does — costs time in
proportion to *all* hosts and, worse, holds the interpreter lock for the whole ``json.dumps``,
stalling the DHCP and HTTP threads (measured: OFFER p99 of 1–2 s at 100,000 hosts). Here a round
of changes costs in proportion to the hosts that changed: one line each, appended, fsynced. When
the log has grown to several times the live hosts it is rewritten once, atomically (temp file,
fsync, rename), so disk use stays bounded.

Each line is ``{"key": <12 hex digits>, "host": <Host.to_dict()> | null}``; ``null`` removes the
host. A line a crashed write tore is skipped on load; any other line that cannot be read (a zeroed
region, the wrong shape) is counted, and the file is set aside before it can be rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from bootbox.runtime.atomic import atomic_write_bytes
from bootbox.store.diskhealth import DiskHealth
from bootbox.store.setaside import set_aside

log = logging.getLogger("bootbox.hostlog")

COMPACT_FACTOR = 4
"""Compact when the log holds this many lines per live host (and at least ``COMPACT_MIN``)."""
COMPACT_MIN = 10_000

_APPLIED, _TORN, _DAMAGED = "applied", "torn", "damaged"
_LINE_START = b'{"key":'


class HostLog:
    """The hosts' persistent copy; ``path=None`` keeps nothing on disk (tests, --ephemeral)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._lines = 0
        self._live = 0
        self._frozen = False  # damaged and not set aside: never rewrite it
        self.disk = DiskHealth(f"host log {path}")

    def load(self, parse: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Replay the log: the last line for each key wins, ``null`` removes it.

        ``parse`` (e.g. ``Host.from_dict``) turns each document into what is returned; a document
        it rejects counts as damaged, like an undecodable line or valid JSON of the wrong shape.
        A line a crash tore (the start of a line, cut short) is skipped quietly. If anything was
        damaged, a byte-for-byte copy of the file is set aside (:mod:`bootbox.store.setaside`)
        before anything can rewrite it; if that copy cannot be made, the log is never compacted.
        """
        found: dict[str, Any] = {}
        if self.path is None or not self.path.exists():
            return found
        records = damaged = torn = 0
        docs: dict[str, dict[str, Any]] = {}  # what was read, as stored, for the rewrite
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                records += 1
                outcome = _replay(raw.rstrip(b"\n"), found, docs, parse)
                damaged += outcome == _DAMAGED
                torn += outcome == _TORN
        self._lines, self._live = records, len(found)
        if damaged:
            self._keep_damaged(docs, records, damaged, torn)
        elif torn:
            log.warning("host log %s: skipped %d line(s) torn by a crash; recovered %d of %d records",
                        self.path, torn, records - torn, records)
        return found

    def _keep_damaged(self, docs: Mapping[str, dict[str, Any]], records: int, damaged: int, torn: int) -> None:
        """Set the file aside, then rewrite it with what was recovered, so the damage is reported
        once (not at every start) and the copy is the only place the damaged bytes live."""
        assert self.path is not None
        summary = (f"host log {self.path}: recovered {records - damaged - torn} of {records} records "
                   f"({len(docs)} hosts); {damaged} damaged, {torn} torn by a crash")
        why = (f"{summary}. bootbox runs with what it recovered; the hosts on the damaged lines are "
               f"missing until they boot again. Inspect this copy, or restore a backup "
               f"(bootbox state restore) with bootbox stopped.")
        try:
            kept = set_aside(self.path, why)
        except OSError as err:
            self._frozen = True
            log.error("%s; could not set a copy aside (%s), so the log will not be compacted", summary, err)
            return
        log.error("%s; the file as it was is kept in %s", summary, kept)
        try:
            self.replace_lines(encode_lines(docs), len(docs))
        except OSError as err:
            log.warning("host log %s: could not rewrite it without the damaged lines yet: %s", self.path, err)

    def append(self, changes: Mapping[str, dict[str, Any] | None]) -> None:
        """Write one line per changed host (``None``: removed) and fsync; durable on return."""
        if changes:
            self.append_lines(encode_lines(changes), len(changes))

    def append_lines(self, data: bytes, count: int) -> None:
        """Append ``count`` lines made by :func:`encode_lines` and fsync; durable on return."""
        if not data or self.path is None:
            return
        with self._lock:
            try:
                self._append(self.path, data)
            except OSError as err:
                self.disk.failed(err)
                raise
            self.disk.succeeded()
            self._lines += count

    @staticmethod
    def _append(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if _ends_torn(fd):
                os.write(fd, b"\n")  # never glue a new line onto a torn one
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError:
                # A short write on a full disk would leave half a line that the next append ends
                # with a newline: cut it off so the retry writes the whole batch again.
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def wants_compaction(self, live_hosts: int) -> bool:
        self._live = live_hosts
        return (self.path is not None and not self._frozen
                and self._lines > max(COMPACT_MIN, COMPACT_FACTOR * live_hosts))

    def compact(self, hosts: Mapping[str, dict[str, Any]]) -> None:
        """Rewrite the log as one line per live host, atomically."""
        self.replace_lines(encode_lines(hosts), len(hosts))

    def replace_lines(self, data: bytes, count: int) -> None:
        """Replace the whole log with ``count`` lines made by :func:`encode_lines`, atomically."""
        if self.path is None or self._frozen:
            return
        with self._lock:
            try:
                atomic_write_bytes(self.path, data)
            except OSError as err:
                self.disk.failed(err)
                raise
            self.disk.succeeded()
            self._lines = count
        log.info("compacted the host log to %d hosts", count)


def encode_lines(changes: Mapping[str, dict[str, Any] | None]) -> bytes:
    """The log lines for ``changes`` (key → host document, ``None`` for a removed host)."""
    return b"".join(
        json.dumps({"key": key, "host": doc}, separators=(",", ":")).encode() + b"\n" for key, doc in changes.items()
    )


def _replay(raw: bytes, found: dict[str, Any], docs: dict[str, dict[str, Any]],
            parse: Callable[[dict[str, Any]], Any] | None) -> str:
    """Apply one line to ``found``; say whether it was applied, torn by a crash, or damaged."""
    try:
        entry = json.loads(raw)
    except ValueError:
        # A crash cuts an append short: what is left is the start of a line, without NUL bytes.
        # Anything else that does not decode (a zeroed region, garbage) is damage.
        return _TORN if raw.startswith(_LINE_START) and b"\0" not in raw else _DAMAGED
    if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
            and "host" in entry and (entry["host"] is None or isinstance(entry["host"], dict))):
        return _DAMAGED
    key, doc = entry["key"], entry["host"]
    if doc is None:
        found.pop(key, None)
        docs.pop(key, None)
        return _APPLIED
    try:
        found[key] = parse(doc) if parse is not None else doc
    except Exception:  # whatever the parser refuses is a record of the wrong shape
        return _DAMAGED
    docs[key] = doc
    return _APPLIED


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
