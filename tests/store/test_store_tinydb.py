"""What only the TinyDB store has to get right: the file, atomic writes, the lock, corruption,
threads and SIGKILL. The behaviour it shares with MemoryStore is in test_store_contract.py."""

from __future__ import annotations

import errno
import glob
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import bootbox.runtime.atomic as atomic
import bootbox.store.tinydb as tinydb_store
from bootbox.errors import BootboxError, NotFound, StoreLocked, ValidationError
from bootbox.runtime.atomic import atomic_write_bytes, remove_stale_temp_files, temp_file_pattern
from bootbox.store.lock import StateDirLock
from bootbox.store.tinydb import TinyDBStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[TinyDBStore]:
    opened = TinyDBStore(state)
    yield opened
    opened.close()


@pytest.fixture
def file_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every atomic file write the store makes, in order."""
    writes: list[Path] = []

    def counting(path: Path, data: bytes, **kwargs: Any) -> None:
        writes.append(Path(path))
        atomic_write_bytes(path, data, **kwargs)

    monkeypatch.setattr(tinydb_store, "atomic_write_bytes", counting)
    return writes


def on_disk(state: Path) -> Any:
    return json.loads((state / "bootbox.json").read_bytes())


def temp_files(state: Path) -> list[str]:
    return glob.glob(temp_file_pattern(state / "bootbox.json"))


def python(script: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """Run ``script`` in a fresh interpreter that can import bootbox from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env, **popen)


# -- the file --------------------------------------------------------------------------------


def test_the_file_is_a_tinydb_database_keyed_by_document_key_and_current_when_put_returns(
    store: TinyDBStore, state: Path
) -> None:
    store.put("hosts", "aa:bb", {"mac": "aa:bb"})
    assert on_disk(state) == {"hosts": {"aa:bb": {"mac": "aa:bb"}}}
    store.put_many("profiles", {"p": {"kind": "linux"}})
    store.delete("hosts", "aa:bb")
    assert on_disk(state) == {"hosts": {}, "profiles": {"p": {"kind": "linux"}}}


def test_tinydb_itself_can_open_and_query_the_file(store: TinyDBStore, state: Path) -> None:
    from tinydb import Query, TinyDB
    from tinydb.table import Table

    class KeyedTable(Table):
        document_id_class = str  # type: ignore[assignment]

    store.put_many("hosts", {"aa:bb": {"vendor": "Dell"}, "cc:dd": {"vendor": "HP"}})
    db = TinyDB(state / "bootbox.json", access_mode="r")
    db.table_class = KeyedTable
    try:
        found = db.table("hosts").search(Query().vendor == "HP")
        assert [(doc.doc_id, dict(doc)) for doc in found] == [("cc:dd", {"vendor": "HP"})]
    finally:
        db.close()


def test_every_put_and_every_batch_is_exactly_one_file_write(store: TinyDBStore, file_writes: list[Path]) -> None:
    store.put("hosts", "a", {})
    assert len(file_writes) == 1
    store.put("hosts", "a", {"replaced": True})  # remove + insert in TinyDB, still one write
    assert len(file_writes) == 2
    store.put_many("hosts", {f"k{i}": {"i": i} for i in range(50)})
    assert len(file_writes) == 3
    with store.batch():
        for i in range(20):
            store.put("hosts", f"b{i}", {})
        store.delete("hosts", "a")
        with store.batch():
            store.put("profiles", "p", {})
    assert len(file_writes) == 4
    store.get("hosts", "b1")
    store.has("hosts", "b1")
    store.all("hosts")
    with store.batch():
        pass
    with pytest.raises(RuntimeError):
        with store.batch():
            store.put("hosts", "x", {})
            raise RuntimeError
    with pytest.raises(ValidationError):
        store.put("hosts", "x", {"bad": object()})
    with pytest.raises(NotFound):
        store.delete("hosts", "missing")
    assert len(file_writes) == 4


