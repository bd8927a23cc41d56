"""Issue 15's mixed fleet: an x86 and an ARM64 client boot their own kernels from ONE rule set.

The site of the bug report: rule ``arm`` (``arch=arm64 → image=arm64-profile``) first, rule
``rest`` (all hosts → ``image=x86-profile``) second, bootbox as the proxy beside the site's own
DHCP (dnsmasq), which names bootbox as next-server because GRUB 2.06 reads ``grub.cfg`` from
there (facts/pxe-dhcp.md §9; docs/firmware.md "GRUB and next-server"). The clients are real
firmware under QEMU (TCG), booted at the same time:

* x86: SeaBIOS + iPXE ROM → bootbox's proxy OFFER → the iPXE script → the amd64 demo kernel;
* ARM64: qemu-system-aarch64 ``virt`` + AAVMF, EDK2 PXE with arch 11 → ``grubnetaa64.efi`` →
  ``/grub/grub.cfg`` → ``grub/hosts/<mac>.cfg`` → the arm64 demo kernel, all over TFTP.

The ARM64 host's GRUB config request carries nothing but its MAC, so only the facts bootbox
took from its DHCP packets can make rule ``arm`` match it (before the fix it got the x86
profile). Which profile each client booted is proven three ways: the kernel it reports in
with (``uname -r``), the profile's own command-line marker on its serial console (Linux prints
its command line), and bootbox's record of the host. Reuses the firmware matrix's fixtures
(the arm64 demo payload and Debian's signed arm64 loaders, built or fetched once).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import LabError
from bootbox.lab.qemu import QemuClient, random_mac
from tests.scenarios.test_firmware_matrix import SERVER, _require_arm64, arm64_assets_fixture, arm64_loaders_fixture
from tests.support.e2e_bootbox import BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import (
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    segment_fixture,
)

__all__ = ["arm64_assets_fixture", "arm64_loaders_fixture", "demo_assets_fixture", "demo_cache_fixture",
           "segment_fixture"]

pytestmark = [pytest.mark.firmware, pytest.mark.qemu, pytest.mark.netns]


def _profile(bootbox: BootboxOnSegment, name: str, assets: DemoAssets) -> None:
    bootbox.cli("profile", "add", name, "--kernel", str(assets.kernel), "--initrd", str(assets.initrd), "--cmdline",
                f"{assets.cmdline} bootbox.profile={name} bootbox.mac={{mac}} bootbox.callback={{callback}}")


def _reported(bootbox: BootboxOnSegment, vm: QemuClient, deadline: float) -> list[dict]:
    """The host's timeline once it reported in; on failure the console and bootbox's log."""
    try:
        events = bootbox.wait_for_event(vm.mac, "booted", max(1.0, deadline - time.monotonic()))
        vm.wait_for(MARKER_OK, 60)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{vm.firmware} {vm.mac}: {exc}\nconsole:\n{vm.console_tail(60)}\n"
                    f"bootbox log:\n{bootbox.log_tail(80)}")
    return events


def _wire_text(pcap: Path) -> str:
    """The payloads of a guest's capture as text (tcpdump -A): what it was sent, readable."""
    return subprocess.run(["tcpdump", "-r", str(pcap), "-A", "-n"], capture_output=True, text=True,
                          errors="replace", check=True).stdout


def _rule_check(bootbox: BootboxOnSegment, mac: str, rule: str) -> dict:
    """``bootbox host rules MAC``: how rule ``rule`` saw the host's recorded attributes."""
    report = bootbox.json("host", "rules", mac)
    return next(r for r in report["rules"] if r["rule"] == rule)


