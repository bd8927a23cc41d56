"""Full boot storm: N simulated machines each walk the whole network boot across a bridge,
against bootbox and against the reference stack (dnsmasq proxyDHCP, tftpd-hpa, nginx).

    python -m bench.full_boot_storm [--hosts 1000] [--runs 3] [--kernel-mib 8] [--initrd-mib 16] [--quick]

The headline benchmark. The LAN is ``bench.lan``: bootbox in a ``server`` namespace
(198.18.0.1), the reference servers in a ``ref`` namespace (198.18.0.4), and the hosts in a few
client namespaces, 250 addresses each, every host with its own address and its own MAC (its
DHCP frames carry it); all on one Linux bridge. Every host powers on at a random moment within
one second and then does what the firmware and iPXE do on the wire (bench.pxeclient):

1. PXE ROM: DISCOVER (broadcast, from 0.0.0.0) → proxy OFFER; REQUEST to udp/4011 from its
   address → ACK with the loader (BIOS: ``undionly.kpxe``; UEFI: ``snponly.efi``, as EDK2 does,
   after its aborted tsize probe and with windowsize 4, waiting 4 s and trying 6 times as EDK2
   does; a TFTP error ends the boot, as it ends the firmware's PXE attempt);
2. the loader over TFTP, compared byte for byte with the file;
3. iPXE: DISCOVER with user class iPXE → OFFER with the script URL (plus 4011 when the
   OFFER carries a menu, as iPXE does with dnsmasq's);
4. the entry script, the per-host script it chains to, the kernel and the initrd over HTTP
   (24 MiB together by default);
5. the booted system's report-in (POST to the callback URL on the kernel command line).

bootbox answers from its rules: half the hosts match a ``mac=`` rule for one profile, the rest
fall through to an ``all_hosts`` rule for another, and afterwards every host must be recorded
as booted with the profile its rule names and an event for every step. The reference is what a
site builds from packages: dnsmasq as proxyDHCP (``log-dhcp``, its TFTP off), tftpd-hpa for the
loaders and nginx (sendfile, access log off) for pre-written per-host scripts, the kernel and
the initrd; it makes no decision and records nothing, so the comparison shows what bootbox's
bookkeeping costs. bootbox runs at log level ``info`` (each answer logged, as dnsmasq's
``log-dhcp`` does). A boot is timed from the moment its host was due to power on (a moment
drawn in advance, on one clock for all hosts) to the answer to its report-in — not from when
the simulating process got round to sending its first DISCOVER: hosts are threads of a Python
process per client namespace (250 each), and while answers pour in a process can start its
last hosts late. The *lateness* row shows that delay, and a second p99 row leaves it out. DHCP
requests are sent again as firmware does (PXE ROM: after 4, 8, 16, 32 s; iPXE: 1, 2, 4, 8 s).
The total is the time from the first host's power-on to the last one reporting in; any failure
(a DHCP request unanswered after the firmware's last try, a wrong byte, a wrong profile, a
missing event) is counted. The notes give each step's median and p99
(``tftp loader``, ``http script``, ``http kernel``, ``http initrd``, ``callback`` …): where a
boot's time goes.
Each host waits for its OFFERs on a udp/68 socket of its own that the kernel filters by
transaction id (:func:`bench.wire.accept_only_xid`), as a real host's stack hears only its own
answers. An earlier client shared one socket per namespace and one Python thread handed the
OFFERs out; that thread, not the servers, fell seconds behind (tcpdump showed dnsmasq's OFFERs on
the client's wire within 0.3 ms of each DISCOVER), so hosts retransmitted, gave up after three
tries and half of the reference's boots "failed". The *server UDP receive-buffer drops* row is
the servers' namespace's ``RcvbufErrors``: requests lost before a server could read them.
CPU seconds are each server's whole process tree (tftpd-hpa's forks through a cgroup), memory
the peak PSS sampled every 0.25 s (for the reference, the sum of its three servers' peaks).
Figures are medians of ``--runs`` runs, bootbox and the reference alternating, with min–max.
Needs root, iproute2, setpriv, dnsmasq, tftpd-hpa and nginx.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import random
import shutil
import socket
import statistics
import sys
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    PeakMemory,
    Process,
    Row,
    Server,
    Table,
    cpu_seconds,
    launch_bootbox,
    percentile,
    positive_int,
    start_nginx,
    start_tftpd_hpa,
)
from bench.lan import Lan, LanHost
from bench.pxeclient import (
    SO_TIMESTAMPNS,
    EDK2_TFTP_TIMEOUT,
    EDK2_TFTP_TRIES,
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
from bench.wire import accept_only_xid
from bootbox.lab.netns import Member, Segment, enter_netns
from bootbox.lab.sitedhcp import IPXE_DIR, reference_proxy
from bootbox.net.dhcp.packet import MessageType

HTTP_PORT = 8080
CLIENT_SWITCH_INTERVAL = 0.001
"""The simulating process's interpreter switch interval (CPython's default is 5 ms). Its 1,000
host threads each wait for the interpreter lock after every packet; with the default, a host
whose answer has arrived can wait 5 ms per packet behind a thread comparing a 16 MiB download,
and the process, not the server, sets the pace (the *lateness* row). Real hosts have a CPU each."""

LOADERS = ("undionly.kpxe", "snponly.efi")
ROM_DHCP_WAITS = (4.0, 8.0, 16.0, 32.0)
"""Seconds a PXE ROM waits for an answer before sending its DHCP request again, as the PXE
specification and EDK2 do (``mPxeDhcpTimeout[4] = { 4, 8, 16, 32 }`` in its PxeBc driver), for
the DISCOVER and the udp/4011 REQUEST alike. Earlier runs waited 2 s, three times: a host gave
up after 6 s where firmware keeps asking for a minute, and answers that came after 2 s were
counted as retransmissions firmware would not have sent."""
IPXE_DHCP_WAITS = (1.0, 2.0, 4.0, 8.0)
"""iPXE's own DHCP: 1 s first, doubling up to its 10 s ceiling (DHCP_DISC_START_TIMEOUT_SEC and
DHCP_DISC_END_TIMEOUT_SEC in its config/dhcp.h)."""
EXPECTED_EVENTS = ("dhcp.offer", "dhcp.ack", "tftp.sent", "http.script", "http.file", "booted")
NOT_BOOTED = ("discovered", "booting", "waiting")


@dataclass(frozen=True)
class SimHost:
    """One simulated machine: where it lives on the LAN and its PXE identity."""

    lan: LanHost
    client: PxeClient

    @property
    def ip(self) -> str:
        return self.lan.ip

    @property
    def netns(self) -> str:
        return self.lan.netns


@dataclass
class BootOutcome:
    """How one simulated boot went: total seconds, per-step seconds, and the error if any."""

    mac: str
    seconds: float = float("nan")
    """Its power-on (``planned``) to the answer to its report-in."""
    steps: dict[str, float] = field(default_factory=dict)
    error: str = ""
    kernel_url: str = ""
    dhcp_retries: int = 0
    started: float = float("nan")
    finished: float = float("nan")
    """perf_counter() at its first DISCOVER and at its report-in's answer (for the storm's total)."""
    planned: float = float("nan")
    """perf_counter() of the moment it was due to power on: ``started`` later than this is time the
    simulating process (one Python process per client namespace) took to get round to it."""
    marks: dict[str, float] = field(default_factory=dict)
    """perf_counter() at the end of each step, HTTP fetches included (``http script``, ``http
    kernel``, ``http initrd``): where in the storm each host's time went."""


