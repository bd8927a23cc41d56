"""Full boot storm: N simulated machines each walk the whole network boot, against bootbox and
against the reference stack (dnsmasq proxyDHCP + TFTP, nginx), on one lab segment.

    python -m bench.full_boot_storm [--hosts 50] [--runs 3] [--kernel-mib 8] [--initrd-mib 16] [--quick]

Each host is its own network namespace on the segment (its own MAC and IPv4 address, as a
machine whose address came from the site DHCP), and powers on at a random moment within one
second. It then does what the firmware and iPXE do on the wire (bench.pxeclient):

1. PXE ROM: DISCOVER (broadcast, from 0.0.0.0) → proxy OFFER; REQUEST to udp/4011 → ACK with
   the loader (BIOS: ``undionly.kpxe``; UEFI: ``snponly.efi``, as EDK2 does, after its aborted
   tsize probe and with windowsize 4);
2. the loader over TFTP, compared byte for byte with the file;
3. iPXE: DISCOVER with user class iPXE → OFFER with the script URL (plus 4011 when the
   OFFER carries a menu, as iPXE does with dnsmasq's);
4. the entry script, the per-host script it chains to, the kernel and the initrd over HTTP;
5. the booted system's report-in (POST to the callback URL on the kernel command line).

bootbox answers from its rules: half the hosts match a ``mac=`` rule for one profile, the rest
fall through to an ``all_hosts`` rule for another, and afterwards every host must be recorded
as booted with the profile its rule names and an event for every step. The reference serves
pre-written per-host scripts and so makes no decision and records nothing: the comparison shows
what bootbox's bookkeeping costs. A boot is timed from its first DISCOVER to the answer to its
report-in; any failure (a lost answer after three tries, a wrong byte, a wrong profile, a
missing event) is counted. Needs root, iproute2, setpriv, dnsmasq and nginx.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Row, Server, Table, cpu_seconds, launch_bootbox, peak_rss_mib, percentile, start_nginx, positive_int
from bench.pxeclient import (
    BootFailure,
    PxeClient,
    Reply,
    callback_url,
    discover,
    ethernet_frame,
    http_getter,
    ipxe_settings,
    menu_boot_item,
    offer_boot_file,
    open_reply_socket,
    post,
    recv_timestamped,
    request_4011,
    tftp_fetch,
    tftp_probe_tsize,
    walk_ipxe,
)
from bootbox.lab.netns import Member, Segment, run_in_netns
from bootbox.lab.sitedhcp import IPXE_DIR, reference_proxy
from bootbox.net.dhcp.packet import MessageType

SERVER_ADDR, REF_ADDR = "198.18.0.1/24", "198.18.0.4/24"
HOST_BASE = 100  # host n is 198.18.0.(100 + n)
HTTP_PORT = 8080
LOADERS = ("undionly.kpxe", "snponly.efi")
DHCP_TRIES, DHCP_WAIT = 3, 2.0
EXPECTED_EVENTS = ("dhcp.offer", "dhcp.ack", "tftp.sent", "http.script", "http.file", "booted")
NOT_BOOTED = ("discovered", "booting", "waiting")


@dataclass(frozen=True)
class SimHost:
    """One simulated machine: its namespace on the segment and its PXE identity."""

    member: Member
    client: PxeClient

    @property
    def ip(self) -> str:
        return self.member.ip


@dataclass
class BootOutcome:
    """How one simulated boot went: total seconds, per-step seconds, and the error if any."""

    mac: str
    seconds: float = float("nan")
    steps: dict[str, float] = field(default_factory=dict)
    error: str = ""
    kernel_url: str = ""
    dhcp_retries: int = 0


# --------------------------------------------------------------------------- one boot
class _Dhcp:
    """The host's DHCP side: a raw socket to broadcast from 0.0.0.0 and its udp/68 socket."""

    def __init__(self, host: SimHost, server_ip: str, outcome: BootOutcome) -> None:
        self.host, self.server_ip, self.outcome = host, server_ip, outcome
        self.replies = open_reply_socket(68, rcvbuf=2**20)
        self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.raw.bind((host.member.ifname, 0))

    def close(self) -> None:
        self.replies.close()
        self.raw.close()

    def _wait(self, xid: int, kind: int) -> Reply | None:
        deadline = time.monotonic() + DHCP_WAIT
        while (left := deadline - time.monotonic()) > 0:
            reply = recv_timestamped(self.replies, left)
            if reply is None:
                return None
            from_server = reply.source[0] == self.server_ip or reply.packet.options.get(54) == socket.inet_aton(
                self.server_ip)  # fmt: skip
            if reply.packet.xid == xid and reply.kind == kind and from_server:
                return reply
        return None

    def exchange(self, send: Callable[[], None], xid: int, kind: int, what: str) -> Reply:
        """Send, wait for the answer, retry as a ROM does; BootFailure after DHCP_TRIES."""
        for attempt in range(DHCP_TRIES):
            if attempt:
                self.outcome.dhcp_retries += 1
            send()
            reply = self._wait(xid, kind)
            if reply is not None:
                return reply
        raise BootFailure(f"{what}: no answer from {self.server_ip} after {DHCP_TRIES} tries")

    def offer_then_ack(self, xid: int, *, ipxe: bool, always_4011: bool) -> tuple[str, str]:
        """DISCOVER → OFFER, then udp/4011 when ``always_4011`` (EDK2 and many ROMs) or when the
        OFFER has no file or offers a menu; returns (boot file, next server)."""
        frame = ethernet_frame(self.host.client.mac, discover(self.host.client, xid, ipxe=ipxe))
        offer = self.exchange(lambda: self.raw.send(frame), xid, MessageType.OFFER, "DISCOVER")
        item = menu_boot_item(offer.packet)
        boot_file = offer_boot_file(offer.packet)
        next_server = offer.packet.siaddr if offer.packet.siaddr != "0.0.0.0" else self.server_ip
        if always_4011 or item is not None or not boot_file:
            request = request_4011(self.host.client, xid + 1, self.host.ip, ipxe=ipxe, boot_item=item)
            ack = self.exchange(lambda: self.replies.sendto(request, (self.server_ip, 4011)), xid + 1,
                                MessageType.ACK, "4011 REQUEST")  # fmt: skip
            boot_file = offer_boot_file(ack.packet) or boot_file
            if ack.packet.siaddr != "0.0.0.0":
                next_server = ack.packet.siaddr
        if not boot_file:
            raise BootFailure("no boot file in the OFFER or the ACK")
        return boot_file, next_server


