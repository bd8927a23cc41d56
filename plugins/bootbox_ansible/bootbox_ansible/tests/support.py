"""What tests (this plugin's, and the QEMU end-to-end test of Linux images) share for the push.

* :func:`ansible_host_profile`: an ``ansible`` host-profile document (the API's and
  ``bootbox hostprofile add``'s shape) from a cloud-config and a playbook;
* :data:`MARKER_PLAYBOOK`: a playbook that writes a marker file naming the boot it was pushed
  for, so a test sees that *this* boot was configured, not an earlier one;
* :func:`wait_for_push`: poll a host's timeline until the Ansible push of one boot ended, and
  return that boot's task events (fails with the timeline when it does not end well);
* :class:`Sshd`: a real OpenSSH server in a lab namespace, run as root on this machine's
  filesystem, with the keys and the host key the host's own user-data gives it (as cloud-init
  would).

For the QEMU test of Linux images: add ``guest_host_profile(name, user_data, inputs=...)`` (kind
``ansible``) instead of the ``cloud-init`` profile with the same user-data, boot, then
``wait_for_push(lambda: bootbox.events(mac), boot_id)`` (the boot ID is the instance-id
cloud-init reported up with, or what the image's report-in sent); the image needs
openssh-server and python3. :data:`GUEST_MARKER` is then on the guest (the task events show it
was written; read it over the serial console, or ``ssh -i <state>/plugins/ansible/ssh/id_ed25519
root@GUEST cat /run/bootbox-ansible-ok``); after a reboot it is gone until the next push.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from bootbox.lab.netns import Member, Segment

SSHD = "/usr/sbin/sshd"

MARKER_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      copy:
        dest: "{marker}"
        content: "host {{{{ answers.hostname }}}}{{% raw %}} boot {{{{ bootbox.boot_id }}}}{{% endraw %}}\\n"
        mode: "0644"
    - name: read it back
      command: cat "{marker}"
      changed_when: false
"""
"""``.format(marker=PATH)``: bootbox renders ``answers.hostname``; Ansible renders ``bootbox.boot_id``."""


def ansible_host_profile(name: str, playbook: str, user_data: str = "", *, inputs: list[Any] | None = None,
                         description: str = "") -> dict[str, Any]:
    """An ``ansible`` host-profile document: ``playbook.yml`` and, when given, ``user-data``."""
    templates = {"playbook.yml": playbook}
    if user_data:
        templates["user-data"] = user_data
    return {"name": name, "kind": "ansible", "templates": templates, "inputs": inputs or [],
            "description": description}


GUEST_MARKER = "/run/bootbox-ansible-ok"
"""Where :func:`guest_host_profile`'s playbook writes on a QEMU guest: in ``/run`` (RAM), so a
reboot loses it and only the next boot's push can bring it back."""


def guest_host_profile(name: str, user_data: str, *, inputs: list[Any] | None = None) -> dict[str, Any]:
    """The QEMU test's Ansible step: its cloud-init ``user-data`` unchanged, plus a playbook that
    writes :data:`GUEST_MARKER` (``host <hostname answer> boot <boot ID>``). Needs a
    ``hostname`` input (``inputs`` must declare it, as the cloud-init profile does)."""
    return ansible_host_profile(name, MARKER_PLAYBOOK.format(marker=GUEST_MARKER), user_data, inputs=inputs,
                                description="cloud-init pull plus the Ansible push (issue 18)")


def authorized_keys(user_data: str) -> list[str]:
    """The keys a rendered ``#cloud-config`` authorises (what cloud-init writes for the user)."""
    doc = yaml.safe_load(user_data) or {}
    return [str(key) for key in doc.get("ssh_authorized_keys") or []]


def push_events(events: list[dict[str, Any]], boot_id: str) -> list[dict[str, Any]]:
    """The Ansible plugin's events (task results and attempts) of one boot, oldest first."""
    return [e for e in events if e["kind"] == "push" and e["data"].get("plugin") == "ansible"
            and e["data"].get("boot_id") == boot_id]


def wait_for_push(events: Callable[[], list[dict[str, Any]]], boot_id: str, *, timeout: float = 120.0,
                  retries: bool = False) -> list[dict[str, Any]]:
    """Wait until the Ansible push of ``boot_id`` succeeded; return that boot's task events.

    ``events()`` returns the host's timeline (``bootbox host events MAC --json``, or the API's).
    A push that gives up (or is refused) fails at once, with the timeline in the message; so does
    one that needed retries unless ``retries``.
    """
    deadline = time.monotonic() + timeout
    while True:
        mine = push_events(events(), boot_id)
        attempts = [e for e in mine if "result" in e["data"]]
        final = [e for e in attempts if e["data"]["result"] in ("ok", "failed", "refused")]
        if final:
            if final[-1]["data"]["result"] != "ok" or (not retries and len(attempts) > 1):
                raise AssertionError(f"the ansible push of boot {boot_id} did not go as expected: "
                                     + "\n".join(e["message"] for e in mine))
            return [e for e in mine if "task" in e["data"]]
        if time.monotonic() > deadline:
            raise AssertionError(f"no end of the ansible push of boot {boot_id} within {timeout:.0f} s: "
                                 + "\n".join(e["message"] for e in mine))
        time.sleep(0.5)


@dataclass
class Sshd:
    """``sshd -D`` in a lab member, on its address, port 22, keys from ``authorized_keys``."""

    net: Segment
    member: Member
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.keys = self.workdir / "authorized_keys"
        self.log = self.workdir / "sshd.log"
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress {self.member.ip}\nPort 22\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.keys}\nPidFile {self.workdir / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nSubsystem sftp internal-sftp\n")
        self.config = config

    def authorize(self, keys: list[str]) -> None:
        self.keys.write_text("".join(f"{key}\n" for key in keys))

    def configure_from(self, user_data: str) -> None:
        """Do what cloud-init does with a rendered user-data: authorise its ``ssh_authorized_keys``
        and, when it gives one, take its ed25519 host key (``ssh_keys``). Takes effect at start."""
        self.authorize(authorized_keys(user_data))
        keys = (yaml.safe_load(user_data) or {}).get("ssh_keys") or {}
        if keys.get("ed25519_private"):
            self.use_host_key(str(keys["ed25519_private"]))

    def use_host_key(self, private_pem: str) -> None:
        self.host_key.unlink(missing_ok=True)
        fd = os.open(self.host_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(private_pem if private_pem.endswith("\n") else private_pem + "\n")

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        """Start it (again) and wait until it accepts connections."""
        with self.log.open("ab") as out:
            self.proc = self.net.spawn(self.member, [SSHD, "-D", "-e", "-f", str(self.config)], stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while self.net.run(self.member, ["bash", "-c", f"exec 3<>/dev/tcp/{self.member.ip}/22"], check=False,
                           timeout=5).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the sshd this object started (by its PID; its session children go with it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def sshd_available() -> str | None:
    """Why the real-sshd tests cannot run here, or None."""
    for tool in (SSHD, "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"the ansible push tests need {tool} (apt install openssh-server openssh-client)"
    return None
