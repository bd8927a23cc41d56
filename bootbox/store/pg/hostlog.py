"""PgHostLog: the host log in the ``bootbox_hosts`` table, behind :class:`~bootbox.store.hostlog.HostLog`'s interface.

The host persister (:class:`bootbox.service.hostindex.HostPersister`) hands it the same encoded
lines it would append to ``hosts.jsonl``; here each becomes a row (upserted, or its ``host`` set
to NULL for a removed host, so other appliances' change feeds see the removal), sent through the
:class:`~bootbox.store.pg.bootwriter.BootWriter` — queued locally while the database is away.
A table needs no compaction.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from bootbox.store.hostlog import HostLog, encode_lines
from bootbox.store.pg.bootwriter import BootWriter


class PgHostLog(HostLog):
    """Hosts in PostgreSQL; ``load`` reads the table, appends become upserts."""

    def __init__(self, writer: BootWriter) -> None:
        super().__init__(None)
        self._writer = writer
        self.disk = writer.disk

    def load(self, parse: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Every host in the database (what the outbox held was sent when the writer started).
        A document ``parse`` refuses is skipped, as a damaged line of the file is."""
        found: dict[str, Any] = {}
        for key, doc in self._writer.load_hosts().items():
            try:
                found[key] = parse(doc) if parse is not None else doc
            except Exception:
                continue
        return found

    def append(self, changes: Mapping[str, dict[str, Any] | None]) -> None:
        if changes:
            self.append_lines(encode_lines(changes), len(changes))

    def append_lines(self, data: bytes, count: int) -> None:
        """One row per line (:func:`~bootbox.store.hostlog.encode_lines`); durable on return:
        committed, or queued in the outbox and fsynced."""
        records = []
        for raw in data.splitlines():
            if raw.strip():
                entry = json.loads(raw)
                records.append({"type": "host", "key": entry["key"], "host": entry["host"]})
        self._writer.write(records)

    def wants_compaction(self, live_hosts: int) -> bool:
        return False

    def compact(self, hosts: Mapping[str, dict[str, Any]]) -> None:
        """Nothing to do: a table holds one row per host."""

    def replace_lines(self, data: bytes, count: int) -> None:
        """Nothing to do: a table holds one row per host."""
