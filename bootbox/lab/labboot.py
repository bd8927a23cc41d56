"""``bootbox lab boot``: one QEMU client network-boots on a running lab, timeline printed live.

The guest gets a fresh tap on the lab's bridge and a random locally administered MAC, and QEMU
runs in the switch namespace (:class:`~bootbox.lab.qemu.QemuClient`). Its progress is read from
the appliance itself — the events bootbox records for that MAC (DHCP, TFTP, HTTP, report-in),
fetched from its API from inside the server namespace — and printed as they arrive, timed from
VM start. The boot is done when the payload reports in (``booted``); the tap is removed and QEMU
stopped afterwards whatever happened.

With ``image``, the client boots a built Linux image instead of the demo: the lab's appliance
must serve that image (``bootbox lab up --images-dir DIR``), and before the VM starts
:func:`image_rule` gives this client's MAC the image through the API: the ``linux`` profile that
names the image (made, named after it, when there is none) and a rule ``lab-image-<mac>`` at the
top of the list, so it wins over the demo rule. The guest gets :data:`IMAGE_MEMORY_MB` (its root
is held in RAM), a virtio NIC and two vCPUs (:data:`IMAGE_NIC`, :data:`IMAGE_SMP`), and is done
when the image's report-in unit calls in, after cloud-init's last stage: boot-to-configured.
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

__all__ = ["IMAGE_MEMORY_MB", "IMAGE_NIC", "IMAGE_SMP", "Api", "BootResult", "TimelineEvent", "api_call", "boot",
           "image_rule", "lab_api"]

IMAGE_MEMORY_MB = 1536
"""Guest RAM for a Linux image: its compressed root (~180 MB for a small image) is downloaded into
RAM and everything it writes stays there (docs/linux-images.md asks for 1-1.5 GiB)."""
DEMO_MEMORY_MB = 768
IMAGE_NIC = "virtio-net-pci"
"""The NIC an image boots with (the demo keeps the firmware's default): its root, hundreds of MB,
comes over the network, and under TCG every emulated e1000 register access per packet costs CPU
that virtio's shared rings do not. BIOS guests still get an iPXE ROM for it (QEMU's
``efi-virtio.rom``, Debian ``ipxe-qemu``)."""
IMAGE_SMP = ("-smp", "2")
"""QEMU arguments for an image's vCPUs: two, so systemd's parallel start (udev, journald, cloud-init
beside them) is not serialised on one emulated CPU; QEMU's multi-threaded TCG runs each on a host
core. The demo, one busybox process, keeps one."""


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


Api = Callable[[str, str, "dict[str, Any] | None"], Any]
"""``api(method, path, body)``: one call to an appliance's ``/api/v1``; raises LabError on an error."""


def api_call(base_url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One API call with the token; an error answer becomes a LabError carrying the appliance's
    message (which names the field)."""
    import urllib.error

    request = urllib.request.Request(f"{base_url}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise LabError(f"the lab appliance refused {method} {path} ({exc.code}): {detail}") from None


def lab_api(state: LabState) -> Api:
    """:func:`api_call` against the lab's appliance, from inside its server namespace."""
    token = (Path(state.dir) / "state" / "api-token").read_text().strip()
    return lambda method, path, body=None: run_in_netns(state.members["server"], api_call, state.http_url, token,
                                                        method, path, body)


def image_rule(api: Api, mac: str, image: str, host_profile: str | None = None) -> dict[str, Any]:
    """Make the appliance boot ``mac`` into the Linux image ``image`` (optionally configured by
    ``host_profile``): the image's profile, made if missing, and a rule for this MAC on top."""
    profiles = [p for p in api("GET", "/profiles", None)
                if p.get("kind") == "linux" and p.get("spec", {}).get("image") == image]
    if profiles:
        profile = str(profiles[0]["name"])
    else:  # the appliance checks that the image is built and names it if not
        api("POST", "/profiles", {"name": image, "kind": "linux", "spec": {"image": image},
                                  "description": f"Linux image {image} (bootbox lab boot --image)"})
        profile = image
    items = {"image": profile, **({"host_profile": host_profile} if host_profile else {})}
    rule = {"name": f"lab-image-{mac.replace(':', '')}", "patterns": [f"mac={mac}"], "items": items, "at": 0}
    api("POST", "/rules", rule)
    return rule


def boot(lab_dir: Path, firmware: Firmware, *, timeout: float = 240.0, mac: str | None = None,
         out: Callable[[str], None] = print, image: str | None = None,
         host_profile: str | None = None) -> BootResult:  # fmt: skip
    """Boot one client on the lab in ``lab_dir`` and follow it to report-in (or ``timeout``):
    the demo, or the built Linux image ``image`` (see the module's docstring)."""
    state = read_state(lab_dir)
    if state is None or state.status != "up" or not supervisor_alive(state):
        raise LabError(f"no lab is up in {lab_dir}: run `bootbox lab up` first")
    if host_profile and not image:
        raise LabError("--host-profile goes with --image (the demo takes no host profile here)")
    mac = mac or random_mac()
    if image and not state.images_dir:
        raise LabError("this lab serves no Linux images: start it with `bootbox lab up --images-dir DIR` "
                       "(DIR: where `bootbox image build` put them, default <state dir>/plugins/linux/images)")
    if image:
        rule = image_rule(lab_api(state), mac, image, host_profile)
        out(f"rule {rule['name']}: {mac} boots {', '.join(f'{k}={v}' for k, v in rule['items'].items())}")
    tap = f"bbt{os.getpid()}"[:15]
    workdir = lab_dir / "vms" / mac.replace(":", "")
    workdir.mkdir(parents=True, exist_ok=True)
    _ip("-n", state.switch, "tuntap", "add", "dev", tap, "mode", "tap")
    vm = QemuClient(tap=tap, netns=state.switch, mac=mac, firmware=firmware, workdir=workdir,
                    memory_mb=IMAGE_MEMORY_MB if image else DEMO_MEMORY_MB, nic=IMAGE_NIC if image else None,
                    extra_args=IMAGE_SMP if image else ())
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
        if result.booted and image:
            out(f"{mac} booted Linux image {image} and reported in (configured) {result.seconds:.1f} s after VM start")
        elif result.booted:
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
