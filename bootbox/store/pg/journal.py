"""PgJournal: the boot journal in the ``bootbox_events`` table, behind :class:`~bootbox.store.journal.Journal`'s interface.

Recording an event stays what it is with the file (memory rings, a queue, no I/O on the boot
path); only the writer thread's batch goes to the database instead of ``events.jsonl``, through
the :class:`~bootbox.store.pg.bootwriter.BootWriter` (so it is queued locally, fsynced, while the
database is away). Each event gets a ``uid`` when it is written, so an outbox sent twice stores
it once. At start the newest events of *every* appliance are read back, and a host's timeline
(:meth:`PgJournal.events`) is read from the database when it answers, so it shows each step of
the host whichever appliance served it (``data.appliance``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from bootbox.model import BootEvent
from bootbox.store.journal import Journal
from bootbox.store.pg.bootwriter import BootWriter
from bootbox.store.postgresql import EVENTS_TABLE

LOAD_EVENTS = 100_000
"""Events read back at start (newest first): as many as the rings would keep anyway."""


class PgJournal(Journal):
    """A :class:`Journal` whose writer thread commits batches to PostgreSQL."""

    def __init__(self, writer: BootWriter, **limits: Any) -> None:
        super().__init__(Path(f"postgresql:{EVENTS_TABLE}"), **limits)
        self._writer = writer
        self.disk = writer.disk

    def events(self, mac: str, limit: int | None = None, since: float | None = None) -> list[BootEvent]:
        """The host's events from the database (every appliance's), plus any this appliance has
        not written yet; memory only while the database is away."""
        stored = self._writer.host_events(mac)
        if stored is None:
            return super().events(mac, limit, since)
        found = [BootEvent.from_dict(doc) for doc in stored]
        seen = {(e.time, e.kind, e.message) for e in found}
        found += [e for e in super().events(mac) if (e.time, e.kind, e.message) not in seen]
        found.sort(key=lambda e: e.time)
        if since is not None:
            found = [e for e in found if e.time >= since]
        if limit is not None:
            found = found[len(found) - limit:] if limit > 0 else []
        return found

    def _load(self) -> None:
        for doc in self._writer.load_events(min(LOAD_EVENTS, self.max_events)):
            try:
                event = BootEvent.from_dict(doc)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            with self._lock:
                self._remember(event)
                self._stats["loaded"] += 1

    def _write_batch(self, batch: list[BootEvent], pause: float = 0.0) -> bool:
        records = [{"type": "event", "uid": uuid.uuid4().hex, "event": event.to_dict()} for event in batch]
        try:
            self._writer.write(records)
        except Exception as err:  # the database is away *and* the outbox cannot take them
            self._count(errors=1, dropped=len(batch))
            self._failing(OSError(str(err)), f"{len(batch)} boot event(s) dropped")
            return False
        self._count(written=len(batch))
        self._recovered()
        return True

    def _fsync(self) -> bool:
        return True  # every batch was committed, or fsynced into the outbox, before it was counted

    def _ensure_open(self) -> None:
        """No file to open."""

