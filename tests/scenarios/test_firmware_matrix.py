"""Issue 7's matrix: every firmware we can emulate boots a real kernel from bootbox and reports in.

Each case is a real firmware under QEMU (TCG) on a private lab segment, with ``bootbox serve`` in
the server namespace, and asserts the host's timeline as bootbox recorded it (read back with the
real CLI). ``bios`` and ``uefi`` (EDK2 PXE) live in test_e2e_boot.py and run by default; these
are marked ``firmware`` (``pytest -m firmware``; each takes 20-90 s under TCG).

Which DHCP server the GRUB cases use: GRUB 2.06 fetches grub.cfg from the next-server (siaddr)
of the DHCP answer that gave it its address (facts/pxe-dhcp.md §9), which a proxy cannot set, so
``uefi-secure`` and ``arm64`` run bootbox in full-DHCP mode (``[dhcp] mode = "full"``) with no
site DHCP on the segment; the ``through_the_proxy`` case shows the other documented way, a site
DHCP that names bootbox as next-server.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from bootbox.assets.demo import MARKER_OK, DemoAssets, DemoError, build_demo_assets
from bootbox.lab.netns import LabError
from bootbox.lab.qemu import AAVMF_CODE, OVMF_SECURE_CODE, QemuClient, random_mac
from bootbox.lab.ra import RouterAdvertiser
from bootbox.assets.signedloaders import LoaderFetchError, fetch_signed_loaders
from tests.support.e2e_bootbox import BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import (
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    lab_unavailable,
    require_qemu,
    require_tools,
    segment_fixture,
)

__all__ = ["demo_assets_fixture", "demo_cache_fixture", "segment_fixture"]

pytestmark = [pytest.mark.firmware, pytest.mark.qemu, pytest.mark.netns]

SERVER = "198.18.0.1"
FULL_DHCP = 'mode = "full"\nrange_start = "198.18.0.100"\nrange_end = "198.18.0.199"\n'
SHIM_X64 = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB_X64 = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(name="arm64_assets", scope="session")
def arm64_assets_fixture(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    """The arm64 demo payload (Debian's arm64 kernel + busybox-static:arm64)."""
    try:
        return build_demo_assets(tmp_path_factory.getbasetemp() / "demo-arm64", cache=demo_cache, arch="arm64")
    except DemoError as exc:
        lab_unavailable(f"cannot build the arm64 demo payload (dpkg --add-architecture arm64?): {exc}")
        raise


@pytest.fixture(name="arm64_loaders", scope="session")
def arm64_loaders_fixture(demo_cache: Path) -> dict[str, Path]:
    """Debian's signed shimaa64 and grubnetaa64, fetched once (see bootbox.assets.signedloaders)."""
    try:
        return fetch_signed_loaders(demo_cache.parent / "loaders-arm64", "arm64")
    except LoaderFetchError as exc:
        lab_unavailable(f"cannot fetch the arm64 loaders: {exc}")
        raise


def _require_secure_boot() -> None:
    require_qemu()
    for path in (OVMF_SECURE_CODE, SHIM_X64, GRUB_X64):
        if not path.is_file():
            lab_unavailable(f"the Secure Boot case needs {path} (Debian: ovmf, shim-signed, grub-efi-amd64-signed)")


def _require_arm64() -> None:
    require_qemu()
    require_tools("qemu-system-aarch64")
    if not AAVMF_CODE.is_file():
        lab_unavailable(f"the arm64 case needs {AAVMF_CODE} (Debian: qemu-efi-aarch64)")


# --------------------------------------------------------------------------------------------- helpers


def _kinds(events: list[dict]) -> list[str]:
    """The timeline as distinct steps: repeats a firmware adds (a second DISCOVER, the 4011 ACK)
    folded, full mode's address bookkeeping (``dhcp.lease``) and failed TFTP reads (EDK2's
    aborted tsize probes, the files shim and GRUB look for and may miss) left out."""
    kinds: list[str] = []
    for event in events:
        kind = "dhcp.offer" if event["kind"] == "dhcp.ack" else event["kind"]
        if kind in ("tftp.failed", "dhcp.lease"):
            continue
        if kinds and kinds[-1] == kind and kind not in ("http.file", "tftp.sent"):
            continue
        kinds.append(kind)
    return kinds


def _files(events: list[dict], kind: str) -> list[str]:
    return [e["data"].get("file", "") for e in events if e["kind"] == kind]


def _http_lines(pcap: Path) -> list[str]:
    """Request and status lines of the HTTP traffic in a capture, in order (tcpdump -A)."""
    text = subprocess.run(["tcpdump", "-r", str(pcap), "-A", "-n", "tcp port 8080"], capture_output=True,
                          text=True, errors="replace", check=True).stdout
    return re.findall(r"(?:HEAD|GET|POST) /\S* HTTP/1\.1|HTTP/1\.1 \d{3}[ A-Za-z]*", text)


def _boot_and_wait(bootbox: BootboxOnSegment, vm: QemuClient, timeout: float = BOOT_TIMEOUT) -> list[dict]:
    """Wait for the report-in; on failure show the console and bootbox's log."""
    try:
        events = bootbox.wait_for_event(vm.mac, "booted", timeout)
        vm.wait_for(MARKER_OK, 60)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    return events


def _record_time(vm: QemuClient, record_property: Callable[[str, object], None], case: str) -> float:
    assert vm.started_at is not None
    seconds = time.monotonic() - vm.started_at
    record_property(f"boot_seconds_{case}", round(seconds, 1))
    print(f"{case}: VM start to report-in {seconds:.1f} s")
    return seconds


# --------------------------------------------------------------------------------------------- cases


def test_uefi_secure_boot_chain_shim_grub_signed_kernel(
    segment: LabSegment, demo_assets: DemoAssets, record_property: Callable[[str, object], None]
) -> None:
    """OVMF with Microsoft's keys: shim → Debian's signed GRUB → Debian's signed kernel; the
    kernel itself reports Secure Boot on. The host gets Secure Boot from its group's table."""
    _require_secure_boot()
    bootbox = start_bootbox(segment, top_toml=f'server_address = "{SERVER}"\n', dhcp_toml=FULL_DHCP,
                            extra_toml="[groups.signed]\nsecure_boot = true\n")
    bootbox.add_demo_profile(demo_assets, rule=False)
    mac = random_mac()
    bootbox.cli("rule", "add", "signed", "--pattern", f"mac={mac}", "--item", "image=demo", "--item", "group=signed")
    vm = segment.boot("uefi-secure", mac=mac)
    events = _boot_and_wait(bootbox, vm)
    _record_time(vm, record_property, "uefi-secure")
    assert _kinds(events) == ["dhcp.offer", "tftp.sent", "tftp.sent", "tftp.sent", "rules", "http.script",
                              "tftp.sent", "tftp.sent", "tftp.sent", "booted"], events
    assert [f.lstrip("/") for f in _files(events, "tftp.sent")] == [
        "shimx64.efi", "grubx64.efi", "grub/grub.cfg", f"grub/hosts/{mac}.cfg",
        f"boot/hosts/{mac.replace(':', '')}/assets/kernel", f"boot/hosts/{mac.replace(':', '')}/assets/initrd-0",
    ]
    offer = next(e for e in events if e["kind"] == "dhcp.offer")
    assert offer["data"]["boot_file"] == "shimx64.efi" and "Secure Boot" in offer["message"]
    booted = events[-1]["data"]
    assert booted["secure_boot"] == "on", booted
    assert booted["kernel"].endswith("-amd64")
    host = bootbox.json("host", "show", mac)
    assert host["state"] in ("booted", "up", "configured") and host["profile"] == "demo"
    assert host["associations"] == {"image": "demo", "group": "signed"}


@pytest.mark.parametrize("firmware", ["arm64", "arm64-secure"])
def test_arm64_pxe_gets_grub_and_an_arm64_kernel(
    segment: LabSegment, arm64_assets: DemoAssets, arm64_loaders: dict[str, Path], firmware: str,
    record_property: Callable[[str, object], None],
) -> None:
    """qemu-system-aarch64 ``virt`` + AAVMF: EDK2 PXE sends arch 11, which has no iPXE build and
    gets Debian's network GRUB by default; GRUB loads the arm64 kernel the profile names. With
    Secure Boot (``arm64-secure``, the host's group asks for it): shimaa64 → grubaa64 → Debian's
    signed arm64 kernel, which reports Secure Boot on."""
    _require_arm64()
    secure = firmware == "arm64-secure"
    shim, grub = arm64_loaders["shimaa64.efi.signed"], arm64_loaders["grubnetaa64.efi.signed"]
    bootbox = start_bootbox(segment, top_toml=f'server_address = "{SERVER}"\n', dhcp_toml=FULL_DHCP,
                            extra_toml=f'[dhcp.loader_files]\n"grubnetaa64.efi" = "{grub}"\n"grubaa64.efi" = "{grub}"\n'
                                       f'"shimaa64.efi" = "{shim}"\n[groups.signed]\nsecure_boot = true\n')
    bootbox.cli("profile", "add", "demo-arm64", "--kernel", str(arm64_assets.kernel), "--initrd",
                str(arm64_assets.initrd), "--cmdline",
                f"{arm64_assets.cmdline} bootbox.mac={{mac}} bootbox.callback={{callback}}")
    mac = random_mac()
    items = ["--item", "image=demo-arm64", *(["--item", "group=signed"] if secure else [])]
    bootbox.cli("rule", "add", "arm", "--pattern", f"mac={mac}", *items)
    vm = segment.boot(firmware, mac=mac)  # type: ignore[arg-type]
    events = _boot_and_wait(bootbox, vm)
    _record_time(vm, record_property, firmware)
    loaders = ["shimaa64.efi", "grubaa64.efi"] if secure else ["grubnetaa64.efi"]
    assert _kinds(events) == ["dhcp.offer", *["tftp.sent"] * (len(loaders) + 1), "rules", "http.script",
                              "tftp.sent", "tftp.sent", "tftp.sent", "booted"], events
    offer = next(e for e in events if e["kind"] == "dhcp.offer")
    assert offer["data"]["arch"] == 11 and offer["data"]["boot_file"] == loaders[0]
    assert [f.lstrip("/") for f in _files(events, "tftp.sent")][: len(loaders) + 2] == [
        *loaders, "grub/grub.cfg", f"grub/hosts/{mac}.cfg"]
    booted = events[-1]["data"]
    assert booted["kernel"].endswith("-arm64") and booted["secure_boot"] == ("on" if secure else "off"), booted
    assert bootbox.json("host", "show", mac)["profile"] == "demo-arm64"


def test_secure_boot_firmware_refuses_unsigned_ipxe_and_the_timeline_says_why(
    segment: LabSegment, demo_assets: DemoAssets, record_property: Callable[[str, object], None]
) -> None:
    """The negative case: Secure Boot firmware, but the host is not marked ``secure_boot``, so
    bootbox hands out unsigned iPXE (beside the site DHCP, as a proxy). The firmware refuses it
    ("Access Denied") and never asks for a script; bootbox's events say why the host stopped."""
    _require_secure_boot()
    segment.start_site_dhcp()
    bootbox = start_bootbox(segment)
    bootbox.add_demo_profile(demo_assets)
    vm = segment.boot("uefi-secure")
    try:
        vm.wait_for("Access Denied", BOOT_TIMEOUT)
        events = bootbox.wait_for_event(vm.mac, "state", 60)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(60)}")
    _record_time(vm, record_property, "negative")
    kinds = _kinds(events)
    assert kinds[:2] == ["dhcp.offer", "tftp.sent"] and "http.script" not in kinds and "booted" not in kinds, events
    assert _files(events, "tftp.sent") == ["snponly.efi"]
    stalled = [e for e in events if e["kind"] == "state"]
    assert "snponly.efi" in stalled[0]["message"] and "Secure Boot" in stalled[0]["message"], stalled
    host = bootbox.json("host", "show", vm.mac)
    assert host["state"] == "booting" and "Secure Boot" in host["reason"], host