# --------------------------------------------------------------------------- one boot
class DhcpPort:
    """A client namespace's broadcast DHCP side, shared by its hosts: one raw socket for their
    DISCOVERs (from 0.0.0.0, each with its host's MAC). Each DISCOVER's OFFER comes back on a
    udp/68 socket of the asking host's own (:meth:`replies_for`), which the kernel fills with
    that transaction's answers only. Create it inside the namespace.

    Why not one shared udp/68 socket and a thread handing OFFERs out: broadcast OFFERs reach every
    namespace, so that thread parsed every host's answers in Python, competing for the
    interpreter lock with a thousand host threads. Measured (tcpdump on a client namespace's
    veth): dnsmasq's OFFERs arrived within 0.3 ms, yet hosts took them only 2–6 s later, after
    retransmitting; hosts gave up after three DISCOVERs ("no answer") although every one was
    answered — the client's queue, not the server, failed up to 60 % of the reference's boots."""

    def __init__(self, member: Member) -> None:
        self.ifname = member.ifname
        self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.raw.bind((member.ifname, 0))

    def replies_for(self, xid: int) -> socket.socket:
        """A udp/68 socket on the namespace's interface that receives transaction ``xid``'s
        answers and nothing else (a kernel filter, attached before the bind), with kernel
        receive timestamps, as :func:`open_reply_socket` makes them. Call it in the namespace."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            accept_only_xid(sock, xid)
            sock.bind(("0.0.0.0", 68))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self.raw.close()


class _Dhcp:
    """One host's DHCP exchanges: broadcasts through its namespace's :class:`DhcpPort`, the
    unicast 4011 exchange on a udp/68 socket of its own address and interface."""

    def __init__(self, host: SimHost, port: DhcpPort, server_ip: str, outcome: BootOutcome) -> None:
        self.host, self.port, self.server_ip, self.outcome = host, port, server_ip, outcome

    def _from_server(self, reply: Reply) -> bool:
        return reply.source[0] == self.server_ip or reply.packet.options.get(54) == socket.inet_aton(self.server_ip)

    def _wait(self, sock: socket.socket, xid: int, kind: int, wait: float) -> Reply | None:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            reply = recv_timestamped(sock, left)
            if reply is None:
                return None
            if reply.packet.xid == xid and reply.kind == kind and self._from_server(reply):
                return reply
        return None

    def _retry(self, attempt: Callable[[float], Reply | None], what: str, waits: tuple[float, ...]) -> Reply:
        for n, wait in enumerate(waits):
            if n:
                self.outcome.dhcp_retries += 1
            reply = attempt(wait)
            if reply is not None:
                return reply
        raise BootFailure(f"{what}: no answer from {self.server_ip} after {len(waits)} tries ({sum(waits):g} s)")

    def broadcast(self, frame: bytes, xid: int, kind: int, what: str, waits: tuple[float, ...]) -> Reply:
        """Send a DISCOVER, wait for the OFFER, retry after each of ``waits`` as the firmware
        does; BootFailure when the last one passes."""
        with self.port.replies_for(xid) as answers:

            def attempt(wait: float) -> Reply | None:
                self.port.raw.send(frame)
                return self._wait(answers, xid, kind, wait)

            return self._retry(attempt, what, waits)

    def unicast(self, request: bytes, xid: int, kind: int, what: str, waits: tuple[float, ...]) -> Reply:
        """The 4011 REQUEST from the host's address:68 by its interface, and its ACK."""
        with open_reply_socket(68, address=self.host.ip, rcvbuf=2**18, device=self.host.lan.ifname) as sock:

            def attempt(wait: float) -> Reply | None:
                sock.sendto(request, (self.server_ip, 4011))
                return self._wait(sock, xid, kind, wait)

            return self._retry(attempt, what, waits)

    def offer_then_ack(self, xid: int, *, ipxe: bool, always_4011: bool) -> tuple[str, str]:
        """DISCOVER → OFFER, then udp/4011 when ``always_4011`` (EDK2 and many ROMs) or when the
        OFFER has no file or offers a menu; returns (boot file, next server)."""
        waits = IPXE_DHCP_WAITS if ipxe else ROM_DHCP_WAITS
        frame = ethernet_frame(self.host.client.mac, discover(self.host.client, xid, ipxe=ipxe))
        offer = self.broadcast(frame, xid, MessageType.OFFER, "DISCOVER", waits)
        item = menu_boot_item(offer.packet)
        boot_file = offer_boot_file(offer.packet)
        next_server = offer.packet.siaddr if offer.packet.siaddr != "0.0.0.0" else self.server_ip
        if always_4011 or item is not None or not boot_file:
            request = request_4011(self.host.client, xid + 1, self.host.ip, ipxe=ipxe, boot_item=item)
            ack = self.unicast(request, xid + 1, MessageType.ACK, "4011 REQUEST", waits)
            boot_file = offer_boot_file(ack.packet) or boot_file
            if ack.packet.siaddr != "0.0.0.0":
                next_server = ack.packet.siaddr
        if not boot_file:
            raise BootFailure("no boot file in the OFFER or the ACK")
        return boot_file, next_server


