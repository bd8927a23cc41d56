"""The host log and the boot journal on both backends (files, PostgreSQL): one contract, run on each,
plus the outbox that keeps the database's share durable during an outage, and `store migrate`
carrying hosts and events both ways. Against a real PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bootbox.model import BootEvent, Host
from bootbox.store.hostlog import HostLog
from bootbox.store.journal import Journal
from bootbox.store.migrate import migrate
from bootbox.store.outbox import Outbox, OutboxFull
from bootbox.store.pg.bootwriter import BootWriter
from bootbox.store.pg.hostlog import PgHostLog
from bootbox.store.pg.journal import PgJournal
from bootbox.store.postgresql import PostgreSQLStore
from bootbox.store.tinydb import TinyDBStore
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401  (the session's PostgreSQL)

Logs = tuple[Callable[[], HostLog], Callable[[], Journal]]


@pytest.fixture(params=["files", "postgresql"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Logs]:
    """Factories for a host log and a journal on one backend; each call is a "restart" (a new
    object over the same files or database)."""
    opened: list[Any] = []
    if request.param == "files":
        yield (lambda: HostLog(tmp_path / "hosts.jsonl"), lambda: Journal(tmp_path / "events.jsonl"))
    else:
        dsn = request.getfixturevalue("postgres_server").dsn()

        def writer() -> BootWriter:
            store = PostgreSQLStore(dsn, appliance="contract")
            boot = BootWriter(store, Outbox(tmp_path / "outbox.jsonl"))
            boot.start()
            opened.extend([store, boot])
            return boot

        yield (lambda: PgHostLog(writer()), lambda: PgJournal(writer()))
    for thing in reversed(opened):
        thing.close()


def host(mac: str, **changes: Any) -> Host:
    return Host(mac=mac, attrs={"mac": mac, **changes.pop("attrs", {})}, first_seen=1.0, last_seen=2.0, **changes)


def test_the_host_log_keeps_the_last_version_of_each_host_and_forgets_removed_ones(logs: Logs) -> None:
    make_log, _ = logs
    first = make_log()
    first.append({"525400000001": host("52:54:00:00:00:01").to_dict(),
                  "525400000002": host("52:54:00:00:00:02").to_dict()})
    first.append({"525400000001": host("52:54:00:00:00:01", attrs={"vendor": "Acme"}).to_dict()})
    first.append({"525400000002": None})
    loaded = make_log().load(parse=Host.from_dict)
    assert set(loaded) == {"525400000001"}
    assert loaded["525400000001"].attrs["vendor"] == "Acme"


def test_the_host_log_skips_a_record_the_parser_refuses(logs: Logs) -> None:
    make_log, _ = logs
    log = make_log()
    log.append({"525400000003": host("52:54:00:00:00:03").to_dict(), "525400000004": {"not": "a host"}})
    assert set(make_log().load(parse=Host.from_dict)) == {"525400000003"}


def test_the_journal_survives_a_restart_in_order(logs: Logs) -> None:
    _, make_journal = logs
    journal = make_journal()
    journal.start()
    for n in range(5):
        journal.append(BootEvent(mac="52:54:00:00:00:05", kind="http.script", message=f"step {n}", time=100.0 + n,
                                 data={"appliance": "contract", "n": n}))
    journal.flush()
    journal.close()
    again = make_journal()
    again.start()
    try:
        events = again.events("52:54:00:00:00:05")
        assert [e.message for e in events] == [f"step {n}" for n in range(5)]
        assert events[0].data == {"appliance": "contract", "n": 0}
        assert again.events("52:54:00:00:00:05", limit=2)[0].message == "step 3"
        assert again.stats["loaded"] == 5
    finally:
        again.close()


def test_an_event_with_data_postgresql_cannot_hold_is_still_kept(logs: Logs) -> None:
    _, make_journal = logs
    journal = make_journal()
    journal.start()
    journal.append(BootEvent(mac="52:54:00:00:00:06", kind="http.file", message="odd\x00name\ud800", time=5.0,
                             data={"file": "a\x00b"}))
    journal.flush()
    journal.close()
    again = make_journal()
    again.start()
    try:
        [event] = again.events("52:54:00:00:00:06")
        assert event.message.startswith("odd") and event.kind == "http.file"
    finally:
        again.close()


# -- the outbox ---------------------------------------------------------------------------------


def test_the_outbox_keeps_records_in_order_across_a_restart_and_drops_what_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.append([{"n": 1}, {"n": 2}])
    box.append([{"n": 3}])
    with path.open("ab") as torn:  # a crash in the middle of an append: never acknowledged
        torn.write(b'{"n": 4')
    again = Outbox(path)
    assert [r["n"] for r in again.records()] == [1, 2, 3]
    again.append([{"n": 5}])  # not glued onto the torn line
    assert [r["n"] for r in again.records()] == [1, 2, 3, 5]
    again.remove_first(2)
    assert [r["n"] for r in Outbox(path).records()] == [3, 5]
    assert len(again) == 2


def test_a_full_outbox_refuses_naming_its_limit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.jsonl", max_bytes=100)
    box.append([{"n": 1}])
    with pytest.raises(OutboxFull, match=r"\[store\] outbox_max_bytes = 100"):
        box.append([{"padding": "x" * 200}])
    assert [r["n"] for r in box.records()] == [1]


def test_records_queued_by_an_earlier_run_reach_the_database_at_start(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.dsn()
    Outbox(tmp_path / "outbox.jsonl").append([
        {"type": "host", "key": "525400000007", "host": host("52:54:00:00:00:07").to_dict()},
        {"type": "event", "uid": "u1", "event": BootEvent(mac="52:54:00:00:00:07", kind="booted", message="up",
                                                           time=7.0).to_dict()},
    ])
    store = PostgreSQLStore(dsn, appliance="later")
    writer = BootWriter(store, Outbox(tmp_path / "outbox.jsonl"))
    try:
        writer.start()
        assert len(writer.outbox) == 0
        assert set(PgHostLog(writer).load()) == {"525400000007"}
        assert postgres_server.sql("SELECT appliance || ':' || (event->>'kind') FROM bootbox_events", dsn=dsn) == "later:booted"
    finally:
        writer.close()
        store.close()


# -- store migrate carries hosts and events -------------------------------------------------------


def test_store_migrate_moves_the_host_log_and_the_journal_both_ways(postgres_server: PostgresServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    TinyDBStore(state).close()
    hosts = HostLog(state / "hosts.jsonl")
    hosts.append({f"5254000001{n:02x}": host(f"52:54:00:00:01:{n:02x}").to_dict() for n in range(3)})
    events = [BootEvent(mac="52:54:00:00:01:00", kind="http.script", message=f"e{n}", time=float(n)).to_dict()
              for n in range(4)]
    (state / "events.jsonl.1").write_text("".join(json.dumps(e) + "\n" for e in events[:2]))
    # e3's line twice (a journal line written again): the database keeps one copy, and the
    # verification counts distinct events instead of failing on the copy.
    (state / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[2:] + events[3:]))
    dsn = postgres_server.dsn()

    there = migrate(to="postgresql", state_dir=state, dsn=dsn)
    assert (there.hosts, there.events) == (3, 5)  # what the source held
    assert postgres_server.sql("SELECT string_agg(event->>'message', ',' ORDER BY time) FROM bootbox_events",
                               dsn=dsn) == "e0,e1,e2,e3"
    with pytest.raises(Exception, match="already holds"):
        migrate(to="postgresql", state_dir=state, dsn=dsn)

    (state / "hosts.jsonl").unlink()
    for path in state.glob("events.jsonl*"):
        path.unlink()
    back = migrate(to="tinydb", state_dir=state, dsn=dsn)
    assert (back.hosts, back.events) == (3, 4)
    assert set(HostLog(state / "hosts.jsonl").load()) == {f"5254000001{n:02x}" for n in range(3)}
    assert [json.loads(line)["message"] for line in (state / "events.jsonl").read_text().splitlines()] == \
        ["e0", "e1", "e2", "e3"]
    assert not (state / "events.jsonl.1").exists()


# -- hosts another appliance changed (bootbox.service.replication) ---------------------------------


def test_a_host_another_appliance_wrote_never_replaces_one_of_ours_on_its_way_to_the_database() -> None:
    from bootbox.service.hostindex import HostIndex

    mac = "52:54:00:00:02:01"
    index = HostIndex([host(mac)])
    theirs = host(mac, attrs={"vendor": "theirs"})
    assert index.apply_remote(mac, theirs) and index.get(mac) == theirs
    assert index.take_dirty() == {}  # applied, not marked for writing back (no ping-pong)

    index.update(mac, lambda h: host(mac, attrs={"vendor": "ours"}))  # dirty: ours wins
    assert not index.apply_remote(mac, theirs) and index.get(mac).attrs["vendor"] == "ours"  # type: ignore[union-attr]
    taken = index.take_dirty()  # being written: ours still wins
    assert not index.apply_remote(mac, theirs)
    index.written(taken)
    mark = index.write_marks([mac])[mac]
    assert index.apply_remote(mac, theirs, mark) and index.get(mac) == theirs  # read after our write landed

    stale_mark = index.write_marks([mac])[mac]
    index.update(mac, lambda h: host(mac, attrs={"vendor": "ours again"}))
    index.written(index.take_dirty())  # written between their row being read and applied
    assert not index.apply_remote(mac, theirs, stale_mark)
    assert index.get(mac).attrs["vendor"] == "ours again"  # type: ignore[union-attr]
    assert index.apply_remote(mac, None, index.write_marks([mac])[mac]) and index.get(mac) is None


def test_appliances_sharing_a_database_keep_a_lease_table_each(postgres_server: PostgresServer) -> None:
    from bootbox.store.leases import LEASES_KEY, LEASES_TABLE, lease_callables

    store = PostgreSQLStore(postgres_server.dsn())
    try:
        store.put(LEASES_TABLE, LEASES_KEY, {"leases": [{"ip": "10.7.0.100", "mac": "52:54:00:00:03:01"}]})
        load_a, save_a = lease_callables(store, key="leases@a")
        load_b, save_b = lease_callables(store, key="leases@b")
        assert load_a() == load_b() == store.get(LEASES_TABLE, LEASES_KEY)  # both start from a migrated table
        save_a({"leases": [{"ip": "10.7.0.101", "mac": "52:54:00:00:03:02"}]})
        save_b({"leases": [{"ip": "10.7.0.181", "mac": "52:54:00:00:03:03"}]})
        assert load_a()["leases"][0]["ip"] == "10.7.0.101" and load_b()["leases"][0]["ip"] == "10.7.0.181"
    finally:
        store.close()