def test_uefi_http_boot_through_the_proxy(
    segment: LabSegment, demo_assets: DemoAssets, record_property: Callable[[str, object], None]
) -> None:
    """OVMF with its PXE switched off boots over HTTP: bootbox's proxy OFFER (yiaddr 0, option 60
    ``HTTPClient``, the loader URL in option 67) beside the site DHCP's address offer; the
    firmware HEADs then GETs snponly.efi from bootbox, which comes back as iPXE for its script."""
    require_qemu()
    site = segment.start_site_dhcp()
    segment.start_ra()
    bootbox = start_bootbox(segment)
    bootbox.add_demo_profile(demo_assets)
    vm = segment.boot("uefi-http")
    events = _boot_and_wait(bootbox, vm)
    _record_time(vm, record_property, "uefi-http")
    assert _kinds(events) == ["dhcp.offer", "http.file", "dhcp.offer", "rules", "http.script", "http.file",
                              "http.file", "booted"], events
    first = events[0]
    assert first["data"]["arch"] == 16 and first["data"]["boot_file"] == f"{bootbox.url}/boot/loaders/snponly.efi"
    assert _files(events, "http.file")[0] == "snponly.efi" and "tftp.sent" not in _kinds(events)
    # The address came from the site's DHCP server; bootbox only added the boot URL.
    assert events[-1]["data"]["ip"] == {lease.mac: lease.ip for lease in site.leases()}[vm.mac]
    # On the wire: the firmware asked HEAD (it wants Content-Length) before GET, and no answer
    # was a redirect (a 301 breaks EDK2's HTTP boot).
    http = _http_lines(vm.workdir / "tap.pcap")
    head = http.index("HEAD /boot/loaders/snponly.efi HTTP/1.1")
    get = http.index("GET /boot/loaders/snponly.efi HTTP/1.1")
    assert "HTTP/1.1 200 OK" in http[head:get] and not [line for line in http if line.startswith("HTTP/1.1 3")]
    assert bootbox.json("host", "show", vm.mac)["attrs"]["platform"] == "efi"


