"""A hook's two files in the state directory: its delivery queue and its delivery log.

Both are JSON lines, appended with one ``os.write`` and an ``fsync`` per batch (a delivery that
was queued survives a crash; a webhook receiver sees tens of events a boot, not thousands a
second, so the fsync costs nothing that matters), and both are rewritten now and then with
:func:`bootbox.runtime.atomic.atomic_write_bytes` to drop what is no longer needed, so a reader
of the state directory, or a machine that loses power, sees the old file or the new one.

``queue.jsonl`` holds three kinds of line: ``add`` (a delivery: its ID, the event's feed ID, when
it was made, and the exact body that is signed and sent on every try), ``done`` (a delivery that
succeeded or was given up) and ``cursor`` (the feed ID up to which events were looked at, written
when no ``add`` says it). Replaying the file gives the pending deliveries in order and the
cursor, which is all a restart needs. ``deliveries.jsonl`` holds one line per try.

A line a crash tore is skipped; a file with other damaged lines is copied into ``set-aside/``
first (:mod:`bootbox.store.setaside`), like the journal does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootbox.runtime.atomic import atomic_write_bytes
from bootbox.store.setaside import set_aside

log = logging.getLogger("bootbox.webhooks")

COMPACT_SLACK = 256
"""Lines a file may carry beyond what it needs before it is rewritten."""


@dataclass(frozen=True)
class Delivery:
    """One event (or test) to POST to one hook: the body is fixed when it is queued, so every
    try sends, and signs, the same bytes."""

    id: str
    event_id: int
    kind: str
    mac: str
    created: float
    body: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": "add", "delivery": self.id, "event_id": self.event_id, "kind": self.kind, "mac": self.mac,
                "created": self.created, "body": self.body}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Delivery:
        return cls(id=str(doc["delivery"]), event_id=int(doc["event_id"]), kind=str(doc["kind"]),
                   mac=str(doc.get("mac") or ""), created=float(doc["created"]), body=str(doc["body"]))


class JsonLinesFile:
    """Append lines durably; read them back; rewrite the whole file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0  # lines in the file now (read back, appended, rewritten)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every readable line, oldest first; a torn last line is skipped, other damage sets the
        file aside before it is skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        damaged = 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            self.lines += 1
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                damaged += not (line.startswith(b"{") and raw.endswith(line))  # the torn last line
                continue
            yield doc
        if damaged:
            try:
                kept = set_aside(self.path, f"{damaged} damaged line(s) skipped when bootbox read this webhook file")
                log.error("%s: %d damaged line(s) skipped; the file as it was is kept in %s", self.path, damaged, kept)
            except OSError as err:
                log.error("%s: %d damaged line(s) skipped; could not set a copy aside: %s", self.path, damaged, err)

    def append(self, docs: Iterable[dict[str, Any]]) -> None:
        """Append ``docs``, one line each, in one write, then fsync. :raises OSError:"""
        data = b"".join(_line(doc) for doc in docs)
        if not data:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.lines += data.count(b"\n")

    def rewrite(self, docs: Iterable[dict[str, Any]]) -> None:
        """Make the file hold exactly ``docs`` (atomically). :raises OSError:"""
        data = b"".join(_line(doc) for doc in docs)
        atomic_write_bytes(self.path, data)
        self.lines = data.count(b"\n")


def _line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":"), default=str) + "\n").encode("utf-8")


