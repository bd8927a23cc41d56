"""The appliance packaging: the systemd unit, install.sh for real, and the Vagrantfile.

The install test installs into the machine's real locations (/opt/bootbox, /etc/bootbox,
/var/lib/bootbox), so it refuses to run where bootbox is already installed, and it always ends
with ``--uninstall --purge``. The installed appliance runs in a lab namespace, not on the
machine's own network, and a QEMU client PXE-boots the demo profile from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import run_in_netns, stop_process
from bootbox.lab.sitedhcp import IPXE_DIR
from tests.support.lab_fixtures import (  # noqa: F401
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    lab_unavailable,
    require_tools,
    segment_fixture,
    wait_for_tcp,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "appliance" / "bootbox.service"
INSTALL = ROOT / "appliance" / "install.sh"
INSTALLED = [Path("/opt/bootbox"), Path("/etc/bootbox"), Path("/var/lib/bootbox"), Path("/usr/local/bin/bootbox"),
             Path("/etc/systemd/system/bootbox.service")]  # fmt: skip


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def require_systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        lab_unavailable("systemd-analyze is missing (Debian: apt-get install systemd; scripts/test.sh does)")
    return str(tool)


def test_unit_is_hardened_with_only_the_two_capabilities() -> None:
    unit = unit_settings(UNIT.read_text())
    assert unit["DynamicUser"] == ["yes"] and unit["StateDirectory"] == ["bootbox"]
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE CAP_NET_RAW"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "Restart": "on-failure"}.items():  # fmt: skip
        assert unit[key] == [value], key
    assert unit["ExecStart"] == ["/opt/bootbox/bin/bootbox --config /etc/bootbox/bootbox.toml --state-dir /var/lib/bootbox serve"]


def test_unit_passes_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    tool = require_systemd_analyze()
    # verify also checks that ExecStart exists, so point it at this checkout's bootbox.
    copy = tmp_path / "bootbox.service"
    copy.write_text(UNIT.read_text().replace("/opt/bootbox/bin/bootbox", str(Path(shutil.which("bootbox") or
                                              ROOT / ".venv" / "bin" / "bootbox"))))  # fmt: skip
    verify = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    broken = tmp_path / "broken" / "bootbox.service"
    broken.parent.mkdir()
    broken.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=sideways"))
    assert subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True).stderr  # the check can fail
    security = subprocess.run([tool, "security", "--offline=yes", str(copy)], capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for bootbox.service: ([\d.]+) (\w+)", security.stdout)
    assert level is not None, security.stdout[-2000:] + security.stderr
    assert float(level.group(1)) <= 4.0 and level.group(2) in ("OK", "SAFE")


def test_install_sh_refuses_unknown_options_and_documents_itself() -> None:
    assert subprocess.run(["bash", str(INSTALL), "--frobnicate"], capture_output=True).returncode == 2
    usage = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True).stdout
    assert "--uninstall" in usage and "--foreground" in usage and "--no-start" in usage


def test_vagrantfile_is_valid() -> None:
    """``vagrant validate`` when Debian's vagrant is installed, else at least Ruby's syntax check."""
    vagrantfile = ROOT / "Vagrantfile"
    text = vagrantfile.read_text()
    assert "appliance/install.sh" in text and "BOOTBOX_CLIENTS" in text
    assert ":libvirt" in text and ":virtualbox" in text and 'mode = "full"' in text
    if shutil.which("vagrant"):
        env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", "BOOTBOX_CLIENTS": "3"}
        done = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Vagrantfile validated successfully" in done.stdout
    elif shutil.which("ruby"):
        done = subprocess.run(["ruby", "-c", str(vagrantfile)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr
    else:
        lab_unavailable("neither vagrant nor ruby is installed (scripts/test.sh installs them)")


# ------------------------------------------------------------------------- install.sh for real
def install_sh(*args: str, script: Path = INSTALL, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def snapshot(dest: Path) -> Path:
    """A copy of the checkout to install from (as Vagrant's rsync gives the VM), so the run sees
    one consistent tree; returns its install.sh."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", ".pytest_cache", ".hypothesis"))  # fmt: skip
    return dest / "appliance" / "install.sh"


