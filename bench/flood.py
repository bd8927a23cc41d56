"""Flood: one client floods HTTP and TFTP while another boots; its boot time beside an idle run.

    python -m bench.flood [--runs 5] [--quick] [--json DIR]

A bridge joins three namespaces: ``bootbox serve`` (198.18.0.1, default limits), a flooding
client (198.18.0.2) and a host that boots (198.18.0.3, its own MAC). The flood, all from one
address at once (issue 17's figures):

* HTTP slowloris: 1,010 connections that trickle a header byte now and then;
* HTTP bodies: 4 POSTs at a time of 300 MB (Content-Length) to ``/boot.ipxe``, as fast as the
  link takes them, again as each is refused;
* TFTP: read requests from 800 ports that are never acknowledged, repeated every 2 s.

The boot is what a BIOS PXE host does after DHCP: the iPXE loader over TFTP (blksize 1432), then
iPXE's entry script, its own script, the kernel and the initrd over HTTP (bench.pxeclient). The
figure is the boot's wall time under the flood beside the same boot on an idle appliance (median
of ``--runs``; target within 1.2x), with what the flood was refused and how much the flooding
address was sent back. The same lab backs the end-to-end tests (tests/scenarios/test_limits.py).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import socket
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Row, Server, Table, cpu_seconds, launch_bootbox, positive_int, write_json
from bench.pxeclient import PxeClient, http_getter, ipxe_settings, tftp_fetch, walk_ipxe
from bootbox.lab.netns import Segment, spawn_in_netns

SERVER_ADDR, FLOOD_ADDR, HOST_ADDR = "198.18.0.1/24", "198.18.0.2/24", "198.18.0.3/24"
HTTP_PORT, TFTP_PORT = 8080, 69
LOADER = "undionly.kpxe"
LOADER_SIZE = 256 * 1024
OP_RRQ = 1


def requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces on a bridge)"
    return None


def raise_fd_limit(wanted: int = 8192) -> None:
    """The flood holds a thousand sockets or more: lift this process's soft limit towards its hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted,
                                                    hard))


