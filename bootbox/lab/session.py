"""``bootbox lab up|boot|down``: a lab that outlives the command that built it.

``up`` starts a small *supervisor* process (``python -m bootbox.lab.session``, in its own
session) that builds a :class:`~bootbox.lab.netns.Segment` — ``server`` (198.18.0.1, the
appliance), ``client`` (198.18.0.3, for ``bootbox doctor --client``) and, in proxy mode,
``site`` (198.18.0.2, dnsmasq handing out addresses) — runs ``bootbox serve`` in the server
namespace with a generated config and state directory, sends IPv6 router advertisements (so
iPXE skips its 16 s wait), writes ``lab.json`` and waits for SIGTERM. Keeping one live process
that owns everything means the segment's own teardown does the cleaning, every child has it as
its parent-death signal target, and :func:`~bootbox.lab.netns.remove_stale_segments` (which
removes namespaces whose creator died) never mistakes a running lab for debris.

``down`` (from any process) signals the supervisor by the PID in ``lab.json`` and waits; if the
supervisor is already dead it removes the recorded namespaces itself, stopping only processes
inside them. ``boot`` lives in :mod:`bootbox.lab.labboot`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootbox.lab.netns import LabError, Segment, remove_stale_segments, run_in_netns
from bootbox.lab.ra import RouterAdvertiser
from bootbox.lab.sitedhcp import IPXE_DIR, site_dhcp

__all__ = ["DEFAULT_DIR", "LabState", "check_images_dir", "config_text", "down", "read_state", "supervisor_alive", "up"]

log = logging.getLogger("bootbox.lab")

DEFAULT_DIR = Path("/run/bootbox-lab")
STATE_FILE = "lab.json"
SERVER_ADDR, SITE_ADDR, CLIENT_ADDR = "198.18.0.1/24", "198.18.0.2/24", "198.18.0.3/24"
HTTP_PORT = 8080
MODES = ("full", "proxy")


@dataclass
class LabState:
    """What ``lab.json`` records: enough for ``boot`` and ``down`` in another process."""

    dir: str
    mode: str
    supervisor_pid: int
    status: str = "starting"  # starting | up | failed
    error: str = ""
    switch: str = ""
    bridge: str = "br0"
    namespaces: list[str] = field(default_factory=list)
    members: dict[str, str] = field(default_factory=dict)  # role → namespace
    server_ip: str = SERVER_ADDR.split("/")[0]
    http_url: str = f"http://{SERVER_ADDR.split('/')[0]}:{HTTP_PORT}"
    appliance_pid: int = 0
    config: str = ""
    log: str = ""
    images_dir: str = ""  # Linux images the appliance serves (``lab up --images-dir``); "" = its own

    def write(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def read_state(lab_dir: Path) -> LabState | None:
    """The lab recorded in ``lab_dir``, or None when there is none."""
    try:
        return LabState(**json.loads((lab_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise LabError(f"{lab_dir / STATE_FILE} is unreadable ({exc}); remove {lab_dir} by hand") from None


def supervisor_alive(state: LabState) -> bool:
    """True when the recorded supervisor still runs (checked by command line, not PID alone)."""
    try:
        argv = Path(f"/proc/{state.supervisor_pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"bootbox.lab.session" in argv and os.fsencode(state.dir) in argv


def config_text(lab_dir: Path, mode: str, images_dir: Path | None = None) -> str:
    """The appliance's bootbox.toml: lab addresses only, state inside the lab directory, and
    built Linux images read from ``images_dir`` when given (``bootbox lab boot --image``)."""
    lines = [
        f'state_dir = "{lab_dir / "state"}"',
        f'server_address = "{SERVER_ADDR.split("/")[0]}"',
        "[dhcp]",
        f'mode = "{mode}"',
        'interface = "eth0"',
    ]
    if mode == "full":
        lines += ['range_start = "198.18.0.100"', 'range_end = "198.18.0.199"', "lease_seconds = 3600"]
    lines += ["[tftp]", f'root = "{IPXE_DIR}"', "[http]", f"port = {HTTP_PORT}"]
    if images_dir is not None:
        lines += ["[plugins.linux]", f"images_dir = {json.dumps(str(images_dir))}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ up / down
def up(lab_dir: Path = DEFAULT_DIR, mode: str = "full", timeout: float = 600.0,
       images_dir: Path | None = None) -> LabState:
    """Start the supervisor and wait until the appliance answers (or explain why it did not).

    ``images_dir``: a ``linux`` images directory (``bootbox image build`` makes them, by default
    in ``<state dir>/plugins/linux/images``) whose images the lab's appliance serves, so
    ``bootbox lab boot --image NAME`` boots one. The lab's namespaces reach no archive, so
    images are built outside it; the lab only reads them."""
    if mode not in MODES:
        raise LabError(f"mode must be one of {MODES}, not {mode!r}")
    images_dir = check_images_dir(images_dir)
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, taps, ports below 1024)")
    existing = read_state(lab_dir)
    if existing is not None and supervisor_alive(existing):
        raise LabError(f"a lab is already up in {lab_dir} (pid {existing.supervisor_pid}); run `bootbox lab down` first")
    if existing is not None:
        down(lab_dir)
    if lab_dir.exists() and any(lab_dir.iterdir()):
        raise LabError(f"{lab_dir} is not empty and holds no lab; choose another --dir")
    remove_stale_segments()
    lab_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (lab_dir / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bootbox.lab.session", "--dir", str(lab_dir), "--mode", mode,
             *(["--images-dir", str(images_dir)] if images_dir is not None else [])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BOOTBOX_") or k == "BOOTBOX_CACHE"},
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(lab_dir)
        if state is not None and state.status == "up":
            return state
        if state is not None and state.status == "failed" or proc.poll() is not None:
            error = state.error if state is not None and state.error else _tail(lab_dir / "supervisor.log")
            proc.wait()
            down(lab_dir)
            raise LabError(f"the lab did not come up: {error}")
        if time.monotonic() > deadline:
            down(lab_dir)
            raise LabError(f"the lab did not come up within {timeout:.0f} s; see {lab_dir}/supervisor.log")
        time.sleep(0.2)


def down(lab_dir: Path = DEFAULT_DIR, timeout: float = 60.0) -> list[str]:
    """Remove the lab in ``lab_dir``: everything it made, nothing else. Returns what was done."""
    state = read_state(lab_dir)
    if state is None:
        return []
    done: list[str] = []
    if supervisor_alive(state):
        os.kill(state.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while supervisor_alive(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if supervisor_alive(state):
            os.kill(state.supervisor_pid, signal.SIGKILL)
        done.append(f"stopped the lab supervisor (pid {state.supervisor_pid})")
    existing = set(_netns_list())
    for name in reversed(state.namespaces):
        if name not in existing:
            continue
        for pid in _netns_pids(name):  # only processes inside the lab's own namespaces
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        done.append(f"removed namespace {name}")
    shutil.rmtree(lab_dir, ignore_errors=True)
    done.append(f"removed {lab_dir}")
    return done


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in out.split() if pid.isdigit()]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------------------------ supervisor
def check_images_dir(images_dir: Path | None) -> Path | None:
    """``images_dir`` made absolute, or a LabError naming ``--images-dir`` when it holds no images."""
    if images_dir is None:
        return None
    images_dir = images_dir.resolve()
    if not (images_dir / "names").is_dir() or not (images_dir / "objects").is_dir():
        raise LabError(f"--images-dir {images_dir} holds no built Linux images (no names/ and objects/ in it); "
                       "build one with `bootbox image build NAME --suite bookworm …` and pass its images "
                       "directory (default <state dir>/plugins/linux/images)")
    return images_dir


def supervise(lab_dir: Path, mode: str, images_dir: Path | None = None) -> int:
    """The supervisor's body: build, serve until SIGTERM, tear down. Runs in its own session."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.set())
    state = LabState(dir=str(lab_dir), mode=mode, supervisor_pid=os.getpid(), config=str(lab_dir / "bootbox.toml"),
                     log=str(lab_dir / "appliance.log"), images_dir=str(images_dir or ""))  # fmt: skip
    state.write()
    segment: Segment | None = None
    try:
        from bootbox.assets.demo import build_demo_assets

        # Built here, where the network (and apt) is reachable; the appliance in its namespace
        # then finds the assets already built in its state directory.
        build_demo_assets(lab_dir / "state" / "demo")
        segment = Segment()
        state.switch, state.bridge = segment.switch, segment.bridge
        server = segment.add_namespace("server", SERVER_ADDR, ipv6=True)
        client = segment.add_namespace("client", CLIENT_ADDR)
        state.members = {"server": server.netns, "client": client.netns}
        if mode == "proxy":
            site = segment.add_namespace("site", SITE_ADDR)
            state.members["site"] = site.netns
            site_dhcp(segment, site, lab_dir)
        state.namespaces = list(segment.namespaces)
        state.write()
        Path(state.config).write_text(config_text(lab_dir, mode, images_dir))
        with Path(state.log).open("ab") as out:
            appliance = segment.spawn(server, [sys.executable, "-m", "bootbox", "--config", state.config, "serve"],
                                      stdout=out, stderr=out)  # fmt: skip
        state.appliance_pid = appliance.pid
        advertiser = RouterAdvertiser(server.ifname, netns=server.netns)
        advertiser.start()
        segment.defer(advertiser.stop)
        _wait_for_appliance(state, appliance, server.netns, stop)
        state.status = "up"
        state.write()
        print(f"lab up: appliance pid {appliance.pid} at {state.http_url}", flush=True)
        stop.wait()
        return 0
    except Exception as exc:
        log.exception("the lab failed")
        state.status, state.error = "failed", str(exc)
        state.write()
        return 1
    finally:
        if segment is not None:
            segment.close()


def _wait_for_appliance(state: LabState, appliance: subprocess.Popen[bytes], netns: str, stop: threading.Event) -> None:
    """Until ``bootbox serve`` logs that it is up and its HTTP port answers in the namespace."""
    import urllib.request

    def status() -> Any:
        with urllib.request.urlopen(f"{state.http_url}/api/v1/status", timeout=2) as response:
            return json.loads(response.read())

    deadline = time.monotonic() + 300
    while not stop.is_set():
        if appliance.poll() is not None:
            raise LabError(f"bootbox serve exited with {appliance.returncode}:\n{_tail(Path(state.log))}")
        if "bootbox is up" in Path(state.log).read_text(errors="replace"):
            try:
                run_in_netns(netns, status)
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise LabError(f"bootbox serve did not come up within 300 s:\n{_tail(Path(state.log))}")
        time.sleep(0.2)
    raise LabError("stopped while starting")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bootbox.lab.session", description="the lab supervisor")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--mode", choices=MODES, default="full")
    parser.add_argument("--images-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return supervise(args.dir, args.mode, args.images_dir)


if __name__ == "__main__":
    raise SystemExit(main())
