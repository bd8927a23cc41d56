"""What only the PostgreSQL store has to get right: the schema and its migrations, commits that
are in the database when a write returns, rollback when a commit fails, the DSN never shown with
its password, and `bootbox store migrate` both ways. The behaviour it shares with the other
stores is in test_store_contract.py. All against a real server (tests/support/postgres.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bootbox_linux
from bootbox.appliance import open_store
from bootbox.config import Settings, load_settings, mask_dsn
from bootbox.errors import BootboxError, ConfigError, StoreLocked, ValidationError
from bootbox.model import Machine
from bootbox.store.migrate import content_hash, migrate, snapshot
from bootbox.store.postgresql import MIGRATIONS, SCHEMA_VERSION, PostgreSQLStore
from bootbox.store.tinydb import TinyDBStore
from bootbox.testing import start_test_appliance
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401  (the session's PostgreSQL)

REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object) -> Settings:
    empty = tmp_path / "empty.toml"  # never the machine's /etc/bootbox/bootbox.toml
    empty.write_text("")
    return load_settings(empty, env=env or {}, overrides=overrides)


def rows(server: PostgresServer, dsn: str) -> dict[str, object]:
    """The documents as another client (psql) sees them: ``{"table/key": doc}``."""
    out = server.sql("SELECT json_object_agg(tbl || '/' || key, doc) FROM bootbox_documents", dsn=dsn)
    return json.loads(out) if out else {}


# -- schema and migrations --------------------------------------------------------------------


def test_a_new_database_gets_the_current_schema(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    store = PostgreSQLStore(dsn)
    try:
        assert store.schema_version() == SCHEMA_VERSION
    finally:
        store.close()
    versions = postgres_server.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM bootbox_schema", dsn=dsn)
    assert versions == ",".join(str(v) for v, _, _ in MIGRATIONS)


def test_an_older_schema_is_migrated_and_its_documents_kept(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn()
    version_1 = MIGRATIONS[0]
    postgres_server.sql("CREATE TABLE bootbox_schema (version integer PRIMARY KEY, description text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())", dsn=dsn)
    for statement in version_1[2]:
        postgres_server.sql(statement, dsn=dsn)
    postgres_server.sql("INSERT INTO bootbox_schema (version, description) VALUES (1, 'v1')", dsn=dsn)
    postgres_server.sql("""INSERT INTO bootbox_documents VALUES ('rules', 'r1', '{"name": "r1"}')""", dsn=dsn)
    store = PostgreSQLStore(dsn)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get("rules", "r1") == {"name": "r1"}
        store.put("rules", "r2", {"name": "r2"})
    finally:
        store.close()
    revisions = postgres_server.sql("SELECT string_agg(key || '=' || (revision > 0)::text, ',' ORDER BY key)"
                                    " FROM bootbox_documents", dsn=dsn)
    assert revisions == "r1=true,r2=true"


def test_a_newer_schema_is_refused_and_left_alone(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    PostgreSQLStore(dsn).close()
    postgres_server.sql(f"INSERT INTO bootbox_schema (version, description) VALUES ({SCHEMA_VERSION + 7}, 'future')", dsn=dsn)
    with pytest.raises(BootboxError, match=rf"schema is version {SCHEMA_VERSION + 7}, newer than this bootbox knows \({SCHEMA_VERSION}\)"):
        PostgreSQLStore(dsn, state_dir=tmp_path / "state")
    # The refusal released the state directory, and the appliance refuses in the same words.
    settings = _settings(tmp_path, state_dir=str(tmp_path / "state"), store={"backend": "postgresql", "dsn": dsn})
    with pytest.raises(BootboxError, match="newer than this bootbox knows"):
        open_store(settings)
    assert postgres_server.sql("SELECT max(version) FROM bootbox_schema", dsn=dsn) == str(SCHEMA_VERSION + 7)


# -- durability and atomicity -----------------------------------------------------------------


def test_an_acknowledged_write_is_in_the_database_and_a_failed_batch_is_not(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn()
    store = PostgreSQLStore(dsn)
    try:
        store.put("hosts", "aa", {"mac": "aa", "n": [1, 2]})
        assert rows(postgres_server, dsn) == {"hosts/aa": {"mac": "aa", "n": [1, 2]}}
        with pytest.raises(RuntimeError):
            with store.batch():
                store.put("hosts", "bb", {})
                store.delete("hosts", "aa")
                assert rows(postgres_server, dsn) == {"hosts/aa": {"mac": "aa", "n": [1, 2]}}  # nothing before the end
                raise RuntimeError("roll back")
        with store.batch():
            store.put("hosts", "cc", {"v": 1})
            store.delete("hosts", "aa")
        assert rows(postgres_server, dsn) == {"hosts/cc": {"v": 1}}
    finally:
        store.close()


def test_a_commit_the_database_refuses_rolls_memory_back_too(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn()
    store = PostgreSQLStore(dsn)
    try:
        store.put("hosts", "kept", {"v": 1})
        postgres_server.sql("ALTER TABLE bootbox_documents ADD CONSTRAINT no_bad CHECK (NOT doc ? 'bad')", dsn=dsn)
        with pytest.raises(BootboxError, match=r"\[store\] dsn.*cannot write.*no_bad"):
            with store.batch():
                store.put("hosts", "new", {"v": 2})
                store.put("hosts", "kept", {"bad": True})
        assert store.all("hosts") == {"kept": {"v": 1}}
        assert not store.disk.ok  # shown in status until a write succeeds again
        store.put("hosts", "after", {"v": 3})
        assert store.disk.ok
        assert rows(postgres_server, dsn) == {"hosts/kept": {"v": 1}, "hosts/after": {"v": 3}}
    finally:
        store.close()


def test_a_lost_connection_fails_one_write_clearly_and_the_next_reconnects(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn()
    store = PostgreSQLStore(dsn)
    try:
        store.put("hosts", "before", {})
        postgres_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bootbox'")
        with pytest.raises(BootboxError, match=r"\[store\] dsn.*cannot write"):
            store.put("hosts", "lost", {})
        assert not store.has("hosts", "lost")  # not acknowledged, not kept
        store.put("hosts", "after", {})
        assert set(rows(postgres_server, dsn)) == {"hosts/before", "hosts/after"}
    finally:
        store.close()


def test_two_stores_on_one_database_see_each_others_committed_writes_when_opened(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn()
    first = PostgreSQLStore(dsn)
    first.put_many("rules", {"a": {"n": 1}, "b": {"n": 2}})
    second = PostgreSQLStore(dsn)
    try:
        assert second.all("rules") == {"a": {"n": 1}, "b": {"n": 2}}
    finally:
        first.close()
        second.close()


def test_what_postgresql_cannot_hold_is_refused_naming_the_field(postgres_server: PostgresServer) -> None:
    store = PostgreSQLStore(postgres_server.dsn())
    try:
        with pytest.raises(ValidationError) as raised:
            store.put("hosts", "k", {"text": "nul\x00inside"})
        assert raised.value.field == "document"
        with pytest.raises(ValidationError) as raised:
            store.put("hosts", "k\x00", {})
        assert raised.value.field == "key"
        with pytest.raises(ValidationError):
            store.put("hosts", "k", {"text": "\udc80"})
        assert store.all("hosts") == {}
    finally:
        store.close()


def test_the_state_directory_is_locked_while_the_store_is_open(postgres_server: PostgresServer, tmp_path: Path) -> None:
    store = PostgreSQLStore(postgres_server.dsn(), state_dir=tmp_path / "state")
    try:
        with pytest.raises(StoreLocked):
            TinyDBStore(tmp_path / "state")
    finally:
        store.close()
    TinyDBStore(tmp_path / "state").close()


# -- the DSN and its password -----------------------------------------------------------------


def test_a_dsn_password_is_masked_everywhere_it_is_shown(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = f"host={postgres_server.socket_dir} port=1 dbname=bootbox user=bootbox password=hunter2-s3cret"
    with pytest.raises(BootboxError) as raised:
        PostgreSQLStore(dsn, connect_timeout=2)
    message = str(raised.value)
    assert "[store] dsn" in message and "password=***" in message and "cannot connect" in message
    assert "hunter2" not in message
    settings = _settings(tmp_path, env={"BOOTBOX_STORE_BACKEND": "postgresql", "BOOTBOX_STORE_DSN": dsn})
    assert "hunter2" not in json.dumps(settings.to_dict())
    assert mask_dsn("postgresql://bootbox:hunter2@db.lab/bootbox") == "postgresql://bootbox:***@db.lab/bootbox"
    shown = subprocess.run([sys.executable, "-m", "bootbox", "config", "show"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO), "BOOTBOX_CONFIG": "",
                                "BOOTBOX_STORE_BACKEND": "postgresql", "BOOTBOX_STORE_DSN": dsn}, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "store.dsn = " in shown.stdout and "password=***" in shown.stdout and "hunter2" not in shown.stdout


def test_an_unreachable_database_is_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-server-here"
    missing.mkdir()
    with pytest.raises(BootboxError, match=r"store database \(\[store\] dsn = .*no-server-here.*\): cannot connect"):
        PostgreSQLStore(f"host={missing} dbname=bootbox user=bootbox", state_dir=tmp_path / "state", connect_timeout=2)
    TinyDBStore(tmp_path / "state").close()  # the state directory was released


def test_the_store_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="store.backend"):
        _settings(tmp_path, store={"backend": "mysql"})
    with pytest.raises(ConfigError, match="store.dsn"):
        _settings(tmp_path, store={"backend": "postgresql"})
    with pytest.raises(ConfigError, match="store.connect_timeout"):
        _settings(tmp_path, store={"connect_timeout": 0})


# -- bootbox store migrate ----------------------------------------------------------------------


def _populate(state: Path) -> tuple[str, str]:
    """A TinyDB appliance with a profile, a rule, a host profile, a host with secret answers and a
    plugin's own table; returns (mac, secret)."""
    mac, secret = "52:54:00:66:00:01", "migrated-root-pw-77"
    kernel = state.parent / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    app = start_test_appliance(state, [bootbox_linux], {}, None)
    try:
        api = app.api
        api.post("/profiles", {"name": "base", "kind": "linux", "spec": {"kernel": str(kernel), "cmdline": "console=ttyS0"}})
        api.post("/hostprofiles", {
            "name": "web", "kind": "cloud-init",
            "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "root_password", "type": "password"}],
            "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\nchpasswd:\n  users:\n"
                                       "  - {name: root, password: '{{ answers.root_password }}', type: hash}\n"}})
        api.post("/rules", {"name": "web", "all_hosts": True, "items": {"image": "base", "host_profile": "web"}})
        assert app.host(mac).boot()  # discovered and associated
        api.request("PATCH", f"/hosts/{mac}/answers", {"values": {"hostname": "web01", "root_password": secret}})
        app.service.store.put("myplugin_things", "t1", {"plugin": "data", "list": [1, "二"]})
    finally:
        app.appliance.stop()
    return mac, secret