def boot_one(host: SimHost, port: DhcpPort, server_ip: str, loaders: dict[str, bytes], at: float,
             xid: int) -> BootOutcome:  # fmt: skip
    """One machine's whole boot, powering on at perf_counter() ``at``; runs on a thread inside
    the host's namespace. Never raises. ``xid`` (even, unique in the storm) and the next three
    numbers are its DHCP transactions."""
    outcome = BootOutcome(host.client.mac_text, planned=at)
    device = host.lan.ifname
    time.sleep(max(0.0, at - time.perf_counter()))
    started = mark = time.perf_counter()
    outcome.started = started

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        outcome.steps[name] = now - mark
        outcome.marks[name] = mark = now

    get = http_getter(host.ip, device=device)
    files = iter(("http kernel", "http initrd"))

    def fetch(url: str) -> tuple[int, bytes | None]:
        """The iPXE walk's GETs, each one's end marked: scripts (kept), then kernel and initrd."""
        got = get(url)
        outcome.marks["http script" if got[1] is not None else next(files, "http file")] = time.perf_counter()
        return got

    try:
        dhcp = _Dhcp(host, port, server_ip, outcome)
        loader, tftp_server = dhcp.offer_then_ack(xid, ipxe=False, always_4011=True)
        step("pxe dhcp")
        expected = loaders.get(loader)
        if expected is None:
            raise BootFailure(f"the ROM was told to load {loader!r}, not one of {sorted(loaders)}")
        if host.client.firmware == "uefi":
            if tftp_probe_tsize((tftp_server, 69), loader, bind=host.ip, device=device) != len(expected):
                raise BootFailure(f"tsize of {loader} is wrong")
            got = tftp_fetch((tftp_server, 69), loader, blksize=1468, windowsize=4, bind=host.ip, device=device,
                             timeout=EDK2_TFTP_TIMEOUT, retries=EDK2_TFTP_TRIES)
        else:
            got = tftp_fetch((tftp_server, 69), loader, blksize=1432, bind=host.ip, device=device)
        if got.data != expected:
            raise BootFailure(f"TFTP {loader}: {got.size} bytes differ from the file")
        step("tftp loader")
        script_url, _ = dhcp.offer_then_ack(xid + 2, ipxe=True, always_4011=False)
        step("ipxe dhcp")
        trace = walk_ipxe(script_url, ipxe_settings(host.client, host.ip), fetch)
        outcome.kernel_url = trace.kernel
        step("http")
        callback = callback_url(trace.kernel_args)
        if callback is None:
            raise BootFailure(f"no callback URL on the kernel command line {trace.kernel_args}")
        status = post(callback, {"ip": host.ip, "boot_id": f"{outcome.mac}-{time.time_ns()}"}, host.ip, device=device)
        if status != 200:
            raise BootFailure(f"report-in answered {status}")
        step("callback")
        outcome.finished = time.perf_counter()
        outcome.seconds = outcome.finished - at  # a machine's boot starts at power-on, however late we are
    except Exception as exc:  # any failure is one failed boot, reported with its step
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