def test_reads_are_served_from_memory(store: TinyDBStore, state: Path) -> None:
    store.put("hosts", "k", {"n": 1})
    (state / "bootbox.json").unlink()
    assert store.get("hosts", "k") == {"n": 1}
    assert store.all("hosts") == {"k": {"n": 1}}
    store.put("hosts", "k2", {"n": 2})
    assert on_disk(state) == {"hosts": {"k": {"n": 1}, "k2": {"n": 2}}}


def test_documents_survive_reopening_unchanged(state: Path) -> None:
    docs = {"aa:bb": {"attrs": {"vendor": "Dëll"}, "list": [1, 2.5, None, True], "emoji": "\U0001f600"}, "b": {}}
    first = TinyDBStore(state)
    first.put_many("hosts", docs)
    first.put("profiles", "p", {"pair": (1, 2)})
    before = first.all("hosts"), first.all("profiles")
    first.close()
    second = TinyDBStore(state)
    try:
        assert (second.all("hosts"), second.all("profiles")) == before
        assert second.all("hosts") == docs
    finally:
        second.close()


def test_the_backup_is_the_previous_version(store: TinyDBStore, state: Path) -> None:
    backup = state / "bootbox.json.bak"
    store.put("hosts", "a", {"v": 1})
    assert not backup.exists()
    store.put("hosts", "a", {"v": 2})
    assert json.loads(backup.read_bytes()) == {"hosts": {"a": {"v": 1}}}
    with store.batch():
        store.put("hosts", "a", {"v": 3})
        store.put("hosts", "a", {"v": 4})
    assert json.loads(backup.read_bytes()) == {"hosts": {"a": {"v": 2}}}
    assert on_disk(state) == {"hosts": {"a": {"v": 4}}}


