"""The console in a real headless Chromium against a real appliance over a real socket.

The operator logs in with the API token (``read_token`` is set: nothing is visible before),
adopts a host that is awaiting adoption, watches that host's boot timeline fill in live while the
host boots (a DHCP DISCOVER to the proxy's socket, the script over HTTP, the report-in), adds a
rule to the working set, reads the dry run, activates it and rolls it back. Screenshots of every
step are kept (see :func:`tests.web.browser.console.artifacts_dir`; the paths are printed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootbox.net.dhcp.packet import BOOTREQUEST, DhcpPacket, Opt, build, parse
from bootbox.testing import FAKE_KIND, TestAppliance, free_port, start_test_appliance
from bootbox.web.console.timeline import timeline
from tests.support.lab_fixtures import lab_unavailable
from tests.web.browser.console import (
    PHONE,
    Console,
    LiveTimeline,
    _stale,
    artifacts_dir,
    chromium,
)
from tests.web.test_console import BOOT_CASES, case_events

pytestmark = pytest.mark.browser

READ_TOKEN = "browser-read-token-0123456789"
MAC = "52:54:00:b5:00:01"


@pytest.fixture
def appliance(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestAppliance]:
    """A running appliance; ``indirect`` parametrization gives its ``[hosts]`` settings."""
    loaders = tmp_path / "loaders"
    loaders.mkdir()
    for name in ("undionly.kpxe", "snponly.efi"):
        (loaders / name).write_bytes(os.urandom(4096))
    config = {
        "http": {"read_token": READ_TOKEN},
        "hosts": {"adopt": "manual", **getattr(request, "param", {})},
        "tftp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "root": str(loaders)},
        "dhcp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "boot_server_port": free_port(),
                 "client_port": free_port()},
    }
    running = start_test_appliance(tmp_path / "state", [], config, None)
    try:
        yield running
    finally:
        running.appliance.stop()


def dhcp_discover(running: TestAppliance, mac: str, *, arch: int = 0, ipxe: bool = False,
                  ip: str = "127.0.0.1") -> DhcpPacket:
    """A PXE client's DISCOVER to the proxy's socket, from the client port at ``ip``; its OFFER.
    ``arch`` 0 is a BIOS PXE ROM, 7 a UEFI x64 firmware; ``ipxe`` adds iPXE's user class (the
    DHCP of iPXE that the firmware loaded)."""
    settings = running.settings
    options = {Opt.MESSAGE_TYPE: b"\x01", Opt.VENDOR_CLASS: f"PXEClient:Arch:{arch:05d}:UNDI:003016".encode(),
               93: arch.to_bytes(2, "big")}
    if ipxe:
        options[Opt.USER_CLASS] = b"iPXE"
    packet = DhcpPacket(op=BOOTREQUEST, xid=0xB5, chaddr=bytes.fromhex(mac.replace(":", "")), ciaddr=ip,
                        options=options)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, settings.dhcp.client_port))
        sock.settimeout(5)
        sock.sendto(build(packet), ("127.0.0.1", settings.dhcp.port))
        return parse(sock.recvfrom(4096)[0])


def test_log_in_adopt_watch_a_boot_live_and_change_rules(appliance: TestAppliance, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    api = appliance.api
    for name in ("fake", "other"):
        api.post("/profiles", {"name": name, "kind": FAKE_KIND, "spec": {}})
    api.post("/rules", {"name": "all-fake", "all_hosts": True, "items": {"image": "fake"}})
    host = appliance.host(MAC)
    host.boot(manufacturer="Acme")  # a new MAC: discovered, awaiting adoption ([hosts] adopt = "manual")

    with chromium() as driver:
        console = Console(driver, appliance.url, artifacts_dir(request.node.name, tmp_path))

        # Nothing without a login: the console sends the browser to the login page.
        console.open("/ui/hosts")
        console.wait(lambda: "/ui/login" in driver.current_url, "the redirect to the login page")
        console.screenshot("login")
        console.login(appliance.token)
        console.wait(lambda: MAC in console.text("#hosts"), "the host in the host list")
        console.screenshot("hosts")

        # Adopt the waiting host from its page.
        console.click(f'#hosts a[href="/ui/hosts/{MAC}"]')
        console.wait(lambda: console.all("#adopt-form"), "the host page's actions")
        assert "discovered" in console.text("#host-state")
        console.fill('#adopt-form input[name="hostname"]', "acme01")
        console.submit_button("Adopt")
        console.wait(lambda: "adopted" in console.text("#message"), "the adoption message")
        assert appliance.service.host(MAC).adopted and appliance.service.host(MAC).name == "acme01"
        console.screenshot("adopted")

        # The timeline fills in live (no reload) while the host boots.
        driver.execute_script("window.__sameDocument = true;")
        console.wait(lambda: not console.css("#live").get_attribute("hidden"), "the live stream to connect")
        offer = dhcp_discover(appliance, MAC)
        assert offer.options.get(Opt.MESSAGE_TYPE) == b"\x02"
        host.boot(manufacturer="Acme")  # adopted now: it gets its profile
        assert host.report_up() in (200, 503)
        timeline = LiveTimeline(console)
        rows = timeline.wait_for_kinds("dhcp.offer", "http.script", "booted")
        assert driver.execute_script("return window.__sameDocument === true;"), "the page reloaded"
        assert all(r["elapsed"].startswith("+") and r["elapsed"].endswith(" s") for r in rows)
        assert all(r["step_time"].endswith(" s") for r in rows[1:])
        console.wait(lambda: console.text("#host-state") in ("up", "configured"), "the state badge to follow the boot")
        console.screenshot("timeline-live")

        # A rule in the working set, its dry run, activation and roll-back.
        console.open("/ui/rules")
        console.fill("#rule-name", "acme")
        console.fill("#rule-patterns", "vendor=Acme")
        console.fill("#rule-items", "image=other")
        console.fill("#rule-at", "0")
        console.submit_button("Add to the working set")
        console.wait(lambda: "added rule acme" in console.text("#message"), "the added rule")
        assert "acme" in console.text("#working") and "acme" not in console.text("#active")
        console.screenshot("rules-working")
        console.click("#dry-run")
        console.wait(lambda: console.all("#dry-run-hosts"), "the dry run's host table")
        changes = console.text("#dry-run-hosts")
        assert MAC in changes and "image=fake" in changes and "image=other" in changes
        console.screenshot("dry-run")
        console.submit_button("Activate the working set")
        console.wait(lambda: "activated the working set" in console.text("#message"), "the activation")
        assert "acme" in console.text("#active")
        assert [r.name for r in appliance.service.ruleset("active")] == ["acme", "all-fake"]
        console.screenshot("activated")
        driver.execute_script("window.confirm = function () { return true; };")
        console.submit_button("Roll back")
        console.wait(lambda: "rolled back" in console.text("#message"), "the roll-back")
        assert "acme" not in console.text("#active")
        assert [r.name for r in appliance.service.ruleset("active")] == ["all-fake"]
        console.screenshot("rolled-back")

        # The host list follows too: the row of a host that does something flashes, its state refreshes.
        console.open("/ui/hosts")
        console.wait(lambda: not console.css("#live").get_attribute("hidden"), "the host list's live stream")
        row = console.css(f'#hosts tr[data-mac="{MAC}"]')
        assert "fresh" not in (row.get_attribute("class") or "")
        host.boot(manufacturer="Acme")
        console.wait(lambda: "fresh" in (row.get_attribute("class") or ""), "the host's row to flash")

        # Profiles (and a diff of two) and health.
        console.open("/ui/profiles")
        console.wait(lambda: "other" in console.text("#profiles"), "the profiles")
        console.submit_button("Diff")
        console.wait(lambda: "fake" in console.text("h1") and "other" in console.text("h1"), "the profile diff")
        console.open("/ui/health")
        console.wait(lambda: console.all("#counters"), "the health page")
        assert "boots reported" in console.text("#counters") and "dhcp" in console.text("#services")
        console.screenshot("health")

        # A phone-width screen: the host page still fits (tables scroll inside their box).
        driver.set_window_size(*PHONE)
        console.open(f"/ui/hosts/{MAC}")
        console.wait(lambda: console.all("#timeline"), "the host page")
        width = driver.execute_script("return document.documentElement.scrollWidth;")
        assert width <= PHONE[0] + 1, f"the page is {width} px wide on a {PHONE[0]} px screen"
        console.screenshot("phone-host")
    assert all(path.stat().st_size > 0 for path in console.taken)


UEFI_MAC = "52:54:00:b5:00:02"
OTHER_MAC = "52:54:00:b5:00:03"


def tftp_get(running: TestAppliance, name: str, into: Path) -> None:
    """The loader over TFTP with curl, a real client, from 127.0.0.1 (the UEFI host's address)."""
    curl = shutil.which("curl")
    if curl is None:
        lab_unavailable("the live UEFI chain test needs curl (apt install curl) as its TFTP client")
    argv = [curl, "-sS", "--max-time", "20", "-o", str(into), f"tftp://127.0.0.1:{running.settings.tftp.port}/{name}"]
    subprocess.run(argv, check=True, timeout=30)


def _rows(console: Console) -> list[dict[str, Any]]:
    """The timeline's rows with whether each began a boot (the page's ``boot-start`` mark)."""
    rows = LiveTimeline(console).rows()
    marks = [("boot-start" in (r.get_attribute("class") or "")) for r in console.all("#timeline tbody tr")]
    return [{**row, "begins": mark} for row, mark in zip(rows, marks, strict=True)]


def _cells(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["kind"], r["elapsed"], r["step_time"], r["begins"]) for r in rows]