STORM_SECONDS = 900
"""A storm's hosts that have not reported in by then are failures."""


def run_storm(lan: Lan, hosts: list[SimHost], server_ip: str, loaders: dict[str, bytes], spread: float = 1.0,
              salt: int = 0, stagger: float = 0.0) -> list[BootOutcome]:  # fmt: skip
    """Every host boots on its own thread, each starting at a random moment within ``spread``
    seconds — or, with ``stagger``, one every ``stagger`` seconds (a smoke run's walk through
    the path, not a storm); ``salt`` keeps xids apart between runs.

    The hosts of each client namespace are threads of a process of their own (forked, then
    moved into the namespace), not of this one: 1,000 hosts in one interpreter took turns at
    one interpreter lock, so a host answered a lock-step TFTP block or sent its next DISCOVER
    only when the process got round to it — a round trip a real host, with a CPU of its own,
    makes in microseconds. That delay weighed most on the reference, whose tftpd-hpa has no
    windowsize (four times the round trips of a UEFI loader), and showed as the lateness row.
    Four processes of 250 hosts share the work out; the clock (``perf_counter``, the system's
    monotonic clock) is the same in all of them."""
    rng = random.Random(7)
    delays = [i * stagger for i in range(len(hosts))] if stagger else [rng.uniform(0, spread) for _ in hosts]
    by_netns: dict[str, list[int]] = {}
    for i, host in enumerate(hosts):
        by_netns.setdefault(host.netns, []).append(i)
    members = {member.netns: member for member in lan.clients}
    zero = time.perf_counter() + 1.0  # the processes' and threads' own start-up is not a host's time
    context = multiprocessing.get_context("fork")
    children: list[tuple[list[int], Any, Any]] = []
    outcomes: list[BootOutcome | None] = [None] * len(hosts)
    try:
        for netns, indexes in by_netns.items():
            receiver, sender = context.Pipe(duplex=False)
            jobs = [(hosts[i], zero + delays[i], ((salt & 0x7F) << 24) | (i << 3)) for i in indexes]
            child = context.Process(target=_client_process, args=(netns, members[netns], jobs, server_ip, loaders,
                                                                  sender), daemon=True)  # fmt: skip
            child.start()
            sender.close()
            children.append((indexes, child, receiver))
        deadline = time.monotonic() + STORM_SECONDS + 60
        for indexes, child, receiver in children:
            if receiver.poll(max(0.0, deadline - time.monotonic())):
                for i, outcome in zip(indexes, receiver.recv()):
                    outcomes[i] = outcome
    finally:
        for _indexes, child, receiver in children:
            receiver.close()
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join()
    return [o or BootOutcome(h.client.mac_text, error=f"did not finish in {STORM_SECONDS} s")
            for o, h in zip(outcomes, hosts)]  # fmt: skip


def _client_process(netns: str, member: Member, jobs: list[tuple[SimHost, float, int]], server_ip: str,
                    loaders: dict[str, bytes], results: Any) -> None:  # fmt: skip
    """One client namespace's hosts, in a forked process that joined the namespace: a thread
    per host; their outcomes go back through ``results`` (a pipe) in the order of ``jobs``."""
    enter_netns(netns)  # this process's only thread: its host threads are born in the namespace
    port = DhcpPort(member)
    outcomes: list[BootOutcome | None] = [None] * len(jobs)

    def run(k: int) -> None:
        host, at, xid = jobs[k]
        outcomes[k] = boot_one(host, port, server_ip, loaders, at, xid)

    try:
        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(jobs))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + STORM_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        port.close()
    results.send([o or BootOutcome(job[0].client.mac_text, error=f"did not finish in {STORM_SECONDS} s")
                  for o, job in zip(outcomes, jobs)])  # fmt: skip
    results.close()


