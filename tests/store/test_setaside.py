"""Never destroy what cannot be read: damaged state files are kept byte for byte before any rewrite."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bootbox.model import Host
from bootbox.service.hostindex import HostIndex, HostPersister
from bootbox.store import hostlog
from bootbox.store.hostlog import HostLog, encode_lines
from bootbox.store.setaside import list_set_aside, set_aside_bytes


def _hosts(n: int) -> dict[str, dict]:
    return {f"5254000000{i:02x}": Host(mac=f"52:54:00:00:00:{i:02x}").to_dict() for i in range(n)}


def test_a_zeroed_host_log_is_set_aside_before_compaction_rewrites_it(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(hostlog, "COMPACT_MIN", 10)
    path = tmp_path / "hosts.jsonl"
    path.write_bytes(encode_lines(_hosts(100)))
    original = bytearray(path.read_bytes())
    original[: len(original) * 9 // 10] = bytes(len(original) * 9 // 10)  # 90 % zeroed
    path.write_bytes(bytes(original))
    log = HostLog(path)
    with caplog.at_level(logging.WARNING):
        found = log.load(parse=Host.from_dict)
    assert 0 < len(found) < 100
    kept = list_set_aside(tmp_path)
    assert len(kept) == 1 and kept[0].path.read_bytes() == bytes(original)
    assert f"of {len(found) + 1} records" in kept[0].why
    assert any("recovered" in r.getMessage() and str(kept[0].path) in r.getMessage() for r in caplog.records)
    index = HostIndex(found.values())
    persister = HostPersister(index, log)
    index.update("52:54:00:00:00:ff", lambda h: Host(mac="52:54:00:00:00:ff"))
    persister.flush()
    assert kept[0].path.read_bytes() == bytes(original)  # the copy outlives the rewrite
    HostLog(path).load(parse=Host.from_dict)
    assert len(list_set_aside(tmp_path)) == 1  # nothing new was damaged


@pytest.mark.parametrize("line", [b'{"key": "aa", "host": 5}', b'[1, 2]', b'{"key": "aa", "host": {"mac": "nonsense"}}',
                                  b'"just a string"', b'{"key": 7, "host": null}'])
def test_a_wrong_shaped_line_is_skipped_counted_and_kept(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "hosts.jsonl"
    good = encode_lines(_hosts(3))
    original = good + line + b"\n" + encode_lines({"525400000009": Host(mac="52:54:00:00:00:09").to_dict()})
    path.write_bytes(original)
    found = HostLog(path).load(parse=Host.from_dict)
    assert set(found) == {"525400000000", "525400000001", "525400000002", "525400000009"}
    assert all(isinstance(host, Host) for host in found.values())
    (kept,) = list_set_aside(tmp_path)
    assert kept.path.read_bytes() == original
    assert "recovered 4 of 5 records" in kept.why
    assert HostLog(path).load(parse=Host.from_dict) == found  # rewritten without the damage, once
    assert len(list_set_aside(tmp_path)) == 1


def test_a_torn_line_from_a_crash_is_not_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "hosts.jsonl"
    path.write_bytes(encode_lines(_hosts(2)) + b'{"key":"5254000000ff","host":{"ma\n' + encode_lines(_hosts(1)))
    assert len(HostLog(path).load(parse=Host.from_dict)) == 2
    assert list_set_aside(tmp_path) == []


def test_the_same_bytes_are_kept_once(tmp_path: Path) -> None:
    first = set_aside_bytes("x.json", b"broken", "why", state_dir=tmp_path)
    assert set_aside_bytes("x.json", b"broken", "why again", state_dir=tmp_path) == first
    assert set_aside_bytes("x.json", b"broken 2", "why", state_dir=tmp_path) != first
    assert json.dumps([k.why for k in list_set_aside(tmp_path)]) == '["why", "why"]'


def test_a_damaged_journal_file_is_set_aside_and_a_torn_one_is_not(tmp_path: Path) -> None:
    from bootbox.model import BootEvent
    from bootbox.store.journal import Journal

    path = tmp_path / "events.jsonl"
    good = b"".join(json.dumps(BootEvent(mac="52:54:00:00:00:01", kind="dhcp", message=f"m{i}").to_dict()).encode()
                    + b"\n" for i in range(10))
    path.write_bytes(good + b'{"mac": "52:54:00:00:00:01", "ki\n')  # torn by a crash
    journal = Journal(path)
    journal.start()
    journal.close()
    assert list_set_aside(tmp_path) == []
    damaged = good + bytes(300) + b"\n" + b'{"wrong": "shape"}\n' + good
    path.write_bytes(damaged)
    journal = Journal(path)
    journal.start()
    try:
        assert journal.stats["loaded"] == 20 and journal.stats["skipped"] == 2
    finally:
        journal.close()
    (kept,) = list_set_aside(tmp_path)
    assert kept.path.read_bytes() == damaged and "20 of 22 events read" in kept.why


def test_a_store_document_of_leases_with_the_wrong_shape_is_kept_and_not_loaded(tmp_path: Path) -> None:
    from bootbox.store.leases import lease_callables
    from bootbox.store.memory import MemoryStore

    store = MemoryStore()
    store.put("dhcp", "leases", {"version": 1, "leases": {"not": "a list"}})
    load, _ = lease_callables(store, state_dir=tmp_path)
    assert load() == {}
    (kept,) = list_set_aside(tmp_path)
    assert json.loads(kept.path.read_bytes()) == {"version": 1, "leases": {"not": "a list"}}


def test_an_unreadable_store_is_refused_and_a_copy_kept_once(tmp_path: Path) -> None:
    from bootbox.errors import BootboxError
    from bootbox.store.tinydb import TinyDBStore

    broken = b'{"profiles": {"a": {"name": "a"}}' + bytes(64)
    (tmp_path / "bootbox.json").write_bytes(broken)
    for _ in range(3):  # a supervisor restarting it in a loop
        with pytest.raises(BootboxError) as refused:
            TinyDBStore(tmp_path)
    (kept,) = list_set_aside(tmp_path)
    assert kept.path.read_bytes() == broken and str(kept.path) in str(refused.value)
    assert (tmp_path / "bootbox.json").read_bytes() == broken
