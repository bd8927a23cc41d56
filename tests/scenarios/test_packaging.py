"""The appliance packaging: the systemd unit, install.sh for real, and the Vagrantfile.

The install test runs install.sh with ``--root`` (every file under a private directory, never
through systemd), so it passes on a machine where an operator installed bootbox and runs it, and
checks that it left that installation alone. The appliance it starts runs in a lab namespace,
not on the machine's own network (where an operator's bootbox may hold udp/67, udp/69 and
tcp/8080), and a QEMU client PXE-boots the demo profile from it.
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
from bootbox.lab.netns import run_in_netns
from tests.support.lab_fixtures import (  # noqa: F401
    BOOT_TIMEOUT,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    lab_unavailable,
    require_tools,
    segment_fixture,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "appliance" / "bootbox.service"
INSTALL = ROOT / "appliance" / "install.sh"
INSTALLED = [Path("/opt/bootbox"), Path("/etc/bootbox"), Path("/var/lib/bootbox"), Path("/usr/local/bin/bootbox"),
             Path("/etc/systemd/system/bootbox.service"), Path("/var/log/bootbox.log")]  # fmt: skip
"""What install.sh writes (the log only when it starts bootbox without systemd)."""


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
    assert "--stop" in usage and "--root DIR" in usage
    assert subprocess.run(["bash", str(INSTALL), "--root"], capture_output=True).returncode == 2


def test_install_sh_and_test_sh_tell_a_user_without_root_how_to_become_root() -> None:
    """A fresh Debian 12 installed with a root password has no sudo: the way in is a root shell."""
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if drop and shutil.which("setpriv") is None:
        lab_unavailable("setpriv is missing (Debian: util-linux)")
    for script in (INSTALL, ROOT / "scripts" / "test.sh"):
        done = subprocess.run([*drop, "bash", str(script)], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, cwd="/")  # fmt: skip
        assert done.returncode == 1 and "root shell (su -)" in done.stderr and "sudo" in done.stderr, done.stderr


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


def under(root: Path, path: Path) -> Path:
    """``path`` of a real installation, inside an install.sh ``--root``."""
    return root / path.relative_to("/")


def machine_installation() -> dict[str, object]:
    """What the machine's own bootbox consists of: which of its files exist, its config, unit,
    program stamp and symlink, and whether the process in /run/bootbox.pid lives. Its state dir
    and log are not compared: a running appliance writes them."""
    seen: dict[str, object] = {str(p): p.exists() or p.is_symlink() for p in INSTALLED}
    for path in (Path("/etc/bootbox/bootbox.toml"), Path("/etc/systemd/system/bootbox.service"),
                 Path("/opt/bootbox/.installed-from"), Path("/run/bootbox.pid")):  # fmt: skip
        seen[f"{path} text"] = path.read_text(errors="replace") if path.is_file() else None
    link = Path("/usr/local/bin/bootbox")
    seen[f"{link} target"] = os.readlink(link) if link.is_symlink() else None
    pid = str(seen["/run/bootbox.pid text"] or "").strip()
    seen["/run/bootbox.pid alive"] = pid.isdigit() and Path(f"/proc/{pid}").exists()
    return seen


@pytest.fixture
def install_root(tmp_path: Path) -> Iterator[Path]:
    """A private ``--root`` for install.sh, purged (its appliance stopped) whatever happens."""
    if os.geteuid() != 0:
        lab_unavailable("install.sh needs root")
    root = tmp_path / "root"
    try:
        yield root
    finally:
        install_sh("--root", str(root), "--uninstall", "--purge", timeout=120)


@pytest.mark.qemu
@pytest.mark.netns
def test_install_sh_installs_serves_a_pxe_boot_and_uninstalls(
    install_root: Path, segment: LabSegment, demo_assets: DemoAssets, demo_cache: Path, tmp_path: Path
) -> None:
    require_tools("qemu-system-x86_64", "dnsmasq")
    root = install_root
    machine = machine_installation()
    script = snapshot(tmp_path / "src")
    first = install_sh("--root", str(root), "--no-start", script=script)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"installed bootbox into {root}/opt/bootbox" in first.stdout
    for path in INSTALLED[:-1]:
        assert under(root, path).exists(), path
    # Debian's signed ARM64 loaders, where [dhcp.loader_files] expects them (issue 15).
    loaders = under(root, Path("/var/lib/bootbox/loaders/arm64"))
    assert "fetched Debian's signed ARM64 loaders" in first.stdout, first.stdout + first.stderr
    assert {p.name for p in loaders.iterdir()} == {"shimaa64.efi.signed", "grubnetaa64.efi.signed"}
    config = under(root, Path("/etc/bootbox/bootbox.toml"))
    config.write_text(config.read_text() + "\n# an operator's edit\n")
    again = install_sh("--root", str(root), "--no-start", script=script)  # idempotent: nothing rebuilt, config kept
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stdout + again.stderr
    assert "ARM64" not in again.stdout + again.stderr  # nothing fetched twice
    assert config.read_text().endswith("# an operator's edit\n")
    unit = under(root, Path("/etc/systemd/system/bootbox.service"))
    exec_start = (f"{root}/opt/bootbox/bin/bootbox --config {root}/etc/bootbox/bootbox.toml"
                  f" --state-dir {root}/var/lib/bootbox serve")  # fmt: skip
    assert unit_settings(unit.read_text())["ExecStart"] == [exec_start]
    tool = shutil.which("systemd-analyze")
    if tool:  # the unit as installed, with this installation's ExecStart
        verify = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr

    # Offline (the lab's namespaces have no way out), a missing loader is a warning that says how
    # to fetch it later, and the install goes on.
    grub = loaders / "grubnetaa64.efi.signed"
    kept = grub.read_bytes()
    grub.unlink()
    offline = segment.net.run(segment.server, ["bash", str(script), "--root", str(root), "--no-start"],
                              check=False, timeout=900)  # fmt: skip
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "could not fetch Debian's signed ARM64 loaders" in offline.stderr
    assert f"bootbox.assets.signedloaders arm64 {loaders}" in offline.stderr
    grub.write_bytes(kept)

    # Command 1 as a newcomer runs it, without systemd: it starts the appliance in the background
    # and returns once it answers. It runs in the lab's server namespace beside a site DHCP, on
    # its shipped default config (proxy mode); its demo kernel comes from the cache warmed above.
    cache = under(root, Path("/var/cache/bootbox"))
    cache.mkdir(parents=True)
    (cache / "demo").symlink_to(demo_cache)
    segment.start_site_dhcp()
    segment.start_ra()
    log = under(root, Path("/var/log/bootbox.log"))
    try:
        started = segment.net.run(segment.server, ["bash", str(script), "--root", str(root)], check=False, timeout=900)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "bootbox is up after" in started.stdout and "in the background" in started.stdout, started.stdout
        assert f"tail -f {log}" in started.stdout and f"{script} --root {root} --stop" in started.stdout
        assert under(root, Path("/run/bootbox.pid")).is_file()
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
        assert under(root, Path("/var/lib/bootbox/bootbox.json")).is_file()
    finally:
        stopped = install_sh("--root", str(root), "--stop", script=script, timeout=120)
    assert stopped.returncode == 0 and "stopped bootbox (pid" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not under(root, Path("/run/bootbox.pid")).exists()
    text = log.read_text(errors="replace")
    assert "bootbox is up" in text and "bootbox stopped" in text, text[-3000:]  # SIGTERM is a clean stop
    assert "which does not exist" not in text, text[-3000:]  # every configured loader is there

    removed = install_sh("--root", str(root), "--uninstall", "--purge", script=script, timeout=120)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert not any(under(root, p).exists() or under(root, p).is_symlink() for p in INSTALLED)
    assert machine_installation() == machine  # the machine's own bootbox, installed or running, untouched