class FloodLab:
    """The segment, ``bootbox serve`` in ``server`` with a profile every host boots, and helpers
    to flood from ``flood`` and boot from ``host``. A context manager: everything is stopped and
    removed on exit."""

    def __init__(self, workdir: Path, *, extra_toml: dict[str, str] | None = None, kernel_mib: float = 4,
                 initrd_mib: float = 8) -> None:
        self.workdir = workdir
        self.extra = extra_toml or {}
        self.kernel_mib, self.initrd_mib = kernel_mib, initrd_mib
        self.segment: Segment | None = None
        self.bootbox: Server | None = None
        self.token = ""
        self.uuid = os.urandom(16)  # one machine: the same SMBIOS UUID on every boot

    @property
    def client(self) -> PxeClient:
        """The booting host as PXE sees it: its interface's MAC, a fixed UUID, BIOS."""
        return PxeClient(bytes.fromhex(self.host.mac.replace(":", "")), self.uuid, "bios")

    # ------------------------------------------------------------------ set-up
    def __enter__(self) -> "FloodLab":
        raise_fd_limit()
        try:
            self.segment = Segment()
            self.server = self.segment.add_namespace("server", SERVER_ADDR)
            self.flooder = self.segment.add_namespace("flood", FLOOD_ADDR)
            self.host = self.segment.add_namespace("host", HOST_ADDR)
            self._start_bootbox()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bootbox is not None:
            self.bootbox.stop()
            self.bootbox = None
        if self.segment is not None:
            self.segment.close()
            self.segment = None

    @property
    def base(self) -> str:
        return f"http://{self.server.ip}:{HTTP_PORT}"

    def _start_bootbox(self) -> None:
        root, files, state = (self.workdir / name for name in ("tftp", "files", "state"))
        for directory in (root, files):
            directory.mkdir(parents=True, exist_ok=True)
        (root / LOADER).write_bytes(os.urandom(LOADER_SIZE))
        self.loader = (root / LOADER).read_bytes()
        for name, mib in (("vmlinuz", self.kernel_mib), ("initrd.img", self.initrd_mib)):
            with (files / name).open("wb") as out:
                out.truncate(int(mib * 2**20))
        sections: dict[str, list[str]] = {
            "": [f'state_dir = "{state}"', 'log_level = "info"', f'server_address = "{self.server.ip}"'],
            "demo": ["enabled = false"],
            "dhcp": ["enabled = false"],
            "http": ['bind_address = "0.0.0.0"', f"port = {HTTP_PORT}"],
            "tftp": ['bind_address = "0.0.0.0"', f"port = {TFTP_PORT}", f'root = "{root}"'],
        }
        for key, value in self.extra.items():
            section, _, name = key.rpartition(".")
            sections.setdefault(section, []).append(f"{name} = {value}")
        config = "\n".join(sections.pop("")) + "\n" + "".join(
            f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())
        self.bootbox = launch_bootbox(self.workdir, config, status_url=f"http://127.0.0.1:{HTTP_PORT}/api/v1/status",
                                      netns=self.server.netns)
        self.token = (state / "api-token").read_text().strip()
        self.api("POST", "/profiles", {"name": "flood", "kind": "linux", "spec": {
            "kernel": str(files / "vmlinuz"), "initrd": [str(files / "initrd.img")], "cmdline": "console=ttyS0"}})
        self.api("POST", "/rules", {"name": "everyone", "all_hosts": True, "items": {"image": "flood"}})

    def api(self, method: str, path: str, body: object = None) -> Any:
        """bootbox's JSON API, from the server's own namespace (loopback)."""

        def go() -> Any:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/api/v1{path}", data=data, method=method,
                                             headers={"Authorization": f"Bearer {self.token}",
                                                      "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        assert self.segment is not None
        return self.segment.call(self.server, go)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per-server counters of ``/api/v1/status``."""
        return dict(self.api("GET", "/status")["servers"])

    @property
    def pid(self) -> int:
        assert self.bootbox is not None
        return self.bootbox.pid

    # ------------------------------------------------------------------ the normal boot
    def boot(self, *, timeout: float = 5.0) -> float:
        """One host's boot after DHCP, from ``host``: the loader over TFTP, then iPXE's scripts,
        kernel and initrd over HTTP. Returns its wall time; raises (bench.pxeclient's
        BootFailure or TftpError) if any step failed, or any answer took ``timeout`` seconds: the
        client never asks twice."""
        client = self.client

        def go() -> float:
            started = time.perf_counter()
            got = tftp_fetch((self.server.ip, TFTP_PORT), LOADER, blksize=1432, bind=self.host.ip, retries=0,
                             timeout=timeout)
            if got.data != self.loader:
                raise RuntimeError(f"TFTP {LOADER}: {got.size} bytes differ from the file")
            trace = walk_ipxe(f"{self.base}/boot.ipxe", ipxe_settings(client, self.host.ip),
                              http_getter(self.host.ip, timeout=timeout))
            want = int((self.kernel_mib + self.initrd_mib) * 2**20)
            if not trace.kernel or trace.bytes < want:
                raise RuntimeError(f"the boot fetched {trace.bytes} bytes, not kernel + initrd ({want}): {trace.fetched}")
            return time.perf_counter() - started

        assert self.segment is not None
        return self.segment.call(self.host, go)

    # ------------------------------------------------------------------ floods
    @contextlib.contextmanager
    def flood(self, *, slowloris: int = 1010, bodies: int = 4, body_mb: int = 300, silent_rrqs: int = 800,
              rrq_every: float = 2.0) -> Iterator["FloodReport"]:
        """Flood from ``flood`` while the block runs: a process of its own there (another machine,
        with its own interpreter lock), stopped by PID when the block leaves. The report is filled
        in once it has left."""
        assert self.segment is not None
        report = FloodReport()
        path = self.workdir / f"flood-{time.monotonic_ns()}.json"
        argv = [sys.executable, "-m", "bench.flood", "--flood", self.server.ip, "--report", str(path),
                "--slowloris", str(slowloris), "--bodies", str(bodies), "--body-mb", str(body_mb),
                "--silent-rrqs", str(silent_rrqs), "--rrq-every", str(rrq_every)]
        with (self.workdir / "flood.log").open("ab") as log:
            proc = spawn_in_netns(self.flooder.netns, argv, stderr=log, cwd=Path(__file__).resolve().parent.parent)
        try:
            deadline = time.monotonic() + 20
            while not path.exists():  # written once every flood is under way
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the flood did not start: {(self.workdir / 'flood.log').read_text()[-2000:]}")
                time.sleep(0.05)
            yield report
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # our own child, by PID
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if path.exists():
            report.__dict__.update(json.loads(path.read_text()))


@dataclass
class FloodReport:
    """What the flooding address sent and got back."""

    http_connections: int = 0
    http_bodies: int = 0
    http_body_bytes_sent: int = 0
    http_answers: dict[str, int] = field(default_factory=dict)
    tftp_requests: int = 0
    tftp_request_bytes: int = 0
    tftp_bytes_received: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def answered(self, status: str) -> None:
        with self._lock:
            self.http_answers[status] = self.http_answers.get(status, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def run_floods(server: str, report_path: Path, *, slowloris: int, bodies: int, body_mb: int, silent_rrqs: int,
               rrq_every: float) -> None:
    """The flooding machine (``--flood``): every flood at once until SIGTERM, then the report.

    At the lowest CPU priority: a real flooder is another machine with CPUs of its own, while
    here it shares the appliance's (2 on the reference VM); at normal priority it took a whole
    core pushing ~1 GB/s of refused bodies into the kernel, and the figure measured that
    contention rather than bootbox."""
    os.nice(19)
    raise_fd_limit()
    report = FloodReport()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    jobs = []
    if slowloris:
        jobs.append(lambda: slowloris_flood(server, HTTP_PORT, slowloris, stop, report))
    if bodies:
        jobs.append(lambda: body_flood(server, HTTP_PORT, bodies, body_mb * 10**6, stop, report))
    if silent_rrqs:
        jobs.append(lambda: silent_rrq_flood(server, TFTP_PORT, silent_rrqs, rrq_every, stop, report))
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    report_path.write_text("{}")  # under way
    while not stop.is_set():
        stop.wait(0.2)
    for thread in threads:
        thread.join(10)
    tmp = report_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_dict()))
    tmp.replace(report_path)


def slowloris_flood(server: str, port: int, count: int, stop: threading.Event, report: FloodReport) -> None:
    """Keep ``count`` connections open that send a request line, then one header byte a second,
    reopening (once a second) any the server closed, until ``stop``."""
    conns: dict[socket.socket, bool] = {}  # socket → request line sent
    try:
        while not stop.is_set():
            while len(conns) < count and not stop.is_set():
                sock = socket.socket()
                sock.setblocking(False)
                if sock.connect_ex((server, port)) not in (0, errno.EINPROGRESS):
                    sock.close()
                    break
                conns[sock] = False
                report.add("http_connections")
            stop.wait(1.0)
            for sock, started in list(conns.items()):
                try:
                    sock.send(b"b" if started else b"GET /boot.ipxe HTTP/1.1\r\nX-a: b")
                    conns[sock] = True
                except OSError:
                    del conns[sock]
                    sock.close()
    finally:
        for sock in conns:
            sock.close()


def body_flood(server: str, port: int, parallel: int, size: int, stop: threading.Event, report: FloodReport) -> None:
    """``parallel`` POSTs of ``size`` bytes at a time to the GET-only ``/boot.ipxe``, each sent as
    fast as the server takes it until it answers or closes; a new one as each ends."""

    def one() -> None:
        zeros = bytes(256 * 1024)
        while not stop.is_set():
            try:
                with socket.create_connection((server, port), timeout=5) as sock:
                    sock.sendall(f"POST /boot.ipxe HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
                    report.add("http_bodies")
                    sent = 0
                    sock.settimeout(0.5)
                    while sent < size and not stop.is_set():
                        try:
                            sent += sock.send(zeros[: size - sent])
                        except socket.timeout:
                            continue
                        except OSError:
                            break
                    report.add("http_body_bytes_sent", sent)
                    sock.settimeout(2)
                    try:
                        status = sock.recv(64).split(b" ")[1].decode()
                    except (OSError, IndexError):
                        status = "closed"
                    report.answered(status)
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def rrq(name: str, **options: int) -> bytes:
    """A TFTP read request (RFC 1350, with RFC 2347 options)."""
    parts = [name.encode(), b"octet", *(f"{k}\0{v}".encode() for k, v in options.items())]
    return struct.pack("!H", OP_RRQ) + b"\0".join(parts) + b"\0"


def silent_rrq_flood(server: str, port: int, count: int, every: float, stop: threading.Event,
                     report: FloodReport) -> None:
    """Read requests from ``count`` ports, again every ``every`` seconds, never acknowledged; what
    comes back is read (and counted) so the ports stay open, as a silent client's would."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("0.0.0.0", 0))
            socks.append(sock)
        request = rrq(LOADER)
        next_round = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_round:
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.sendto(request, (server, port))
                        report.add("tftp_requests")
                        report.add("tftp_request_bytes", len(request))
                next_round = now + every
            drained = drain(socks)
            report.add("tftp_bytes_received", drained)
            if not drained:
                time.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()


def drain(socks: list[socket.socket]) -> int:
    """Bytes waiting on any of ``socks``, read and counted."""
    total = 0
    for sock in socks:
        while True:
            try:
                total += len(sock.recv(65536))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error for something sent earlier
                break
    return total


# --------------------------------------------------------------------------- the benchmark
def measure(runs: int, kernel_mib: float, initrd_mib: float) -> Table:
    idle: list[float] = []
    flooded: list[float] = []
    reports: list[FloodReport] = []
    cpu_idle: list[float] = []
    cpu_flood: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp, \
            FloodLab(Path(tmp), kernel_mib=kernel_mib, initrd_mib=initrd_mib) as lab:
        lab.boot()  # warm: page cache, the host's record, ARP
        for _ in range(runs):
            before = cpu_seconds(lab.pid)
            idle.append(lab.boot())
            time.sleep(2.0)
            cpu_idle.append(cpu_seconds(lab.pid) - before)
            before = cpu_seconds(lab.pid)
            with lab.flood() as report:
                time.sleep(2.0)  # the flood at full strength before the host starts
                flooded.append(lab.boot())
            cpu_flood.append(cpu_seconds(lab.pid) - before)
            reports.append(report)
            time.sleep(1.0)
        counters = lab.status()
    http, tftp = counters.get("http", {}), counters.get("tftp", {})
    last = reports[-1]
    amplification = last.tftp_bytes_received / last.tftp_request_bytes if last.tftp_request_bytes else float("nan")
    rows = [
        Row.of_runs("boot time under the flood", "s", flooded, idle, "idle appliance", higher_is_better=False,
                    target="<= 1.2x"),
        Row.of_runs("bootbox CPU over the run (boot + 2 s before it)", "s", cpu_flood, cpu_idle, "idle appliance",
                    higher_is_better=False),
        Row("TFTP bytes sent to the flooder per request byte", "x", amplification, float("nan"), "",
            higher_is_better=False, target="bounded"),
    ]
    refused = {f"http {k}": v for k, v in http.items() if k.startswith(("refused", "closed"))}
    refused.update({f"tftp {k}": v for k, v in tftp.items() if k in ("refused_per_address", "gave_up")})
    notes = [f"flood per run: {last.http_connections} HTTP connections opened, {last.http_bodies} bodies "
             f"({last.http_body_bytes_sent / 1e6:.1f} MB actually sent; answers {last.http_answers}), "
             f"{last.tftp_requests} silent TFTP requests",
             "refusals counted by bootbox (all runs): " + ", ".join(f"{k} {v}" for k, v in refused.items())]
    return Table("flood", f"Flood: a host's boot (TFTP loader, iPXE scripts, {kernel_mib:g}+{initrd_mib:g} MiB over "
                          f"HTTP) while another address floods HTTP and TFTP; median of {runs} run(s)", rows,
                 meta={"runs": runs, "idle": idle, "flooded": flooded, "refusals": refused,
                       "ratio": statistics.median(flooded) / statistics.median(idle)}, notes=notes)


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """For ``python -m bench``: full 5 runs of a 32+128 MiB boot (an ESXi-sized payload, long
    enough that a few milliseconds of scheduling noise do not decide the ratio); quick 1 run of
    4+8 MiB."""
    if quick:
        return [measure(runs or 1, 4, 8)]
    return [measure(runs or 5, 32, 128)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    # The flooding machine's side, started by FloodLab.flood in its namespace:
    parser.add_argument("--flood", metavar="SERVER", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slowloris", type=int, default=1010, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--body-mb", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--silent-rrqs", type=int, default=800, help=argparse.SUPPRESS)
    parser.add_argument("--rrq-every", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood:
        run_floods(args.flood, args.report, slowloris=args.slowloris, bodies=args.bodies, body_mb=args.body_mb,
                   silent_rrqs=args.silent_rrqs, rrq_every=args.rrq_every)
        return 0
    reason = requirements()
    if reason:
        parser.error(reason)
    for table in tables(quick=args.quick, runs=args.runs):
        table.show()
        if args.json:
            write_json(args.json / f"{table.name}.json", table.name, table.rows, table.meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
