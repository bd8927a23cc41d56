"""The proxyDHCP responder: PXE boot answers on udp/67 and udp/4011, never an address.

A proxyDHCP server (PXE 2.1 specification) runs beside the site's DHCP server: the client
gathers the address offer from one and the boot offer from the other. bootbox therefore
answers only what is unmistakably a network-boot request and stays silent otherwise
(facts/pxe-dhcp.md §1):

- udp/67: DHCPDISCOVER whose option 60 starts with ``PXEClient`` or ``HTTPClient`` → OFFER;
- udp/4011: DHCPREQUEST/DHCPINFORM with the same class → ACK (the PXE boot-server exchange).

:func:`respond` is the pure decision: packet in, reply (with its destination) or a reason for
silence out. :class:`ProxyDhcpServer` is the thin socket loop around it: two sockets, one
thread, ``selectors``. Which file a client boots is not decided here: the server is handed a
``decide(Machine) -> BootSpec | None`` callable.

Each client MAC gets a token bucket (:class:`ClientRateLimiter`): a firmware stuck in a
DISCOVER loop, or a forged flood from one MAC, is dropped once its burst is spent, while every
other client is answered as usual. A real boot sends four to six packets in a few seconds.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    DhcpPacket,
    MalformedPacket,
    MessageType,
    Opt,
    PxeOpt,
    build,
    build_suboptions,
    message_type,
    parse,
    pxe_boot_item,
    to_machine,
    vendor_class,
)
from bootbox.net.loop import SelectorLoop

__all__ = [
    "Admission",
    "ClientRateLimiter",
    "Decide",
    "Failed",
    "Ignored",
    "OnAnswer",
    "Outcome",
    "ProxyDhcpServer",
    "Reply",
    "Role",
    "build_reply",
    "reply_address",
    "respond",
]

log = logging.getLogger("bootbox.dhcp")

Decide = Callable[[Machine], BootSpec | None]
OnAnswer = Callable[[Machine, BootSpec, int], None]

BOOT_CLASSES = ("PXEClient", "HTTPClient")
USE_THIS_BOOT_FILE = 8
"""PXE 43.6 (discovery control) bit 3: boot the file in this packet, skip discovery and menus."""
BROADCAST = "255.255.255.255"
ZERO = "0.0.0.0"
RELAY_PORT = 67  # relay agents listen on the server port (RFC 2131 §4.1)
FILE_FIELD_MAX = 127  # 128-byte field, NUL-terminated (RFC 2131 §2)

IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)  # Linux value; not exported by Python 3.11
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux value
_PKTINFO = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_SIOCGIFADDR = 0x8915
RCVBUF_BYTES = 4 * 1024 * 1024
"""Large enough for a 1,000-client DISCOVER storm (~0.5 MB of payload plus kernel overhead)."""
RATE_PER_SECOND = 2.0
"""Packets per second one MAC earns back once its burst is spent."""
RATE_BURST = 12
"""Packets one MAC may send at once: a PXE ROM, then iPXE, each DISCOVER + 4011 REQUEST, plus
retransmissions, is well under it."""
RATE_MAX_CLIENTS = 65536
"""Buckets kept; beyond it the least recently seen are forgotten (a forgotten MAC starts full)."""
_CHADDR = slice(28, 44)
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value
_TIMESPEC = struct.Struct("=qq")
ANSWERED_MEMORY = 65536
"""Answered requests remembered for :class:`AnsweredCopies` (the oldest are forgotten first)."""
ANSWERED_SECONDS = 30.0
"""How long an answered request is remembered; clients retransmit within seconds."""


class Role(Enum):
    """Which of the two sockets a request arrived on; each has its own rules."""

    SERVER = "server"  # udp/67: DISCOVER → OFFER
    BOOT_SERVER = "boot-server"  # udp/4011: REQUEST/INFORM → ACK


@dataclass(frozen=True)
class Reply:
    """An answer to send: the packet (decoded and encoded), where to send it, and what it was
    decided from."""

    packet: DhcpPacket
    data: bytes
    address: tuple[str, int]
    machine: Machine
    spec: BootSpec


@dataclass(frozen=True)
class Ignored:
    """Silence, and why (logged at DEBUG, counted as ``ignored``)."""

    reason: str
    mac: str


@dataclass(frozen=True)
class Failed:
    """``decide`` raised, or its answer could not be encoded (logged, counted as ``errors``)."""

    reason: str
    mac: str
    error: BaseException


Outcome = Reply | Ignored | Failed


# --------------------------------------------------------------------------- rate limiting
class Admission(Enum):
    """What :meth:`ClientRateLimiter.admit` decided for one packet."""

    ALLOW = "allow"
    DROP = "drop"
    DROP_FIRST = "drop-first"  # the first drop since this client was last allowed: log it once


class ClientRateLimiter:
    """A token bucket per client hardware address: ``burst`` packets at once, then ``rate`` per
    second. Memory is bounded by ``max_clients``; buckets that have refilled are dropped first,
    then the least recently seen. Not thread-safe: the server's one thread owns it.

    ``rate`` 0 (or ``burst`` 0) disables limiting. Keyed on the raw ``chaddr`` so a flood is
    refused before it costs a parse; a flood that forges a new MAC per packet is not slowed by
    this (no per-client limit can), only by the socket buffer.
    """

    def __init__(
        self,
        rate: float = RATE_PER_SECOND,
        burst: int = RATE_BURST,
        *,
        max_clients: int = RATE_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 0 or max_clients < 1:
            raise ValueError("rate and burst must be >= 0 and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        # key -> [tokens, time of the last refill, 1.0 while dropping]; ordered oldest use first
        self._buckets: dict[bytes, list[float]] = {}
        self.dropped = 0
        """Packets :meth:`check` refused."""

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, key: bytes) -> Admission:
        """Take one token for ``key``, or say the packet is to be dropped."""
        if not self.enabled:
            return Admission.ALLOW
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = [float(self.burst), now, 0.0]
        else:
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        self._buckets[key] = bucket  # re-inserted: the dict stays ordered by last use
        if len(self._buckets) > self.max_clients:
            self._evict(now)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            bucket[2] = 0.0
            return Admission.ALLOW
        first, bucket[2] = not bucket[2], 1.0
        return Admission.DROP_FIRST if first else Admission.DROP

    def check(self, data: bytes, source: tuple[str, int], log: logging.Logger) -> bool:
        """A DHCP server's gate: admit the raw packet ``data`` from ``source``, keyed on its
        ``chaddr`` (before any parse), or count it dropped — warning once each time a MAC starts
        being dropped."""
        if len(data) < _CHADDR.stop:
            return True  # too short to be DHCP: parse() rejects it at no cost
        admission = self.admit(data[_CHADDR][: min(data[2], 16)])
        if admission is Admission.ALLOW:
            return True
        self.dropped += 1
        if admission is Admission.DROP_FIRST:
            log.warning(
                "mac %s: more than %d packets at once from %s:%d; dropping this client's packets "
                "beyond %g per second until it slows down", _peek_mac(data), self.burst, *source, self.rate,
            )  # fmt: skip
        return False

    def _evict(self, now: float) -> None:
        """Forget buckets that are full again (they behave as absent ones), then, while still
        over the bound, the least recently used. The dict is ordered by last use, so both are
        taken from its front: the cost is the number of buckets forgotten, never a scan."""
        refill = self.burst / self.rate
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets))
            if now - buckets[oldest][1] < refill and len(buckets) <= self.max_clients:
                break
            del buckets[oldest]


class AnsweredCopies:
    """Retransmitted copies of a request that were already queued when its answer left.

    A PXE ROM or iPXE that hears nothing for a few seconds sends its DISCOVER again, same xid.
    When a storm keeps the socket backlogged for longer than that, the queue fills with copies,
    and answering each one again makes the backlog — and so every later client's wait — longer
    still (seen in a 1,000-host boot storm: 2,800 retransmissions, OFFERs seconds late). A copy
    the kernel received *before* the answer to an earlier copy was sent is redundant: that
    answer carries the same xid and reaches the client after its retransmission, so it is the
    answer the client takes. Copies received after the answer left are answered again, since
    the first answer may have been lost. Requests are compared byte for byte except ``secs``
    (bytes 8–9), which a ROM advances between tries. Not thread-safe: the server's thread owns it.
    """

    def __init__(self, *, memory: int = ANSWERED_MEMORY, seconds: float = ANSWERED_SECONDS) -> None:
        self.memory, self.seconds = memory, seconds
        self._sent: dict[tuple[int, bytes], int] = {}  # (port, request) -> answer sent, ns (CLOCK_REALTIME)
        self.skipped = 0
        """Copies :meth:`redundant` said need no answer."""

    @staticmethod
    def _key(port: int, data: bytes) -> tuple[int, bytes]:
        return port, data[:8] + data[10:]

    def answered(self, port: int, data: bytes, sent_ns: int) -> None:
        """Remember that the request ``data`` on ``port`` was answered at ``sent_ns``."""
        key = self._key(port, data)
        self._sent.pop(key, None)
        self._sent[key] = sent_ns  # re-inserted: the dict stays ordered by answer time
        oldest_kept = sent_ns - int(self.seconds * 1e9)
        while self._sent:
            first = next(iter(self._sent))
            if len(self._sent) <= self.memory and self._sent[first] >= oldest_kept:
                break
            del self._sent[first]

    def redundant(self, port: int, data: bytes, received_ns: int | None) -> bool:
        """Whether this copy, received at ``received_ns`` (the kernel's timestamp; None when
        unknown, never redundant), arrived before the answer to an identical request left."""
        if received_ns is None:
            return False
        sent = self._sent.get(self._key(port, data))
        if sent is None or received_ns >= sent:
            return False
        self.skipped += 1
        return True


# --------------------------------------------------------------------------- pure decision
def respond(
    pkt: DhcpPacket,
    *,
    role: Role,
    source: tuple[str, int],
    server_ip: str,
    local_port: int,
    decide: Decide,
    client_port: int = 68,
) -> Outcome:
    """Decide what to send for ``pkt``, which arrived from ``source`` on ``local_port``.

    ``server_ip`` is the local address the packet arrived on (option 54 and ``Machine``).
    Never raises for anything ``decide`` does: its exceptions come back as :class:`Failed`.
    """
    mac = pkt.mac
    reason = _why_not(pkt, role)
    if reason:
        return Ignored(reason, mac)
    try:
        machine = to_machine(pkt, server_ip, local_port)
        if role is Role.BOOT_SERVER:
            pxe_boot_item(pkt)  # the ACK echoes 43.71: an option 43 that does not parse is the client's fault
    except MalformedPacket as exc:
        return Ignored(str(exc), mac)
    try:
        spec = decide(machine)
    except Exception as exc:  # a plugin or policy bug must not stop the DHCP thread
        return Failed("decide() raised", mac, exc)
    if spec is None:
        return Ignored("decide() declined this client", mac)
    try:
        packet = build_reply(pkt, spec, role=role, server_ip=server_ip)
        data = build(packet)
    except (ValueError, OSError) as exc:  # e.g. a next_server that is not an IPv4 address
        return Failed(f"cannot encode the answer for {spec.boot_file!r}", mac, exc)
    return Reply(packet, data, reply_address(pkt, role, source, client_port), machine, spec)


def _why_not(pkt: DhcpPacket, role: Role) -> str:
    """The reason to stay silent, or ``""`` to answer (facts/pxe-dhcp.md §1)."""
    if pkt.op != BOOTREQUEST:
        return "not a BOOTREQUEST"
    kind = message_type(pkt)
    if kind is None:
        return "no DHCP message type (plain BOOTP)"
    wanted = (MessageType.DISCOVER,) if role is Role.SERVER else (MessageType.REQUEST, MessageType.INFORM)
    if kind not in wanted:
        return f"{_type_name(kind)} is not answered on the {role.value} port"
    if not vendor_class(pkt).startswith(BOOT_CLASSES):
        return f"vendor class {vendor_class(pkt)!r} is not PXEClient/HTTPClient"
    return ""


def _type_name(kind: int) -> str:
    try:
        return f"DHCP{MessageType(kind).name}"
    except ValueError:
        return f"message type {kind}"


def build_reply(req: DhcpPacket, spec: BootSpec, *, role: Role, server_ip: str) -> DhcpPacket:
    """The proxy OFFER (role SERVER) or boot-server ACK (role BOOT_SERVER) for ``req``.

    Fields and options follow facts/pxe-dhcp.md §2–§3: yiaddr stays 0.0.0.0 (a proxy leases
    nothing), siaddr is the next server, the boot file goes in both ``file`` and option 67
    (``file`` is left empty when the name does not fit, e.g. a long script URL), option 60
    echoes the client's class because clients drop proxy offers without it, 97 is echoed
    because some ROMs require it, and 43 tells PXE clients to boot this file (6 = 8), echoing
    the boot item (71) they asked the boot server for.
    """
    client_class = "HTTPClient" if vendor_class(req).startswith("HTTPClient") else "PXEClient"
    boot_file = spec.boot_file.encode()
    options: dict[int, bytes] = {
        Opt.MESSAGE_TYPE: bytes((MessageType.OFFER if role is Role.SERVER else MessageType.ACK,)),
        Opt.SERVER_ID: socket.inet_aton(server_ip),
        Opt.VENDOR_CLASS: client_class.encode(),
    }
    if Opt.CLIENT_UUID in req.options:
        options[Opt.CLIENT_UUID] = req.options[Opt.CLIENT_UUID]
    if client_class == "PXEClient":
        options[Opt.VENDOR_SPECIFIC] = _pxe_vendor_options(req, role)
    options[Opt.BOOTFILE_NAME] = boot_file
    return DhcpPacket(
        op=BOOTREPLY,
        htype=req.htype,
        hlen=req.hlen,
        xid=req.xid,
        flags=req.flags,
        ciaddr=req.ciaddr if role is Role.BOOT_SERVER else ZERO,  # RFC 2131 table 3
        yiaddr=ZERO,
        siaddr=spec.next_server or ZERO,
        giaddr=req.giaddr,
        chaddr=req.chaddr,
        file=boot_file if len(boot_file) <= FILE_FIELD_MAX else b"",
        options=options,
    )


def _pxe_vendor_options(req: DhcpPacket, role: Role) -> bytes:
    if role is Role.BOOT_SERVER:
        item = pxe_boot_item(req)
        if item is not None:
            return build_suboptions({**_DISCOVERY_CONTROL, PxeOpt.BOOT_ITEM: item})
    return _BOOT_THIS_FILE


_DISCOVERY_CONTROL = {PxeOpt.DISCOVERY_CONTROL: bytes((USE_THIS_BOOT_FILE,))}
_BOOT_THIS_FILE = build_suboptions(_DISCOVERY_CONTROL)
"""Option 43 of every OFFER to a PXE ROM (encoded once: the same bytes each time)."""


def reply_address(pkt: DhcpPacket, role: Role, source: tuple[str, int], client_port: int = 68) -> tuple[str, int]:
    """Where the answer goes.

    OFFER (RFC 2131 §4.1): to the relay at giaddr:67 when relayed, else to client port 68 —
    broadcast when the client set the broadcast flag or has no address yet, unicast to ciaddr
    otherwise. ACK on 4011: back to the request's source address *and port*, because EDK2
    sends from 4011 and iPXE from 68 (facts/pxe-dhcp.md §3, captured).
    """
    if role is Role.BOOT_SERVER:
        src_ip, src_port = source
        if src_ip != ZERO:
            return src_ip, src_port
        return (pkt.ciaddr if pkt.ciaddr != ZERO else BROADCAST), src_port
    if pkt.giaddr != ZERO:
        return pkt.giaddr, RELAY_PORT
    if pkt.broadcast or pkt.ciaddr == ZERO:
        return BROADCAST, client_port
    return pkt.ciaddr, client_port


# --------------------------------------------------------------------------- socket server
class ProxyDhcpServer:
    """udp/67 + udp/4011 on one thread; every packet goes through :func:`respond`.

    ``port`` 0 binds an ephemeral port (tests). ``client_port`` is where OFFERs go (68).
    ``on_answer(machine, spec, port)`` runs after each reply is sent, ``port`` being the local
    port the request arrived on (compare with :attr:`boot_server_port` to tell an ACK).
    ``rate_limit`` / ``rate_burst`` configure the per-MAC :class:`ClientRateLimiter` (0: off);
    packets it drops count as ``ignored`` and in :attr:`rate_limited`.
    """

    def __init__(
        self,
        *,
        decide: Decide,
        on_answer: OnAnswer | None = None,
        bind_address: str = "0.0.0.0",
        interface: str | None = None,
        server_port: int = 67,
        boot_server_port: int = 4011,
        client_port: int = 68,
        logger: logging.Logger | None = None,
        rate_limit: float = RATE_PER_SECOND,
        rate_burst: int = RATE_BURST,
    ) -> None:
        self._decide = decide
        self._on_answer = on_answer
        self._bind_address = bind_address
        self._interface = interface
        self._ports = {Role.SERVER: server_port, Role.BOOT_SERVER: boot_server_port}
        self._client_port = client_port
        self._log = logger or log
        self._socks: dict[Role, socket.socket] = {}
        self._loop = SelectorLoop("bootbox-proxydhcp", self._drain)
        self._fallback_ip = ZERO
        self._stats = dict.fromkeys(("received", "answered", "ignored", "malformed", "errors"), 0)
        self._limiter = ClientRateLimiter(rate_limit, rate_burst)
        self._copies = AnsweredCopies()

    # ---------------------------------------------------------------- public surface
    @property
    def port(self) -> int:
        """The server port (67 unless configured; the bound number once started with 0)."""
        return self._ports[Role.SERVER]

    @property
    def boot_server_port(self) -> int:
        """The bound PXE boot-server port (4011 unless configured)."""
        return self._ports[Role.BOOT_SERVER]

    @property
    def alive(self) -> bool:
        """The packet loop is running (a health check: a dead loop answers nobody)."""
        return self._loop.alive

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters: received, answered, ignored (of which rate_limited),
        malformed, errors."""
        return {**self._stats, "rate_limited": self._limiter.dropped}

    @property
    def rate_limited(self) -> int:
        """Packets dropped by the per-MAC rate limit (also counted in ``ignored``)."""
        return self._limiter.dropped

    @property
    def duplicates(self) -> int:
        """Retransmitted copies left unanswered because they were queued before the answer to
        an identical request was sent (:class:`AnsweredCopies`; also counted in ``ignored``)."""
        return self._copies.skipped

    def start(self) -> None:
        """Bind both sockets and start the service thread.

        Raises ``OSError`` naming the port and the fix when a bind fails.
        """
        if self._loop.running:
            raise RuntimeError("ProxyDhcpServer is already started")
        try:
            for role in Role:
                self._socks[role] = self._open(role)
        except OSError:
            self._close_sockets()
            raise
        for role, sock in self._socks.items():  # the real numbers when 0 (ephemeral) was asked
            self._ports[role] = sock.getsockname()[1]
        self._fallback_ip = self._local_fallback_ip()
        self._loop.start(self._socks)
        self._log.info(
            "proxyDHCP listening on %s udp/%d and udp/%d%s",
            self._bind_address, self.port, self.boot_server_port,
            f" (interface {self._interface})" if self._interface else "",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the thread (it wakes at once) and close the sockets. Safe to call twice."""
        self._loop.stop()
        self._close_sockets()

    # ---------------------------------------------------------------- sockets
    def _open(self, role: Role) -> socket.socket:
        port = self._ports[role]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # when each copy arrived
            _grow_receive_buffer(sock)
            if self._interface:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._interface.encode())
            sock.bind((self._bind_address, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, _bind_advice(exc, self._bind_address, port, self._interface)) from exc
        sock.setblocking(False)
        return sock

    def _local_fallback_ip(self) -> str:
        """Our address when IP_PKTINFO says nothing useful: the bind address or the interface's."""
        if self._bind_address != ZERO:
            return self._bind_address
        if self._interface:
            return _interface_address(self._socks[Role.SERVER], self._interface) or ZERO
        return ZERO

    def _close_sockets(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    # ---------------------------------------------------------------- loop
    def _drain(self, sock: socket.socket, role: Role) -> None:
        """Handle every datagram already queued, so a storm empties the buffer quickly."""
        while not self._loop.stopping.is_set():
            try:
                data, ancdata, _, source = sock.recvmsg(
                    65535, socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP-induced ECONNREFUSED; the socket stays usable
                self._log.debug("proxyDHCP recv on udp/%d: %s", self._ports[role], exc)
                return
            try:
                self._handle(sock, role, data, ancdata, source)
            except Exception:  # the loop must survive anything one packet can cause
                self._stats["errors"] += 1
                self._log.exception("mac %s: unexpected error handling a packet from %s:%d",
                                    _peek_mac(data), *source)  # fmt: skip

    def _handle(
        self,
        sock: socket.socket,
        role: Role,
        data: bytes,
        ancdata: list[tuple[int, int, bytes]],
        source: tuple[str, int],
    ) -> None:
        self._stats["received"] += 1
        if not self._admit(data, source):
            return
        port = self._ports[role]
        if self._copies.redundant(port, data, _received_ns(ancdata)):
            self._stats["ignored"] += 1
            self._log.debug("mac %s: a copy from %s:%d queued before its answer left; not answered again",
                            _peek_mac(data), *source)  # fmt: skip
            return
        try:
            pkt = parse(data)
        except MalformedPacket as exc:
            self._stats["malformed"] += 1
            self._log.debug("mac %s: dropped malformed packet from %s:%d: %s", _peek_mac(data), *source, exc)
            return
        ifindex, local_ip = _pktinfo(ancdata)
        server_ip = local_ip if local_ip not in (None, ZERO) else self._fallback_ip
        outcome = respond(
            pkt, role=role, source=source, server_ip=server_ip, local_port=self._ports[role],
            decide=self._decide, client_port=self._client_port,
        )  # fmt: skip
        if isinstance(outcome, Ignored):
            self._stats["ignored"] += 1
            self._log.debug("mac %s: ignored packet from %s:%d: %s", outcome.mac, *source, outcome.reason)
        elif isinstance(outcome, Failed):
            self._stats["errors"] += 1
            self._log.error("mac %s: %s: %r", outcome.mac, outcome.reason, outcome.error,
                            exc_info=outcome.error)  # fmt: skip
        elif (sent_ns := self._send(sock, outcome, ifindex, server_ip)) is not None:
            self._copies.answered(port, data, sent_ns)

    def _admit(self, data: bytes, source: tuple[str, int]) -> bool:
        if self._limiter.check(data, source, self._log):
            return True
        self._stats["ignored"] += 1
        return False

    def _send(self, sock: socket.socket, reply: Reply, ifindex: int | None, server_ip: str) -> int | None:
        """Send from the socket the request came in on (so the source port is 67 or 4011),
        out of the interface it came in on: a broadcast would otherwise follow the default
        route on a multi-homed host. When it was sent (ns since the epoch), or None if it was not."""
        mac = reply.machine.mac
        ancillary = []
        if ifindex:
            pktinfo = _PKTINFO.pack(ifindex, socket.inet_aton(server_ip), bytes(4))
            ancillary = [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)]
        try:
            # Taken before the send: a copy the kernel received after this moment is answered
            # again (were it taken after, a thread descheduled between the two could count a new
            # request, e.g. the same client's next try, as queued before its answer).
            sent_ns = time.time_ns()
            sock.sendmsg([reply.data], ancillary, 0, reply.address)
        except OSError as exc:
            self._stats["errors"] += 1
            self._log.error("mac %s: cannot send the answer to %s:%d: %s", mac, *reply.address, exc)
            return None
        self._stats["answered"] += 1
        kind = "OFFER" if reply.packet.options[Opt.MESSAGE_TYPE][0] == MessageType.OFFER else "ACK"
        # With an on_answer callback the service records (and logs) the step: one line, not two.
        self._log.log(
            logging.DEBUG if self._on_answer is not None else logging.INFO,
            "mac %s: %s %s (next-server %s) to %s:%d%s", mac, kind, reply.spec.boot_file,
            reply.packet.siaddr, *reply.address, f" [{reply.spec.reason}]" if reply.spec.reason else "",
        )  # fmt: skip
        if self._on_answer is not None:
            try:
                self._on_answer(reply.machine, reply.spec, reply.machine.port)
            except Exception:
                self._log.exception("mac %s: on_answer callback failed", mac)
        return sent_ns


# --------------------------------------------------------------------------- socket helpers
def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for RCVBUF_BYTES; SO_RCVBUFFORCE (root/CAP_NET_ADMIN) may exceed net.core.rmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)


def _bind_advice(exc: OSError, address: str, port: int, interface: str | None) -> str:
    where = f"udp/{port} on {address}" + (f" (interface {interface})" if interface else "")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot bind {where}: {exc.strerror}. Ports below 1024 and SO_BINDTODEVICE need "
            "privileges: run bootbox as root or grant it CAP_NET_BIND_SERVICE (and CAP_NET_RAW "
            "for an interface binding), or choose other ports in the configuration"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot bind {where}: {exc.strerror}. Another DHCP server (dnsmasq, dhcpd) owns the "
            "port: stop it, bind bootbox to another address or interface, or choose other ports"
        )
    return f"cannot bind {where}: {exc.strerror}. Check the address/interface, or choose other ports"


def _pktinfo(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, str | None]:
    """(ifindex, local address) from IP_PKTINFO. For a broadcast, the header's destination is
    255.255.255.255, so the local address is ``ipi_spec_dst``, the interface's own address."""
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _PKTINFO.size:
            ifindex, spec_dst, _ = _PKTINFO.unpack_from(value)
            return ifindex, socket.inet_ntoa(spec_dst)
    return None, None


def _received_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time (SO_TIMESTAMPNS, ns since the epoch), or None."""
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            seconds, nanos = _TIMESPEC.unpack_from(value)
            return seconds * 1_000_000_000 + nanos
    return None


def _interface_address(sock: socket.socket, interface: str) -> str | None:
    """The IPv4 address of ``interface`` (SIOCGIFADDR), or None when it has none."""
    try:
        ifreq = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(ifreq[20:24])


def _peek_mac(data: bytes) -> str:
    """A best-effort chaddr for log lines about packets too broken to parse."""
    return data[28:34].hex(":") if len(data) >= 34 else "?"