def test_store_migrate_round_trips_a_populated_appliance_and_it_boots_from_postgresql(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    mac, secret = _populate(state)
    with _opened(state) as before:
        original = snapshot(before)
    assert {"profiles", "rulesets", "hostprofiles", "answers", "myplugin_things"} <= set(original), set(original)
    assert secret not in json.dumps(original)  # answers are stored encrypted, and move that way
    dsn = postgres_server.dsn()

    moved = subprocess.run([sys.executable, "-m", "bootbox", "--state-dir", str(state), "store", "migrate",
                            "--to", "postgresql", "--dsn", dsn, "--json"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO), "BOOTBOX_CONFIG": ""},
                           check=False)
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["sha256"] == content_hash(original)
    assert report["tables"] == {table: len(docs) for table, docs in sorted(original.items())}
    assert report["hosts"] == 1 and report["events"] >= 1  # the host log and the journal moved too (issue 20)
    assert postgres_server.sql("SELECT count(*) FROM bootbox_hosts", dsn=dsn) == "1"

    app = start_test_appliance(state, [bootbox_linux], {"store": {"backend": "postgresql", "dsn": dsn}}, None)
    try:
        assert type(app.service.store).__name__ == "PostgreSQLStore"
        spec = app.service.decide(Machine(mac=mac, arch=0, vendor_class="PXEClient", server_ip="127.0.0.1"))
        assert spec is not None and spec.boot_file == "undionly.kpxe"
        script = app.host(mac).boot()
        assert "vmlinuz" in script or "kernel" in script
        rendered = app.api.request("POST", f"/hosts/{mac}/render/cloud-init")
        assert "web01" in json.dumps(rendered) and secret not in json.dumps(rendered)
        app.api.post("/rules", {"name": "after", "all_hosts": True, "items": {"image": "base"}})  # written to PostgreSQL
    finally:
        app.appliance.stop()
    assert '"after"' in json.dumps(rows(postgres_server, dsn))  # the new rule went to PostgreSQL

    with pytest.raises(BootboxError, match="already holds .* --replace"):
        migrate(to="tinydb", state_dir=state, dsn=dsn)
    back = migrate(to="tinydb", state_dir=state, dsn=dsn, replace=True)
    assert back.replaced == sum(len(d) for d in original.values())
    with _opened(state) as after:
        returned = snapshot(after)
    assert '"after"' in json.dumps(returned["rulesets"]) and '"after"' not in json.dumps(original["rulesets"])
    changed = {"rulesets", "boots"}  # the rule added on PostgreSQL; the host's boot on it
    assert set(returned) == set(original)
    assert {t: d for t, d in returned.items() if t not in changed} == {t: d for t, d in original.items() if t not in changed}


def test_store_migrate_refuses_while_the_appliance_runs(postgres_server: PostgresServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    app = start_test_appliance(state, [], {}, None)
    try:
        with pytest.raises(StoreLocked, match="stop it first"):
            migrate(to="postgresql", state_dir=state, dsn=postgres_server.dsn())
    finally:
        app.appliance.stop()


class _opened:
    """A TinyDB store opened for a moment (a context manager)."""

    def __init__(self, state: Path) -> None:
        self.store = TinyDBStore(state)

    def __enter__(self) -> TinyDBStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
