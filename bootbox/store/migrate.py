"""``bootbox store migrate``: move every document from one store backend to the other, losing nothing.

The appliance must be stopped: the TinyDB side holds the state-dir lock (as a running appliance
does, whichever backend it uses), so a migration and a running bootbox exclude each other. The
copy is one write on the target (one PostgreSQL transaction, or one atomic TinyDB file write), so
an interrupted migration leaves the target as it was. Afterwards the target is opened afresh and
compared with the source, table by table: the same keys and the same content hash, or the command
fails.

The host log (``hosts.jsonl``) and the boot journal (``events.jsonl`` and its rotated files)
move too, to and from the ``bootbox_hosts`` and ``bootbox_events`` tables
(:mod:`bootbox.store.pg.transfer`), and are verified the same way (hosts by count and content
hash, events by count). Secret answers move as they are stored, encrypted: the key stays a file
in the state directory (or ``secrets_key_file``), as do the API token and plugins' files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootbox.config import mask_dsn
from bootbox.errors import BootboxError, ValidationError
from bootbox.runtime.atomic import atomic_write_bytes
from bootbox.store.hostlog import HostLog, encode_lines
from bootbox.store.memory import DictStore, Tables
from bootbox.store.tinydb import AtomicJSONStorage, TinyDBStore

BACKENDS = ("tinydb", "postgresql")
FILES_THAT_STAY = ("secrets.key (or secrets_key_file)", "api-token", "plugins/ (plugins' own files)")
HOST_LOG_FILE, JOURNAL_FILE = "hosts.jsonl", "events.jsonl"


@dataclass
class MigrationReport:
    """What moved: ``tables`` maps each table to its document count; ``sha256`` hashes them all."""

    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    sha256: str = ""
    replaced: int = 0
    hosts: int = 0
    events: int = 0
    files_that_stay: tuple[str, ...] = FILES_THAT_STAY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_hash(tables: Tables) -> str:
    """One SHA-256 over every table, key and document, independent of order and of the backend."""
    canonical = json.dumps(tables, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def snapshot(store: DictStore) -> Tables:
    """Every non-empty table of ``store``, as ``{table: {key: document}}``."""
    return {table: store.all(table) for table in store.table_names()}


def migrate(*, to: str, state_dir: Path, dsn: str, replace: bool = False, connect_timeout: float = 10.0) -> MigrationReport:
    """Copy the documents of the other backend into ``to`` and verify them.

    :param to: ``"postgresql"`` (from the TinyDB file in ``state_dir`` into ``dsn``) or
        ``"tinydb"`` (from ``dsn`` into the TinyDB file in ``state_dir``).
    :param replace: the target already holds documents: delete them in the same write (the
        previous TinyDB file is still kept as ``bootbox.json.bak``). Without it such a target is
        refused, so nothing there is lost by accident.
    :raises BootboxError: the appliance runs (the state directory is locked), a store cannot be
        opened, the target is not empty, or the verification failed.
    """
    from bootbox.store.postgresql import PostgreSQLStore  # only this command and the backend need psycopg

    if to not in BACKENDS:
        raise ValidationError("to", f"{to!r} is not a backend; use tinydb or postgresql")
    if not dsn.strip():
        raise ValidationError("dsn", "give --dsn or set [store] dsn: the PostgreSQL side of the migration")
    tiny_label, pg_label = f"tinydb {Path(state_dir) / 'bootbox.json'}", f"postgresql {mask_dsn(dsn)}"
    tiny = TinyDBStore(state_dir)  # first: the state-dir lock is the "appliance is stopped" check
    try:
        pg = PostgreSQLStore(dsn, connect_timeout=connect_timeout)
        try:
            source, target = (tiny, pg) if to == "postgresql" else (pg, tiny)
            report = MigrationReport(source=tiny_label if to == "postgresql" else pg_label,
                                     target=pg_label if to == "postgresql" else tiny_label)
            logs = _read_logs(Path(state_dir), pg, to)  # checked and read before anything is written
            _check_logs_target(Path(state_dir), pg, to, replace)
            report.replaced = _copy(source, target, replace)
            _write_logs(Path(state_dir), pg, to, logs, replace)
            report.hosts, report.events = len(logs[0]), len(logs[1])
            _verify_logs(Path(state_dir), pg, to, logs)
        finally:
            pg.close()
        # Verified from fresh reads, still under the lock: the file as it is on disk, and the
        # database through a new connection; nothing either store object cached takes part.
        on_disk = {t: rows for t, rows in (AtomicJSONStorage(tiny.path).read() or {}).items() if rows}
        fresh = PostgreSQLStore(dsn, connect_timeout=connect_timeout)
        try:
            in_db = snapshot(fresh)
        finally:
            fresh.close()
    finally:
        tiny.close()
    expected, got = (on_disk, in_db) if to == "postgresql" else (in_db, on_disk)
    _verify(expected, got, report)
    report.tables = {table: len(rows) for table, rows in sorted(expected.items())}
    report.documents = sum(report.tables.values())
    return report


Logs = tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]


def _read_logs(state_dir: Path, pg: Any, to: str) -> Logs:
    """The source's hosts (key → document) and events (oldest first)."""
    from bootbox.store.pg import transfer

    if to == "tinydb":
        return transfer.read_logs(pg)
    hosts = HostLog(state_dir / HOST_LOG_FILE).load()
    events: list[dict[str, Any]] = []
    for path in _journal_files(state_dir):
        for raw in path.read_bytes().splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a line a crash tore (the journal skips it too)
            if isinstance(event, dict) and "mac" in event:
                events.append(event)
    return hosts, events


