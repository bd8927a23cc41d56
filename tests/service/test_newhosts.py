"""Bounds on host records (issue 17 §6): new ones are rate-limited, never-booted ones expire."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

import bootbox_linux
from bootbox.config import HostsSettings
from bootbox.hooks.manager import make_plugin_manager
from bootbox.model import Host, HostState
from bootbox.service.bootservice import BootService
from bootbox.service.newhosts import NewHostGate, NewHostRefused
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings


def test_a_burst_of_1000_new_pxe_clients_in_one_second_is_all_recorded_and_a_flood_is_not() -> None:
    now = [0.0]
    gate = NewHostGate(HostsSettings(), clock=lambda: now[0])
    allowed = 0
    for i in range(1000):
        now[0] = i / 1000
        allowed += gate.allow("")  # DHCP: no source address yet
    assert allowed == 1000 and gate.refused["new_hosts_overall"] == 0
    flood = sum(gate.allow("") for _ in range(5000))  # within the same instant: the burst runs out
    assert 0 < flood < 5000 and gate.refused["new_hosts_overall"] == 5000 - flood
    now[0] += 1.0  # a second later the bucket has refilled at the configured rate
    assert sum(gate.allow("") for _ in range(1000)) == 200


def test_one_source_address_may_make_only_so_many_new_hosts_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    gate = NewHostGate(HostsSettings(new_hosts_per_source=3), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="bootbox.hosts"):
        assert [gate.allow("198.18.0.66") for _ in range(10)] == [True] * 3 + [False] * 7
    assert gate.allow("198.18.0.67") and gate.refused["new_hosts_per_source"] == 7
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1  # once per interval
    now[0] += 61
    assert gate.allow("198.18.0.66")


def _service(tmp_path: Path, **hosts: object) -> BootService:
    journal = Journal(None)
    journal.start()
    service = BootService(test_settings(tmp_path, hosts=hosts), MemoryStore(), journal,
                          make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux]))
    service.start()
    return service


def test_new_hosts_over_the_per_source_limit_get_503_and_no_record(tmp_path: Path) -> None:
    service = _service(tmp_path, new_hosts_per_source=2)
    try:
        for n in range(2):
            service.host_script(f"52:54:00:00:01:{n:02x}", {}, "198.18.0.66", "http://x")
        with pytest.raises(NewHostRefused) as refused:
            service.host_script("52:54:00:00:01:09", {}, "198.18.0.66", "http://x")
        assert refused.value.http_status == 503 and service.hosts.get("52:54:00:00:01:09") is None
        service.host_script("52:54:00:00:01:00", {}, "198.18.0.66", "http://x")  # a known host is not new
        service.host_script("52:54:00:00:01:09", {}, "127.0.0.1", "http://x")  # the appliance itself: no cap
        assert service.counts().refused["new_hosts_per_source"] == 1
    finally:
        service.close()


def test_hosts_only_ever_seen_expire_but_not_those_awaiting_adoption_or_booted(tmp_path: Path) -> None:
    service = _service(tmp_path, adopt="manual", discovered_expiry=3600.0)
    try:
        service.host_script("52:54:00:00:02:01", {}, "198.18.0.21", "http://x")  # asked: awaits adoption
        long_ago = 1.0
        kept = {
            "52:54:00:00:02:02": replace(Host(mac="52:54:00:00:02:02"), adopted=True),
            "52:54:00:00:02:03": replace(Host(mac="52:54:00:00:02:03"), state=HostState.CONFIGURED, profile="p"),
        }
        for mac, host in {**kept, "52:54:00:00:02:04": Host(mac="52:54:00:00:02:04")}.items():
            service.hosts.update(mac, lambda h, host=host: replace(host, last_seen=long_ago))
        service.hosts.update("52:54:00:00:02:01", lambda h: replace(h, last_seen=long_ago))  # type: ignore[arg-type]
        service.hosts.update("52:54:00:00:02:05", lambda h: Host(mac="52:54:00:00:02:05", last_seen=9e12))  # recent
        assert service.host("52:54:00:00:02:01").reason.startswith("awaits adoption")
        assert service.expire_discovered() == ["52:54:00:00:02:04"]
        assert service.hosts.get("52:54:00:00:02:04") is None
        assert all(service.hosts.get(mac) for mac in [*kept, "52:54:00:00:02:01", "52:54:00:00:02:05"])
    finally:
        service.close()