@pytest.fixture
def clean_machine() -> Iterator[None]:
    """Only on a machine without bootbox installed; purge whatever the test installed."""
    if os.geteuid() != 0:
        lab_unavailable("install.sh needs root")
    present = [str(p) for p in INSTALLED if p.exists() or p.is_symlink()]
    if present:
        lab_unavailable(f"bootbox is installed on this machine ({', '.join(present)}); not touching it")
    try:
        yield
    finally:
        install_sh("--uninstall", "--purge", timeout=120)


@pytest.mark.qemu
@pytest.mark.netns
def test_install_sh_installs_serves_a_pxe_boot_and_uninstalls(
    clean_machine: None, segment: LabSegment, demo_assets: DemoAssets, demo_cache: Path, tmp_path: Path
) -> None:
    require_tools("qemu-system-x86_64", "dnsmasq", "timeout")
    script = snapshot(tmp_path / "src")
    first = install_sh("--no-start", script=script)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed bootbox into /opt/bootbox" in first.stdout
    for path in INSTALLED[:2] + INSTALLED[3:]:
        assert path.exists(), path
    config = Path("/etc/bootbox/bootbox.toml")
    config.write_text(config.read_text() + "\n# an operator's edit\n")
    again = install_sh("--no-start", script=script)  # idempotent: nothing rebuilt, the edited config kept
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stdout + again.stderr
    assert config.read_text().endswith("# an operator's edit\n")
    tool = shutil.which("systemd-analyze")
    if tool:  # the unit as installed, with its real ExecStart
        verify = subprocess.run([tool, "verify", "/etc/systemd/system/bootbox.service"], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr

    # The installed appliance, on its shipped default config (proxy mode), in the lab's server
    # namespace beside a site DHCP. Its demo kernel comes from the cache warmed above: the
    # namespace has no way out to Debian's mirrors.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "demo").symlink_to(demo_cache)
    segment.start_site_dhcp()
    segment.start_ra()
    env = {"PATH": os.environ["PATH"], "BOOTBOX_CACHE": str(cache), "HOME": str(tmp_path)}
    log = tmp_path / "appliance.log"
    with log.open("wb") as out:
        served = segment.net.spawn(segment.server, ["timeout", "600", "bash", str(script), "--foreground"],
                                   stdout=out, stderr=out, env=env)  # fmt: skip
    try:
        wait_for_tcp(segment.net, segment.client, segment.server.ip, 8080, timeout=120)
        vm = segment.boot("bios")
        vm.wait_for(MARKER_OK, BOOT_TIMEOUT)

        def get(path: str) -> object:
            with urllib.request.urlopen(f"http://{segment.server.ip}:8080/api/v1{path}", timeout=5) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 30
        while True:  # the report-in reaches the appliance just before the console marker
            kinds = [e["kind"] for e in run_in_netns(segment.server.netns, get, f"/hosts/{vm.mac}/events")]  # type: ignore[union-attr]
            if "booted" in kinds or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert kinds[0] == "dhcp.offer" and "http.script" in kinds and "booted" in kinds
        assert run_in_netns(segment.server.netns, get, f"/hosts/{vm.mac}")["profile"] == "demo"  # type: ignore[index]
        assert (Path("/var/lib/bootbox") / "bootbox.json").is_file()
    finally:
        status = stop_process(served)
    text = log.read_text(errors="replace")
    assert "bootbox is up" in text and "bootbox stopped" in text, text[-3000:]
    assert status == 0  # SIGTERM is a clean stop

    removed = install_sh("--uninstall", "--purge", script=script, timeout=120)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert not any(p.exists() or p.is_symlink() for p in INSTALLED)
