"""Crash safety: SIGKILL ``bootbox serve`` at random moments during API writes and boot traffic.

A boot appliance loses power mid-write. ``bootbox serve`` runs as a subprocess (loopback
ports, a temp state dir) while threads add profiles and rules through the API and hosts boot
(DHCP, the per-host script, the report-in); at a random moment it is killed with SIGKILL and
restarted. After every restart the store must load (the appliance refuses to start on an
unreadable store) and every write that was acknowledged (a 2xx received) must be there, through
the API; at the end the store file is opened directly and checked the same way, and the event
journal must load, having lost at most the line each crash tore.

Boot events are written behind (the journal never makes a boot wait for the disk), so they
are not expected to survive a kill; operator writes are written through and must.
``BOOTBOX_CRASH_CYCLES`` sets the number of kills (default 12, about 1,500 writes).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bootbox.store.hostlog import HostLog
from bootbox.service.hostindex import HOST_LOG
from bootbox.store.journal import Journal
from bootbox.net.dhcp.packet import DhcpPacket, build
from bootbox.store.tinydb import TinyDBStore
from tests.conftest import free_port

CYCLES = int(os.environ.get("BOOTBOX_CRASH_CYCLES") or 12)
MACS = [f"52:54:00:cc:00:{n:02x}" for n in range(8)]


class Appliance:
    """One ``bootbox serve`` process at a time on a fixed state dir and fixed ports."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.state = work / "state"
        self.ports = {name: free_port() for name in ("http", "tftp", "dhcp", "boot", "client")}
        loaders = work / "loaders"
        loaders.mkdir()
        (loaders / "undionly.kpxe").write_bytes(os.urandom(2048))
        self.config = work / "bootbox.toml"
        self.config.write_text(
            f'state_dir = "{self.state}"\nlog_level = "warning"\n[demo]\nenabled = false\n'
            f'[http]\nbind_address = "127.0.0.1"\nport = {self.ports["http"]}\n'
            f'[tftp]\nbind_address = "127.0.0.1"\nport = {self.ports["tftp"]}\nroot = "{loaders}"\n'
            f'[dhcp]\nbind_address = "127.0.0.1"\nport = {self.ports["dhcp"]}\n'
            f'boot_server_port = {self.ports["boot"]}\nclient_port = {self.ports["client"]}\n'
        )
        self.base = f"http://127.0.0.1:{self.ports['http']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        log = (self.work / "serve.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], stdout=log, stderr=log,
                                     env={**os.environ, "BOOTBOX_CONFIG": str(self.config)})  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"bootbox serve exited {self.proc.returncode}: {self.log_tail()}"
            try:
                with urllib.request.urlopen(self.base + "/api/v1/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"bootbox serve did not come up: {self.log_tail()}"
            time.sleep(0.05)
        self.token = (self.state / "api-token").read_text().strip()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by PID
        self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        return (self.work / "serve.log").read_text(errors="replace")[-2000:]

    def call(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """(status, JSON) of one request; (0, None) when the connection failed (killed)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})  # fmt: skip
        try:
            response = urllib.request.urlopen(request, timeout=15)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, http.client.HTTPException):
            return 0, None
        with response:
            try:
                return response.status, json.loads(response.read() or b"null")
            except (OSError, ValueError, http.client.HTTPException):
                # killed while sending the body: the 2xx status line already acknowledged the write
                return response.status, None


class Writers:
    """Threads that write through the API and boot hosts until told to stop; they keep the
    names of the writes that were acknowledged."""

    def __init__(self, app: Appliance, cycle: int, kernel: Path) -> None:
        self.app, self.cycle, self.kernel = app, cycle, kernel
        self.stop = threading.Event()
        self.profiles: list[str] = []
        self.rules: list[str] = []
        self.unexpected: list[str] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self._next = 0
        self.threads = [threading.Thread(target=fn, daemon=True)
                        for fn in (self._profiles, self._profiles, self._rules, self._rules, self._boots)]  # fmt: skip

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _number(self) -> int:
        with self._lock:
            self._next += 1
            self.attempts += 1
            return self._next

    def _write(self, path: str, body: dict[str, object], acked: list[str], name: str) -> bool:
        status, _ = self.app.call("POST", path, body)
        if status in (200, 201):
            acked.append(name)  # list.append is atomic: several writer threads share the lists
        elif status != 0:
            self.unexpected.append(f"POST {path} {name}: HTTP {status}")
        return status != 0

    def _profiles(self) -> None:
        while not self.stop.is_set():
            i = self._number()
            name = f"c{self.cycle}-p{i}"
            spec = {"kernel": str(self.kernel), "cmdline": f"console=ttyS0 n={i}"}
            if not self._write("/api/v1/profiles", {"name": name, "kind": "linux", "spec": spec}, self.profiles, name):
                return

    def _rules(self) -> None:
        while not self.stop.is_set():
            i = self._number()
            name = f"c{self.cycle}-r{i}"
            body = {"name": name, "patterns": [f"serial=S{self.cycle}-{i}"], "items": {"image": "base"}}
            if not self._write("/api/v1/rules", body, self.rules, name):
                return

    def _boots(self) -> None:
        """Boot events: DHCP DISCOVERs, per-host scripts and report-ins (recorded, written behind)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            n = 0
            while not self.stop.is_set():
                mac = MACS[n % len(MACS)]
                pkt = DhcpPacket(op=1, xid=n, chaddr=bytes.fromhex(mac.replace(":", "")), ciaddr="127.0.0.1",
                                 options={53: b"\x01", 60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00"})
                try:
                    sock.sendto(build(pkt), ("127.0.0.1", self.app.ports["dhcp"]))
                except OSError:
                    pass
                try:
                    with urllib.request.urlopen(f"{self.app.base}/boot/hosts/{mac}/script.ipxe?serial=X{n}",
                                                timeout=15) as response:  # fmt: skip
                        response.read()
                except (OSError, http.client.HTTPException):
                    return
                self.app.call("POST", f"/api/v1/hosts/{mac}/booted", {"ip": "127.0.0.1", "boot_id": f"b{n}"})
                n += 1


def _check_acknowledged(app: Appliance, profiles: set[str], rules: set[str]) -> None:
    status, listed = app.call("GET", "/api/v1/profiles")
    assert status == 200
    missing = profiles - {p["name"] for p in listed}  # type: ignore[union-attr]
    assert not missing, f"acknowledged profiles lost: {sorted(missing)[:10]}"
    status, working = app.call("GET", "/api/v1/rules?set=working")
    assert status == 200
    missing = rules - {r["name"] for r in working}  # type: ignore[union-attr]
    assert not missing, f"acknowledged rules lost: {sorted(missing)[:10]}"


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(1024))
    app = Appliance(tmp_path)
    profiles: set[str] = set()
    rules: set[str] = set()
    attempts = 0
    try:
        for cycle in range(CYCLES):
            app.start()
            _check_acknowledged(app, profiles, rules)  # the store loaded, with everything acknowledged
            if cycle == 0:
                status, _ = app.call("POST", "/api/v1/profiles", {"name": "base", "kind": "linux",
                                                                  "spec": {"kernel": str(kernel)}})  # fmt: skip
                assert status == 201
                profiles.add("base")
            with Writers(app, cycle, kernel) as writers:
                time.sleep(rng.uniform(0.2, 3.0))
                app.kill()
            assert not writers.unexpected, writers.unexpected[:5]
            profiles.update(writers.profiles)
            rules.update(writers.rules)
            attempts += writers.attempts
        app.start()
        _check_acknowledged(app, profiles, rules)
        app.kill()
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()
    assert len(profiles) + len(rules) > 20 * CYCLES, "too few writes were acknowledged to mean anything"

    store = TinyDBStore(app.state)  # the file itself, without the appliance
    try:
        assert profiles <= set(store.all("profiles"))
        working = store.all("rulesets")["working"]["rules"]
        assert rules <= {rule["name"] for rule in working}
    finally:
        store.close()
    hosts = HostLog(app.state / HOST_LOG).load()  # replays despite torn lines from the kills
    assert set(hosts) <= {mac.replace(":", "") for mac in MACS}
    journal = Journal(app.state / "events.jsonl")
    journal.start()
    try:
        assert journal.stats["skipped"] <= CYCLES + 1, journal.stats  # at most one torn line per kill
        assert journal.stats["loaded"] > 0
    finally:
        journal.close()
    print(f"{CYCLES} kills, {attempts} writes attempted, {len(profiles)} profiles and {len(rules)} rules acknowledged")
