"""Issue 19's console proof with real firmware: an operator's headless Chromium watches a QEMU
client's boot timeline fill in live while the machine boots.

``bootbox serve`` runs in the lab's ``server`` namespace (198.18.0.1) as the proxyDHCP, TFTP and
HTTP server for a UEFI guest (OVMF → ``snponly.efi`` over TFTP → iPXE → script → kernel and
initrd over HTTP → the demo payload's report-in). The browser is the operator's workstation on
the same wire: chromedriver and Chromium are started from a thread that joined the ``client``
namespace (198.18.0.3), so they and Selenium's connection to chromedriver live there, and the
browser reaches the appliance at its lab address as a real operator's would.

The operator pre-stages the machine (``bootbox host adopt MAC``: the host page exists before
its first DHCP packet), logs in with the API token, finds the host on the Hosts page, opens it
and powers the machine on. Each step (DHCP offer, the loader over TFTP, iPXE's DHCP, the script,
the kernel, the report-in) must appear on the open page without a reload, with its clock time,
its time since the boot began and since the step before, and the live rows must be exactly the
journal's steps of that boot. Screenshots of the page as it fills are kept (paths printed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bootbox.assets.demo import DemoAssets
from bootbox.lab.qemu import QemuClient, random_mac
from bootbox.store.apitoken import read_token
from tests.support.e2e_bootbox import start_bootbox
from tests.support.lab_fixtures import (
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    require_qemu,
    segment_fixture,
)
from tests.web.browser.console import Console, LiveTimeline, artifacts_dir, chromium

__all__ = ["demo_assets_fixture", "demo_cache_fixture", "segment_fixture"]

pytestmark = [pytest.mark.browser, pytest.mark.qemu, pytest.mark.netns]

CLOCK = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
ELAPSED = re.compile(r"^\+\d+\.\d\d s$")
STEP_TIME = re.compile(r"^\d+\.\d\d s$")
# OVMF's PXE gets snponly.efi (the loader) over TFTP; that iPXE asks DHCP again, then fetches the
# script, the kernel and the initrd; the demo payload reports in. Waited for in stages, with a
# screenshot at each, so the artefacts show the table growing.
STAGES = (
    ("offer", ("dhcp.offer",)),
    ("loader", ("dhcp.offer", "tftp.sent")),
    ("script", ("dhcp.offer", "tftp.sent", "dhcp.offer", "http.script")),
    ("kernel", ("dhcp.offer", "tftp.sent", "dhcp.offer", "http.script", "http.file")),
    ("report-in", ("dhcp.offer", "tftp.sent", "dhcp.offer", "http.script", "http.file", "http.file", "booted")),
)


def test_the_console_shows_a_qemu_boot_live(segment: LabSegment, demo_assets: DemoAssets, tmp_path: Path,
                                            request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    require_qemu()
    # As in CI: the appliance and the CLI run with $BOOTBOX_ARTIFACTS set (and must not take it
    # for a setting of theirs).
    if not os.environ.get("BOOTBOX_ARTIFACTS"):
        monkeypatch.setenv("BOOTBOX_ARTIFACTS", str(tmp_path / "artifacts"))
    mac = random_mac()
    segment.start_site_dhcp()
    segment.start_ra()
    bootbox = start_bootbox(segment)
    bootbox.add_demo_profile(demo_assets)
    bootbox.cli("host", "adopt", mac, "--hostname", "qemu01")  # pre-staged: its page exists before it boots
    token = read_token(bootbox.state_dir)
    assert token, f"no API token in {bootbox.state_dir}"
    shots = artifacts_dir(request.node.name, tmp_path)
    print(f"screenshots: {shots}")
    vms: list[QemuClient] = []

    def operator() -> tuple[list[dict[str, str]], list[Path]]:
        """The whole browser session; runs in a thread inside the ``client`` namespace."""
        with chromium(reach=[segment.server.ip]) as driver:
            console = Console(driver, bootbox.url, shots)
            console.open("/ui/login")
            console.login(token)
            console.open("/ui/hosts")
            console.wait(lambda: mac in console.text("#hosts"), "the pre-staged host in the host list")
            console.screenshot("hosts")
            console.click(f'#hosts a[href="/ui/hosts/{mac}"]')
            console.wait(lambda: console.all("#timeline"), "the host page")
            console.wait(lambda: not console.css("#live").get_attribute("hidden"), "the live stream to connect")
            before = len(LiveTimeline(console).rows())
            driver.execute_script("window.__sameDocument = true;")
            console.screenshot("before-power-on")

            # Power on. QEMU runs in the switch namespace; its parent-death signal is tied to this
            # thread, so it is stopped when the browser session ends (the segment stops it anyway).
            vms.append(segment.boot("uefi", mac=mac))
            timeline = LiveTimeline(console)
            for name, kinds in STAGES:
                try:
                    timeline.wait_for_kinds(*kinds, timeout=BOOT_TIMEOUT)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nguest console:\n{vms[0].console_tail(40)}\n"
                                         f"bootbox log:\n{bootbox.log_tail(40)}") from None
                console.screenshot(f"live-{name}")
            assert driver.execute_script("return window.__sameDocument === true;"), "the host page reloaded"

            # Every step of this boot, and nothing else, was appended live: compare with the journal
            # (the page may still be catching up with a step that came after the report-in).
            def caught_up() -> list[dict[str, str]] | None:
                journal = [e["kind"] for e in bootbox.events(mac)][before:]
                live = [r for r in timeline.rows() if r["live"]]
                return live if [r["kind"] for r in live] == journal else None

            rows: list[dict[str, str]] = console.wait(caught_up, "the live rows to match the journal", timeout=30)
            console.wait(lambda: console.text("#host-state") in ("up", "configuring", "configured"),
                         "the state badge to follow the report-in")
            console.screenshot("booted")
            return rows, console.taken

    rows, taken = segment.net.call(segment.client, operator)

    # Each step with its time: the clock, since the boot began (the first offer opens it, after
    # the pre-staging's state step) and since the step before.
    for row in rows:
        assert CLOCK.match(row["time"]) and ELAPSED.match(row["elapsed"]) and STEP_TIME.match(row["step_time"]), row
    assert rows[0]["kind"] == "dhcp.offer" and rows[0]["elapsed"] == "+0.00 s", rows[0]
    files = [r["message"] for r in rows if r["kind"] == "http.file"]
    assert "kernel" in files[0] and "initrd" in files[1], files
    booted = next(r for r in rows if r["kind"] == "booted")
    assert float(booted["elapsed"][1:-2]) > 0 and "reported in" in booted["message"], booted
    host = bootbox.json("host", "show", mac)
    assert host["profile"] == "demo" and host["name"] == "qemu01", host
    assert len(taken) == 3 + len(STAGES) and all(path.stat().st_size > 0 for path in taken)