def test_a_failed_file_write_changes_neither_memory_nor_disk(
    store: TinyDBStore, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("hosts", "a", {"v": 1})

    def disk_full(path: Path, data: bytes, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tinydb_store, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put("hosts", "b", {"v": 2})
    with pytest.raises(OSError):
        with store.batch():
            store.put("hosts", "a", {"v": 100})
            store.delete("hosts", "a")
    assert store.all("hosts") == {"a": {"v": 1}}
    assert on_disk(state) == {"hosts": {"a": {"v": 1}}}
    monkeypatch.undo()
    store.put("hosts", "c", {"v": 3})
    assert on_disk(state) == {"hosts": {"a": {"v": 1}, "c": {"v": 3}}}


def test_a_file_name_with_a_directory_is_refused_without_locking(state: Path) -> None:
    with pytest.raises(ValidationError, match="filename"):
        TinyDBStore(state, filename="../elsewhere.json")
    TinyDBStore(state, filename="other.json").close()


# -- corruption ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x00\x00", b'{"hosts": {"a": {"v": 1}}, "prof', b"[1, 2]", b'{"hosts": [1]}', b'{"hosts": {"a": 5}}', b"\xff\xfe"],
    ids=["empty", "zeros", "truncated", "list", "table-not-object", "doc-not-object", "not-utf8"],
)
def test_an_unreadable_file_is_an_error_naming_it_never_an_empty_store(state: Path, content: bytes) -> None:
    state.mkdir()
    path = state / "bootbox.json"
    path.write_bytes(content)
    with pytest.raises(BootboxError) as raised:
        TinyDBStore(state)
    message = str(raised.value)
    assert str(path) in message
    assert "no backup" in message and "move" in message
    assert path.read_bytes() == content
    with StateDirLock(state):  # the failed open released the lock
        pass


def test_a_corrupt_file_points_to_the_backup_and_restoring_it_works(state: Path) -> None:
    store = TinyDBStore(state)
    store.put("hosts", "a", {"v": 1})
    store.put("hosts", "b", {"v": 2})
    store.close()
    path, backup = state / "bootbox.json", state / "bootbox.json.bak"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(BootboxError) as raised:
        TinyDBStore(state)
    assert str(path) in str(raised.value) and str(backup) in str(raised.value)
    path.write_bytes(backup.read_bytes())
    restored = TinyDBStore(state)
    try:
        assert restored.all("hosts") == {"a": {"v": 1}}
    finally:
        restored.close()


def test_temporary_files_left_by_a_crash_are_removed_at_open(state: Path) -> None:
    state.mkdir()
    leftovers = [state / ".bootbox.json.k3j4h5.tmp", state / ".bootbox.json.bak.0123abcd.tmp"]
    unrelated = [state / "notes.tmp", state / ".other.json.x.tmp", state / "bootbox.json.tmp"]
    for path in leftovers + unrelated:
        path.write_bytes(b"half a file")
    TinyDBStore(state).close()
    assert [p for p in leftovers if p.exists()] == []
    assert [p for p in unrelated if p.exists()] == unrelated


# -- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_the_content_with_private_permissions_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "token"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write_bytes(tmp_path / "config.toml", b"x", mode=0o644)
    assert stat.S_IMODE((tmp_path / "config.toml").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "token"]


def test_atomic_write_keeps_the_previous_version_as_backup(tmp_path: Path) -> None:
    path, backup = tmp_path / "f.json", tmp_path / "f.json.bak"
    atomic_write_bytes(path, b"v1", backup=backup)
    assert not backup.exists()
    atomic_write_bytes(path, b"v2", backup=backup)
    atomic_write_bytes(path, b"v3", backup=backup)
    assert (path.read_bytes(), backup.read_bytes()) == (b"v3", b"v2")
    assert glob.glob(temp_file_pattern(path)) == []


def test_atomic_write_copies_the_backup_where_hard_links_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    path, backup = tmp_path / "f", tmp_path / "f.bak"
    atomic_write_bytes(path, b"old", backup=backup)
    monkeypatch.setattr(atomic.os, "link", no_links)
    atomic_write_bytes(path, b"new", backup=backup)
    assert (path.read_bytes(), backup.read_bytes()) == (b"new", b"old")


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    atomic_write_bytes(path, b"good")

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_bytes(path, b"bad", backup=tmp_path / "f.bak")
    monkeypatch.undo()
    assert path.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # neither the new file nor the backup link


def test_remove_stale_temp_files_reports_what_it_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".db.json.abc.tmp"
    stale.write_bytes(b"")
    (tmp_path / "db.json").write_bytes(b"{}")
    assert remove_stale_temp_files(tmp_path / "db.json") == [stale]
    assert remove_stale_temp_files(tmp_path / "db.json") == []
    assert (tmp_path / "db.json").exists()


# -- the state-directory lock ----------------------------------------------------------------


HOLD_LOCK = """
    import sys
    from bootbox.store.lock import StateDirLock
    lock = StateDirLock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
"""


def hold_lock_in_child(state: Path) -> subprocess.Popen[bytes]:
    child = python(HOLD_LOCK, str(state), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"locked\n"
    return child


def test_the_lock_creates_a_private_state_directory_and_records_the_pid(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    with StateDirLock(state) as lock:
        assert lock.held
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert (state / "bootbox.lock").read_text() == f"{os.getpid()}\n"
    assert not lock.held
    lock.release()


def test_a_second_lock_in_the_same_process_fails(state: Path) -> None:
    first = StateDirLock(state)
    with pytest.raises(StoreLocked) as raised:
        StateDirLock(state)
    assert str(raised.value) == (
        f"state directory {state} is in use by another bootbox (pid {os.getpid()}); stop it first, or use --state-dir"
    )
    first.release()
    StateDirLock(state).release()


def test_a_second_store_on_the_same_directory_fails_and_the_first_keeps_working(store: TinyDBStore, state: Path) -> None:
    with pytest.raises(StoreLocked, match="in use by another bootbox"):
        TinyDBStore(state)
    store.put("hosts", "k", {})
    store.close()
    again = TinyDBStore(state)
    assert again.has("hosts", "k")
    again.close()


def test_a_lock_held_by_another_process_is_refused_with_its_pid(state: Path) -> None:
    child = hold_lock_in_child(state)
    try:
        with pytest.raises(StoreLocked) as raised:
            TinyDBStore(state)
        assert str(raised.value) == (
            f"state directory {state} is in use by another bootbox (pid {child.pid}); stop it first, or use --state-dir"
        )
    finally:
        child.communicate(b"")
    assert child.returncode == 0
    TinyDBStore(state).close()


def test_a_lock_left_by_a_killed_process_is_no_obstacle(state: Path) -> None:
    child = hold_lock_in_child(state)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert (state / "bootbox.lock").read_text() == f"{child.pid}\n"  # stale PID, lock gone
    with StateDirLock(state):
        assert (state / "bootbox.lock").read_text() == f"{os.getpid()}\n"


def test_a_program_started_while_locked_does_not_inherit_the_lock(state: Path) -> None:
    lock = StateDirLock(state)
    child = python("import sys; sys.stdin.read()", stdin=subprocess.PIPE, close_fds=False)
    try:
        lock.release()
        # The child's exec closes its copy, but Linux may finish that close (and so the release
        # of the flock) just after Popen returns; an inherited copy would block until the end.
        relock_within(state, seconds=10)
    finally:
        child.communicate(b"")


def relock_within(state: Path, seconds: float) -> None:
    attempts = int(seconds / 0.01)
    for _ in range(attempts):
        try:
            StateDirLock(state).release()
            return
        except StoreLocked:
            threading.Event().wait(0.01)
    pytest.fail(f"{state} still locked after {seconds} s")


# -- threads and crashes ---------------------------------------------------------------------


def test_eight_threads_times_500_puts_all_reach_a_valid_file(state: Path) -> None:
    store = TinyDBStore(state)

    def writer(n: int) -> None:
        for i in range(500):
            store.put("hosts", f"t{n}-{i}", {"thread": n, "i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert len(on_disk(state)["hosts"]) == 4000
    reopened = TinyDBStore(state)
    try:
        docs = reopened.all("hosts")
        assert set(docs) == {f"t{n}-{i}" for n in range(8) for i in range(500)}
        assert all(doc == {"thread": int(k[1]), "i": int(k.split("-")[1])} for k, doc in docs.items())
    finally:
        reopened.close()


PUT_FOREVER = """
    import sys
    from bootbox.store.tinydb import TinyDBStore
    store = TinyDBStore(sys.argv[1])
    prefix, pad = sys.argv[2], "x" * 300
    i = 0
    while True:
        key = f"{prefix}-{i}"
        if i % 10 == 9:
            store.put_many("docs", {key: {"i": i, "pad": pad}, key + "-many": {"i": i}})
        else:
            store.put("docs", key, {"i": i, "pad": pad})
        print(key, flush=True)
        i += 1
"""


def acknowledged_keys_until_killed(state: Path, prefix: str, delay: float) -> set[str]:
    """Start a writer, SIGKILL it ``delay`` s after its first acknowledged put, return every key it acknowledged."""
    child = python(PUT_FOREVER, str(state), prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    assert first, child.stderr.read().decode()
    threading.Event().wait(delay)
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    child.stderr.close()
    child.stdout.close()
    lines = (first + rest).split(b"\n")
    return {line.decode() for line in lines[:-1]}  # the last piece is unterminated: not acknowledged


def test_sigkill_at_random_moments_never_loses_an_acknowledged_put_or_the_file(state: Path) -> None:
    rng = random.Random(20240607)
    acknowledged: set[str] = set()
    for round_ in range(8):
        acknowledged |= acknowledged_keys_until_killed(state, f"r{round_}", rng.uniform(0.0, 0.4))
        store = TinyDBStore(state)  # loads, and would raise on a torn file
        try:
            assert acknowledged <= set(store.all("docs"))
            assert {k + "-many" for k in acknowledged if k.endswith("9")} <= set(store.all("docs"))
        finally:
            store.close()
        assert temp_files(state) == []
    assert len(acknowledged) > 8


def test_thread_safety_does_not_depend_on_callers_using_batch(store: TinyDBStore) -> None:
    """Readers racing writers must never see TinyDB mid-update (a KeyError or a torn table)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                for doc in store.all("hosts").values():
                    assert set(doc) == {"n"}
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for i in range(200):
        key = f"k{i % 7}"
        if i % 2 and store.has("hosts", key):
            store.delete("hosts", key)
        else:
            store.put("hosts", key, {"n": i})
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