# --------------------------------------------------------------------------- the servers
@dataclass
class StormResult:
    outcomes: list[BootOutcome]
    cpu_seconds: float
    peak_pss_mib: float
    wall_seconds: float
    checked_failures: dict[str, str] = field(default_factory=dict)
    """MAC → what was wrong with its record after the storm (bootbox only)."""
    server_said: list[str] = field(default_factory=list)
    """bootbox's warnings and errors when a boot failed (the first 20 lines)."""
    socket_drops: int = 0
    """UDP datagrams the servers' namespace dropped for a full receive buffer during the storm."""

    @property
    def total_seconds(self) -> float:
        """First host powering on to the last report-in answered (NaN unless all booted)."""
        if any(o.error for o in self.outcomes) or not self.outcomes:
            return float("nan")
        return max(o.finished for o in self.outcomes) - min(o.planned for o in self.outcomes)

    def lateness(self) -> list[float]:
        """How late each host sent its first DISCOVER after its power-on: the simulating
        process's own delay (a Python process per client namespace), not the server's."""
        return [o.started - o.planned for o in self.outcomes if not math.isnan(o.started)]

    @property
    def failures(self) -> int:
        """Hosts whose boot failed or whose record was wrong afterwards (each counted once)."""
        return len({o.mac for o in self.outcomes if o.error} | set(self.checked_failures))

    def times(self) -> list[float]:
        return [o.seconds for o in self.outcomes if not o.error]

    def times_from_first_discover(self) -> list[float]:
        """Each boot from the moment this process sent its first DISCOVER: the simulating
        process's own lateness left out, as a second view beside :meth:`times` (a stack whose
        hosts start late because the client is busy looks slower there, not here)."""
        return [o.finished - o.started for o in self.outcomes if not o.error]


