"""DHCP boot storm: bootbox's proxyDHCP vs dnsmasq in proxy mode, same LAN, same clients.

    python -m bench.dhcp_storm [--clients 1000] [--rate 1000] [--runs 3] [--logging answers|quiet]
                               [--quick] [--json DIR]

The morning the power comes back, a rack of machines DISCOVERs at once. This builds the LAN of
``bench.lan`` (a bridge; bootbox in a ``server`` namespace at 198.18.0.1, dnsmasq in a ``ref``
namespace at 198.18.0.4, the clients in a client namespace holding one address per client) and,
for each server in turn:

1. sends ``--clients`` raw PXE DISCOVERs paced at ``--rate`` per second from an ``AF_PACKET``
   socket, each from its own locally administered MAC and UUID, half with a BIOS PXE ROM's
   option set and half with EDK2's (captured), from 0.0.0.0 with the broadcast flag;
2. then unicasts each answered client's DHCPREQUEST to udp/4011 from that client's own
   address (echoing 43.71 when the OFFER carried a PXE menu, as a ROM picking the first item
   does);
3. times every answer by kernel timestamps taken on the client's interface by a packet tap
   (``bench.wire``: the request's frame leaving, the answer's frame arriving), and reads the
   server sockets' drop counters from /proc/net/udp. The replies also land on a udp/68 socket
   with a 16 MiB buffer, so the client never drops, and the old figure — a user-space clock
   before ``send()`` to that socket's ``SO_TIMESTAMPNS`` — is kept beside it.

Both servers log every answer (bootbox at ``info``, dnsmasq with ``log-dhcp``) unless
``--logging quiet`` turns both down together. Only one server runs at a time, each with fresh
state and cold ARP caches, alternating, and each figure is the median of ``--runs`` with
min–max. A back-to-back burst of the same size (references.md §1: dnsmasq answers 212-240 of
1,000) is measured too. Needs root, iproute2, util-linux ``setpriv`` and dnsmasq.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Row, Server, Table, cpu_seconds, launch_bootbox, peak_rss_mib, percentile, positive_int
from bench.pxeclient import (
    PxeClient,
    Reply,
    discover,
    drain_timestamped,
    ethernet_frame,
    menu_boot_item,
    open_reply_socket,
    recv_timestamped,
    request_4011,
)
from bench.wire import drain_capture, open_capture, wire_latencies_ms
from bench.lan import Lan
from bootbox.lab.netns import Member
from bootbox.lab.sitedhcp import Dnsmasq, reference_proxy
from bootbox.net.dhcp.packet import MessageType

QUIET = 1.0
"""Seconds of silence after which a phase's replies are considered all in."""
_PORTS = {67: "0043", 4011: "0FAB"}
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("I4s4s")
"""struct in_pktinfo: each 4011 REQUEST leaves from its own host's address (IP_PKTINFO)."""


@dataclass
class Phase:
    """One phase of a storm as the client saw it, plus the server's socket drops meanwhile."""

    sent: int
    latencies_ms: list[float] = field(default_factory=list)
    """Per answered request: its frame leaving the client's interface to the answer's frame
    arriving there, both kernel timestamps (bench.wire)."""
    drops: int = 0
    user_ms: list[float] = field(default_factory=list)
    """The same answers timed the old way: a user-space clock read just before ``send()`` to
    the reply socket's kernel receive timestamp (includes the client's own send path)."""

    @property
    def answered_pct(self) -> float:
        return 100.0 * len(self.latencies_ms) / self.sent if self.sent else float("nan")

    def p(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)


@dataclass
class StormResult:
    """One server, one run."""

    offer: Phase
    ack: Phase
    cpu_seconds: float
    peak_rss_mib: float
    log_lines: int = 0
    """Lines the server wrote to its log during the storm (both log every answer unless quiet)."""
    load: float = float("nan")
    """The machine's 1-minute load average as the storm began (other work on the shared cores)."""