ULA_PREFIX = "fd42:b007::/64"
SERVER6 = "fd42:b007::1"


def test_uefi_pxe_over_ipv6_then_ipxe_over_http_on_ipv6(
    segment: LabSegment, demo_assets: DemoAssets, record_property: Callable[[str, object], None]
) -> None:
    """OVMF with IPv4 PXE off, after an RA with the M flag: DHCPv6 SOLICIT (arch 7) → bootbox's
    ADVERTISE/REPLY with an address and ``tftp://[fd42:b007::1]/snponly.efi`` → TFTP over IPv6 →
    iPXE asks DHCPv6 again with user class iPXE → the script URL over IPv6 → kernel over IPv6."""
    require_qemu()
    segment.net.run(segment.server, ["ip", "-6", "addr", "add", f"{SERVER6}/64", "dev", segment.server.ifname, "nodad"])
    site = segment.start_site_dhcp()  # the payload's own DHCPv4 (udhcpc) still needs an answer
    advertiser = RouterAdvertiser(segment.server.ifname, netns=segment.server.netns, managed=True, prefix=ULA_PREFIX)
    advertiser.start()
    segment.net.defer(advertiser.stop)
    bootbox = start_bootbox(segment, extra_toml=f'[dhcp6]\nenabled = true\ninterface = "{segment.server.ifname}"\n'
                                                f'address_pool = "{ULA_PREFIX}"\n')
    bootbox.add_demo_profile(demo_assets)
    vm = segment.boot("uefi-pxe6")
    events = _boot_and_wait(bootbox, vm)
    _record_time(vm, record_property, "uefi-pxe6")
    assert _kinds(events) == ["dhcp.offer", "tftp.sent", "dhcp.offer", "rules", "http.script", "http.file",
                              "http.file", "booted"], events
    offers = [e for e in events if e["kind"] == "dhcp.offer"]
    assert offers[0]["data"] == {**offers[0]["data"], "boot_file": "snponly.efi", "arch": 7, "ipxe": False, "port": 547}
    assert offers[-1]["data"]["ipxe"] is True and offers[-1]["data"]["port"] == 547
    assert offers[-1]["data"]["boot_file"] == f"http://[{SERVER6}]:8080/boot.ipxe"
    tftp = next(e for e in events if e["kind"] == "tftp.sent")
    assert tftp["data"]["file"] == "snponly.efi" and tftp["data"]["ip"].startswith("fd42:b007:")
    fetched = [e for e in events if e["kind"] in ("http.script", "http.file")]
    assert all(e["data"]["ip"].startswith("fd42:b007:") for e in fetched), fetched
    assert events[-1]["data"]["ip"] == {lease.mac: lease.ip for lease in site.leases()}[vm.mac]
    assert bootbox.json("host", "show", vm.mac)["attrs"]["ipv6"].startswith("fd42:b007:")


