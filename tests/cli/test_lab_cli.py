"""``bootbox lab up|boot|down`` end to end, as a newcomer runs it (the CLI, in subprocesses).

The lab runs in full-DHCP mode, so the QEMU clients boot with bootbox as the only DHCP server on
the segment; the timeline printed by ``lab boot`` is asserted step by step. ``doctor --client``
walks the same appliance from the lab's client namespace. ``down`` must leave nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootbox.assets.demo import DemoAssets
from bootbox.lab.qemu import OVMF_CODE
from bootbox.lab.sitedhcp import IPXE_DIR
from tests.support.lab_fixtures import demo_assets_fixture, demo_cache_fixture, lab_unavailable, require_tools  # noqa: F401

pytestmark = [pytest.mark.netns]

BOOTBOX = [sys.executable, "-m", "bootbox"]


def bootbox(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOOTBOX, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def require_lab() -> None:
    require_tools("ip", "setpriv", "qemu-system-x86_64", "tcpdump")
    for path in (OVMF_CODE, IPXE_DIR / "undionly.kpxe", IPXE_DIR / "snponly.efi"):
        if not path.is_file():
            lab_unavailable(f"the lab needs {path}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_assets: DemoAssets) -> Iterator[tuple[Path, dict[str, object]]]:
    """One full-mode lab for the module; ``down`` runs whatever happens."""
    require_lab()
    lab_dir = tmp_path_factory.mktemp("lab")
    before_links = host_links()
    made: set[str] = set()
    try:
        up = bootbox("lab", "up", "--dir", str(lab_dir), "--mode", "full")
        assert up.returncode == 0, up.stderr + up.stdout
        state = json.loads((lab_dir / "lab.json").read_text())
        made = set(state["namespaces"])
        assert made <= netns_names()
        yield lab_dir, state
    finally:
        down = bootbox("lab", "down", "--dir", str(lab_dir), timeout=120)
    assert down.returncode == 0, down.stderr
    assert not lab_dir.exists()
    assert made and not made & netns_names()  # its own namespaces are gone (others' may come and go)
    assert host_links() == before_links  # and the machine's interfaces were never touched


def test_lab_up_runs_the_appliance_alone_on_its_segment(lab: tuple[Path, dict[str, object]]) -> None:
    lab_dir, state = lab
    assert state["status"] == "up" and state["mode"] == "full"
    assert set(state["members"]) == {"server", "client"}  # type: ignore[arg-type]  # no other DHCP server
    assert all(str(ns).startswith("bbx") for ns in state["namespaces"])  # type: ignore[union-attr]
    config = (lab_dir / "bootbox.toml").read_text()
    assert 'mode = "full"' in config and 'interface = "eth0"' in config and "198.18.0.100" in config
    again = bootbox("lab", "up", "--dir", str(lab_dir))
    assert again.returncode == 1 and "already up" in again.stderr


@pytest.mark.qemu
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_lab_boot_prints_the_timeline_to_report_in(lab: tuple[Path, dict[str, object]], firmware: str,
                                                   record_property: Callable[[str, object], None]) -> None:  # fmt: skip
    lab_dir, _ = lab
    done = bootbox("lab", "boot", "--dir", str(lab_dir), "--firmware", firmware)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    mac = re.search(r"booting a \w+ client ([0-9a-f:]{17})", out).group(1)  # type: ignore[union-attr]
    steps = re.findall(r"^\s+\+\s*([\d.]+) s  (\S+)\s+(.*)$", out, re.MULTILINE)
    kinds = [kind for _, kind, _ in steps]
    # bootbox is the only DHCP server: it leases the address and names what to boot in one answer.
    assert kinds[0] == "dhcp.offer" and "dhcp.lease" in kinds
    lease = next(message for _, kind, message in steps if kind == "dhcp.lease")
    assert re.match(r"leased 198\.18\.0\.1\d\d for 3600 s, boot \S+ from 198\.18\.0\.1$", lease)
    if firmware == "uefi":  # native EDK2 PXE fetches the loader over TFTP, then iPXE runs
        assert any(kind == "tftp.sent" and "snponly.efi" in message for _, kind, message in steps)
    assert any(kind == "dhcp.offer" and message.startswith("offer: http://198.18.0.1:8080/") for _, kind, message in steps)
    order = [kinds.index(kind) for kind in ("dhcp.lease", "http.script", "http.file", "booted")]
    assert order == sorted(order)
    assert kinds[-1] == "booted" and f"{mac} booted and reported in" in out
    seconds = float(re.search(r"reported in ([\d.]+) s after VM start", out).group(1))  # type: ignore[union-attr]
    record_property(f"lab_full_dhcp_boot_seconds_{firmware}", seconds)
    print(f"{firmware}: VM start -> report-in {seconds:.1f} s (full DHCP)")


def test_doctor_walks_the_boot_path_from_the_client_namespace(lab: tuple[Path, dict[str, object]]) -> None:
    lab_dir, state = lab
    client_ns = state["members"]["client"]  # type: ignore[index]
    done = subprocess.run(
        ["ip", "netns", "exec", str(client_ns), *BOOTBOX, "--config", str(lab_dir / "bootbox.toml"),
         "doctor", "--only-client", "--interface", "eth0", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
    steps = {step["name"]: step["detail"] for step in report["client"]}
    assert list(steps) == ["dhcp offer", "boot server", "loader", "ipxe offer", "script"]
    assert re.search(r"offers undionly.kpxe, next-server 198\.18\.0\.1, address 198\.18\.0\.1\d\d", steps["dhcp offer"])
    assert steps["loader"] == f"fetched undionly.kpxe ({(IPXE_DIR / 'undionly.kpxe').stat().st_size} bytes)"
    assert "http://198.18.0.1:8080/boot.ipxe" in steps["ipxe offer"]


def test_doctor_on_the_appliance_finds_nothing_wrong(lab: tuple[Path, dict[str, object]]) -> None:
    lab_dir, state = lab
    done = subprocess.run(
        ["ip", "netns", "exec", str(state["members"]["server"]), *BOOTBOX,  # type: ignore[index]
         "--config", str(lab_dir / "bootbox.toml"), "doctor", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    report = json.loads(done.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert done.returncode == 0, done.stdout
    assert checks["dhcp servers"]["status"] == "ok" and "no other DHCP server" in checks["dhcp servers"]["summary"]
    assert checks["ports"]["status"] == "ok" and checks["store"]["status"] == "ok"


def test_a_second_full_mode_server_refuses_to_start(lab: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    """What an operator sees who starts full mode where a DHCP server already answers."""
    lab_dir, state = lab
    config = tmp_path / "second.toml"
    config.write_text((lab_dir / "bootbox.toml").read_text().replace(str(lab_dir / "state"), str(tmp_path / "state"))
                      .replace("port = 8080", "port = 8090") + "[demo]\nenabled = false\n")  # fmt: skip
    done = subprocess.run(
        ["ip", "netns", "exec", str(state["members"]["client"]), *BOOTBOX, "--config", str(config),  # type: ignore[index]
         "serve", "--tftp-port", "1069"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert "another DHCP server answers on eth0: 198.18.0.1" in done.stderr


def test_proxy_mode_lab_answers_beside_a_site_dhcp(tmp_path: Path, demo_assets: DemoAssets) -> None:
    """``--mode proxy``: dnsmasq in the site namespace leases, bootbox only adds boot information."""
    require_lab()
    require_tools("dnsmasq")
    lab_dir = tmp_path / "lab"
    try:
        up = bootbox("lab", "up", "--dir", str(lab_dir), "--mode", "proxy")
        assert up.returncode == 0, up.stderr + up.stdout
        state = json.loads((lab_dir / "lab.json").read_text())
        assert set(state["members"]) == {"server", "client", "site"}
        done = subprocess.run(
            ["ip", "netns", "exec", state["members"]["client"], *BOOTBOX, "--config", str(lab_dir / "bootbox.toml"),
             "doctor", "--only-client", "--interface", "eth0", "--json"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        report = json.loads(done.stdout)
        assert report["ok"], done.stdout
        offer = report["client"][0]["detail"]
        assert "198.18.0.1 offers undionly.kpxe" in offer and "(proxy: no address)" in offer
    finally:
        down = bootbox("lab", "down", "--dir", str(lab_dir), timeout=120)
    assert down.returncode == 0 and not lab_dir.exists()