class BootLab:
    """The LAN with the boot servers' namespaces, the hosts, and the files they boot."""

    def __init__(self, lan: Lan, workdir: Path, kernel_mib: float, initrd_mib: float, *,
                 trust_lan: bool = False, stagger: float = 0.0) -> None:  # fmt: skip
        self.lan, self.segment, self.workdir = lan, lan.segment, workdir
        self.trust_lan, self.stagger = trust_lan, stagger
        self.server, self.ref = lan.server, lan.ref
        self.hosts = [SimHost(host, PxeClient(host.mac, random.randbytes(16), "bios" if host.n % 2 == 0 else "uefi"))
                      for host in lan.hosts]  # fmt: skip
        workdir.chmod(0o755)  # tftpd-hpa and nginx's worker run unprivileged
        self.tftp_root = workdir / "tftp"
        self.tftp_root.mkdir()
        self.tftp_root.chmod(0o755)
        self.loaders: dict[str, bytes] = {}
        for name in LOADERS:
            data = (IPXE_DIR / name).read_bytes()
            (self.tftp_root / name).write_bytes(data)
            (self.tftp_root / name).chmod(0o644)
            self.loaders[name] = data
        self.files = workdir / "files"
        self.files.mkdir()
        for name, mib in (("vmlinuz", kernel_mib), ("initrd.img", initrd_mib)):
            with (self.files / name).open("wb") as out:
                out.write(random.randbytes(int(mib * 2**20)))
        self.bytes_per_boot = sum((self.files / n).stat().st_size for n in ("vmlinuz", "initrd.img"))
        self._runs = 0

    # ---------------------------------------------------------------- bootbox
    def run_bootbox(self) -> StormResult:
        self._runs += 1
        work = self.workdir / f"bootbox-{self._runs}"
        work.mkdir()
        ip = self.server.ip
        config = (
            f'state_dir = "{work / "state"}"\nlog_level = "info"\n[demo]\nenabled = false\n'
            f'[dhcp]\nenabled = true\ninterface = "{self.server.ifname}"\n'
            f'[tftp]\nbind_address = "{ip}"\nroot = "{self.tftp_root}"\n'
            f'[http]\nbind_address = "{ip}"\nport = {HTTP_PORT}\n'
        )
        if self.trust_lan:  # the neighbour table is still read for every new host; a miss is not refused
            config += f'[hosts]\ntrusted_networks = ["{self.server.address.network}"]\n'
        server = launch_bootbox(work, config, netns=self.server.netns, status_url=f"http://{ip}:{HTTP_PORT}/api/v1/status")
        try:
            api = _Api(self.segment, self.server, f"http://{ip}:{HTTP_PORT}/api/v1",
                       (work / "state" / "api-token").read_text().strip())  # fmt: skip
            expected = self._bootbox_rules(api)
            result = self._storm([server], ip)
            result.checked_failures = self._check_records(api, expected)
            if result.failures:  # bootbox's own words for what it refused, beside the clients' view
                log = (work / "bootbox.log").read_text(errors="replace").splitlines()
                result.server_said = [line for line in log if " WARNING " in line or " ERROR " in line][:20]
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
        calls: list[tuple[str, str, object]] = []
        for name in ("storm-mac", "storm-default"):
            calls.append(("POST", "/profiles", {"name": name, "kind": "linux", "spec": {
                "kernel": str(self.files / "vmlinuz"), "initrd": [str(self.files / "initrd.img")],
                "cmdline": "console=ttyS0 bootbox.mac={mac} bootbox.callback={callback}"}}))  # fmt: skip
        expected = {}
        for n, host in enumerate(self.hosts):
            if n % 2 == 0:
                calls.append(("POST", "/rules", {"name": f"mac-{n}", "patterns": [f"mac={host.client.mac_text}"],
                                                 "items": {"image": "storm-mac"}}))  # fmt: skip
                expected[host.client.mac_text] = "storm-mac"
            else:
                expected[host.client.mac_text] = "storm-default"
        calls.append(("POST", "/rules", {"name": "everyone", "all_hosts": True, "items": {"image": "storm-default"}}))
        api.calls(calls)
        return expected

    def _check_records(self, api: "_Api", expected: dict[str, str]) -> dict[str, str]:
        """Every host is recorded as booted, with the profile its rule names and every step."""
        problems = {}
        macs = list(expected)
        answers = api.calls([("GET", f"/hosts/{mac}{tail}", None) for mac in macs for tail in ("", "/events")])
        for i, mac in enumerate(macs):
            host, events = answers[2 * i], answers[2 * i + 1]
            profile = expected[mac]
            kinds = {event["kind"] for event in events}
            missing = [kind for kind in EXPECTED_EVENTS if kind not in kinds]
            if host.get("state") in NOT_BOOTED or host.get("profile") != profile or missing:
                problems[mac] = (f"state {host.get('state')}, profile {host.get('profile')} (want {profile})"
                                 + (f", no {', '.join(missing)} event" if missing else ""))  # fmt: skip
        return problems

    # ---------------------------------------------------------------- the reference
    def run_reference(self) -> StormResult:
        """dnsmasq (proxyDHCP only, log-dhcp), tftpd-hpa and nginx, as a site would run them."""
        ip = self.ref.ip
        http = self.workdir / "ref-http"
        if not http.exists():
            self._reference_files(http, ip)
        dnsmasq = reference_proxy(self.segment, self.ref, self.workdir / "dnsmasq", tftp_root=self.tftp_root,
                                  script_url=f"http://{ip}:{HTTP_PORT}/boot.ipxe")  # fmt: skip
        servers: list[Server] = []
        try:
            dnsmasq.stop()  # restarted without its TFTP server: tftpd-hpa serves the loaders
            dnsmasq.lines = [line for line in dnsmasq.lines if line != "enable-tftp" and not line.startswith("tftp-")]
            dnsmasq.start()
            assert dnsmasq.pid is not None
            servers.append(start_tftpd_hpa(self.tftp_root, 69, address=ip, netns=self.ref.netns))
            servers.append(start_nginx(self.workdir / "nginx", http, HTTP_PORT, address=ip, netns=self.ref.netns,
                                       locations='    location /booted { return 200 "ok\\n"; }\n'))  # fmt: skip
            return self._storm([Process("dnsmasq", dnsmasq.pid), *servers], ip)
        finally:
            for server in reversed(servers):
                server.stop()
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
    def _storm(self, servers: list["Server | Process"], server_ip: str) -> StormResult:
        self.lan.forget_neighbours()
        netns = self.server.netns if server_ip == self.server.ip else self.ref.netns
        cpu = sum(cpu_seconds(s.pid) for s in servers)
        drops = udp_receive_drops(netns)
        with PeakMemory(servers) as memory:
            start = time.perf_counter()
            outcomes = run_storm(self.lan, self.hosts, server_ip, self.loaders, salt=self._runs * 2 + len(servers),
                                 stagger=self.stagger)  # fmt: skip
            wall = time.perf_counter() - start
        return StormResult(outcomes, sum(cpu_seconds(s.pid) for s in servers) - cpu, sum(memory.peaks.values()), wall,
                           socket_drops=udp_receive_drops(netns) - drops)  # fmt: skip


def udp_receive_drops(netns: str) -> int:
    """The namespace's count of UDP datagrams dropped for a full socket buffer (``Udp:
    RcvbufErrors`` of its /proc/net/snmp): DHCP and TFTP requests the servers never saw."""
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                         timeout=30, check=True).stdout  # fmt: skip
    names, values = (line.split()[1:] for line in out.splitlines() if line.startswith("Udp:"))
    return int(dict(zip(names, values))["RcvbufErrors"])


