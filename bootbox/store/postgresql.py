"""PostgreSQLStore: the store in a PostgreSQL database (``[store] backend = "postgresql"``).

This is the only module in bootbox that imports psycopg. It is a write-through twin of
:class:`~bootbox.store.tinydb.TinyDBStore` on the same :class:`~bootbox.store.memory.DictStore`
engine:

* every document is loaded into memory when the store opens, so reads (and so the boot path)
  never wait on the database;
* every outermost write (``put``, ``put_many``, ``delete``, a whole ``batch()``) is one
  PostgreSQL transaction, committed before the call returns: an acknowledged write is in the
  database (``synchronous_commit = on`` for this session). If the commit fails, the engine's undo
  log puts memory back as it was and the caller gets the error: all or nothing, as the Protocol
  promises;
* the schema is versioned (:data:`MIGRATIONS`, table ``bootbox_schema``): an older schema is
  migrated on open, under an advisory lock so two appliances never migrate at once, and a newer
  one is refused, naming both versions.

Each document is one row of ``bootbox_documents`` (``tbl``, ``key``, ``doc jsonb``,
``revision``); ``revision`` comes from one sequence and grows with every write, which is what a
later change feed (LISTEN/NOTIFY, docs/postgresql.md) needs to catch up from "everything after
revision N". Deletes are rows removed; a change feed would add a tombstone table in a migration.

The DSN may hold a password: it is masked (:func:`bootbox.config.mask_dsn`) in every message, and
any error text is scrubbed of it.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import psycopg
from psycopg import sql

from bootbox.config import mask_dsn
from bootbox.errors import BootboxError, ValidationError
from bootbox.store.diskhealth import DiskHealth
from bootbox.store.lock import StateDirLock
from bootbox.store.memory import DictStore, Tables

SCHEMA_TABLE = "bootbox_schema"
DOCUMENTS_TABLE = "bootbox_documents"
HOSTS_TABLE = "bootbox_hosts"
EVENTS_TABLE = "bootbox_events"
CHANGES_TABLE = "bootbox_changes"
# pg_advisory_xact_lock key for migrations: "bootbox" in ASCII, so it is recognisable in pg_locks.
_MIGRATION_LOCK = 0x626F6F74626F78
# ... and the one every logged change takes, so the change log's order is the commit order ("bootcha").
_CHANGE_LOCK = 0x626F6F74636861

# (version, what it does, SQL statements). Append only: a released step is never edited, because
# databases already at that version would never run the edit.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "documents: one row per (table, key), the document as jsonb", (
        f"CREATE TABLE {DOCUMENTS_TABLE} (tbl text NOT NULL, key text NOT NULL, doc jsonb NOT NULL,"
        f" PRIMARY KEY (tbl, key))",
    )),
    (2, "revisions: every write numbered from one sequence, for change feeds", (
        "CREATE SEQUENCE bootbox_revision",
        f"ALTER TABLE {DOCUMENTS_TABLE} ADD COLUMN revision bigint NOT NULL DEFAULT nextval('bootbox_revision')",
        f"ALTER TABLE {DOCUMENTS_TABLE} ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()",
        f"CREATE INDEX {DOCUMENTS_TABLE}_revision ON {DOCUMENTS_TABLE} (revision)",
    )),
    (3, "several appliances: hosts, boot events, a change log with NOTIFY, appliances' outbox marks", (
        # A host is one row; a removed host keeps its row with host = NULL, so a change feed sees it.
        f"CREATE TABLE {HOSTS_TABLE} (key text PRIMARY KEY, host jsonb, appliance text NOT NULL DEFAULT '',"
        f" updated_at timestamptz NOT NULL DEFAULT now())",
        # uid: the event's identity, so an outbox replayed twice (a crash between the commit and
        # the truncation of the local queue) inserts it once.
        f"CREATE TABLE {EVENTS_TABLE} (id bigserial PRIMARY KEY, uid text NOT NULL UNIQUE, mac text NOT NULL,"
        f" time double precision NOT NULL, appliance text NOT NULL DEFAULT '', event jsonb NOT NULL)",
        f"CREATE INDEX {EVENTS_TABLE}_mac ON {EVENTS_TABLE} (mac, time)",
        f"CREATE TABLE {CHANGES_TABLE} (revision bigserial PRIMARY KEY, kind text NOT NULL, tbl text NOT NULL,"
        f" key text NOT NULL, origin text NOT NULL DEFAULT '', appliance text NOT NULL DEFAULT '',"
        f" at timestamptz NOT NULL DEFAULT now())",
        # Every row change is logged; the transaction-level advisory lock makes the log's order
        # the commit order, so a reader that has seen revision N never later finds a smaller one
        # committed. The statement trigger sends one NOTIFY per statement (identical ones in a
        # transaction collapse into one), on a channel named after the schema.
        f"""CREATE FUNCTION bootbox_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            row_key text;
            row_tbl text;
        BEGIN
            PERFORM pg_advisory_xact_lock({_CHANGE_LOCK});
            IF TG_OP = 'DELETE' THEN row_key := OLD.key; ELSE row_key := NEW.key; END IF;
            IF TG_TABLE_NAME = '{HOSTS_TABLE}' THEN
                row_tbl := '';
            ELSIF TG_OP = 'DELETE' THEN
                row_tbl := OLD.tbl;
            ELSE
                row_tbl := NEW.tbl;
            END IF;
            INSERT INTO {CHANGES_TABLE} (kind, tbl, key, origin, appliance) VALUES (
                CASE WHEN TG_TABLE_NAME = '{HOSTS_TABLE}' THEN 'host' ELSE 'doc' END, row_tbl, row_key,
                coalesce(current_setting('bootbox.origin', true), ''),
                coalesce(current_setting('bootbox.appliance', true), ''));
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION bootbox_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('bootbox_changes_' || TG_TABLE_SCHEMA, '');
            RETURN NULL;
        END $$""",
        f"CREATE TRIGGER bootbox_documents_log AFTER INSERT OR UPDATE OR DELETE ON {DOCUMENTS_TABLE}"
        f" FOR EACH ROW EXECUTE FUNCTION bootbox_log_change()",
        f"CREATE TRIGGER bootbox_documents_notify AFTER INSERT OR UPDATE OR DELETE ON {DOCUMENTS_TABLE}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION bootbox_notify_change()",
        f"CREATE TRIGGER bootbox_hosts_log AFTER INSERT OR UPDATE OR DELETE ON {HOSTS_TABLE}"
        f" FOR EACH ROW EXECUTE FUNCTION bootbox_log_change()",
        f"CREATE TRIGGER bootbox_hosts_notify AFTER INSERT OR UPDATE OR DELETE ON {HOSTS_TABLE}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION bootbox_notify_change()",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_UPSERT = (
    f"INSERT INTO {DOCUMENTS_TABLE} (tbl, key, doc) VALUES (%s, %s, %s::jsonb) "
    f"ON CONFLICT (tbl, key) DO UPDATE SET doc = EXCLUDED.doc, "
    f"revision = nextval('bootbox_revision'), updated_at = now()"
)
_DELETE = f"DELETE FROM {DOCUMENTS_TABLE} WHERE tbl = %s AND key = %s"


class StoreUnavailable(BootboxError):
    """The database cannot be reached: an operator write that cannot be made durable is refused
    (HTTP 503, the CLI exits non-zero) rather than kept somewhere the other appliances never see."""

    http_status = 503


class PostgreSQLStore(DictStore):
    """A :class:`~bootbox.store.Store` whose documents live in PostgreSQL (and, for reading, in memory).

    :param dsn: a libpq connection string or URI (``[store] dsn``).
    :param state_dir: when given, locked while the store is open, as TinyDBStore locks it: the
        appliance's journal and host log stay files there (docs/postgresql.md).
    :param migrate: bring an older schema up to :data:`SCHEMA_VERSION` (``False``: refuse it).
    :param appliance: this appliance's name (``[appliance] name``), recorded with every change it
        makes; :attr:`origin` (random, per process) tells its own changes from the others'.
    :raises BootboxError: the database is unreachable or refuses us (the message names
        ``[store] dsn``, masked), or its schema is newer than this bootbox knows.
    """

    def __init__(self, dsn: str, *, state_dir: Path | str | None = None, connect_timeout: float = 10.0,
                 migrate: bool = True, appliance: str = "") -> None:
        self._dsn = dsn
        self._timeout = connect_timeout
        self.appliance = appliance
        self.origin = uuid.uuid4().hex
        self.masked_dsn = mask_dsn(dsn)
        self.disk = DiskHealth(f"store {self.masked_dsn}")
        self._dir_lock = StateDirLock(state_dir) if state_dir is not None else None
        try:
            self._conn = self._guard("connect", lambda: self.connect())
            try:
                self._guard("open the schema", lambda: ensure_schema(self._conn, migrate=migrate))
                # Read before the documents: a change committed after it is replayed by the
                # change feed (bootbox.store.pg.changefeed), so none falls between the two.
                self.loaded_revision = self._guard("read the change log", lambda: max_revision(self._conn))
                tables = self._guard("load the documents", lambda: _load(self._conn))
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            if self._dir_lock is not None:
                self._dir_lock.release()
            raise
        super().__init__(tables)

    def put_many(self, table: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        for key, doc in docs.items():
            check_storable(key, doc)
        super().put_many(table, docs)

    @property
    def dsn(self) -> str:
        """The DSN as configured (with any password): for this process's other connections only."""
        return self._dsn

    def connect(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """A new connection marked with this store's origin and appliance name (the change log
        records both, so each appliance skips its own changes and the timeline names the writer)."""
        return _connect(self._dsn, self._timeout if timeout is None else timeout,
                        origin=self.origin, appliance=self.appliance)

    def apply_remote(self, changes: Mapping[tuple[str, str], dict[str, Any] | None]) -> set[str]:
        """Put documents another appliance committed into memory (``None``: it deleted it),
        without writing them back; return the tables that changed. Under the store's lock, so a
        local batch is never interleaved with them."""
        changed: set[str] = set()
        with self._lock:
            if self._closed:
                return changed
            for (table, key), doc in changes.items():
                rows = self._tables.setdefault(table, {})
                if doc is None:
                    if rows.pop(key, None) is not None:
                        changed.add(table)
                elif rows.get(key) != doc:
                    rows[key] = doc
                    changed.add(table)
        return changed

    def reload(self, conn: psycopg.Connection[Any]) -> set[str]:
        """Replace memory with every document in the database (after the change feed lost track,
        e.g. across an outage); return the tables that differ."""
        tables = _load(conn)
        with self._lock:
            if self._closed:
                return set()
            changed = {t for t in set(tables) | set(self._tables) if tables.get(t, {}) != self._tables.get(t, {})}
            self._tables.clear()
            self._tables.update(tables)
        return changed

    def schema_version(self) -> int:
        """The version of the database's schema (for status and doctor)."""
        with self._lock:
            self._check_open()
            return self._guard("read the schema version", lambda: _current_version(self._conn))

    def close(self) -> None:
        """Close the connection and release the state directory. Every write was committed when it returned."""
        with self._lock:
            super().close()
            self._conn.close()
            if self._dir_lock is not None:
                self._dir_lock.release()

    def _commit(self) -> None:
        """Write every document the outermost write touched, in one transaction."""
        touched = dict.fromkeys((table, key) for table, key, _ in self._undo)
        rows = [(table, key, self._tables.get(table, {}).get(key)) for table, key in touched]

        def write() -> None:
            with self._conn.transaction(), self._conn.cursor() as cur:
                upserts = [(t, k, _jsonb(d)) for t, k, d in rows if d is not None]
                deletes = [(t, k) for t, k, d in rows if d is None]
                if upserts:
                    cur.executemany(_UPSERT, upserts)
                if deletes:
                    cur.executemany(_DELETE, deletes)

        try:
            self._guard("write", write)
        except BootboxError as err:
            self.disk.failed(OSError(str(err)), "the write was refused and rolled back")
            raise
        self.disk.succeeded()

    def _guard(self, doing: str, call: Callable[[], Any]) -> Any:
        """Run ``call``; a database error becomes a BootboxError naming ``[store] dsn``, masked.

        A broken connection is replaced on the next write (libpq does not reconnect by itself),
        so the appliance writes again as soon as the database is back.
        """
        try:
            if doing == "write" and (self._conn.closed or self._conn.broken):
                self._conn = self.connect()
            return call()
        except psycopg.OperationalError as err:
            raise StoreUnavailable(f"store database ([store] dsn = {self.masked_dsn!r}): cannot {doing}: "
                                   f"{_scrub(str(err).strip(), self._dsn)}") from None
        except psycopg.Error as err:
            raise BootboxError(f"store database ([store] dsn = {self.masked_dsn!r}): cannot {doing}: "
                               f"{_scrub(str(err).strip(), self._dsn)}") from None

    def __repr__(self) -> str:
        return f"PostgreSQLStore({self.masked_dsn!r})"


def check_storable(key: object, doc: object) -> None:
    """Refuse what PostgreSQL cannot hold although JSON can: NUL characters (text and jsonb
    refuse them) and lone surrogates (not UTF-8). Raised before anything is written, naming the
    field, like every other invalid input; other errors are left to the engine's checks."""
    if isinstance(key, str) and ("\x00" in key or not _utf8(key)):
        raise ValidationError("key", f"{key!r}: PostgreSQL cannot store NUL characters or lone surrogates")
    if isinstance(doc, Mapping):
        try:
            text = json.dumps(dict(doc), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return  # the engine refuses it, with its own message
        if "\\u0000" in text or not _utf8(text):
            raise ValidationError("document", "PostgreSQL cannot store NUL characters (\\u0000) or lone surrogates")


def ensure_schema(conn: psycopg.Connection[Any], *, migrate: bool = True) -> int:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`; return the version found.

    :raises BootboxError: the schema is newer than this bootbox (never touched), or older and
        ``migrate`` is false.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version integer PRIMARY KEY, "
                     f"description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        found = _current_version(conn)
        if found > SCHEMA_VERSION:
            raise BootboxError(f"the store database's schema is version {found}, newer than this bootbox knows "
                               f"({SCHEMA_VERSION}): upgrade bootbox, or point [store] dsn at another database")
        if found < SCHEMA_VERSION and found and not migrate:
            raise BootboxError(f"the store database's schema is version {found}; this bootbox needs {SCHEMA_VERSION}: "
                               "start it with migrations allowed")
        for version, description, statements in MIGRATIONS:
            if version <= found:
                continue
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]  # literals of this module only
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)", (version, description))
    return found


def max_revision(conn: psycopg.Connection[Any]) -> int:
    """The newest entry of the change log (0 when it is empty)."""
    row = conn.execute(f"SELECT coalesce(max(revision), 0) FROM {CHANGES_TABLE}").fetchone()
    return int(row[0]) if row else 0


def _current_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}").fetchone()
    return int(row[0]) if row else 0


def _connect(dsn: str, timeout: float, *, origin: str = "", appliance: str = "") -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True,
                           application_name=f"bootbox {appliance}".strip()[:63])
    # Explicit, whatever the server's default: a commit returns only once it is on disk.
    conn.execute("SET synchronous_commit = on")
    conn.execute("SELECT set_config('bootbox.origin', %s, false), set_config('bootbox.appliance', %s, false)",
                 (origin, appliance))
    return conn


def _load(conn: psycopg.Connection[Any]) -> Tables:
    """Every document, one JSON text per table: parsing one big text is about 5x faster than
    100,000 small ones (measured: 101k documents opened in 0.4 s instead of 5 s)."""
    query = sql.SQL("SELECT tbl, json_object_agg(key, doc)::text FROM {} GROUP BY tbl")
    with conn.cursor() as cur:
        cur.execute(query.format(sql.Identifier(DOCUMENTS_TABLE)))
        return {table: json.loads(text) for table, text in cur}


def _jsonb(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scrub(message: str, dsn: str) -> str:
    """``message`` without the DSN's password, should libpq ever echo it."""
    for match in re.finditer(r"(?i)password\s*=\s*'?([^\s'&]+)|://[^/@:]*:([^@/]+)@", dsn):
        secret = match.group(1) or match.group(2)
        if secret:
            message = message.replace(secret, "***")
    return message