# --------------------------------------------------------------------------- the generator
def _pace(rate: float, count: int) -> Iterator[int]:
    """Yield 0..count-1 at ``rate`` per second (0: as fast as possible). Sleeps most of each
    gap and spins the last 0.2 ms, so pacing stays accurate without burning a core."""
    start = time.perf_counter()
    for i in range(count):
        if rate > 0:
            target = start + i / rate
            while (left := target - time.perf_counter()) > 0:
                if left > 0.0004:
                    time.sleep(left - 0.0003)
        yield i


def _collect(sock: socket.socket, sent_ns: dict[int, int], want: int, server_ip: str, quiet: float) -> list[float]:
    """Latencies (ms) of the first reply of kind ``want`` from ``server_ip`` for each xid sent."""
    latencies: dict[int, float] = {}
    for reply in drain_timestamped(sock, quiet):
        if _is_answer(reply, want, server_ip) and reply.packet.xid in sent_ns and reply.packet.xid not in latencies:
            latencies[reply.packet.xid] = (reply.received_ns - sent_ns[reply.packet.xid]) / 1e6
    return list(latencies.values())


def _is_answer(reply: Reply, want: int, server_ip: str) -> bool:
    server_id = reply.packet.options.get(54)
    return reply.kind == want and (reply.source[0] == server_ip or server_id == socket.inet_aton(server_ip))