class _Api:
    """bootbox's JSON API, called from a thread in a namespace on the segment."""

    def __init__(self, segment: Segment, member: Member, base: str, token: str) -> None:
        self.segment, self.member, self.base, self.token = segment, member, base, token

    def calls(self, requests: list[tuple[str, str, object]]) -> list[Any]:
        """Each (method, path, body) in order over one kept-alive connection, in one thread in
        the member's namespace; their JSON answers."""

        def go() -> list[Any]:
            parts = urllib.parse.urlsplit(self.base)
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            answers = []
            try:
                for method, path, body in requests:
                    conn.request(method, parts.path + path, body=json.dumps(body) if body is not None else None,
                                 headers=headers)  # fmt: skip
                    response = conn.getresponse()
                    data = response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
                    answers.append(json.loads(data))
            finally:
                conn.close()
            return answers

        return self.segment.call(self.member, go)

    def call(self, method: str, path: str, body: object = None) -> Any:
        return self.calls([(method, path, body)])[0]


# --------------------------------------------------------------------------- tables
def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


REFERENCE = "dnsmasq+tftpd-hpa+nginx"


def rows_for(ours: list[StormResult], ref: list[StormResult], hosts: int) -> list[Row]:
    def row(figure: str, unit: str, get: Callable[[StormResult], float], higher: bool = False, target: str = "") -> Row:
        return Row.of_runs(figure, unit, [get(r) for r in ours], [get(r) for r in ref], REFERENCE,
                           higher_is_better=higher, target=target)  # fmt: skip

    return [
        row("boots completed", "%", lambda r: 100.0 * (hosts - r.failures) / hosts, True, "100 %"),
        Row("failed boots, all runs together", "boots", float(sum(r.failures for r in ours)),
            float(sum(r.failures for r in ref)), REFERENCE, higher_is_better=False, target="0"),
        row("total: first power-on to last host booted", "s", lambda r: r.total_seconds, target="<= 1.1x"),
        row("time per boot p50", "s", lambda r: percentile(r.times(), 0.50)),
        row("time per boot p99", "s", lambda r: percentile(r.times(), 0.99), target="<= 1.1x"),
        row("time per boot p99 from its first DISCOVER (client lateness left out)", "s",
            lambda r: percentile(r.times_from_first_discover(), 0.99), target="<= 1.1x"),
        row("client lateness p99 (first DISCOVER after power-on)", "s", lambda r: percentile(r.lateness(), 0.99)),
        row("server UDP receive-buffer drops", "pkts", lambda r: float(r.socket_drops), target="0"),
        row("DHCP retransmissions needed", "pkts", lambda r: float(sum(o.dhcp_retries for o in r.outcomes)),
            target="0"),
        row("server CPU seconds", "s", lambda r: r.cpu_seconds),
        row("server peak memory (PSS)", "MiB", lambda r: r.peak_pss_mib),
    ]


def _run_doc(result: StormResult) -> dict[str, float]:
    return {"failures": result.failures, "total_s": result.total_seconds, "p99_s": percentile(result.times(), 0.99),
            "cpu_seconds": result.cpu_seconds, "peak_pss_mib": result.peak_pss_mib, "wall_s": result.wall_seconds,
            "p50_s": percentile(result.times(), 0.50), "socket_drops": result.socket_drops, "lateness_p99_s": percentile(result.lateness(), 0.99),
            "p99_from_discover_s": percentile(result.times_from_first_discover(), 0.99),
            "steps": {name: list(times) for name, times in _step_times([result]).items()}}


STEPS = ("pxe dhcp", "tftp loader", "ipxe dhcp", "http script", "http kernel", "http initrd", "callback")
"""The marks of a boot in order (:attr:`BootOutcome.marks`); a step lasts from the previous mark."""


def _step_times(results: list[StormResult]) -> dict[str, tuple[float, float]]:
    """Each step's (median, p99) seconds over every successful boot of ``results``."""
    steps: dict[str, list[float]] = {}
    for result in results:
        for outcome in result.outcomes:
            if outcome.error:
                continue
            last = outcome.started
            for name in STEPS:
                if name in outcome.marks:
                    steps.setdefault(name, []).append(outcome.marks[name] - last)
                    last = outcome.marks[name]
    return {name: (statistics.median(values), percentile(values, 0.99)) for name, values in steps.items()}


def _steps_note(who: str, results: list[StormResult]) -> str:
    return f"step times median / p99, {who}: " + ", ".join(
        f"{name} {p50 * 1000:.0f} / {p99 * 1000:.0f} ms" for name, (p50, p99) in _step_times(results).items())


