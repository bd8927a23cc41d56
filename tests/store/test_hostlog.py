"""The host log: appends per change, replays on load, survives torn lines, compacts."""

from __future__ import annotations

import json
from pathlib import Path

from bootbox.store import hostlog
from bootbox.store.hostlog import HostLog
from bootbox.service.hostindex import HostIndex, HostPersister
from bootbox.model import Host


def test_append_replay_remove(tmp_path: Path) -> None:
    log = HostLog(tmp_path / "hosts.jsonl")
    log.append({"aa": {"mac": "a", "v": 1}, "bb": {"mac": "b"}})
    log.append({"aa": {"mac": "a", "v": 2}})
    log.append({"bb": None})
    assert HostLog(tmp_path / "hosts.jsonl").load() == {"aa": {"mac": "a", "v": 2}}


def test_a_torn_last_line_is_skipped_and_never_glued_to_the_next(tmp_path: Path) -> None:
    path = tmp_path / "hosts.jsonl"
    log = HostLog(path)
    log.append({"aa": {"mac": "a"}})
    with path.open("ab") as handle:
        handle.write(b'{"key": "bb", "host": {"ma')  # a crash mid-write
    log.append({"cc": {"mac": "c"}})
    assert HostLog(path).load() == {"aa": {"mac": "a"}, "cc": {"mac": "c"}}


def test_compaction_keeps_only_live_hosts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hostlog, "COMPACT_MIN", 10)
    path = tmp_path / "hosts.jsonl"
    index = HostIndex()
    persister = HostPersister(index, HostLog(path))
    for round_ in range(20):
        index.update("52:54:00:00:00:01", lambda h, r=round_: Host(mac="52:54:00:00:00:01", note=str(r)))
        persister.flush()
    lines = path.read_bytes().splitlines()
    assert len(lines) <= 11  # compacted at least once
    assert json.loads(lines[-1])["host"]["note"] == "19"
    assert HostLog(path).load()["525400000001"]["note"] == "19"


def test_forget_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "hosts.jsonl"
    index = HostIndex()
    persister = HostPersister(index, HostLog(path))
    index.update("52:54:00:00:00:02", lambda h: Host(mac="52:54:00:00:00:02"))
    persister.flush()
    index.remove("52:54:00:00:00:02")
    persister.forget("52:54:00:00:00:02")
    assert HostLog(path).load() == {}