def test_uefi_secure_boot_through_the_proxy_when_the_site_dhcp_names_bootbox(
    segment: LabSegment, demo_assets: DemoAssets, record_property: Callable[[str, object], None]
) -> None:
    """The other documented way to boot GRUB beside a site DHCP: bootbox stays a proxy, and the
    site's DHCP names bootbox as next-server (``dhcp-boot=,,ADDRESS``), which is where GRUB 2.06
    looks for grub.cfg. bootbox still warns on the host's timeline that it cannot check that."""
    _require_secure_boot()
    site = segment.start_site_dhcp(next_server=SERVER)
    bootbox = start_bootbox(segment, extra_toml="[groups.signed]\nsecure_boot = true\n")
    bootbox.add_demo_profile(demo_assets, rule=False)
    mac = random_mac()
    bootbox.cli("rule", "add", "signed", "--pattern", f"mac={mac}", "--item", "image=demo", "--item", "group=signed")
    vm = segment.boot("uefi-secure", mac=mac)
    events = _boot_and_wait(bootbox, vm)
    _record_time(vm, record_property, "uefi-secure-proxy")
    assert [f.lstrip("/") for f in _files(events, "tftp.sent")][:3] == ["shimx64.efi", "grubx64.efi", "grub/grub.cfg"]
    warning = next(e for e in events if e["kind"] == "state")
    assert "next-server" in warning["message"] and warning["data"]["warning"] == "grub-behind-proxy"
    assert events[-1]["data"]["secure_boot"] == "on"
    assert events[-1]["data"]["ip"] == {lease.mac: lease.ip for lease in site.leases()}[mac]
