"""A one-shot look at the store database for ``bootbox doctor``: reachable, and at which schema."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from bootbox.config import mask_dsn
from bootbox.store.postgresql import SCHEMA_TABLE, SCHEMA_VERSION, _scrub


@dataclass(frozen=True)
class DatabaseProbe:
    """``error`` (empty when it answered), the schema ``version`` found and the one ``known``."""

    error: str
    version: int = 0
    known: int = SCHEMA_VERSION


def probe_database(dsn: str, timeout: float = 5.0) -> DatabaseProbe:
    """Connect once (read only, nothing is created or migrated) and read the schema version."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True,
                             application_name="bootbox doctor") as conn:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_TABLE,)).fetchone()
            if not exists or not exists[0]:
                return DatabaseProbe("", 0)
            row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}").fetchone()
            return DatabaseProbe("", int(row[0]) if row else 0)
    except psycopg.Error as err:
        text = _scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, dsn)
        return DatabaseProbe(f"cannot reach the store database ([store] dsn = {mask_dsn(dsn)!r}): {text}")
