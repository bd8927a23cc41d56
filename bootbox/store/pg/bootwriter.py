"""BootWriter: the boot path's writes to PostgreSQL, which never wait for it and never lose what they acknowledged.

The host persister and the journal's writer thread (never a DHCP, TFTP or HTTP thread) hand
their records here. While the database answers, each call is one transaction. When it does not
(a connection error), the records go to the :class:`~bootbox.store.outbox.Outbox` in the state
directory, fsynced, and so does every later call, behind them; a reconnect thread tries again
with exponential backoff (capped at ``[store] reconnect_max``) and, once connected, sends the
queue in order, then lets calls go straight to the database again. Reads for operators (a
host's timeline across appliances) use a second connection and fall back to memory.

Records are ``{"type": "host", "key", "host"}`` (``host`` None: removed) and ``{"type": "event",
"uid", "event"}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import psycopg

from bootbox.store.diskhealth import DiskHealth
from bootbox.store.outbox import Outbox
from bootbox.store.postgresql import (
    CHANGES_TABLE,
    EVENTS_TABLE,
    HOSTS_TABLE,
    PostgreSQLStore,
)

log = logging.getLogger("bootbox.store.pg")

SEND_CHUNK = 2000
"""Records per transaction when the outbox is sent after an outage."""
FIRST_RETRY = 0.2
"""Seconds before the first reconnection attempt; doubled after each failure up to ``reconnect_max``."""

_UPSERT_HOST = (f"INSERT INTO {HOSTS_TABLE} (key, host, appliance) VALUES (%s, %s::jsonb, %s) "
                f"ON CONFLICT (key) DO UPDATE SET host = EXCLUDED.host, appliance = EXCLUDED.appliance, updated_at = now()")
_INSERT_EVENT = (f"INSERT INTO {EVENTS_TABLE} (uid, mac, time, appliance, event) VALUES (%s, %s, %s, %s, %s::jsonb) "
                 f"ON CONFLICT (uid) DO NOTHING")
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def jsonb_text(doc: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts: NUL characters and lone surrogates (which a plugin's
    event data may hold, and jsonb refuses) become U+FFFD, so one odd event cannot block the queue."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("\\u0000", "\\ufffd").encode("utf-8", "replace").decode("utf-8")


class BootWriter:
    """Sends host and event records to the database, or queues them in ``outbox`` while it is away."""

    def __init__(self, store: PostgreSQLStore, outbox: Outbox, *, reconnect_max: float = 10.0,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self._store = store
        self.outbox = outbox
        self.reconnect_max = reconnect_max
        self.appliance = store.appliance
        self.on_reconnect = on_reconnect
        self._lock = threading.Lock()  # one sender at a time: keeps the records in order
        self._read_lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._down_since = 0.0 if not len(outbox) else time.time()
        self._last_error = ""
        self._stats = dict.fromkeys(("sent", "queued_total", "flushed", "dropped", "outages"), 0)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bootbox-pg-reconnect", daemon=True)
        self.disk = DiskHealth(f"database writes {store.masked_dsn}")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Send what a previous run left queued (the database answered when the store opened),
        then start the reconnect thread."""
        if len(self.outbox):
            self._flush_outbox()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()

    # -- writing --------------------------------------------------------------------------

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Send ``records`` in one transaction, or queue them durably; either way they are safe
        when this returns.

        :raises OSError: the outbox could not be written either (the disk); nothing was kept.
        :raises OutboxFull: the outbox reached ``[store] outbox_max_bytes``.
        """
        if not records:
            return
        with self._lock:
            if not self._down_since and not len(self.outbox):
                try:
                    self._send(records)
                    self._stats["sent"] += len(records)
                    self.disk.succeeded()
                    return
                except _CONNECTION_ERRORS as err:
                    self._went_down(err)
                except psycopg.Error as err:  # a record the database refuses would block the queue forever
                    self._stats["dropped"] += len(records)
                    self.disk.failed(OSError(str(err)), f"{len(records)} record(s) refused by the database, dropped")
                    return
            self.outbox.append(records)
            self._stats["queued_total"] += len(records)
        self._wake.set()

    def _send(self, records: Iterable[dict[str, Any]]) -> None:
        hosts, events = [], []
        for record in records:
            if record.get("type") == "host":
                host = record.get("host")
                hosts.append((record["key"], None if host is None else jsonb_text(host), self.appliance))
            elif record.get("type") == "event":
                event = record.get("event") or {}
                data = event.get("data") if isinstance(event.get("data"), dict) else {}
                events.append((record["uid"], str(event.get("mac", "")), float(event.get("time") or 0.0),
                               str(data.get("appliance") or self.appliance), jsonb_text(event)))
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            if hosts:
                cur.executemany(_UPSERT_HOST, hosts)
            if events:
                cur.executemany(_INSERT_EVENT, events)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._store.connect()
        return self._conn

    def _went_down(self, err: Exception) -> None:
        if not self._down_since:
            self._down_since = time.time()
            self._stats["outages"] += 1
            log.error("the store database (%s) is unavailable: %s; boot-path writes are queued in %s until it is back",
                      self._store.masked_dsn, str(err).strip().splitlines()[0] if str(err).strip() else err,
                      self.outbox.path)
        self._last_error = str(err).strip()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- reconnecting ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = FIRST_RETRY
        while not self._stop.is_set():
            if not self._down_since and not len(self.outbox):
                self._wake.wait(1.0)  # bounded, so a wake-up lost to a race costs a second, never the queue
                self._wake.clear()
                delay = FIRST_RETRY
                continue
            if self._flush_outbox():
                delay = FIRST_RETRY
                if self.on_reconnect is not None:
                    try:
                        self.on_reconnect()
                    except Exception:
                        log.exception("after reconnecting to the store database")
                continue
            self._stop.wait(delay)
            delay = min(delay * 2, self.reconnect_max)

    def _flush_outbox(self) -> bool:
        """Send the queue in order; True once it is empty and the database takes writes again."""
        with self._lock:
            try:
                records = self.outbox.records()
                if not records:  # nothing to send: still prove the database answers before saying so
                    self._connection().execute("SELECT 1")
                for start in range(0, len(records), SEND_CHUNK):
                    self._send(records[start:start + SEND_CHUNK])
                if records:
                    self.outbox.remove_first(len(self.outbox))
            except _CONNECTION_ERRORS as err:
                self._went_down(err)
                return False
            except OSError as err:
                log.error("outbox %s: %s", self.outbox.path, err)
                return False
            self._stats["flushed"] += len(records)
            if self._down_since:
                log.info("the store database (%s) is back after %.1f s; sent %d queued record(s)",
                         self._store.masked_dsn, time.time() - self._down_since, len(records))
            self._down_since = 0.0
            self._last_error = ""
            return True

    # -- reading --------------------------------------------------------------------------

    def load_hosts(self) -> dict[str, dict[str, Any]]:
        """Every host document, by key (12 hex digits)."""
        with self._read_lock:
            conn = self._read_connection()
            with conn.cursor() as cur:
                cur.execute(f"SELECT coalesce(json_object_agg(key, host), '{{}}')::text FROM {HOSTS_TABLE} "
                            f"WHERE host IS NOT NULL")
                row = cur.fetchone()
        return json.loads(row[0]) if row else {}

    def load_events(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events of every appliance, oldest first."""
        with self._read_lock:
            conn = self._read_connection()
            # One JSON text for all of them: parsing one big text is several times faster than many.
            row = conn.execute(f"SELECT coalesce(json_agg(event ORDER BY id), '[]')::text FROM (SELECT id, event "
                               f"FROM {EVENTS_TABLE} ORDER BY id DESC LIMIT %s) newest", (limit,)).fetchone()
        return json.loads(row[0]) if row else []

    def host_events(self, mac: str) -> list[dict[str, Any]] | None:
        """Every appliance's events of ``mac``, oldest first; None while the database is away."""
        if self._down_since:
            return None
        try:
            with self._read_lock:
                conn = self._read_connection()
                rows = conn.execute(f"SELECT event::text FROM {EVENTS_TABLE} WHERE mac = %s ORDER BY time, id",
                                    (mac,)).fetchall()
        except psycopg.Error:
            with self._read_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
            return None
        return [json.loads(text) for (text,) in rows]

    def _read_connection(self) -> psycopg.Connection[Any]:
        if self._reader is None or self._reader.closed or self._reader.broken:
            self._reader = self._store.connect(timeout=min(self._store_timeout(), 2.0))
            # An operator's read (a timeline) waits for a slow database at most this long, then
            # falls back to memory; loads at start are bounded by the same.
            self._reader.execute("SET statement_timeout = '30s'")
        return self._reader

    def _store_timeout(self) -> float:
        return float(getattr(self._store, "_timeout", 10.0))

    def prune_changes(self, keep_seconds: float = 600.0) -> None:
        """Forget change-log entries older than ``keep_seconds`` (every listener read them long ago)."""
        with self._read_lock:
            self._read_connection().execute(
                f"DELETE FROM {CHANGES_TABLE} WHERE at < now() - make_interval(secs => %s)", (keep_seconds,))

    # -- status ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return not self._down_since

    def status(self) -> dict[str, Any]:
        """For ``bootbox status`` and doctor: up or not, since when, what is queued."""
        return {
            "state": "unavailable" if self._down_since else "connected",
            "dsn": self._store.masked_dsn,
            "appliance": self.appliance,
            "down_since": self._down_since or None,
            "last_error": self._last_error,
            "queued": len(self.outbox),
            "outbox": str(self.outbox.path),
            **self._stats,
        }
