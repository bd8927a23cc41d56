"""Issue 2's proof: real firmware PXE-boots a Linux kernel from bootbox, with the site's own DHCP
server (dnsmasq, addresses only) still handing out the addresses, and reports back.

SeaBIOS with its iPXE ROM (e1000) and OVMF with EDK2's own PXE client (virtio-net with an empty
``romfile=``) each boot the demo kernel + busybox initramfs; the test asserts the host's whole
timeline as bootbox recorded it, read back with the real CLI.
"""

from __future__ import annotations

from typing import Callable

import pytest

from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import LabError
from tests.support.e2e_bootbox import start_bootbox
from tests.support.lab_fixtures import BOOT_TIMEOUT, LabSegment, demo_assets_fixture, demo_cache_fixture, require_qemu, segment_fixture

__all__ = ["demo_assets_fixture", "demo_cache_fixture", "segment_fixture"]

EXPECTED = {
    # SeaBIOS's NIC ROM is already iPXE: it is handed the script URL straight away.
    "bios": ["dhcp.offer", "rules", "http.script", "http.file", "http.file", "booted"],
    # EDK2 gets snponly.efi over TFTP first, then that iPXE asks again and gets the script URL.
    "uefi": ["dhcp.offer", "tftp.sent", "dhcp.offer", "rules", "http.script", "http.file", "http.file", "booted"],
}


def _kinds(events: list[dict]) -> list[str]:
    """The timeline without repeats a firmware may add (a second DISCOVER, a 4011 ACK, aborted
    TFTP probes): each distinct step in order of first occurrence, per phase."""
    kinds: list[str] = []
    for event in events:
        kind = "dhcp.offer" if event["kind"] == "dhcp.ack" else event["kind"]
        if kind == "tftp.failed":
            continue
        if kinds and kinds[-1] == kind and kind != "http.file":
            continue
        kinds.append(kind)
    return kinds


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_real_firmware_boots_from_bootbox_beside_the_site_dhcp(
    segment: LabSegment, demo_assets: DemoAssets, firmware: str, record_property: Callable[[str, object], None]
) -> None:
    require_qemu()
    site = segment.start_site_dhcp()
    segment.start_ra()
    bootbox = start_bootbox(segment)
    bootbox.add_demo_profile(demo_assets)
    vm = segment.boot(firmware)  # type: ignore[arg-type]
    try:
        events = bootbox.wait_for_event(vm.mac, "booted", BOOT_TIMEOUT)
        vm.wait_for(MARKER_OK, 60)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    assert vm.started_at is not None
    record_property(f"boot_{firmware}", events[-1]["time"])
    assert _kinds(events) == EXPECTED[firmware], events
    booted = events[-1]["data"]
    # The address came from the site's DHCP server, not from bootbox.
    leases = {lease.mac: lease.ip for lease in site.leases()}
    assert booted["ip"] == leases[vm.mac]
    host = bootbox.json("host", "show", vm.mac)
    assert host["state"] in ("up", "configuring", "configured") and host["profile"] == "demo"  # the report-in is the "up" state change
    assert host["associations"] == {"image": "demo"}
    assert host["attrs"]["ipv4"] == booted["ip"]
    assert host["attrs"].get("platform") == ("pcbios" if firmware == "bios" else "efi"), host["attrs"]
    offer = next(e for e in events if e["kind"] in ("dhcp.offer", "dhcp.ack"))
    assert offer["data"]["boot_file"] == ("snponly.efi" if firmware == "uefi" else f"{bootbox.url}/boot.ipxe")


@pytest.mark.qemu
@pytest.mark.netns
def test_waiting_host_boots_when_a_rule_appears_and_repair_changes_its_next_boot(
    segment: LabSegment, demo_assets: DemoAssets
) -> None:
    """Issue 3's end-to-end check, with a real BIOS client and no power cycle in between."""
    require_qemu()
    segment.start_site_dhcp()
    segment.start_ra()
    bootbox = start_bootbox(segment, retry_seconds=3)
    bootbox.add_demo_profile(demo_assets, rule=False)
    vm = segment.boot("bios")
    try:
        bootbox.wait_for_event(vm.mac, "http.script", BOOT_TIMEOUT)
        assert bootbox.json("host", "show", vm.mac)["state"] == "waiting"
        vm.wait_for("asking again in 3 seconds", 60)  # its console shows why it waits
        bootbox.cli("rule", "add", "qemu", "--pattern", "vendor=QEMU", "--item", "image=demo")
        events = bootbox.wait_for_event(vm.mac, "booted", BOOT_TIMEOUT)
        assert vm.wait_exit(60) == 0
    except (TimeoutError, LabError) as exc:
        why = bootbox.cli("host", "rules", vm.mac, check=False).stdout
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(20)}\nrules:\n{why}")
    scripts = [e for e in events if e["kind"] == "http.script"]
    assert "waiting" in scripts[0]["message"] and scripts[-1]["data"]["profile"] == "demo"
    # A rule change reaches the known host only through test + repair, at its next boot.
    bootbox.cli("profile", "add", "demo2", "--kernel", str(demo_assets.kernel), "--initrd", str(demo_assets.initrd),
                "--cmdline", f"{demo_assets.cmdline} bootbox.mac={{mac}} bootbox.callback={{callback}}")
    bootbox.cli("rule", "add", "qemu2", "--pattern", f"mac={vm.mac}", "--item", "image=demo2", "--at", "0")
    drift = bootbox.json("rule", "test")
    assert drift == [{"host": vm.mac, "expected": {"image": "demo2"},
                      "items": [{"item": "image", "stored": "demo", "expected": "demo2", "rule": "qemu2", "change": "changes"}]}]
    bootbox.cli("rule", "repair", "--host", vm.mac)
    assert bootbox.json("rule", "test") == []
    again = segment.boot("bios", mac=vm.mac)
    try:
        bootbox.wait_for_event(vm.mac, "booted", BOOT_TIMEOUT)  # the first boot's event is there already
        again.wait_for(MARKER_OK, BOOT_TIMEOUT)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{again.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    host = bootbox.json("host", "show", vm.mac)
    assert host["profile"] == "demo2" and host["associations"] == {"image": "demo2"}
