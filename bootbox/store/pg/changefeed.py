"""ChangeFeed: what the other appliances commit, in this one's memory within moments (LISTEN/NOTIFY).

Every row written to ``bootbox_documents`` or ``bootbox_hosts`` is logged in ``bootbox_changes``
by a trigger, in commit order, and each statement sends a NOTIFY on ``bootbox_changes_<schema>``
(migration 3, :mod:`bootbox.store.postgresql`). One thread per appliance LISTENs on its own
connection and blocks in psycopg's ``notifies()`` — no query runs until a notification arrives —
then reads the log entries after the last one it applied, fetches the rows they name as they are
*now*, and hands them on: documents into the store's memory
(:meth:`~bootbox.store.postgresql.PostgreSQLStore.apply_remote`), then ``on_documents(tables)``
so the service rebuilds what it derives from them (the compiled rules, profiles, host profiles);
hosts to ``on_hosts``. Reading the current row, not the logged version, makes applying a change
twice, or in a batch with a later one, harmless; this appliance's own changes come back the same
way and change nothing.

If the connection is lost the thread reconnects with backoff and, once connected, reloads every
document and host (it cannot know what it missed), then listens again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import psycopg
from psycopg import sql

from bootbox.store.postgresql import (
    CHANGES_TABLE,
    DOCUMENTS_TABLE,
    HOSTS_TABLE,
    PostgreSQLStore,
    max_revision,
)

log = logging.getLogger("bootbox.store.pg")

WAKE_SECONDS = 0.5
"""How long ``notifies()`` blocks before the thread looks at its stop flag (no query is sent)."""
FIRST_RETRY = 0.2
PRUNE_SECONDS = 300.0
"""How often the change log is pruned of entries older than :data:`KEEP_CHANGES` seconds."""
KEEP_CHANGES = 600.0

HostChanges = dict[str, "dict[str, Any] | None"]
HostsCallback = Callable[[list[str], Callable[[], HostChanges]], None]
"""``on_hosts(keys, fetch)``: the host keys that changed, and how to read their rows now — called
in that order, so the receiver can note its own state of those hosts before their rows are read."""


class _NotYet(Exception):
    """Reconnected, but not ready to reload yet; tried again after the backoff."""


class ChangeFeed:
    """Applies other appliances' changes to ``store`` and calls back; see the module docstring."""

    def __init__(self, store: PostgreSQLStore, *, on_documents: Callable[[set[str]], None],
                 on_hosts: HostsCallback, reconnect_max: float = 10.0,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self._store = store
        self._on_documents = on_documents
        self._on_hosts = on_hosts
        self._ready = ready
        self.reconnect_max = reconnect_max
        self._last = store.loaded_revision
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.state = "starting"
        self.last_error = ""
        self.stats = dict.fromkeys(("notifications", "changes", "documents", "hosts", "resyncs"), 0)
        self._thread = threading.Thread(target=self._run, name="bootbox-pg-listener", daemon=True)

    def start(self, wait: float = 10.0) -> None:
        """Start listening; wait (bounded) until the LISTEN is in place, so a change committed
        right after start-up is not missed."""
        self._thread.start()
        self._connected.wait(wait)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=WAKE_SECONDS * 4 + 1)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "last_revision": self._last, "last_error": self.last_error, **self.stats}

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        delay, lost, pruned = FIRST_RETRY, False, time.monotonic()
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._store.connect()
                schema = conn.execute("SELECT current_schema()").fetchone()
                channel = f"bootbox_changes_{schema[0] if schema else 'public'}"
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if lost:
                    if not self._ready():
                        # This appliance's own queued boot writes are newer than the rows they
                        # would replace: reload only once the outbox has reached the database.
                        raise _NotYet("waiting for this appliance's outbox to reach the database")
                    self._resync(conn)
                self._catch_up(conn)
                if lost:
                    log.info("change feed: connected to the store database again")
                self.state, self.last_error, delay, lost = "listening", "", FIRST_RETRY, False
                self._connected.set()
                while not self._stop.is_set():
                    woken = sum(1 for _ in conn.notifies(timeout=WAKE_SECONDS))
                    if woken:
                        self.stats["notifications"] += woken
                        self._catch_up(conn)
                    if time.monotonic() - pruned > PRUNE_SECONDS:
                        pruned = time.monotonic()
                        conn.execute(f"DELETE FROM {CHANGES_TABLE} WHERE at < now() - make_interval(secs => %s)",
                                     (KEEP_CHANGES,))
            except (psycopg.Error, _NotYet) as err:
                if not lost:
                    log.error("change feed: lost the store database (%s): %s; reconnecting",
                              self._store.masked_dsn, str(err).strip().splitlines()[0] if str(err).strip() else err)
                self.state, self.last_error, lost = "reconnecting", str(err).strip(), True
                self._connected.set()  # start() must not wait for an outage to end
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
            except Exception:
                log.exception("change feed: applying a change failed; reloading everything")
                lost = True
                self._stop.wait(delay)
            finally:
                if conn is not None:
                    conn.close()
        self.state = "stopped"

    def _catch_up(self, conn: psycopg.Connection[Any]) -> None:
        """Apply every logged change after the last one applied."""
        rows = conn.execute(f"SELECT revision, kind, tbl, key, origin FROM {CHANGES_TABLE} WHERE revision > %s "
                            f"ORDER BY revision", (self._last,)).fetchall()
        if not rows:
            return
        docs = list(dict.fromkeys((tbl, key) for _, kind, tbl, key, _ in rows if kind == "doc"))
        # A host whose last change here is this appliance's own is as new in memory as in the
        # database (or newer): only the others are read. Documents are all read: an operator
        # write is rare, and reading it back costs one query.
        last_by = {key: origin for _, kind, _, key, origin in rows if kind == "host"}
        hosts = [key for key, origin in last_by.items() if origin != self._store.origin]
        if docs:
            fetched = conn.execute(
                f"SELECT c.tbl, c.key, d.doc::text FROM unnest(%s::text[], %s::text[]) AS c(tbl, key) "
                f"LEFT JOIN {DOCUMENTS_TABLE} d ON d.tbl = c.tbl AND d.key = c.key",
                ([t for t, _ in docs], [k for _, k in docs])).fetchall()
            tables = self._store.apply_remote({(t, k): None if text is None else json.loads(text)
                                               for t, k, text in fetched})
            self.stats["documents"] += len(docs)
            if tables:
                self._on_documents(tables)
        if hosts:
            def fetch() -> HostChanges:
                fetched = conn.execute(
                    f"SELECT c.key, h.host::text FROM unnest(%s::text[]) AS c(key) "
                    f"LEFT JOIN {HOSTS_TABLE} h ON h.key = c.key", (hosts,)).fetchall()
                return {key: None if text is None else json.loads(text) for key, text in fetched}

            self._on_hosts(hosts, fetch)
            self.stats["hosts"] += len(hosts)
        self.stats["changes"] += len(rows)
        self._last = int(rows[-1][0])

    def _resync(self, conn: psycopg.Connection[Any]) -> None:
        """Reload everything after an outage: documents into the store, every host row (removed
        hosts included, as NULL) to ``on_hosts``."""
        last = max_revision(conn)
        tables = self._store.reload(conn)
        if tables:
            self._on_documents(tables)
        keys = [key for (key,) in conn.execute(f"SELECT key FROM {HOSTS_TABLE}").fetchall()]

        def fetch() -> HostChanges:
            rows = conn.execute(f"SELECT key, host::text FROM {HOSTS_TABLE}").fetchall()
            return {key: None if text is None else json.loads(text) for key, text in rows}

        self._on_hosts(keys, fetch)
        self._last = last
        self.stats["resyncs"] += 1
