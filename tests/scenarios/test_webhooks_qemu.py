"""Issue 19's webhook proof with real firmware: a QEMU client (SeaBIOS + iPXE) boots the demo
kernel from ``bootbox serve`` in a lab namespace while the hook's receiver is down; once the
receiver is up, it gets every step of that boot, in order, each signed with the hook's secret,
and the CLI's delivery log shows the failed tries that came before."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

import pytest

from bootbox.assets.demo import DemoAssets
from bootbox.lab.netns import LabError
from bootbox.lab.qemu import random_mac
from tests.scenarios.test_e2e_boot import EXPECTED, _kinds
from tests.service.test_webhooks_dispatch import SECRET, Receiver
from tests.support.e2e_bootbox import start_bootbox
from tests.support.lab_fixtures import (
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    require_qemu,
    segment_fixture,
)

__all__ = ["demo_assets_fixture", "demo_cache_fixture", "segment_fixture"]

RECEIVER_PORT = 8082


@pytest.mark.qemu
@pytest.mark.netns
def test_a_qemu_boot_reaches_a_receiver_that_was_down_in_order_and_signed(
        segment: LabSegment, demo_assets: DemoAssets) -> None:
    require_qemu()
    in_server: Callable[[Callable[[], ThreadingHTTPServer]], ThreadingHTTPServer] = \
        lambda make: segment.net.call(segment.server, make)
    receiver = Receiver(host=segment.server.ip, port=RECEIVER_PORT, bind=in_server)
    segment.net.defer(receiver.stop)
    receiver.stop()  # down while the machine boots
    mac = random_mac()
    segment.start_site_dhcp()
    segment.start_ra()
    bootbox = start_bootbox(segment, extra_toml=(
        '[webhook]\nfirst_delay = 0.5\nmax_delay = 2.0\n'
        f'[[webhooks]]\nname = "lab"\nurl = "{receiver.url}"\nsecret = "{SECRET}"\nhosts = ["{mac}"]\n'))
    bootbox.add_demo_profile(demo_assets)
    vm = segment.boot("bios", mac=mac)
    try:
        events = bootbox.wait_for_event(mac, "booted", BOOT_TIMEOUT)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    assert _kinds(events) == EXPECTED["bios"], events
    deliveries = bootbox.json("webhook", "deliveries", "lab")
    assert deliveries["pending"] and all(e["outcome"] == "retry" for e in deliveries["log"]), deliveries
    assert receiver.got == []

    receiver.start()
    deadline = time.monotonic() + 60
    while len(receiver.got) < len(timeline := bootbox.events(mac)) \
            or bootbox.json("webhook", "deliveries", "lab")["pending"]:
        assert time.monotonic() < deadline, bootbox.json("webhook", "deliveries", "lab")
        time.sleep(0.5)
    docs = receiver.wait_for(len(timeline))  # each signature checked with the hook's secret
    assert [(d["event"]["kind"], d["event"]["time"]) for d in docs] == [(e["kind"], e["time"]) for e in timeline]
    ids = [d["event"]["id"] for d in docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    listed = bootbox.json("webhook", "list")
    assert listed[0]["counts"]["ok"] >= len(timeline) and listed[0]["secret"] == "***"
