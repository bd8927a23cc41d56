"""The boot-event journal: memory rings, the JSON-lines file, rotation, restarts and the writer thread."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import bootbox.store.journal as journal_module
from bootbox.errors import BootboxError, ValidationError
from bootbox.store.journal import Journal
from bootbox.model import BootEvent

WAIT = 30.0  # generous: only reached if something is broken


def event(mac: str = "aa:bb:cc:dd:ee:01", n: int = 0, **data: Any) -> BootEvent:
    return BootEvent(mac=mac, kind="dhcp.offer", message=f"event {n}", data={"n": n, **data}, time=1000.0 + n)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def numbers(events: list[BootEvent]) -> list[int]:
    return [e.data["n"] for e in events]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    opened = Journal(path)
    opened.start()
    yield opened
    opened.close()


class Gate:
    """Holds the writer thread inside its write until opened, and says when it got there."""

    def __init__(self, journal: Journal) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        write = journal._write_batch

        def gated(batch: list[BootEvent], pause: float = 0.0) -> bool:
            self.entered.set()
            assert self.opened.wait(WAIT)
            return write(batch, pause)

        journal._write_batch = gated  # type: ignore[method-assign]


# -- memory ----------------------------------------------------------------------------------


def test_events_are_per_host_oldest_first_with_limit_and_since() -> None:
    journal = Journal(None)
    journal.start()
    for n in range(10):
        journal.append(event("aa:bb:cc:dd:ee:01" if n % 2 else "aa:bb:cc:dd:ee:02", n))
    assert numbers(journal.events("aa:bb:cc:dd:ee:01")) == [1, 3, 5, 7, 9]
    assert numbers(journal.events("aa:bb:cc:dd:ee:01", limit=2)) == [7, 9]
    assert numbers(journal.events("aa:bb:cc:dd:ee:01", limit=0)) == []
    assert numbers(journal.events("aa:bb:cc:dd:ee:01", since=1005.0)) == [5, 7, 9]
    assert numbers(journal.events("aa:bb:cc:dd:ee:01", since=1002.0, limit=1)) == [9]
    assert journal.events("aa:bb:cc:dd:ee:99") == []
    assert journal.macs() == ["aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02"]


def test_recent_is_the_newest_events_of_all_hosts_oldest_first() -> None:
    journal = Journal(None, recent=5)
    for n in range(8):
        journal.append(event(f"aa:bb:cc:dd:ee:{n:02x}", n))
    assert numbers(journal.recent()) == [3, 4, 5, 6, 7]
    assert numbers(journal.recent(2)) == [6, 7]
    assert journal.recent(0) == []


def test_each_host_keeps_only_its_last_per_host_events() -> None:
    journal = Journal(None, per_host=3)
    for n in range(10):
        journal.append(event("aa:bb:cc:dd:ee:01", n))
    journal.append(event("aa:bb:cc:dd:ee:02", 10))
    assert numbers(journal.events("aa:bb:cc:dd:ee:01")) == [7, 8, 9]
    assert numbers(journal.events("aa:bb:cc:dd:ee:02")) == [10]


def test_beyond_max_hosts_the_least_recently_active_host_is_forgotten() -> None:
    journal = Journal(None, max_hosts=2)
    journal.append(event("aa:bb:cc:dd:ee:0a", 0))
    journal.append(event("aa:bb:cc:dd:ee:0b", 1))
    journal.append(event("aa:bb:cc:dd:ee:0a", 2))
    journal.append(event("aa:bb:cc:dd:ee:0c", 3))
    assert journal.macs() == ["aa:bb:cc:dd:ee:0a", "aa:bb:cc:dd:ee:0c"]
    assert numbers(journal.recent()) == [0, 1, 2, 3]  # the overall ring is bounded separately


def test_a_memory_only_journal_counts_but_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(None)
    journal.start()
    journal.append(event())
    journal.flush()
    journal.close()
    journal.close()
    assert journal.stats["appended"] == 1 and journal.stats["written"] == 0 and journal.stats["dropped"] == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"per_host": 0}, {"recent": 0}, {"max_bytes": 0}, {"backups": -1}, {"max_hosts": 0}, {"queue_size": 0}, {"load_bytes": 0}],
)
def test_nonsense_sizes_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        Journal(None, **kwargs)


# -- the file --------------------------------------------------------------------------------


def test_each_event_is_one_json_line_of_its_dict(journal: Journal, path: Path) -> None:
    events = [event(n=n) for n in range(3)]
    for e in events:
        journal.append(e)
    journal.flush(WAIT)
    assert lines(path) == [e.to_dict() for e in events]
    assert journal.stats["written"] == 3
    assert journal.stats["bytes"] == path.stat().st_size


def test_data_that_is_not_json_is_written_as_text_and_the_writer_carries_on(journal: Journal, path: Path) -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    journal.append(event(n=0, obj=object()))
    journal.append(event(n=1, cycle=cycle))
    journal.append(event(n=2))
    journal.flush(WAIT)
    written = lines(path)
    assert written[0]["data"]["obj"].startswith("<object object")
    assert written[1]["data"] == {"unencodable": repr({"n": 1, "cycle": cycle})}
    assert written[2]["data"]["n"] == 2


def test_close_writes_everything_appended_and_later_appends_stay_in_memory_only(path: Path) -> None:
    journal = Journal(path)
    journal.start()
    for n in range(100):
        journal.append(event(n=n))
    journal.close()
    assert [line["data"]["n"] for line in lines(path)] == list(range(100))
    journal.close()
    journal.append(event(n=100))
    assert numbers(journal.events(event().mac))[-1] == 100
    assert len(lines(path)) == 100
    assert journal.stats["dropped"] == 1


def test_flush_fsyncs_the_journal_file(journal: Journal, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", recording_fsync)
    journal.append(event())
    journal.flush(WAIT)
    assert path.stat().st_ino in synced
    assert len(lines(path)) == 1


def test_flush_before_start_is_an_error(path: Path) -> None:
    with pytest.raises(BootboxError, match="not started"):
        Journal(path).flush()


def test_events_appended_before_start_are_written_once_started(path: Path) -> None:
    journal = Journal(path)
    journal.append(event(n=1))
    assert not path.exists()
    journal.start()
    journal.close()
    assert len(lines(path)) == 1


def test_start_twice_is_harmless_and_start_after_close_is_refused(path: Path) -> None:
    journal = Journal(path)
    journal.start()
    journal.start()
    journal.append(event())
    journal.close()
    assert len(lines(path)) == 1
    with pytest.raises(BootboxError, match="closed"):
        journal.start()


def test_a_write_failure_is_counted_and_reported_by_flush_and_never_reaches_append(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")
    journal = Journal(tmp_path / "not-a-dir" / "events.jsonl")
    journal.start()
    journal.append(event(n=1))
    with pytest.raises(BootboxError, match="could not be written"):
        journal.flush(WAIT)
    journal.flush(WAIT)  # reported once
    assert numbers(journal.events(event().mac)) == [1]
    assert journal.stats["errors"] >= 1 and journal.stats["dropped"] == 1 and journal.stats["written"] == 0
    journal.close()


# -- restarts --------------------------------------------------------------------------------


def test_events_survive_a_restart(path: Path) -> None:
    first = Journal(path)
    first.start()
    originals = [event("aa:bb:cc:dd:ee:01", 1, url="http://x/y"), event("aa:bb:cc:dd:ee:02", 2), event("aa:bb:cc:dd:ee:01", 3)]
    for e in originals:
        first.append(e)
    first.close()
    second = Journal(path)
    second.start()
    try:
        assert second.events("aa:bb:cc:dd:ee:01") == [originals[0], originals[2]]
        assert second.recent() == originals
        assert second.stats["loaded"] == 3
        second.append(event("aa:bb:cc:dd:ee:02", 4))
    finally:
        second.close()
    assert [line["data"]["n"] for line in lines(path)] == [1, 2, 3, 4]


def test_a_torn_last_line_is_skipped_and_the_next_event_starts_on_a_new_line(path: Path) -> None:
    first = Journal(path)
    first.start()
    for n in range(3):
        first.append(event(n=n))
    first.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])  # the crash tore event 2
    second = Journal(path)
    second.start()
    assert numbers(second.recent()) == [0, 1]
    assert second.stats["skipped"] == 1
    second.append(event(n=3))
    second.close()
    third = Journal(path)
    third.start()
    third.close()
    assert numbers(third.recent()) == [0, 1, 3]
    assert third.stats["skipped"] == 1


def test_files_rotate_before_they_pass_max_bytes_and_only_backups_are_kept(path: Path) -> None:
    line_size = len(json.dumps(event(n=100).to_dict(), separators=(",", ":"))) + 1
    journal = Journal(path, max_bytes=line_size * 10, backups=2)
    journal.start()
    for n in range(100, 200):
        journal.append(event(n=n))
        if n % 7 == 0:
            journal.flush(WAIT)  # several batches, so rotation also happens between batches
    journal.close()
    files = [path.with_name(path.name + ".2"), path.with_name(path.name + ".1"), path]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(p.name for p in files)
    assert all(p.stat().st_size <= line_size * 10 for p in files)
    kept = [line["data"]["n"] for p in files for line in lines(p)]
    assert kept == list(range(200 - len(kept), 200))
    assert len(kept) > 20
    restarted = Journal(path, max_bytes=line_size * 10, backups=2)
    restarted.start()
    restarted.close()
    assert numbers(restarted.recent(1000)) == kept


def test_start_loads_only_the_newest_load_bytes_cutting_at_a_line_boundary(path: Path) -> None:
    line_size = len(json.dumps(event(n=100).to_dict(), separators=(",", ":"))) + 1
    journal = Journal(path, max_bytes=line_size * 10, backups=3)
    journal.start()
    for n in range(100, 140):
        journal.append(event(n=n))
    journal.close()
    # 25.5 lines' worth: the newest 25 events, across three files; the cut line is not an error.
    restarted = Journal(path, max_bytes=line_size * 10, backups=3, load_bytes=int(line_size * 25.5))
    restarted.start()
    restarted.close()
    assert numbers(restarted.recent(1000)) == list(range(115, 140))
    assert restarted.stats["skipped"] == 0
    exact = Journal(path, max_bytes=line_size * 10, backups=3, load_bytes=line_size * 12)
    exact.start()
    exact.close()
    assert numbers(exact.recent(1000)) == list(range(128, 140))


def test_with_no_backups_rotation_starts_the_file_afresh(path: Path) -> None:
    journal = Journal(path, max_bytes=600, backups=0)
    journal.start()
    for n in range(50):
        journal.append(event(n=n))
    journal.close()
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert 0 < path.stat().st_size <= 600
    assert [line["data"]["n"] for line in lines(path)][-1] == 49


# -- threads and the hot path ----------------------------------------------------------------


def test_append_returns_while_the_writer_is_stuck_on_the_disk(path: Path) -> None:
    journal = Journal(path)
    gate = Gate(journal)
    journal.start()
    journal.append(event(n=0))
    assert gate.entered.wait(WAIT)  # the writer is now blocked inside a write
    for n in range(1, 1000):
        journal.append(event(n=n))
    assert numbers(journal.events(event().mac)) == list(range(1000))
    assert journal.stats["written"] == 0
    assert not path.exists() or path.read_bytes() == b""
    gate.opened.set()
    journal.flush(WAIT)
    assert len(lines(path)) == 1000
    journal.close()


def test_a_full_queue_drops_from_the_file_instead_of_blocking(path: Path) -> None:
    journal = Journal(path, queue_size=10)
    gate = Gate(journal)
    journal.start()
    journal.append(event(n=0))
    assert gate.entered.wait(WAIT)
    for n in range(1, 51):
        journal.append(event(n=n))
    assert journal.stats["dropped"] == 40
    assert len(journal.events(event().mac)) == 51  # memory still has them all
    gate.opened.set()
    journal.close()
    assert [line["data"]["n"] for line in lines(path)] == list(range(11))
    assert journal.stats["written"] == 11


def test_many_threads_appending_lose_and_reorder_nothing(path: Path) -> None:
    journal = Journal(path)
    journal.start()

    def producer(t: int) -> None:
        for n in range(1000):
            journal.append(BootEvent(mac=f"aa:bb:cc:dd:ee:{t:02x}", kind="tftp.sent", message="", data={"n": n}))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    written = lines(path)
    assert len(written) == 8000
    for t in range(8):
        mac = f"aa:bb:cc:dd:ee:{t:02x}"
        assert [line["data"]["n"] for line in written if line["mac"] == mac] == list(range(1000))
        assert numbers(journal.events(mac)) == list(range(1000))
    stats = journal.stats
    assert (stats["appended"], stats["written"], stats["dropped"]) == (8000, 8000, 0)


def test_memory_holds_at_most_max_events_taking_from_the_least_active_host() -> None:
    journal = Journal(None, per_host=10, max_events=25)
    for n in range(10):
        journal.append(BootEvent(mac="aa:00:00:00:00:01", kind="dhcp_offer", message="old", data={"n": n}))
    for host in (2, 3):
        for n in range(10):
            journal.append(BootEvent(mac=f"aa:00:00:00:00:0{host}", kind="dhcp_offer", message="new", data={"n": n}))
    # 30 appended, 25 kept: the five oldest of the least recently active host went
    assert numbers(journal.events("aa:00:00:00:00:01")) == list(range(5, 10))
    assert numbers(journal.events("aa:00:00:00:00:03")) == list(range(10))
    for n in range(10, 20):  # a full ring only rotates: nobody else loses anything
        journal.append(BootEvent(mac="aa:00:00:00:00:03", kind="dhcp_offer", message="new", data={"n": n}))
    assert numbers(journal.events("aa:00:00:00:00:01")) == list(range(5, 10))
    for n in range(10):  # a fourth host: host 1 empties and is forgotten, then host 2 gives
        journal.append(BootEvent(mac="aa:00:00:00:00:04", kind="dhcp_offer", message="new", data={"n": n}))
    assert journal.events("aa:00:00:00:00:01") == []
    assert "aa:00:00:00:00:01" not in journal.macs()
    assert numbers(journal.events("aa:00:00:00:00:02")) == list(range(5, 10))
    assert numbers(journal.events("aa:00:00:00:00:03")) == list(range(10, 20))
