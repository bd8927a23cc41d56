"""``bootbox state backup|restore`` with the store in PostgreSQL: pg_dump into the backup file,
pg_restore out of it, through the real CLI against a real server (tests/support/postgres.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bootbox.store.migrate import content_hash, snapshot
from bootbox.store.postgresql import PostgreSQLStore
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401  (the session's PostgreSQL)

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, dsn: str, backend: str = "postgresql") -> Path:
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "secrets.key").write_bytes(b"k" * 32)
    path = tmp_path / f"bootbox-{backend}.toml"
    path.write_text(f'state_dir = "{state}"\n[store]\nbackend = "{backend}"\ndsn = "{dsn}"\n')
    return path


def _cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "bootbox", "--config", str(config), "state", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _populate(dsn: str) -> str:
    store = PostgreSQLStore(dsn)
    try:
        store.put("profiles", "demo", {"name": "demo", "kind": "linux", "spec": {"kernel": "/k", "cmdline": "quiet"}})
        store.put("rules", "r1", {"name": "r1", "all_hosts": True, "items": {"image": "demo"}})
        store.put("answers", "52:54:00:00:00:01", {"hostname": "web1", "password": {"secret": "ciphertext"}})
        return content_hash(snapshot(store))
    finally:
        store.close()


def _documents(dsn: str) -> str:
    store = PostgreSQLStore(dsn)
    try:
        return content_hash(snapshot(store))
    finally:
        store.close()


def test_backup_holds_a_dump_and_restore_brings_the_store_back(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    before = _populate(dsn)
    config = _config(tmp_path, dsn)
    out = tmp_path / "backup.tar.gz"
    done = _cli(config, "backup", str(out), "--json")
    assert json.loads(done.stdout)["files"] >= 2
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
        dump = tar.extractfile("store/bootbox.pgdump").read()  # type: ignore[union-attr]
    assert "state/bootbox.json" not in names and "keys/secrets.key" in names
    assert manifest["store"]["backend"] == "postgresql" and dsn.endswith(f"search_path={manifest['store']['schema']}'")
    assert dump.startswith(b"PGDMP")  # pg_dump's custom format, restorable by any pg_restore
    (tmp_path / "store.pgdump").write_bytes(dump)
    listing = subprocess.run([str(postgres_server.bin_dir / "pg_restore"), "--list", str(tmp_path / "store.pgdump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA" in listing and "bootbox_documents" in listing

    # Things change after the backup; the restore puts the snapshot back, all of it.
    store = PostgreSQLStore(dsn)
    store.delete("rules", "r1")
    store.put("profiles", "later", {"name": "later", "kind": "linux", "spec": {"kernel": "/k2"}})
    changed = content_hash(snapshot(store))
    assert changed != before
    refused = _cli(config, "restore", str(out), check=False)  # an appliance (this store) is still connected
    assert refused.returncode != 0 and "still connected" in refused.stderr + refused.stdout
    assert _documents(dsn) == changed  # nothing was changed
    store.close()
    restored = _cli(config, "restore", str(out), "--json")
    assert json.loads(restored.stdout)["files"] >= 2
    assert _documents(dsn) == before
    # the schema version and the change log came back with the documents
    assert postgres_server.sql("SELECT count(*) FROM bootbox_schema", dsn=dsn) != "0"


def test_no_images_names_the_images_the_database_holds(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    store = PostgreSQLStore(dsn)
    try:
        store.put("p_esxi_depots", "vmware-8.0u2", {"name": "vmware-8.0u2"})
    finally:
        store.close()
    done = _cli(_config(tmp_path, dsn), "backup", str(tmp_path / "b.tar.gz"), "--no-images", "--json")
    assert json.loads(done.stdout)["images_to_reimport"] == ["ESXi depot vmware-8.0u2"]


def test_a_lost_schema_is_restored_from_the_backup(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    before = _populate(dsn)
    config = _config(tmp_path, dsn)
    out = tmp_path / "backup.tar.gz"
    _cli(config, "backup", str(out))
    schema = dsn.rsplit("search_path=", 1)[1].rstrip("'")
    postgres_server.sql(f'DROP SCHEMA "{schema}" CASCADE')  # the database is lost
    _cli(config, "restore", str(out))
    assert _documents(dsn) == before


def test_a_backup_restores_only_into_the_backend_it_came_from(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    _populate(dsn)
    pg_config = _config(tmp_path, dsn)
    out = tmp_path / "backup.tar.gz"
    _cli(pg_config, "backup", str(out))
    tiny = _config(tmp_path / "tiny", "", backend="tinydb")
    refused = _cli(tiny, "restore", str(out), check=False)
    assert refused.returncode != 0 and "holds a PostgreSQL store" in refused.stdout + refused.stderr
    assert not (tmp_path / "tiny" / "state" / "bootbox.json").exists()


def test_a_dump_that_fails_names_the_database_without_its_password(postgres_server: PostgresServer,
                                                                   tmp_path: Path) -> None:
    dsn = f"host={postgres_server.socket_dir} port=5432 dbname=nosuchdb user=bootbox password=hunter2"
    config = _config(tmp_path, dsn)
    done = _cli(config, "backup", str(tmp_path / "backup.tar.gz"), check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "nosuchdb" in said and "hunter2" not in said
    assert not (tmp_path / "backup.tar.gz").exists()


@pytest.fixture(autouse=True)
def _no_tinydb_leftovers(tmp_path: Path) -> None:
    """The PostgreSQL backend keeps no bootbox.json: the backup never archives a stale one."""
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "bootbox.json").write_text('{"rules": {"stale": {"name": "stale"}}}')
