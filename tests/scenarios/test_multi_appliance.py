"""Several appliances, one PostgreSQL (issue 20): changes in force on all within a second, a host
served by either (the HA pair), and a database outage that stops no boot and loses nothing acknowledged.

Real parts only: a real PostgreSQL (Debian's, started here as the ``postgres`` user in a temporary
directory, stopped and started again by its PID for the outage), real appliances serving HTTP on
loopback sockets, and hosts that fetch their boot scripts and report in over real HTTP
(:class:`bootbox.testing.FakeHost`), as iPXE and the booted OS do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bootbox.store.journal import Journal
from bootbox.testing import TestAppliance, http, start_test_appliance
from tests.support.postgres import PostgresServer, running_postgres

WITHIN = 1.0
"""Seconds in which a change made through one appliance must be in force on the others (issue 20)."""


RestartablePostgres = PostgresServer
"""This module stops and starts its own server (the session's shared one must stay up)."""


@pytest.fixture(scope="module")
def pg() -> Iterator[RestartablePostgres]:
    with running_postgres(prefix="bootbox-pg-multi-", max_connections=100) as server:
        yield server


_schemas = iter(range(1, 10_000))


@pytest.fixture
def appliances(pg: RestartablePostgres, tmp_path: Path) -> Iterator[Callable[..., TestAppliance]]:
    """Start appliances named as asked, sharing one fresh schema and one secrets key file."""
    dsn = pg.dsn(f"multi{next(_schemas)}")
    started: list[TestAppliance] = []
    key_file = tmp_path / "shared-secrets.key"

    def start(name: str, **config: Any) -> TestAppliance:
        box = start_test_appliance(tmp_path / name, [], {
            "store": {"backend": "postgresql", "dsn": dsn, "reconnect_max": 0.5},
            "appliance": {"name": name},
            "secrets_key_file": str(key_file),
            **config,
        }, None)
        started.append(box)
        return box

    start.dsn = dsn  # type: ignore[attr-defined]
    yield start
    for box in reversed(started):
        box.appliance.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` held; fails the test with ``what`` after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - began


def decision(box: TestAppliance, attrs: dict[str, str]) -> dict[str, str]:
    return {item: choice.value for item, choice in box.service.rules.decide(attrs).items()}


# -- changes in force everywhere ------------------------------------------------------------


def test_a_rule_added_through_one_appliance_is_in_force_on_the_other_within_a_second(appliances: Any) -> None:
    a, b = appliances("site-a"), appliances("site-b")
    a.api.post("/profiles", {"name": "fake", "kind": "fake", "spec": {}})
    wait_until(lambda: b.service.profile_or_none("fake") is not None, WITHIN, "the profile reached site-b")
    a.api.post("/rules", {"name": "lab", "patterns": ["vendor=Acme"], "items": {"image": "fake"}})
    wait_until(lambda: decision(b, {"vendor": "Acme"}).get("image") == "fake", WITHIN, "the rule reached site-b")
    # ... and a host booting on the other appliance's segment gets it, over real HTTP.
    host = b.host("52:54:00:20:00:01")
    script = host.boot(manufacturer="Acme")
    assert "bootbox.testing boot of 52:54:00:20:00:01 with fake" in script
    # A change the other way round, and a removal, travel too.
    b.api.delete("/rules/lab")
    wait_until(lambda: "image" not in decision(a, {"vendor": "Acme"}), WITHIN, "the removal reached site-a")


def test_profiles_and_hosts_reach_the_other_appliance_and_status_shows_the_feed(appliances: Any) -> None:
    a, b = appliances("one"), appliances("two")
    a.add_fake_profile()
    wait_until(lambda: decision(b, {}).get("image") == "fake", WITHIN, "the rule reached two")
    b.api.post("/profiles", {"name": "second", "kind": "fake", "spec": {"note": "from two"}})
    wait_until(lambda: a.service.profile_or_none("second") is not None, WITHIN, "the profile reached one")
    assert a.service.profile("second").spec == {"note": "from two"}
    b.api.delete("/profiles/second")
    wait_until(lambda: a.service.profile_or_none("second") is None, WITHIN, "the deletion reached one")
    status = a.api.get("/status")
    assert status["servers"]["database"]["state"] == "connected", status
    assert status["servers"]["database"]["changes"]["state"] == "listening", status
    # Hosts: one seen by a is known to b (it can answer for it at once).
    a.host("52:54:00:20:00:02").boot()
    # Hosts are written behind the boot path (0.5 s rounds, held back while packets keep coming).
    wait_until(lambda: b.service.hosts.get("52:54:00:20:00:02") is not None, 10.0, "the host reached two")


# -- the HA pair ------------------------------------------------------------------------------


def test_a_host_boots_through_either_appliance_and_the_timeline_names_each(appliances: Any) -> None:
    a, b = appliances("pair-a"), appliances("pair-b")
    a.add_fake_profile()
    wait_until(lambda: decision(b, {}).get("image") == "fake", WITHIN, "the rule reached pair-b")
    host = a.host("52:54:00:20:00:03")
    first = host.boot()
    # The same answer from the other appliance: same script, same per-boot up token (shared key).
    wait_until(lambda: (b.service.hosts.get(host.mac) or None) is not None
               and b.service.hosts.get(host.mac).boot_nonce == a.service.hosts.get(host.mac).boot_nonce,  # type: ignore[union-attr]
               10.0, "the host's boot reached pair-b")
    same = http("GET", f"{b.url}/boot/hosts/{host.mac.replace(':', '-')}/script.ipxe").text
    assert same.replace(b.url, a.url) == first
    # a stops (killed, as far as the host can tell); the host's report-in, with the token a
    # minted, is accepted by b.
    a.appliance.stop()
    host.up_url = host.up_url.replace(a.url, b.url)
    assert host.report_up() == 200
    events = b.api.get(f"/hosts/{host.mac}/events")
    served_by = {e["data"].get("appliance") for e in events}
    assert {"pair-a", "pair-b"} <= served_by, events


# -- a database outage --------------------------------------------------------------------------


def test_a_database_outage_stops_no_boot_refuses_operator_writes_and_loses_nothing(
        appliances: Any, pg: RestartablePostgres) -> None:
    box = appliances("storm")
    box.add_fake_profile()
    known = [box.host(f"52:54:00:21:00:{n:02x}") for n in range(8)]
    for host in known:
        host.boot()
    box.service._persister.flush()
    pg.stop()
    try:
        # Boots go on from memory, new hosts included; every report-in is acknowledged.
        storm = known + [box.host(f"52:54:00:22:00:{n:02x}") for n in range(8)]
        for host in storm:
            host.boot()
            assert host.report_up() == 200
        # An operator write is refused, clearly: 503 naming the database.
        reply = http("POST", f"{box.url}/api/v1/rules", {"name": "during", "all_hosts": True, "items": {"image": "fake"}},
                     headers={"Authorization": f"Bearer {box.token}"})
        assert reply.status == 503, reply.text
        assert "store database" in reply.text and "[store] dsn" in reply.text
        cli = subprocess.run([sys.executable, "-m", "bootbox", "--url", box.url, "--state-dir", str(box.settings.state_path),
                              "rule", "add", "during", "--all-hosts", "--item", "image=fake"],
                             capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "BOOTBOX_CONFIG": ""})
        assert cli.returncode != 0 and "store database" in cli.stderr, (cli.returncode, cli.stdout, cli.stderr)
        box.service._persister.flush()
        box.service.journal.flush()
        status = box.api.get("/status")["servers"]["database"]
        assert status["state"] == "unavailable" and status["queued"] > 0, status
        assert (box.settings.state_path / "outbox.jsonl").stat().st_size > 0
    finally:
        pg.start()
    wait_until(lambda: box.api.get("/status")["servers"]["database"]["queued"] == 0, 15.0,
               f"the outbox was sent: {box.appliance.database_status()}")
    # Every host as the appliance acknowledged it (reported in: not "discovered" or "booting"),
    # in the database and, the change feed having reloaded, still in the appliance's memory.
    states = dict(line.split("|") for line in pg.sql(
        "SELECT key, host->>'state' FROM bootbox_hosts", dsn=appliances.dsn).splitlines())
    for host in storm:
        assert states[host.mac.replace(":", "")] in ("up", "configured"), states
        assert box.service.hosts.get(host.mac).state == states[host.mac.replace(":", "")], host.mac  # type: ignore[union-attr]
    wait_until(lambda: box.api.get("/status")["servers"]["database"]["changes"]["state"] == "listening", 10.0,
               "the change feed listens again")
    assert all(box.service.hosts.get(h.mac).state == states[h.mac.replace(":", "")] for h in storm)  # type: ignore[union-attr]
    # Every event the appliance recorded (its memory) is in the database, once.
    box.service.journal.flush()
    for host in storm:
        in_memory = [(e.time, e.kind, e.message) for e in Journal.events(box.service.journal, host.mac)]
        stored = pg.sql(f"SELECT string_agg(event->>'kind', ',' ORDER BY time, id) FROM bootbox_events "
                        f"WHERE mac = '{host.mac}'", dsn=appliances.dsn).split(",")
        assert stored == [kind for _, kind, _ in in_memory], host.mac
        assert "booted" in stored, stored
    # Operator writes work again.
    assert box.api.post("/rules", {"name": "after", "patterns": ["vendor=X"], "items": {"image": "fake"}})