def boot_one(host: SimHost, server_ip: str, loaders: dict[str, bytes], delay: float) -> BootOutcome:
    """One machine's whole boot; runs on a thread inside the host's namespace. Never raises."""
    outcome = BootOutcome(host.client.mac_text)
    time.sleep(delay)
    started = mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        outcome.steps[name] = now - mark
        mark = now

    dhcp: _Dhcp | None = None
    try:
        dhcp = _Dhcp(host, server_ip, outcome)
        xid = random.getrandbits(31) & ~1
        loader, tftp_server = dhcp.offer_then_ack(xid, ipxe=False, always_4011=True)
        step("pxe dhcp")
        expected = loaders.get(loader)
        if expected is None:
            raise BootFailure(f"the ROM was told to load {loader!r}, not one of {sorted(loaders)}")
        if host.client.firmware == "uefi":
            if tftp_probe_tsize((tftp_server, 69), loader, bind=host.ip) != len(expected):
                raise BootFailure(f"tsize of {loader} is wrong")
            got = tftp_fetch((tftp_server, 69), loader, blksize=1468, windowsize=4, bind=host.ip)
        else:
            got = tftp_fetch((tftp_server, 69), loader, blksize=1432, bind=host.ip)
        if got.data != expected:
            raise BootFailure(f"TFTP {loader}: {got.size} bytes differ from the file")
        step("tftp loader")
        script_url, _ = dhcp.offer_then_ack(xid + 2, ipxe=True, always_4011=False)
        step("ipxe dhcp")
        dhcp.close()
        dhcp = None
        trace = walk_ipxe(script_url, ipxe_settings(host.client, host.ip), http_getter(host.ip))
        outcome.kernel_url = trace.kernel
        step("http")
        callback = callback_url(trace.kernel_args)
        if callback is None:
            raise BootFailure(f"no callback URL on the kernel command line {trace.kernel_args}")
        status = post(callback, {"ip": host.ip, "boot_id": f"{outcome.mac}-{time.time_ns()}"}, host.ip)
        if status != 200:
            raise BootFailure(f"report-in answered {status}")
        step("callback")
        outcome.seconds = time.perf_counter() - started
    except Exception as exc:  # any failure is one failed boot, reported with its step
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        if dhcp is not None:
            dhcp.close()
    return outcome


