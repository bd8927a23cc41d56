"""`bootbox doctor`'s database check (docs/postgresql.md): reachable and at a known schema, what
waits in the outbox, and a clear failure (DSN masked) when the database cannot be reached.
Against the session's real PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

from pathlib import Path

from bootbox.config import Settings, load_settings
from bootbox.doctor.checks import Status, check_database
from bootbox.store.outbox import OUTBOX_FILE, Outbox
from bootbox.store.postgresql import SCHEMA_VERSION, PostgreSQLStore
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401  (the session's PostgreSQL)


def _settings(tmp_path: Path, dsn: str) -> Settings:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return load_settings(empty, env={}, overrides={"state_dir": str(tmp_path / "state"),
                                                   "store": {"backend": "postgresql", "dsn": dsn}})


def test_a_reachable_database_at_the_current_schema_passes(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    PostgreSQLStore(dsn).close()
    check = check_database(_settings(tmp_path, dsn))
    assert check.status == Status.OK, check
    assert f"schema {SCHEMA_VERSION} (current)" in check.summary


def test_records_waiting_in_the_outbox_are_a_warning(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    PostgreSQLStore(dsn).close()
    settings = _settings(tmp_path, dsn)
    Outbox(settings.state_path / OUTBOX_FILE).append([{"type": "host", "key": "k", "host": None}] * 3)
    check = check_database(settings)
    assert check.status == Status.WARN and "3 record(s) still queued" in check.summary, check


def test_an_unreachable_database_fails_naming_the_setting_without_its_password(tmp_path: Path) -> None:
    check = check_database(_settings(tmp_path, f"host={tmp_path} dbname=bootbox password=hunter2"))
    assert check.status == Status.FAIL, check
    assert "[store] dsn" in check.summary and "password=***" in check.summary and "hunter2" not in check.summary


def test_the_tinydb_store_has_no_database_to_check(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert check_database(load_settings(empty, env={}, overrides={})).status == Status.SKIP
