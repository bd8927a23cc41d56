"""The outbox: boot-path writes an appliance could not send to its database, kept durably until it can.

With the PostgreSQL backend the boot path (report-ins, host state, new hosts, per-boot tokens
in the host records, boot events) must neither wait for the database nor lose what it has
acknowledged when the database is gone. So when a write to the database fails, its records are
appended here — one JSON line each, in the state directory, fsynced before the write returns —
and every later boot-path write joins the queue behind them, so the database receives them in
the order they happened. When the database is back the queue is sent in that order and then
truncated. A crash between that commit and the truncation sends the records again: host rows
are idempotent (the last one wins) and events carry a ``uid`` the database keeps unique, so a
replay changes nothing.

The file is bounded by ``[store] outbox_max_bytes``: past it a write is refused (and the caller
counts its records lost) rather than filling the disk the host log and journal also need.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from bootbox.errors import BootboxError
from bootbox.store.diskhealth import DiskHealth

OUTBOX_FILE = "outbox.jsonl"


class OutboxFull(BootboxError):
    """The queue reached ``[store] outbox_max_bytes``; nothing was appended."""

    http_status = 503


class Outbox:
    """An append-only, fsynced queue of JSON records (``path``), read back whole, in order."""

    def __init__(self, path: Path, *, max_bytes: int = 256 * 2**20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.disk = DiskHealth(f"outbox {self.path}")
        self._count = sum(1 for _ in self._lines())

    def __len__(self) -> int:
        """Records waiting for the database."""
        with self._lock:
            return self._count

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` and fsync; durable when it returns.

        :raises OutboxFull: the file would grow past ``max_bytes`` (``[store] outbox_max_bytes``).
        :raises OSError: the disk refused; nothing of this call is left in the file.
        """
        lines = [json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n" for record in records]
        if not lines:
            return
        data = b"".join(lines)
        with self._lock:
            size = self.size()
            if size + len(data) > self.max_bytes:
                raise OutboxFull(f"outbox {self.path} holds {size} bytes, and {len(data)} more would pass "
                                 f"[store] outbox_max_bytes = {self.max_bytes}: the database has been away too long")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                try:
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        os.write(fd, b"\n")  # never glue a record onto one a crash tore
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as err:
                    os.ftruncate(fd, size)
                    self.disk.failed(err, "boot-path writes could not be queued")
                    raise
            finally:
                os.close(fd)
            self.disk.succeeded()
            self._count += len(lines)

    def records(self) -> list[dict[str, Any]]:
        """Every queued record, oldest first (a line a crash tore is skipped: it was never acknowledged)."""
        with self._lock:
            return [json.loads(raw) for raw in self._lines()]

    def remove_first(self, count: int) -> None:
        """Drop the first ``count`` records (sent and committed), keeping any appended since."""
        with self._lock:
            lines = list(self._lines())
            rest = lines[count:]
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(b"".join(line + b"\n" for line in rest))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._count = len(rest)

    def _lines(self) -> Iterable[bytes]:
        """The records' lines; a line a crash tore (never acknowledged) is left out, and so is
        dropped by the next :meth:`remove_first`."""
        try:
            with self.path.open("rb") as handle:
                for raw in handle:
                    raw = raw.rstrip(b"\n")
                    if not raw.strip():
                        continue
                    try:
                        if isinstance(json.loads(raw), dict):
                            yield raw
                    except ValueError:
                        continue
        except FileNotFoundError:
            return
