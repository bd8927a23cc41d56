"""The SSH host key an image makes at boot: one ed25519 key, and only when it has none (no build).

The drop-in's ``ExecStartPre`` command (build.SSH_DROPIN) is run as systemd would run it, with
``/etc/ssh`` moved to a scratch directory, through the real ``ssh-keygen``; and the image's
``sshd_config.d`` file names that key alone, so sshd neither wants nor makes an RSA key.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from bootbox_linux.build import SSH_DROPIN, SSHD_HOSTKEYS
from tests.support.lab_fixtures import lab_unavailable


def _keygen_command(etc_ssh: Path) -> list[str]:
    lines = [line.removeprefix("ExecStartPre=") for line in SSH_DROPIN.splitlines() if line.startswith("ExecStartPre=")]
    keygen = [line for line in lines if "ssh-keygen" in line]
    assert lines[0] == "" and len(keygen) == 1, lines  # the unit's own ExecStartPre (ssh-keygen -A) is reset
    return [arg.replace("/etc/ssh/", f"{etc_ssh}/") for arg in shlex.split(keygen[0])]


def test_a_boot_without_a_key_makes_one_ed25519_key_and_keeps_a_key_it_was_given(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        lab_unavailable("ssh-keygen is not installed (Debian: openssh-client)")
    etc_ssh = tmp_path / "ssh"
    etc_ssh.mkdir()
    command = _keygen_command(etc_ssh)
    subprocess.run(command, check=True, timeout=60)
    assert sorted(p.name for p in etc_ssh.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    made = (etc_ssh / "ssh_host_ed25519_key.pub").read_text()
    assert made.startswith("ssh-ed25519 ")
    subprocess.run(command, check=True, timeout=60)  # sshd restarted, or cloud-init wrote the key first
    assert (etc_ssh / "ssh_host_ed25519_key.pub").read_text() == made


def test_sshd_loads_the_ed25519_key_alone(tmp_path: Path) -> None:
    """sshd's effective configuration (``sshd -T``), with the image's drop-in included as Debian's
    sshd_config includes ``sshd_config.d``: one host key, not sshd's default three."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).is_file() or shutil.which("ssh-keygen") is None:
        lab_unavailable("sshd and ssh-keygen are not installed (Debian: openssh-server)")
    key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    (tmp_path / "sshd_config.d").mkdir()
    (tmp_path / "sshd_config.d/bootbox-hostkeys.conf").write_text(SSHD_HOSTKEYS.replace("/etc/ssh/", f"{tmp_path}/"))
    (tmp_path / "sshd_config").write_text(f"Include {tmp_path}/sshd_config.d/*.conf\n")
    shown = subprocess.run([sshd, "-T", "-f", str(tmp_path / "sshd_config")], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert [line.split()[1] for line in shown.splitlines() if line.startswith("hostkey ")] == [str(key)]
