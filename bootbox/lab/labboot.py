"""``bootbox lab boot``: one QEMU client network-boots on a running lab, timeline printed live.

The guest gets a fresh tap on the lab's bridge and a random locally administered MAC, and QEMU
runs in the switch namespace (:class:`~bootbox.lab.qemu.QemuClient`). Its progress is read from
the appliance itself — the events bootbox records for that MAC (DHCP, TFTP, HTTP, report-in),
fetched from its API from inside the server namespace — and printed as they arrive, timed from
VM start. The boot is done when the payload reports in (``booted``); the tap is removed and QEMU
stopped afterwards whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootbox.assets.demo import MARKER_OK
from bootbox.lab.netns import LabError, run_in_netns
from bootbox.lab.qemu import Firmware, QemuClient, random_mac
from bootbox.lab.session import LabState, read_state, supervisor_alive

__all__ = ["BootResult", "TimelineEvent", "boot"]


@dataclass(frozen=True)
class TimelineEvent:
    """One step of the boot as bootbox recorded it, ``seconds`` after the VM started."""

    seconds: float
    kind: str
    message: str


@dataclass
class BootResult:
    mac: str
    firmware: str
    booted: bool
    seconds: float | None
    timeline: list[TimelineEvent] = field(default_factory=list)
    console_tail: str = ""
    workdir: str = ""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _events(state: LabState, mac: str) -> list[dict[str, Any]]:
    """The appliance's recent events for ``mac`` (asked from inside the server namespace)."""

    def fetch() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{state.http_url}/api/v1/events?limit=500", timeout=3) as response:
            return json.loads(response.read())

    try:
        events = run_in_netns(state.members["server"], fetch)
    except OSError:
        return []
    return sorted((e for e in events if e.get("mac") == mac), key=lambda e: float(e["time"]))


def boot(lab_dir: Path, firmware: Firmware, *, timeout: float = 240.0, mac: str | None = None,
         out: Callable[[str], None] = print) -> BootResult:  # fmt: skip
    """Boot one client on the lab in ``lab_dir`` and follow it to report-in (or ``timeout``)."""
    state = read_state(lab_dir)
    if state is None or state.status != "up" or not supervisor_alive(state):
        raise LabError(f"no lab is up in {lab_dir}: run `bootbox lab up` first")
    mac = mac or random_mac()
    tap = f"bbt{os.getpid()}"[:15]
    workdir = lab_dir / "vms" / mac.replace(":", "")
    workdir.mkdir(parents=True, exist_ok=True)
    _ip("-n", state.switch, "tuntap", "add", "dev", tap, "mode", "tap")
    vm = QemuClient(tap=tap, netns=state.switch, mac=mac, firmware=firmware, workdir=workdir)
    result = BootResult(mac, firmware, False, None, workdir=str(workdir))
    try:
        _ip("-n", state.switch, "link", "set", tap, "master", state.bridge, "up")
        started = time.time()
        vm.start()
        out(f"booting a {firmware} client {mac} on the lab (QEMU pid {vm.pid}); timeline from VM start:")
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = _events(state, mac)
            for event in events[seen:]:
                item = TimelineEvent(float(event["time"]) - started, str(event["kind"]), str(event["message"]))
                result.timeline.append(item)
                out(f"  +{item.seconds:6.1f} s  {item.kind:<13} {item.message}")
                if item.kind == "booted" and not result.booted:
                    result.booted, result.seconds = True, item.seconds
            seen = len(events)
            if result.booted:
                break
            if not vm.running:
                out(f"QEMU exited ({vm.returncode}) before the client reported in")
                break
            time.sleep(0.3)
        if result.booted:
            try:
                vm.wait_for(MARKER_OK, 60)
                vm.wait_exit(60)
            except LabError as exc:
                out(f"(after report-in: {exc})")
            out(f"{mac} booted and reported in {result.seconds:.1f} s after VM start")
        else:
            out(f"{mac} did not report in within {timeout:.0f} s; console tail:")
            out(vm.console_tail(30))
        result.console_tail = vm.console_tail(30)
        return result
    finally:
        vm.stop()
        subprocess.run(["ip", "-n", state.switch, "link", "del", tap], capture_output=True, check=False)