def measure(hosts: int, runs: int, kernel_mib: float, initrd_mib: float, *, trust_lan: bool = False,
            stagger: float = 0.0) -> list[Table]:  # fmt: skip
    ours: list[StormResult] = []
    ref: list[StormResult] = []
    with tempfile.TemporaryDirectory(prefix="bootbox-fullstorm-") as tmp, Lan(hosts) as lan:
        lab = BootLab(lan, Path(tmp), kernel_mib, initrd_mib, trust_lan=trust_lan, stagger=stagger)
        for run in range(runs):
            order = (lab.run_bootbox, lab.run_reference) if run % 2 == 0 else (lab.run_reference, lab.run_bootbox)
            for go in order:
                (ours if go == lab.run_bootbox else ref).append(go())
        per_boot_mib = lab.bytes_per_boot / 2**20
    errors = [f"bootbox: {o.mac}: {o.error}" for r in ours for o in r.outcomes if o.error]
    errors += [f"bootbox: {mac}: {problem}" for r in ours for mac, problem in r.checked_failures.items()]
    errors += [f"reference: {o.mac}: {o.error}" for r in ref for o in r.outcomes if o.error]
    errors += [f"bootbox log: {line}" for r in ours for line in r.server_said]
    notes = [
        f"each boot: 2 DHCP exchanges + 4011, a {'/'.join(LOADERS)} loader over TFTP, 2 scripts, "
        f"{per_boot_mib:.0f} MiB of kernel + initrd over HTTP, a report-in; "
        + (f"hosts start {stagger:g} s apart" if stagger else "hosts start within 1 s"),
        "bootbox (log level info) also decides by rules and records hosts and events (checked after each run); the "
        "reference (dnsmasq proxy with log-dhcp, tftpd-hpa, nginx with sendfile) serves pre-written per-host scripts",
        "DHCP socket receive buffers: bootbox 4 MiB (its built-in size), dnsmasq the kernel default "
        "(net.core.rmem_default, 208 KiB here); the drops row shows whether either lost a request to a full buffer",
        "each host hears its DHCP answers on its own udp/68 socket, filtered by xid in the kernel (not one shared "
        "socket read by a Python thread, which fell seconds behind and failed half of the reference's boots)",
        "across a bridge: servers and hosts in their own namespaces, each host its own MAC and address; reference "
        "memory is the sum of its three servers' peaks",
        "a boot is timed from its host's power-on, not from when its client process sent its first DISCOVER; "
        "hosts are threads of a process per client namespace (250 each); DHCP is retried as firmware does "
        "(PXE ROM after 4, 8, 16, 32 s; iPXE after 1, 2, 4, 8 s)",
        _steps_note("bootbox", ours),
        _steps_note("reference", ref),
        *(["bootbox with [hosts] trusted_networks = the LAN: a request whose address has no neighbour entry yet "
           "is served, not refused (--trust-lan)"] if trust_lan else []),
        *errors[:10],
    ]
    return [Table(
        "full_boot_storm",
        f"Full boot storm: {hosts} hosts (half BIOS, half UEFI) power on "
        + (f"{stagger:g} s apart" if stagger else "within 1 s") + f", across a bridge, median of {runs} run(s)",
        rows_for(ours, ref, hosts),
        meta={"hosts": hosts, "runs": runs, "kernel_mib": kernel_mib, "initrd_mib": initrd_mib, "errors": errors,
              "trust_lan": trust_lan, "runs_bootbox": [_run_doc(r) for r in ours], "runs_reference": [_run_doc(r) for r in ref],
              "bootbox_failures": sum(r.failures for r in ours)},
        notes=notes,
    )]  # fmt: skip


def requirements() -> str | None:
    import os

    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    for tool in ("ip", "setpriv", "dnsmasq", "in.tftpd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool}"
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "needs nginx"
    if not all((IPXE_DIR / name).is_file() for name in LOADERS):
        return f"needs Debian's ipxe loaders in {IPXE_DIR}"
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """``python -m bench``: 1,000 hosts × 3 runs, 24 MiB each; ``--quick``: 6 hosts, small files,
    powering on 0.2 s apart (a walk through every step on both stacks, not a storm)."""
    if quick:
        return measure(6, runs or 1, 1, 2, stagger=0.2)
    return measure(1000, runs or 3, 8, 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=positive_int, default=1000)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--kernel-mib", type=float, default=8)
    parser.add_argument("--initrd-mib", type=float, default=16)
    parser.add_argument("--quick", action="store_true", help="6 hosts, 1 run, small files")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    parser.add_argument("--trust-lan", action="store_true",
                        help="give bootbox [hosts] trusted_networks = the LAN, so a boot request that arrives before "
                             "bootbox's copy of the neighbour table has the host is served, not refused")  # fmt: skip
    parser.add_argument("--switch-interval", type=float, default=CLIENT_SWITCH_INTERVAL,
                        help="the client process's interpreter switch interval in seconds (sys.setswitchinterval)")
    args = parser.parse_args(argv)
    sys.setswitchinterval(args.switch_interval)
    if problem := requirements():
        parser.error(problem)
    result = tables(quick=True) if args.quick else measure(args.hosts, args.runs, args.kernel_mib, args.initrd_mib,
                                                           trust_lan=args.trust_lan)  # fmt: skip
    for table in result:
        table.show()
        table.write(args.json)
    return 1 if any(t.meta["bootbox_failures"] for t in result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