def run_storm(hosts: list[SimHost], server_ip: str, loaders: dict[str, bytes], spread: float = 1.0) -> list[BootOutcome]:
    """Every host boots on its own thread (inside its namespace), each starting at a random
    moment within ``spread`` seconds."""
    rng = random.Random(7)
    outcomes: list[BootOutcome | None] = [None] * len(hosts)

    def run(i: int, delay: float) -> None:
        outcomes[i] = run_in_netns(hosts[i].member.netns, boot_one, hosts[i], server_ip, loaders, delay)

    threads = [threading.Thread(target=run, args=(i, rng.uniform(0, spread)), daemon=True) for i in range(len(hosts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return [o or BootOutcome(h.client.mac_text, error="did not finish in 600 s") for o, h in zip(outcomes, hosts)]


# --------------------------------------------------------------------------- the servers
@dataclass
class StormResult:
    outcomes: list[BootOutcome]
    cpu_seconds: float
    peak_rss_mib: float
    wall_seconds: float
    checked_failures: dict[str, str] = field(default_factory=dict)
    """MAC → what was wrong with its record after the storm (bootbox only)."""

    @property
    def failures(self) -> int:
        """Hosts whose boot failed or whose record was wrong afterwards (each counted once)."""
        return len({o.mac for o in self.outcomes if o.error} | set(self.checked_failures))

    def times(self) -> list[float]:
        return [o.seconds for o in self.outcomes if not o.error]


class BootLab:
    """The segment with the boot server namespaces, the hosts, and the files they boot."""

    def __init__(self, segment: Segment, workdir: Path, hosts: int, kernel_mib: float, initrd_mib: float) -> None:
        self.segment, self.workdir = segment, workdir
        self.server = segment.add_namespace("server", SERVER_ADDR)
        self.ref = segment.add_namespace("ref", REF_ADDR)
        self.hosts = [
            SimHost(member, PxeClient(bytes.fromhex(member.mac.replace(":", "")), random.randbytes(16),
                                      "bios" if n % 2 == 0 else "uefi"))  # fmt: skip
            for n, member in enumerate(segment.add_namespace(f"h{n:03d}", f"198.18.0.{HOST_BASE + n}/24")
                                       for n in range(hosts))  # fmt: skip
        ]
        self.tftp_root = workdir / "tftp"
        self.tftp_root.mkdir()
        self.loaders: dict[str, bytes] = {}
        for name in LOADERS:
            data = (IPXE_DIR / name).read_bytes()
            (self.tftp_root / name).write_bytes(data)
            self.loaders[name] = data
        self.files = workdir / "files"
        self.files.mkdir()
        for name, mib in (("vmlinuz", kernel_mib), ("initrd.img", initrd_mib)):
            with (self.files / name).open("wb") as out:
                out.write(random.randbytes(int(mib * 2**20)))
        self.bytes_per_boot = sum((self.files / n).stat().st_size for n in ("vmlinuz", "initrd.img"))
        self._bootbox_runs = 0

    # ---------------------------------------------------------------- bootbox
    def run_bootbox(self) -> StormResult:
        self._bootbox_runs += 1
        work = self.workdir / f"bootbox-{self._bootbox_runs}"
        work.mkdir()
        ip = self.server.ip
        config = (
            f'state_dir = "{work / "state"}"\nlog_level = "info"\n[demo]\nenabled = false\n'
            f'[dhcp]\nenabled = true\ninterface = "{self.server.ifname}"\n'
            f'[tftp]\nbind_address = "{ip}"\nroot = "{self.tftp_root}"\n'
            f'[http]\nbind_address = "{ip}"\nport = {HTTP_PORT}\n'
        )
        server = launch_bootbox(work, config, netns=self.server.netns, status_url=f"http://{ip}:{HTTP_PORT}/api/v1/status")
        try:
            api = _Api(self.segment, self.server, f"http://{ip}:{HTTP_PORT}/api/v1",
                       (work / "state" / "api-token").read_text().strip())  # fmt: skip
            expected = self._bootbox_rules(api)
            result = self._storm(server.pid, ip)
            result.checked_failures = self._check_records(api, expected)
            for outcome in result.outcomes:  # each host fetched its kernel through its own, scoped path
                own = f"/boot/hosts/{outcome.mac.replace(':', '')}/"
                if not outcome.error and own not in outcome.kernel_url:
                    result.checked_failures.setdefault(outcome.mac, f"kernel from {outcome.kernel_url}, not {own}")
            return result
        finally:
            server.stop()

    def _bootbox_rules(self, api: "_Api") -> dict[str, str]:
        """Two profiles; a mac= rule per even host, an all_hosts rule for the rest. Returns the
        profile each host must end up with."""
        for name in ("storm-mac", "storm-default"):
            api.call("POST", "/profiles", {"name": name, "kind": "linux", "spec": {
                "kernel": str(self.files / "vmlinuz"), "initrd": [str(self.files / "initrd.img")],
                "cmdline": "console=ttyS0 bootbox.mac={mac} bootbox.callback={callback}"}})  # fmt: skip
        expected = {}
        for n, host in enumerate(self.hosts):
            if n % 2 == 0:
                api.call("POST", "/rules", {"name": f"mac-{n}", "patterns": [f"mac={host.client.mac_text}"],
                                            "items": {"image": "storm-mac"}})  # fmt: skip
                expected[host.client.mac_text] = "storm-mac"
            else:
                expected[host.client.mac_text] = "storm-default"
        api.call("POST", "/rules", {"name": "everyone", "all_hosts": True, "items": {"image": "storm-default"}})
        return expected

    def _check_records(self, api: "_Api", expected: dict[str, str]) -> dict[str, str]:
        """Every host is recorded as booted, with the profile its rule names and every step."""
        problems = {}
        for mac, profile in expected.items():
            host = api.call("GET", f"/hosts/{mac}")
            kinds = {event["kind"] for event in api.call("GET", f"/hosts/{mac}/events")}
            missing = [kind for kind in EXPECTED_EVENTS if kind not in kinds]
            if host.get("state") in NOT_BOOTED or host.get("profile") != profile or missing:
                problems[mac] = (f"state {host.get('state')}, profile {host.get('profile')} (want {profile})"
                                 + (f", no {', '.join(missing)} event" if missing else ""))  # fmt: skip
        return problems

    # ---------------------------------------------------------------- the reference
    def run_reference(self) -> StormResult:
        ip = self.ref.ip
        http = self.workdir / "ref-http"
        if not http.exists():
            self._reference_files(http, ip)
        dnsmasq = reference_proxy(self.segment, self.ref, self.workdir / "dnsmasq", tftp_root=self.tftp_root,
                                  script_url=f"http://{ip}:{HTTP_PORT}/boot.ipxe")  # fmt: skip
        nginx: Server | None = None
        try:
            nginx = start_nginx(self.workdir / "nginx", http, HTTP_PORT, address=ip, netns=self.ref.netns,
                                locations='    location /booted { return 200 "ok\\n"; }\n')  # fmt: skip
            assert dnsmasq.pid is not None
            return self._storm(dnsmasq.pid, ip, extra_pid=nginx.pid)
        finally:
            if nginx is not None:
                nginx.stop()
            dnsmasq.stop()

    def _reference_files(self, http: Path, ip: str) -> None:
        """What a dnsmasq + nginx site serves: an entry script and a static script per host."""
        (http / "boot" / "hosts").mkdir(parents=True)
        for path in (self.workdir, http, self.files, *(self.files.iterdir())):
            path.chmod(0o755)  # nginx's worker may run unprivileged
        for name in ("vmlinuz", "initrd.img"):
            (http / name).symlink_to(self.files / name)
        base = f"http://{ip}:{HTTP_PORT}"
        (http / "boot.ipxe").write_text(
            f"#!ipxe\nchain --replace --autofree {base}/boot/hosts/${{netX/mac:hexhyp}}/script.ipxe?"
            "uuid=${uuid:uristring}&ip=${netX/ip:uristring} || goto failed\n:failed\nsleep 10\n")
        for host in self.hosts:
            mac = host.client.mac_text
            folder = http / "boot" / "hosts" / mac.replace(":", "-")
            folder.mkdir()
            (folder / "script.ipxe").write_text(
                f"#!ipxe\nkernel {base}/vmlinuz initrd=initrd.img console=ttyS0 callback={base}/booted?mac={mac}"
                f" || goto failed\ninitrd {base}/initrd.img || goto failed\nboot || goto failed\n:failed\nsleep 10\n")

    # ---------------------------------------------------------------- shared
    def _storm(self, pid: int, server_ip: str, extra_pid: int | None = None) -> StormResult:
        pids = [pid] + ([extra_pid] if extra_pid else [])
        cpu = sum(cpu_seconds(p) for p in pids)
        start = time.perf_counter()
        outcomes = run_storm(self.hosts, server_ip, self.loaders)
        wall = time.perf_counter() - start
        return StormResult(outcomes, sum(cpu_seconds(p) for p in pids) - cpu, sum(peak_rss_mib(p) for p in pids), wall)


class _Api:
    """bootbox's JSON API, called from a thread in a namespace on the segment."""

    def __init__(self, segment: Segment, member: Member, base: str, token: str) -> None:
        self.segment, self.member, self.base, self.token = segment, member, base, token

    def call(self, method: str, path: str, body: object = None) -> Any:
        def go() -> Any:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(self.base + path, data=data, method=method, headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        return self.segment.call(self.member, go)


# --------------------------------------------------------------------------- tables
def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def rows_for(ours: list[StormResult], ref: list[StormResult], hosts: int) -> list[Row]:
    def row(figure: str, unit: str, get: Callable[[StormResult], float], higher: bool = False, target: str = "") -> Row:
        return Row(figure, unit, _median([get(r) for r in ours]), _median([get(r) for r in ref]),
                   "dnsmasq+nginx", higher_is_better=higher, target=target)  # fmt: skip

    return [
        row("boots completed", "%", lambda r: 100.0 * (hosts - r.failures) / hosts, True, "100 %"),
        Row("failed boots, all runs together", "boots", float(sum(r.failures for r in ours)),
            float(sum(r.failures for r in ref)), "dnsmasq+nginx", higher_is_better=False, target="0"),
        row("time per boot p50", "s", lambda r: percentile(r.times(), 0.50)),
        row("time per boot p99", "s", lambda r: percentile(r.times(), 0.99)),
        row("time until the last host is up", "s", lambda r: max(r.times(), default=float("nan"))),
        row("DHCP retransmissions needed", "pkts", lambda r: float(sum(o.dhcp_retries for o in r.outcomes)),
            target="0"),
        row("server CPU seconds", "s", lambda r: r.cpu_seconds),
        row("server peak RSS", "MiB", lambda r: r.peak_rss_mib),
    ]


def _step_medians(results: list[StormResult]) -> dict[str, float]:
    steps: dict[str, list[float]] = {}
    for result in results:
        for outcome in result.outcomes:
            for name, seconds in outcome.steps.items():
                steps.setdefault(name, []).append(seconds)
    return {name: round(statistics.median(values), 4) for name, values in steps.items()}


def measure(hosts: int, runs: int, kernel_mib: float, initrd_mib: float) -> list[Table]:
    ours: list[StormResult] = []
    ref: list[StormResult] = []
    with tempfile.TemporaryDirectory(prefix="bootbox-fullstorm-") as tmp, Segment() as segment:
        lab = BootLab(segment, Path(tmp), hosts, kernel_mib, initrd_mib)
        for run in range(runs):
            order = (lab.run_bootbox, lab.run_reference) if run % 2 == 0 else (lab.run_reference, lab.run_bootbox)
            for go in order:
                (ours if go == lab.run_bootbox else ref).append(go())
        per_boot_mib = lab.bytes_per_boot / 2**20
    errors = [f"bootbox: {o.mac}: {o.error}" for r in ours for o in r.outcomes if o.error]
    errors += [f"bootbox: {mac}: {problem}" for r in ours for mac, problem in r.checked_failures.items()]
    errors += [f"reference: {o.mac}: {o.error}" for r in ref for o in r.outcomes if o.error]
    notes = [
        f"each boot: 2 DHCP exchanges + 4011, a {'/'.join(LOADERS)} loader over TFTP, 2 scripts, "
        f"{per_boot_mib:.0f} MiB of kernel + initrd over HTTP, a report-in; hosts start within 1 s",
        "bootbox also decides by rules and records hosts and events (checked after each run); the reference serves "
        "pre-written per-host scripts",
        "median step times, bootbox: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in _step_medians(ours).items()),
        "median step times, reference: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in _step_medians(ref).items()),
        *errors[:10],
    ]
    return [Table(
        "full_boot_storm",
        f"Full boot storm: {hosts} hosts (half BIOS, half UEFI) power on within 1 s, median of {runs} run(s)",
        rows_for(ours, ref, hosts),
        meta={"hosts": hosts, "runs": runs, "kernel_mib": kernel_mib, "initrd_mib": initrd_mib, "errors": errors,
              "bootbox_failures": sum(r.failures for r in ours)},
        notes=notes,
    )]  # fmt: skip


def requirements() -> str | None:
    import os

    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    for tool in ("ip", "setpriv", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "needs nginx"
    if not all((IPXE_DIR / name).is_file() for name in LOADERS):
        return f"needs Debian's ipxe loaders in {IPXE_DIR}"
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    if quick:
        return measure(4, runs or 1, 1, 2)
    return measure(50, runs or 3, 8, 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=positive_int, default=50)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--kernel-mib", type=float, default=8)
    parser.add_argument("--initrd-mib", type=float, default=16)
    parser.add_argument("--quick", action="store_true", help="4 hosts, 1 run, small files")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if problem := requirements():
        parser.error(problem)
    result = tables(quick=True) if args.quick else measure(args.hosts, args.runs, args.kernel_mib, args.initrd_mib)
    for table in result:
        table.show()
        table.write(args.json)
    return 1 if any(t.meta["bootbox_failures"] for t in result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
