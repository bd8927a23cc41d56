"""The PostgreSQL half of ``bootbox state backup|restore``: PostgreSQL's own ``pg_dump`` and
``pg_restore``, run as the separate client programs they are (Debian: postgresql-client).

**Backup.** ``pg_dump --format=custom --schema=S`` of the schema bootbox's DSN works in (its
``current_schema()``: ``public`` unless the DSN sets a ``search_path``). pg_dump reads in one
repeatable-read transaction, so the dump is one consistent snapshot of every table (documents,
hosts, events, the change log, the schema version) while appliances keep writing; it goes into
the backup tar as ``store/bootbox.pgdump`` beside the keys, the config and the plugins' files.

**Restore** replaces bootbox's objects in that schema in one transaction (``pg_restore --clean
--if-exists --single-transaction``): either the whole snapshot is back or nothing changed. The
schema itself is created if missing and never dropped (other things may live in ``public``).
Every appliance that shares the database must be stopped first: the restore refuses while any
``bootbox`` session (``application_name``) is connected, naming them.

No psycopg here (only :mod:`bootbox.store.postgresql` imports it): psql answers the two small
questions (the schema, who is connected), and the DSN is masked in every message.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from pathlib import Path

from bootbox.config import mask_dsn
from bootbox.errors import BootboxError

DUMP_MEMBER = "store/bootbox.pgdump"
"""Where the dump sits inside a backup tar."""
TIMEOUT = 3600.0
"""Seconds a dump or restore may take (a store with millions of boot events is a big dump)."""


def _tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise BootboxError(f"backing up a PostgreSQL store needs {name} (Debian package postgresql-client)")
    return found


def _run(argv: list[str], what: str, dsn: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BootboxError(f"{what} took longer than {TIMEOUT:.0f} s; nothing was changed") from None
    if done.returncode:
        said = done.stderr.strip().replace(dsn, mask_dsn(dsn))[-1500:]
        raise BootboxError(f"{what} failed ({mask_dsn(dsn)}): {said}")
    return done.stdout


def _query(dsn: str, statement: str, what: str) -> list[str]:
    out = _run([_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", statement], what, dsn)
    return [line for line in out.splitlines() if line]


def current_schema(dsn: str) -> str:
    """The schema bootbox's tables live in for this DSN."""
    rows = _query(dsn, "SELECT current_schema()", "asking PostgreSQL for bootbox's schema")
    if not rows:
        raise BootboxError(f"the DSN {mask_dsn(dsn)} has no current schema (search_path names none that exists)")
    return rows[0]


def dump(dsn: str, target: Path) -> str:
    """Write a custom-format dump of bootbox's schema to ``target``; return the schema's name."""
    schema = current_schema(dsn)
    _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--schema={schema}",
          f"--file={target}", "-d", dsn], "pg_dump of the store", dsn)
    return schema


def documents_in(dsn: str, tables: dict[str, str]) -> list[str]:
    """"label key" of each document of ``tables`` (table → label), e.g. the ESXi images whose
    payloads a ``--no-images`` backup leaves out."""
    names = ", ".join("'" + t.replace("'", "''") + "'" for t in tables)
    rows = _query(dsn, f"SELECT tbl || ' ' || key FROM bootbox_documents WHERE tbl IN ({names}) ORDER BY tbl, key",
                  "listing the store's images")
    return [f"{tables[row.split(' ', 1)[0]]} {row.split(' ', 1)[1]}" for row in rows if " " in row]


def bootbox_sessions(dsn: str) -> list[str]:
    """Other bootbox connections to the database (``application_name`` ``bootbox …``)."""
    return _query(dsn, "SELECT application_name || ' from ' || coalesce(host(client_addr), 'the local socket') "
                       "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                       "AND application_name LIKE 'bootbox%' ORDER BY 1", "listing bootbox's database sessions")


def restore(dsn: str, source: Path, schema: str) -> None:
    """Replace bootbox's objects in ``schema`` with the dump at ``source``, in one transaction."""
    sessions = bootbox_sessions(dsn)
    if sessions:
        raise BootboxError("appliances are still connected to the store database: " + "; ".join(sessions[:5])
                           + ". Stop every bootbox that shares it, then restore; nothing was changed")
    quoted = '"' + schema.replace('"', '""') + '"'
    _query(dsn, f"CREATE SCHEMA IF NOT EXISTS {quoted}", f"creating the schema {schema}")
    listing = _run([_tool("pg_restore"), "--list", str(source)], "reading the dump's table of contents", dsn)
    # The schema stays: --clean would drop it, and with it whatever else lives there.
    keep = [line for line in listing.splitlines() if " SCHEMA - " not in line and "COMMENT - SCHEMA " not in line]
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as handle:
        handle.write("\n".join(keep) + "\n")
        use_list = Path(handle.name)
    try:
        _run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
              "--exit-on-error", f"--use-list={use_list}", "-d", dsn, str(source)],
             "pg_restore of the store (nothing was changed)", dsn)
    finally:
        use_list.unlink(missing_ok=True)