class HookQueue:
    """A hook's pending deliveries, in order, persisted in ``queue.jsonl``. Thread-safe."""

    def __init__(self, directory: Path, start_cursor: int) -> None:
        self.file = JsonLinesFile(directory / "queue.jsonl")
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, Delivery] = OrderedDict()
        self._closed = False
        fresh = not self.file.path.exists()
        cursor = 0
        for doc in self.file.read():
            op = doc.get("op")
            try:
                if op == "add":
                    delivery = Delivery.from_dict(doc)
                    self._pending[delivery.id] = delivery
                    cursor = max(cursor, delivery.event_id)
                elif op == "done":
                    self._pending.pop(str(doc.get("delivery")), None)
                elif op == "cursor":
                    cursor = max(cursor, int(doc["event_id"]))
            except (KeyError, TypeError, ValueError):
                continue
        # A new hook starts at the feed's newest event (no history replayed to it); a known one
        # where it stopped, so events recorded while it was down, or not yet queued at a crash,
        # are queued now.
        self.cursor = start_cursor if fresh else cursor
        self._saved_cursor = cursor
        if fresh:
            self.save_cursor()
        else:
            self._compact()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def head(self) -> Delivery | None:
        """The oldest pending delivery (the one a worker sends next), or None."""
        with self._lock:
            return next(iter(self._pending.values()), None)

    def pending(self) -> list[Delivery]:
        with self._lock:
            return list(self._pending.values())

    def add(self, deliveries: list[Delivery], cursor: int) -> None:
        """Queue ``deliveries`` (in order, durably) and move the cursor to ``cursor``.

        :raises OSError: they could not be written (nothing is queued; the cursor stays, so the
            next round tries the same events again)."""
        with self._lock:
            if self._closed:
                return
            self.file.append(delivery.to_dict() for delivery in deliveries)
            for delivery in deliveries:
                self._pending[delivery.id] = delivery
            self.cursor = max(self.cursor, cursor)
            if deliveries:
                self._saved_cursor = max(self._saved_cursor, max(d.event_id for d in deliveries))

    def advance(self, cursor: int) -> None:
        """Events up to ``cursor`` were looked at and none was queued (kept in memory; written
        by :meth:`save_cursor`)."""
        with self._lock:
            self.cursor = max(self.cursor, cursor)

    def save_cursor(self) -> None:
        """Write the cursor if it moved since it was last written (a restart then does not look
        at those events again)."""
        with self._lock:
            if self._closed or self.cursor <= self._saved_cursor and self.file.path.exists():
                return
            try:
                self.file.append([{"op": "cursor", "event_id": self.cursor}])
                self._saved_cursor = self.cursor
            except OSError as err:
                log.warning("webhook queue %s: cannot save the cursor: %s", self.file.path, err)

    def done(self, delivery_id: str, outcome: str) -> None:
        """The delivery succeeded or was given up: it leaves the queue."""
        with self._lock:
            if self._closed or delivery_id not in self._pending:
                return
            try:
                self.file.append([{"op": "done", "delivery": delivery_id, "outcome": outcome}])
            except OSError as err:  # it stays pending on disk: sent again after a restart
                log.warning("webhook queue %s: cannot record delivery %s as done: %s", self.file.path, delivery_id, err)
            del self._pending[delivery_id]
            if self.file.lines > 2 * len(self._pending) + COMPACT_SLACK:
                self._compact_locked()

    def close(self) -> None:
        self.save_cursor()
        with self._lock:
            self._closed = True

    def _compact(self) -> None:
        with self._lock:
            if self.file.lines > len(self._pending) + 1:
                self._compact_locked()

    def _compact_locked(self) -> None:
        """Rewrite the file as the cursor and the pending deliveries only. Caller holds the lock."""
        cursor = max(self.cursor, self._saved_cursor)
        try:
            self.file.rewrite([{"op": "cursor", "event_id": cursor}, *(d.to_dict() for d in self._pending.values())])
            self._saved_cursor = cursor
        except OSError as err:
            log.warning("webhook queue %s: cannot compact: %s", self.file.path, err)


class DeliveryLog:
    """A hook's tries, newest last: the last ``entries`` of the last ``retention`` seconds, in
    memory and in ``deliveries.jsonl``. Thread-safe."""

    def __init__(self, directory: Path, *, retention: float, entries: int) -> None:
        self.file = JsonLinesFile(directory / "deliveries.jsonl")
        self.retention, self.entries = retention, entries
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(self.file.read(), maxlen=entries)
        self.prune()

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)
            try:
                self.file.append([entry])
            except OSError as err:
                log.warning("webhook log %s: cannot write: %s", self.file.path, err)
            if self.file.lines > 2 * self.entries + COMPACT_SLACK:
                self._drop_old_locked(time.time())
                self._rewrite_locked()

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries newest first, at most ``limit``; none older than the retention."""
        oldest = time.time() - self.retention
        with self._lock:
            found = [entry for entry in reversed(self._log) if _time(entry) >= oldest]
        return found[:limit] if limit is not None else found

    def prune(self, now: float | None = None) -> None:
        """Forget entries past the retention and rewrite the file if it holds more than is kept."""
        with self._lock:
            self._drop_old_locked(time.time() if now is None else now)
            if self.file.lines > len(self._log):
                self._rewrite_locked()

    def _drop_old_locked(self, now: float) -> None:
        while self._log and _time(self._log[0]) < now - self.retention:
            self._log.popleft()

    def _rewrite_locked(self) -> None:
        try:
            self.file.rewrite(self._log)
        except OSError as err:
            log.warning("webhook log %s: cannot compact: %s", self.file.path, err)


def _time(entry: dict[str, Any]) -> float:
    value = entry.get("time")
    return float(value) if isinstance(value, (int, float)) else 0.0