def test_an_x86_and_an_arm64_client_boot_their_own_kernels_from_one_rule_set(
    segment: LabSegment, demo_assets: DemoAssets, arm64_assets: DemoAssets, arm64_loaders: dict[str, Path],
    record_property: Callable[[str, object], None],
) -> None:
    _require_arm64()
    site = segment.start_site_dhcp(next_server=SERVER)
    segment.start_ra()  # iPXE skips its ~16 s IPv6 wait
    grub, shim = arm64_loaders["grubnetaa64.efi.signed"], arm64_loaders["shimaa64.efi.signed"]
    bootbox = start_bootbox(segment, extra_toml=f'[dhcp.loader_files]\n"grubnetaa64.efi" = "{grub}"\n'
                                                f'"grubaa64.efi" = "{grub}"\n"shimaa64.efi" = "{shim}"\n')
    _profile(bootbox, "x86-profile", demo_assets)
    _profile(bootbox, "arm64-profile", arm64_assets)
    bootbox.cli("rule", "add", "arm", "--pattern", "arch=arm64", "--item", "image=arm64-profile")
    bootbox.cli("rule", "add", "rest", "--all-hosts", "--item", "image=x86-profile")

    arm = segment.boot("arm64", mac=random_mac())  # the slow one (TCG arm64, a 33 MB kernel over TFTP) first
    x86 = segment.boot("bios", mac=random_mac())
    deadline = time.monotonic() + BOOT_TIMEOUT
    booted: dict[str, list[dict]] = {}
    for name, vm in (("x86", x86), ("arm64", arm)):
        booted[name] = _reported(bootbox, vm, deadline)
        assert vm.started_at is not None
        seconds = time.monotonic() - vm.started_at
        record_property(f"boot_seconds_mixed_{name}", round(seconds, 1))
        print(f"mixed fleet {name} ({vm.firmware}): VM start to report-in {seconds:.1f} s")

    for name, vm, kernel_suffix in (("x86", x86, "-amd64"), ("arm64", arm, "-arm64")):
        profile = f"{name}-profile"
        events = booted[name]
        assert events[-1]["data"]["kernel"].endswith(kernel_suffix), events[-1]  # the profile's kernel ran
        served = [e["message"] for e in events if e["kind"] == "http.script"]
        assert served == [f"{'GRUB config' if name == 'arm64' else 'script'} for profile {profile} (linux)"], served
        # On the wire: the config (GRUB, over TFTP) or script (iPXE, over HTTP) the client received
        # carried its profile's command line, and not the other one's.
        wire = _wire_text(vm.workdir / "tap.pcap")
        other = "arm64-profile" if name == "x86" else "x86-profile"
        assert f"bootbox.profile={profile}" in wire and f"bootbox.profile={other}" not in wire
        host = bootbox.json("host", "show", vm.mac)
        assert host["profile"] == profile and host["associations"] == {"image": profile}, host
        rules = [e["message"] for e in events if e["kind"] == "rules"]
        assert rules == [f"first boot: associated image={profile} (rule {'arm' if name == 'arm64' else 'rest'})"]

    # The ARM64 host: its facts came from DHCP only (GRUB reports nothing), and rule arm saw them.
    arm_host = bootbox.json("host", "show", arm.mac)["attrs"]
    assert arm_host["arch"] == "arm64" and arm_host["firmware"] == "uefi" and arm_host["platform"] == "efi"
    assert arm_host["vendor_class"].startswith("PXEClient:Arch:00011"), arm_host
    arm_check = _rule_check(bootbox, arm.mac, "arm")
    assert arm_check["matched"] and arm_check["patterns"][0]["host_values"] == ["arm64"], arm_check
    offer = next(e for e in booted["arm64"] if e["kind"] == "dhcp.offer")
    assert offer["data"]["arch"] == 11 and offer["data"]["boot_file"] == "grubnetaa64.efi"
    arm_files = [e["data"]["file"].lstrip("/") for e in booted["arm64"] if e["kind"] == "tftp.sent"]
    assert arm_files[:3] == ["grubnetaa64.efi", "grub/grub.cfg", f"grub/hosts/{arm.mac}.cfg"], arm_files
    # The x86 host: iPXE on SeaBIOS, arch 0 (spelled as iPXE's ${buildarch}); rule arm did not match.
    x86_host = bootbox.json("host", "show", x86.mac)["attrs"]
    assert x86_host["arch"] == "i386" and x86_host["firmware"] == "bios" and x86_host["platform"] == "pcbios"
    x86_check = _rule_check(bootbox, x86.mac, "arm")
    assert not x86_check["matched"] and x86_check["patterns"][0]["host_values"] == ["i386"], x86_check
    # Both got their addresses from the site's DHCP; bootbox only added the boot information.
    leases = {lease.mac: lease.ip for lease in site.leases()}
    assert booted["x86"][-1]["data"]["ip"] == leases[x86.mac] and booted["arm64"][-1]["data"]["ip"] == leases[arm.mac]
    assert bootbox.json("status")["servers"]["boot"] == {"loader_missing": 0}