def run_storm(clients: list[PxeClient], rate: float, server_ip: str, client_ips: list[str], *, drops: Callable[[], int],
              first_xid: int, iface: str = "eth0", quiet: float = QUIET) -> tuple[Phase, Phase]:  # fmt: skip
    """The two phases against one server; runs on a thread inside the client namespace.
    Client ``i`` sends its 4011 REQUEST from ``client_ips[i]`` (its own address).

    ``drops()`` reads the server's drop counter (udp/67 + udp/4011) so each phase's share can be
    told apart. All frames and requests are built before the clock starts.
    """
    with contextlib.ExitStack() as stack:
        replies = stack.enter_context(open_reply_socket(68))
        capture = stack.enter_context(open_capture(iface))
        raw = stack.enter_context(socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
        raw.bind((iface, 0))
        xids = {first_xid + i: client for i, client in enumerate(clients)}
        frames = [(xid, ethernet_frame(c.mac, discover(c, xid))) for xid, c in xids.items()]

        before = drops()
        sent_ns: dict[int, int] = {}
        for i in _pace(rate, len(frames)):
            xid, frame = frames[i]
            sent_ns[xid] = time.time_ns()
            raw.send(frame)
        offers: dict[int, Reply] = {}
        for reply in drain_timestamped(replies, quiet):
            xid = reply.packet.xid
            if _is_answer(reply, MessageType.OFFER, server_ip) and xid in sent_ns and xid not in offers:
                offers[xid] = reply
        offer = Phase(len(frames), [(r.received_ns - sent_ns[x]) / 1e6 for x, r in offers.items()], drops() - before)

        source = {xid: client_ips[(xid - first_xid) % len(client_ips)] for xid in offers}
        requests = [(xid, request_4011(xids[xid], xid, source[xid], boot_item=menu_boot_item(r.packet)),
                     [(socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO.pack(0, socket.inet_aton(source[xid]), bytes(4)))])
                    for xid, r in offers.items()]  # fmt: skip
        before = drops()
        sent_ns = {}
        for i in _pace(rate, len(requests)):
            xid, data, from_host = requests[i]
            sent_ns[xid] = time.time_ns()
            replies.sendmsg([data], from_host, 0, (server_ip, 4011))
        ack = Phase(len(requests), [], drops() - before, _collect(replies, sent_ns, MessageType.ACK, server_ip, quiet))
        offer.user_ms, offer.latencies_ms = offer.latencies_ms, []
        frames = list(drain_capture(capture))
        wire_offers = wire_latencies_ms(frames, request_port=67, answer_kind=MessageType.OFFER, server_ip=server_ip)
        wire_acks = wire_latencies_ms(frames, request_port=4011, answer_kind=MessageType.ACK, server_ip=server_ip)
        offer.latencies_ms = [wire_offers[x] for x in offers if x in wire_offers]
        ack.latencies_ms = list(wire_acks.values())
        if len(offer.latencies_ms) != len(offers):  # the tap must see every answer the socket got
            raise RuntimeError(f"the capture saw {len(offer.latencies_ms)} of {len(offers)} OFFERs")
        return offer, ack


def warm_up(server_ip: str, client_ip: str, timeout: float = 10.0) -> None:
    """One DISCOVER and one 4011 REQUEST before the clock starts: the server is listening and
    both sides have resolved each other's MAC, so the first storm packet pays no ARP."""
    client = PxeClient(bytes.fromhex("02bbffffff01"), bytes(range(16)))
    with open_reply_socket(68) as sock, socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as raw:
        raw.bind(("eth0", 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw.send(ethernet_frame(client.mac, discover(client, 0x7FFF0001)))
            reply = recv_timestamped(sock, 0.5)
            if reply is not None and _is_answer(reply, MessageType.OFFER, server_ip):
                sock.sendto(request_4011(client, 0x7FFF0002, client_ip, boot_item=menu_boot_item(reply.packet)),
                            (server_ip, 4011))  # fmt: skip
                if recv_timestamped(sock, 2.0) is not None:
                    for _ in drain_timestamped(sock, 0.2):  # stray repeats must not reach the storm
                        pass
                    return
        raise RuntimeError(f"no proxyDHCP answer from {server_ip} within {timeout:.0f} s")


def udp_drops(pid: int, ports: tuple[int, ...] = (67, 4011)) -> int:
    """Sum of the drop counters of the UDP sockets on ``ports`` in ``pid``'s namespace."""
    wanted = {_PORTS[p] for p in ports}
    total = 0
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].rsplit(":", 1)[1] in wanted:
            total += int(fields[-1])
    return total


# --------------------------------------------------------------------------- servers
class StormLab:
    """The LAN (``bench.lan``: every client its own MAC and address, in one client namespace),
    with one bootbox and one dnsmasq that take turns. ``logging`` is ``"answers"`` (bootbox at
    info, dnsmasq with log-dhcp: each logs every answer) or ``"quiet"`` (bootbox at warning,
    dnsmasq without log-dhcp) — always the same for both."""

    def __init__(self, lan: Lan, workdir: Path, logging: str = "answers") -> None:
        self.lan = lan
        self.segment = lan.segment
        self.workdir = workdir
        self.server, self.ref, self.client = lan.server, lan.ref, lan.clients[0]
        self.log_level = "info" if logging == "answers" else "warning"
        self.dnsmasq: Dnsmasq = reference_proxy(self.segment, self.ref, workdir / "dnsmasq",
                                                script_url=f"http://{self.ref.ip}:8080/boot.ipxe")  # fmt: skip
        self.dnsmasq.stop()
        if logging != "answers":
            self.dnsmasq.lines = [line for line in self.dnsmasq.lines if line != "log-dhcp"]
        self._runs = 0

    def start_bootbox(self) -> Server:
        self._runs += 1
        work = self.workdir / f"bootbox-{self._runs}"
        work.mkdir(parents=True)
        return launch_bootbox(work, bootbox_config(work, self.server, self.log_level), netns=self.server.netns,
                              status_url=f"http://{self.server.ip}:8080/api/v1/status")  # fmt: skip

    def measure(self, which: str, clients: list[PxeClient], rate: float, first_xid: int) -> StormResult:
        """Start ``which`` (bootbox or dnsmasq), storm it, stop it."""
        if which == "bootbox":
            server = self.start_bootbox()
            pid, ip, stop = server.pid, self.server.ip, server.stop
            log = self.workdir / f"bootbox-{self._runs}" / "bootbox.log"
        else:
            self.dnsmasq.start()
            assert self.dnsmasq.pid is not None
            pid, ip, stop = self.dnsmasq.pid, self.ref.ip, self.dnsmasq.stop
            log = self.dnsmasq.log_path
        try:
            self.lan.forget_neighbours()
            self.segment.call(self.client, warm_up, ip, self.client.ip)
            cpu = cpu_seconds(pid)
            lines = _line_count(log)
            load = os.getloadavg()[0]
            offer, ack = self.segment.call(self.client, run_storm, clients, rate, ip,
                                           [h.ip for h in self.lan.hosts], drops=lambda: udp_drops(pid),
                                           first_xid=first_xid)  # fmt: skip
            cpu = cpu_seconds(pid) - cpu
            time.sleep(0.3)  # writers behind the boot path (bootbox's log queue) catch up
            return StormResult(offer, ack, cpu, peak_rss_mib(pid), _line_count(log) - lines, load)
        finally:
            stop()


def _line_count(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(2**20), b""))
    except FileNotFoundError:
        return 0


def bootbox_config(work: Path, member: Member, log_level: str = "info") -> str:
    """bootbox as the appliance runs it (log level info, every answer logged and recorded, as
    dnsmasq runs with log-dhcp), proxyDHCP bound to the segment's interface."""
    return (
        f'state_dir = "{work / "state"}"\nlog_level = "{log_level}"\n'
        "[demo]\nenabled = false\n"
        f'[dhcp]\nenabled = true\ninterface = "{member.ifname}"\n'
        f'[tftp]\nbind_address = "{member.ip}"\nroot = "/usr/lib/ipxe"\n'
        f'[http]\nbind_address = "{member.ip}"\nport = 8080\n'
    )


# --------------------------------------------------------------------------- the tables
def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN (a phase with no answers has no percentiles)
    return statistics.median(values) if values else float("nan")


def storm_rows(label: str, ours: list[StormResult], ref: list[StormResult], *, latency_target: bool) -> list[Row]:
    def row(figure: str, unit: str, get: Callable[[StormResult], float], *, higher: bool, target: str = "") -> Row:
        return Row.of_runs(figure, unit, [get(r) for r in ours], [get(r) for r in ref], "dnsmasq",
                           higher_is_better=higher, target=target)  # fmt: skip

    rows = [
        row(f"{label}: OFFERs answered", "%", lambda r: r.offer.answered_pct, higher=True, target="100 %"),
        row(f"{label}: OFFER p50", "ms", lambda r: r.offer.p(0.50), higher=False),
        row(f"{label}: OFFER p95", "ms", lambda r: r.offer.p(0.95), higher=False),
        row(f"{label}: OFFER p99", "ms", lambda r: r.offer.p(0.99), higher=False,
            target="<= 2x (aim 1.5x)" if latency_target else ""),
        row(f"{label}: OFFER p99, user-space send clock", "ms",
            lambda r: percentile(r.offer.user_ms, 0.99), higher=False),
        row(f"{label}: udp/67 socket drops", "pkts", lambda r: r.offer.drops, higher=False, target="0"),
        row(f"{label}: 4011 ACKs answered", "%", lambda r: r.ack.answered_pct, higher=True, target="100 %"),
        row(f"{label}: 4011 ACK p50", "ms", lambda r: r.ack.p(0.50), higher=False),
        row(f"{label}: 4011 ACK p99", "ms", lambda r: r.ack.p(0.99), higher=False),
        row(f"{label}: CPU seconds", "s", lambda r: r.cpu_seconds, higher=False),
        row(f"{label}: peak RSS", "MiB", lambda r: r.peak_rss_mib, higher=False),
        row(f"{label}: log lines written", "lines", lambda r: float(r.log_lines), higher=False),
    ]
    return rows


def measure(clients: int, rate: float, runs: int, *, burst: bool, logging: str = "answers") -> list[Table]:
    """Build the LAN, run every storm, return the tables (the LAN is always removed)."""
    population = [PxeClient.numbered(n) for n in range(clients)]
    plans = [("paced", rate)] + ([("burst", 0.0)] if burst else [])
    results: dict[tuple[str, str], list[StormResult]] = {}
    with tempfile.TemporaryDirectory(prefix="bootbox-storm-") as tmp, Lan(clients, per_namespace=clients, macvlan=False) as lan:
        lab = StormLab(lan, Path(tmp), logging)
        xid = 1
        for run in range(runs):
            for plan, plan_rate in plans:
                order = ("bootbox", "dnsmasq") if run % 2 == 0 else ("dnsmasq", "bootbox")
                for which in order:
                    results.setdefault((plan, which), []).append(lab.measure(which, population, plan_rate, xid))
                    xid += clients
    tables = []
    for plan, plan_rate in plans:
        label = f"{clients} in 1 s" if plan == "paced" else f"{clients} back to back"
        if plan == "paced" and plan_rate != clients:
            label = f"{clients} at {plan_rate:g}/s"
        rows = storm_rows(label, results[(plan, "bootbox")], results[(plan, "dnsmasq")], latency_target=plan == "paced")
        tables.append(Table(
            f"dhcp_storm_{plan}",
            f"DHCP boot storm ({label}, half BIOS / half UEFI option sets), median of {runs} run(s)",
            rows,
            meta={"clients": clients, "rate": plan_rate, "runs": runs, "logging": logging,
                  "runs_bootbox": [_run_doc(r) for r in results[(plan, "bootbox")]],
                  "runs_dnsmasq": [_run_doc(r) for r in results[(plan, "dnsmasq")]]},
            notes=["latency: the request's frame leaving the client's interface to the answer's frame arriving "
                   "there, both kernel timestamps of a packet tap (bench.wire); 'user-space send clock': the old "
                   "method, a clock read before send() to the reply socket's SO_TIMESTAMPNS",
                   "drops: the server's udp/67 and udp/4011 sockets (/proc/net/udp); "
                   + ("dnsmasq 2.90 proxy with log-dhcp, bootbox at log level info (both log every answer)"
                      if logging == "answers" else "dnsmasq without log-dhcp, bootbox at log level warning")],
        ))  # fmt: skip
    return tables


def _run_doc(result: StormResult) -> dict[str, float]:
    return {"offer_answered_pct": result.offer.answered_pct, "offer_p99_ms": result.offer.p(0.99),
            "offer_drops": result.offer.drops, "ack_answered_pct": result.ack.answered_pct,
            "ack_p99_ms": result.ack.p(0.99), "ack_drops": result.ack.drops, "cpu_seconds": result.cpu_seconds,
            "offer_p50_ms": result.offer.p(0.5), "offer_user_p99_ms": percentile(result.offer.user_ms, 0.99),
            "log_lines": result.log_lines, "load_average": result.load}  # fmt: skip


def requirements() -> str | None:
    """Why this benchmark cannot run here, or None."""
    import os

    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    for tool in ("ip", "setpriv", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """What ``python -m bench`` runs: 1,000 clients × 3 runs with the burst, or a 100-client
    smoke run."""
    if quick:
        return measure(100, 100.0, runs or 1, burst=False)
    return measure(1000, 1000.0, runs or 3, burst=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=positive_int, default=1000)
    parser.add_argument("--rate", type=float, default=None, help="DISCOVERs per second (default: clients, i.e. 1 s)")
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--no-burst", action="store_true", help="skip the back-to-back burst")
    parser.add_argument("--quick", action="store_true", help="100 clients, 1 run, no burst")
    parser.add_argument("--logging", choices=("answers", "quiet"), default="answers",
                        help="answers: bootbox at info and dnsmasq with log-dhcp (default, both log every answer); "
                             "quiet: bootbox at warning and dnsmasq without log-dhcp")  # fmt: skip
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    problem = requirements()
    if problem:
        parser.error(problem)
    if args.quick:
        result = tables(quick=True)
    else:
        result = measure(args.clients, args.rate or float(args.clients), args.runs, burst=not args.no_burst,
                         logging=args.logging)  # fmt: skip
    for table in result:
        table.show()
        table.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
