"""Real iPXE (SeaBIOS's e1000 ROM in QEMU) boots the demo kernel through a group's cache, and
falls back along the script's URLs: a dead cache, then the live nginx cache running the shipped
appliance/nginx-cache.conf, then, with the cache gone too, the appliance itself.

The cache runs in the ``site`` namespace (another machine on the segment, near the hosts); the
appliance's own counters (``/metrics``) and the host's timeline show which path each boot took.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from bench.cache_storm import appliance_bytes, cache_statuses, start_cache
from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import LabError
from tests.support.e2e_bootbox import HTTP_PORT, BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import BOOT_TIMEOUT, LabSegment, demo_assets_fixture, demo_cache_fixture, require_qemu, segment_fixture

__all__ = ["demo_assets_fixture", "demo_cache_fixture", "segment_fixture"]

CACHE_PORT, DEAD_PORT = 8081, 8082


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _metrics(bootbox: BootboxOnSegment) -> tuple[int, int]:
    return appliance_bytes(bootbox.lab.net.call(bootbox.lab.server, _get, f"{bootbox.url}/metrics"))


def _boot(segment: LabSegment, bootbox: BootboxOnSegment, mac: str | None, after: float) -> tuple[Any, list[dict]]:
    """Boot a BIOS VM (``mac``: the same machine again) until it reports in after ``after``;
    its events since then."""
    vm = segment.boot("bios", mac=mac) if mac else segment.boot("bios")
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while True:
            events = bootbox.wait_for_event(vm.mac, "booted", max(1.0, deadline - time.monotonic()))
            if any(e["kind"] == "booted" and e["time"] > after for e in events):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new report-in from {vm.mac} within {BOOT_TIMEOUT:.0f} s")
            time.sleep(1)
        vm.wait_for(MARKER_OK, 60)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    return vm, [e for e in events if e["time"] > after]


@pytest.mark.qemu
@pytest.mark.netns
def test_real_ipxe_boots_through_the_groups_cache_and_falls_back_to_the_appliance(
    segment: LabSegment, demo_assets: DemoAssets
) -> None:
    require_qemu()
    segment.start_site_dhcp()
    segment.start_ra()
    site_ip = segment.site.ip
    bootbox = start_bootbox(segment, extra_toml=(
        f'[groups.near]\ncache_urls = ["http://{site_ip}:{DEAD_PORT}", "http://{site_ip}:{CACHE_PORT}"]\n'))
    bootbox.add_demo_profile(demo_assets, rule=False)
    bootbox.cli("rule", "add", "near", "--all-hosts", "--item", "image=demo", "--item", "group=near")
    segment.workdir.chmod(0o755)
    cache = start_cache(segment.workdir, f"{segment.server.ip}:{HTTP_PORT}", site_ip, CACHE_PORT,
                        netns=segment.site.netns)
    one_copy = demo_assets.kernel.stat().st_size + demo_assets.initrd.stat().st_size
    try:
        before = _metrics(bootbox)
        vm, events = _boot(segment, bootbox, None, 0.0)
        after = _metrics(bootbox)
        # The dead cache refused, the live one served: the appliance sent the kernel and initrd
        # once, to nginx, and saw no host fetch of them (no http.file on the timeline).
        assert after[1] - before[1] == one_copy
        assert not [e for e in events if e["kind"] == "http.file"], events
        statuses = cache_statuses(segment.workdir / "cache.log")
        assert statuses.get("MISS", 0) >= 2, statuses
        script = next(e for e in events if e["kind"] == "http.script")
        assert script["data"]["profile"] == "demo"
        console = vm.serial_text()  # iPXE tried the dead cache first and went on to the next URL
        assert f"{site_ip}:{DEAD_PORT}/boot/blobs/" in console and f"{site_ip}:{CACHE_PORT}/boot/blobs/" in console, \
            vm.console_tail(80)
    finally:
        cache.stop()
    # With every cache gone, the same host still boots: the script's last URL is the appliance's.
    vm.wait_exit(60)
    last = events[-1]["time"]
    _, events = _boot(segment, bootbox, vm.mac, last)
    files = [e["data"].get("file") for e in events if e["kind"] == "http.file"]
    assert files == ["kernel", "initrd-0"], events
    assert _metrics(bootbox)[1] == after[1]  # no blob: the appliance's per-host URLs served it