def _journal_files(state_dir: Path) -> list[Path]:
    """``events.jsonl`` and its rotated files, oldest first."""
    rotated = sorted(state_dir.glob(f"{JOURNAL_FILE}.[0-9]*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [p for p in rotated if p.suffix[1:].isdigit()] + ([state_dir / JOURNAL_FILE] if (state_dir / JOURNAL_FILE).exists() else [])


def _check_logs_target(state_dir: Path, pg: Any, to: str, replace: bool) -> None:
    from bootbox.store.pg import transfer

    if to == "postgresql":
        hosts, events = transfer.counts(pg)
        held = f"{hosts} hosts and {events} events"
    else:
        hosts = len(HostLog(state_dir / HOST_LOG_FILE).load())
        events = sum(p.stat().st_size > 0 for p in _journal_files(state_dir))
        held = f"{hosts} hosts in {HOST_LOG_FILE} and {events} journal file(s)"
    if (hosts or events) and not replace:
        raise BootboxError(f"the target already holds {held}; nothing was copied. "
                           "Pass --replace to overwrite them with the source's")


def _write_logs(state_dir: Path, pg: Any, to: str, logs: Logs, replace: bool) -> None:
    from bootbox.store.pg import transfer

    hosts, events = logs
    if to == "postgresql":
        transfer.write_logs(pg, hosts, events, replace=replace)
        return
    HostLog(state_dir / HOST_LOG_FILE).replace_lines(encode_lines(hosts), len(hosts))
    lines = b"".join(json.dumps(e, separators=(",", ":"), default=str).encode() + b"\n" for e in events)
    atomic_write_bytes(state_dir / JOURNAL_FILE, lines)
    for path in _journal_files(state_dir):
        if path.name != JOURNAL_FILE:
            path.unlink()


def _verify_logs(state_dir: Path, pg: Any, to: str, logs: Logs) -> None:
    """Read the target afresh: the same hosts (content hash) and as many events."""
    from bootbox.store.pg import transfer

    hosts, events = logs
    if to == "postgresql":
        got_hosts, got_events = transfer.read_logs(pg)
    else:
        got_hosts, got_events = _read_logs(state_dir, pg, "postgresql")
    if content_hash({"hosts": got_hosts}) != content_hash({"hosts": hosts}):
        raise BootboxError(f"verification failed: the target's hosts differ from the source's "
                           f"({len(got_hosts)} vs {len(hosts)})")
    # The database keeps one copy of an event written twice (same content, same uid), so the
    # source's count is of distinct events.
    distinct = len({transfer.event_uid(e) for e in events}) if to == "postgresql" else len(events)
    if len(got_events) != distinct:
        raise BootboxError(f"verification failed: the target holds {len(got_events)} events, the source {distinct}")


def _copy(source: DictStore, target: DictStore, replace: bool) -> int:
    """Write the source's documents into the target in one write; return how many were replaced."""
    existing = snapshot(target)
    count = sum(len(rows) for rows in existing.values())
    if count and not replace:
        tables = ", ".join(f"{table} ({len(rows)})" for table, rows in sorted(existing.items()))
        raise BootboxError(f"the target store already holds {count} documents ({tables}); nothing was copied. "
                           "Pass --replace to overwrite them with the source's")
    with target.batch():
        for table, rows in existing.items():
            for key in rows:
                target.delete(table, key)
        for table, rows in snapshot(source).items():
            target.put_many(table, rows)
    return count


def _verify(source: Tables, target: Tables, report: MigrationReport) -> None:
    """The same tables with the same counts, and the same content hash over every document."""
    if {t: len(r) for t, r in source.items()} != {t: len(r) for t, r in target.items()}:
        raise BootboxError(f"verification failed: the target's tables differ from the source's "
                           f"({_counts(source)} vs {_counts(target)})")
    report.sha256 = content_hash(source)
    if content_hash(target) != report.sha256:
        raise BootboxError("verification failed: the target's documents differ from the source's (content hash)")


def _counts(tables: Tables) -> str:
    return ", ".join(f"{table} {len(rows)}" for table, rows in sorted(tables.items())) or "no documents"