@pytest.mark.parametrize("appliance", [{"adopt": "auto"}], indirect=True)
def test_new_hosts_the_host_header_and_a_uefi_boot_follow_live(appliance: TestAppliance, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    """Issue 19's follow-up: a host never seen before appears on the open host list; a host
    page's header, attributes and associations follow its boot; a UEFI chain (firmware DHCP,
    loader over TFTP, iPXE's DHCP, script, report-in) is one boot whose elapsed time runs on
    across iPXE's DHCP, the same live as after a reload; and the page's script splits boots
    exactly as the server does on the same steps."""
    api = appliance.api
    api.post("/profiles", {"name": "fake", "kind": FAKE_KIND, "spec": {}})
    api.post("/rules", {"name": "acme", "patterns": ["vendor=Acme"], "items": {"image": "fake"}})

    with chromium() as driver:
        console = Console(driver, appliance.url, artifacts_dir(request.node.name, tmp_path))
        console.open("/ui/hosts")
        console.login(appliance.token)
        console.open("/ui/hosts")
        console.wait(lambda: console.all("#no-hosts"), "the empty host list")
        driver.execute_script("window.__sameDocument = true;")
        console.wait(lambda: not console.css("#live").get_attribute("hidden"), "the host list's live stream")

        # New hosts appear on the open list (page 1, newest activity first), without a reload.
        dhcp_discover(appliance, UEFI_MAC, arch=7)
        console.wait(lambda: console.all(f'#hosts tr[data-mac="{UEFI_MAC}"]'), "the new host's row")
        first_row = console.css(f'#hosts tr[data-mac="{UEFI_MAC}"]')
        console.screenshot("new-host")
        dhcp_discover(appliance, OTHER_MAC, ip="127.0.0.3")
        def order() -> list[str]:
            return [r.get_attribute("data-mac") for r in console.all("#hosts tbody tr")]
        console.wait(lambda: order() == [OTHER_MAC, UEFI_MAC], "the second new host on top of the first")
        assert not _stale(first_row), "a row already shown is refreshed in place, not replaced"
        assert console.text("#host-count") == "2"
        assert "fresh" in (console.css(f'#hosts tr[data-mac="{OTHER_MAC}"]').get_attribute("class") or "")
        assert driver.execute_script("return window.__sameDocument === true;"), "the host list reloaded"
        console.screenshot("second-new-host")

        # The UEFI host's page: the rest of its boot arrives while it is open.
        console.click(f'#hosts a[href="/ui/hosts/{UEFI_MAC}"]')
        console.wait(lambda: console.all("#timeline") and not console.css("#live").get_attribute("hidden"),
                     "the host page's live stream")
        driver.execute_script("window.__sameDocument = true;")
        assert console.text("#host-profile") == "-" and "Acme" not in console.text("#attributes")
        tftp_get(appliance, "snponly.efi", tmp_path / "snponly.efi")
        offer = dhcp_discover(appliance, UEFI_MAC, arch=7, ipxe=True)
        assert offer.file.rstrip(b"\0").startswith(b"http://") or b"http://" in b"".join(offer.options.values())
        host = appliance.host(UEFI_MAC)
        host.boot(manufacturer="Acme")
        assert host.report_up() in (200, 503)
        LiveTimeline(console).wait_for_kinds("tftp.sent", "dhcp.offer", "http.script", "booted")
        console.wait(lambda: console.text("#host-profile") == "fake", "the header's profile to follow the boot")
        console.wait(lambda: "Acme" in console.text("#attributes"), "the attributes to follow the boot")
        console.wait(lambda: "image=fake" in console.text("#associations"), "the associations to follow the boot")
        console.wait(lambda: console.text("#host-state") in ("up", "configured"), "the state badge")
        assert driver.execute_script("return window.__sameDocument === true;"), "the host page reloaded"
        console.screenshot("uefi-boot-live")

        # One boot, from the firmware's DHCP (shown when the page opened) to the report-in.
        live = _rows(console)
        kinds = [r["kind"] for r in live]
        assert kinds[0] == "dhcp.offer" and kinds.count("dhcp.offer") == 2 and "booted" in kinds
        assert [r["begins"] for r in live] == [True] + [False] * (len(live) - 1), live
        elapsed = [float(r["elapsed"].strip("+ s")) for r in live]
        assert elapsed == sorted(elapsed) and elapsed[kinds.index("dhcp.offer", 1)] > 0

        # The live rows say what the server renders for the same steps after a reload.
        console.open(f"/ui/hosts/{UEFI_MAC}")
        console.wait(lambda: console.all("#timeline"), "the reloaded host page")
        rendered = _rows(console)
        assert _cells(rendered) == _cells(live)
        console.screenshot("uefi-boot-reloaded")

        # The page's script and the server split the same steps into the same boots.
        for name, case in BOOT_CASES.items():
            events = case_events(case)
            in_page = driver.execute_script("return window.bootboxConsole.timeline(arguments[0]);",
                                            [e.to_dict() for e in events])
            on_server = timeline(events)
            assert [s["begins"] for s in in_page] == [s.begins for s in on_server], name
            assert [s["elapsed"] for s in in_page] == pytest.approx([s.elapsed for s in on_server]), name
            assert [s["delta"] for s in in_page][1:] == pytest.approx([s.delta for s in on_server][1:]), name
        journal = appliance.service.host_events(UEFI_MAC)
        in_page = driver.execute_script("return window.bootboxConsole.timeline(arguments[0]);",
                                        [e.to_dict() for e in journal])
        assert [s["begins"] for s in in_page] == [s.begins for s in timeline(journal)] == [r["begins"] for r in live]
    assert all(path.stat().st_size > 0 for path in console.taken)
