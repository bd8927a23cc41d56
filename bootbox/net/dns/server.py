"""The DNS server: the lab zone on udp/53 and tcp/53, every other name forwarded upstream.

dnslib supplies the wire format only (``DNSRecord.parse``, the RR classes, ``pack``). Its
``DNSServer`` is not used: it starts a thread per UDP packet with no limit, needs two instances
for UDP and TCP, and answers NXDOMAIN for a dead upstream (facts/libraries.md §4).

Design: one thread runs one ``selectors`` loop (epoll on Linux, so no ``select()`` descriptor
limit) over the UDP socket, the TCP listener, every TCP connection and a wake-up socket.
Authoritative answers come from ``lookup(qname, qtype)``, an in-memory call, and are sent
inline. Forwarding waits on the network for up to ``timeout`` per upstream, so it runs on a
small thread pool; results come back through a queue and the wake-up socket, so only the loop
thread touches client sockets and counters. ``lookup`` is the only thing the server asks about
names: pass a function over the current zone and answers follow it from the next query on.

Behaviour, and why:

* A message that is not a query we can read is **dropped** over UDP (answering garbage invites
  reflection and response loops) and **closes the connection** over TCP (the stream can no
  longer be trusted): shorter than a header, over 4,096 bytes, a response (QR set),
  unparsable, QDCOUNT other than 1, or a name over RFC 1035 §2.3.4's limits. Each is
  counted in ``malformed``.
* Opcodes other than QUERY get **NOTIMP** (RFC 1035 §4.1.1); two OPT records get **FORMERR**
  and an EDNS version other than 0 gets **BADVERS** (RFC 6891 §6.1.1, §6.1.3). Classes other
  than IN and zone transfers (AXFR/IXFR) get **REFUSED**.
* Authoritative answers set **AA**. **RA** is set only when upstreams are configured, because
  only then is recursion (by forwarding) available (RFC 1035 §4.1.1).
* Names outside the zone with **no upstream configured get REFUSED** (RA clear), as any
  authoritative-only server answers (RFC 1035 §4.1.1, "refuses ... for policy reasons"): a
  stub resolver moves on to its next server at once instead of treating us as broken.
* With upstreams, the query goes to each in order over UDP with a fresh random ID (RFC 5452
  §9.2), is retried over TCP when the answer is truncated (RFC 7766 §5), and an upstream that
  times out, is unreachable, or answers SERVFAIL/REFUSED/NOTIMP is skipped. When all fail the
  client gets **SERVFAIL**, never NXDOMAIN: SERVFAIL says "try later" while NXDOMAIN is a
  cacheable "this name does not exist" (RFC 2308 §5, §7.1) — the defect of dnslib's own
  ProxyResolver recorded in facts/libraries.md §4. Forwarded answers are relayed with the
  client's ID, AA cleared (we are not the authority) and RA set.
* UDP answers fit the client's EDNS payload size (RFC 6891 §6.2.3–6.2.5: below 512 counts as
  512; no OPT means 512, RFC 1035 §4.2.1), capped by ``max_udp_size`` (1,232 by default, the
  DNS Flag Day 2020 value that avoids IP fragmentation). A larger answer is replaced by the
  header and question with **TC** set (plus OPT), and the client retries over TCP.
* TCP (RFC 7766): each message has a two-byte length prefix (RFC 1035 §4.2.2); several queries
  may arrive on one connection, pipelined, and are answered as they complete (§6.2.1.1);
  connections idle for ``tcp_idle_timeout`` are closed (§6.2.3), and at most
  ``max_connections`` are open at once (§6.2.2).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import secrets
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    MX,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)
from dnslib.label import DNSBuffer

from bootbox.core.dnszone import Record, ZoneAnswer

__all__ = [
    "DnsServer",
    "Drop",
    "Forward",
    "Lookup",
    "Reply",
    "ask_upstreams",
    "bind_advice",
    "forwarded_reply",
    "parse_upstream",
    "respond",
]

log = logging.getLogger("bootbox.dns")

Lookup = Callable[[str, str], ZoneAnswer | None]
Upstream = tuple[str, int]

HEADER_SIZE = 12
MAX_QUERY = 4096
"""Real queries are a few hundred bytes even with EDNS options and padding; anything larger is
dropped unparsed."""
CLASSIC_UDP = 512  # RFC 1035 §4.2.1
DEFAULT_MAX_UDP = 1232  # DNS Flag Day 2020
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: the TCP length prefix is two octets
MAX_LABEL, MAX_NAME = 63, 255  # RFC 1035 §2.3.4
CLASS_IN = 1
_QR, _AA, _TC, _RA = 0x8000, 0x0400, 0x0200, 0x0080
_OPCODE_SHIFT, _OPCODE_MASK = 11, 0xF
_EDNS_BADVERS = 16  # RFC 6891 §9
_UPSTREAM_FAILURES = frozenset((RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP))
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_UDP_DRAIN = 64  # datagrams per readiness event, so a flood cannot starve TCP clients
_MAX_TCP_BACKLOG = 1 << 20  # unsent bytes per connection before we give up on a non-reader
_SWEEP_SECONDS = 0.25
_JOIN_SECONDS = 1.0
_STAT_KEYS = ("queries", "answered", "nxdomain", "forwarded", "servfail", "refused", "notimp", "formerr",
              "badvers", "truncated", "malformed", "errors")  # fmt: skip


# --------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class Reply:
    """Bytes to send back, and the counters they add to (``answered``, ``nxdomain``…)."""

    data: bytes
    counters: tuple[str, ...]


@dataclass(frozen=True)
class Drop:
    """Say nothing (UDP) or close the connection (TCP); counted as ``malformed``."""

    reason: str


@dataclass(frozen=True)
class Forward:
    """Not ours: ask the upstreams. ``limit`` is the most the client can take in one message."""

    query: DNSRecord = field(repr=False)
    data: bytes = field(repr=False)
    limit: int
    edns: bool
    max_udp_size: int


Outcome = Reply | Drop | Forward


# --------------------------------------------------------------------------- pure handling
def respond(
    data: bytes,
    lookup: Lookup,
    *,
    forwarding: bool,
    tcp: bool = False,
    max_udp_size: int = DEFAULT_MAX_UDP,
    logger: logging.Logger | None = None,
) -> Outcome:
    """Decide what to do with one received message; never raises for anything in ``data``.

    ``forwarding`` says whether upstreams are configured (RA, and Forward versus REFUSED for
    names that are not ours). Exceptions from ``lookup``, or records it returns that cannot be
    encoded, become SERVFAIL and are logged.
    """
    if not HEADER_SIZE <= len(data) <= MAX_QUERY:
        return Drop(f"{len(data)} bytes is not the size of a query")
    flags = int.from_bytes(data[2:4], "big")
    if flags & _QR:
        return Drop("a response, not a query")
    try:
        query = DNSRecord.parse(data)
    except Exception as exc:  # a third-party parser on hostile bytes: anything it raises means "garbage"
        return Drop(f"unparsable: {exc}")
    if (flags >> _OPCODE_SHIFT) & _OPCODE_MASK != 0:
        return Reply(_not_implemented(data, forwarding), ("notimp",))
    if len(query.questions) != 1:
        return Drop(f"QDCOUNT is {len(query.questions)}, not 1")
    reason = _bad_name(query.q.qname.label)
    if reason:
        return Drop(reason)
    return _answer_query(query, data, lookup, forwarding, tcp, max_udp_size, logger or log)


def _answer_query(
    query: DNSRecord, data: bytes, lookup: Lookup, forwarding: bool, tcp: bool, max_udp_size: int,
    logger: logging.Logger,
) -> Outcome:  # fmt: skip
    opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
    edns = bool(opts)
    if len(opts) > 1:
        return _error(query, RCODE.FORMERR, "formerr", forwarding, edns, max_udp_size)
    if edns and (opts[0].ttl >> 16) & 0xFF != 0:
        return _error(query, _EDNS_BADVERS, "badvers", forwarding, edns, max_udp_size)
    limit = MAX_MESSAGE if tcp else _udp_limit(opts[0].rclass if edns else None, max_udp_size)
    question = query.q
    qtype = QTYPE[question.qtype]
    if question.qclass != CLASS_IN or qtype in ("AXFR", "IXFR"):
        return _error(query, RCODE.REFUSED, "refused", forwarding, edns, max_udp_size)
    qname = _presentation(question.qname.label)
    try:
        found = lookup(qname, qtype)
        if found is not None:
            return _authoritative(query, found, forwarding, edns, limit, max_udp_size)
    except Exception:  # the zone is the lead's callable: its bugs cost one answer, not the server
        logger.exception("dns: lookup(%r, %r) failed", qname, qtype)
        return _error(query, RCODE.SERVFAIL, "servfail", forwarding, edns, max_udp_size)
    if forwarding:
        return Forward(query, data, limit, edns, max_udp_size)
    return _error(query, RCODE.REFUSED, "refused", forwarding, edns, max_udp_size)


def _bad_name(labels: Sequence[bytes]) -> str:
    """Why the question name breaks RFC 1035 §2.3.4 (labels of 63 octets, names of 255), or
    "". dnslib decodes such names but cannot encode them, and the reply echoes the question."""
    if any(len(label) > MAX_LABEL for label in labels):
        return f"a label longer than {MAX_LABEL} octets"
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        return f"a name longer than {MAX_NAME} octets"
    return ""


def _udp_limit(payload: int | None, max_udp_size: int) -> int:
    """RFC 6891 §6.2.5: no OPT or a value under 512 means 512; never above our own cap."""
    return min(max(CLASSIC_UDP, payload or CLASSIC_UDP), max_udp_size)


def _presentation(labels: Sequence[bytes]) -> str:
    """The name as text with every byte outside letters, digits, ``-`` and ``_`` escaped as
    ``\\DDD`` (RFC 1035 §5.1), so a dot or a space inside a label cannot pass for something
    else. dnslib's ``str()`` leaves dots inside labels unescaped, which is why this exists."""
    if not labels:
        return "."
    return ".".join("".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in label) for label in labels) + "."


def _skeleton(query: DNSRecord, rcode: int, *, aa: bool, ra: bool, edns: bool, max_udp_size: int) -> DNSRecord:
    """A response header and question for ``query``: RD and CD copied (RFC 1035 §4.1.1,
    RFC 6840 §5.9), AD never set (we validate nothing), and an OPT when the query had one
    (RFC 6891 §7), advertising what we accept and carrying the upper bits of ``rcode``."""
    header = DNSHeader(id=query.header.id, bitmap=0, qr=1, aa=int(aa), rd=query.header.rd, cd=query.header.cd,
                       ra=int(ra), rcode=rcode & 0xF)  # fmt: skip
    reply = DNSRecord(header, questions=list(query.questions[:1]))
    if edns:
        reply.add_ar(_opt(max_udp_size, rcode >> 4))
    return reply


def _opt(udp_len: int, ext_rcode: int = 0) -> RR:
    return EDNS0(udp_len=udp_len, ext_rcode=ext_rcode)


def _error(query: DNSRecord, rcode: int, counter: str, forwarding: bool, edns: bool, max_udp_size: int) -> Reply:
    reply = _skeleton(query, rcode, aa=False, ra=forwarding, edns=edns, max_udp_size=max_udp_size)
    return Reply(bytes(reply.pack()), (counter,))


def _not_implemented(data: bytes, forwarding: bool) -> bytes:
    """NOTIMP as a bare header (ID, opcode and RD echoed, no sections): what follows the header
    means something else under other opcodes (UPDATE's zone and prerequisite sections), so
    none of it is repeated back. Only messages that parse are answered at all, so random bytes
    that happen to carry an opcode are still dropped."""
    flags = int.from_bytes(data[2:4], "big")
    echoed = flags & ((_OPCODE_MASK << _OPCODE_SHIFT) | 0x0100)
    reply_flags = _QR | echoed | (_RA if forwarding else 0) | int(RCODE.NOTIMP)
    return data[:2] + reply_flags.to_bytes(2, "big") + bytes(8)


def _authoritative(
    query: DNSRecord, found: ZoneAnswer, forwarding: bool, edns: bool, limit: int, max_udp_size: int,
) -> Reply:  # fmt: skip
    rcode = getattr(RCODE, found.rcode)
    reply = _skeleton(query, rcode, aa=True, ra=forwarding, edns=edns, max_udp_size=max_udp_size)
    qname = query.q.qname
    for record in found.answer:
        reply.add_answer(_to_rr(record, qname))
    for record in found.authority:
        reply.add_auth(_to_rr(record, qname))
    wire, truncated = _fit(reply, limit)
    counters = ("answered", "nxdomain") if rcode == RCODE.NXDOMAIN else ("answered",)
    return Reply(wire, (*counters, "truncated") if truncated else counters)


def _to_rr(record: Record, qname: DNSLabel) -> RR:
    """One zone record as a dnslib RR; the owner keeps the query's spelling when it is the
    query name, because some resolvers compare case exactly (RFC 4343 §4.1, 0x20 encoding)."""
    owner = qname if DNSLabel(record.name) == qname else DNSLabel(record.name)
    encode = _RDATA.get(record.rtype)
    if encode is None:
        raise ValueError(f"record type {record.rtype!r} cannot be encoded")
    return RR(owner, getattr(QTYPE, record.rtype), ttl=record.ttl, rdata=encode(record.data))


_RDATA: dict[str, Callable[[tuple[str | int, ...]], object]] = {
    "A": lambda d: A(str(d[0])),
    "AAAA": lambda d: AAAA(str(d[0])),
    "CNAME": lambda d: CNAME(str(d[0])),
    "NS": lambda d: NS(str(d[0])),
    "PTR": lambda d: PTR(str(d[0])),
    "MX": lambda d: MX(str(d[1]), int(d[0])),
    "TXT": lambda d: TXT([str(chunk).encode() for chunk in d]),
    "SOA": lambda d: SOA(str(d[0]), str(d[1]), tuple(int(t) for t in d[2:7])),
}


def _fit(reply: DNSRecord, limit: int) -> tuple[bytes, bool]:
    """``reply`` packed, or, if over ``limit``, its header and question with TC set (plus the
    OPT): RFC 2181 §9 says a partial RRset must not be sent, and an empty truncated answer
    makes every resolver retry over TCP."""
    wire = bytes(reply.pack())
    if len(wire) <= limit:
        return wire, False
    header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap)
    header.tc = 1
    cut = DNSRecord(header, questions=list(reply.questions), ar=[rr for rr in reply.ar if rr.rtype == QTYPE.OPT])
    return bytes(cut.pack()), True


# --------------------------------------------------------------------------- forwarding
def parse_upstream(text: str) -> Upstream:
    """``"198.18.0.1"``, ``"198.18.0.1:5353"``, ``"2001:db8::1"`` or ``"[2001:db8::1]:5353"``
    as ``(address, port)``; ValueError otherwise. Addresses only: resolving a resolver's name
    would need the DNS this server may be the only source of."""
    raw = str(text).strip()
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"upstream {text!r}: expected [ADDRESS]:PORT")
        port_text = rest[1:] if rest else "53"
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    else:
        host, port_text = raw, "53"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"upstream {text!r}: {host!r} is not an IP address (names are not accepted)") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"upstream {text!r}: the port must be 1..65535")
    return str(address), int(port_text)


class _BadAnswer(Exception):
    """An upstream reply that does not answer our question (wrong ID or question, cut short)."""


def ask_upstreams(
    data: bytes, question: DNSQuestion, upstreams: Sequence[Upstream], timeout: float,
    logger: logging.Logger | None = None,
) -> bytes | None:  # fmt: skip
    """Send the query ``data`` to each upstream in order and return the first usable reply
    (with our random ID still in it), or None when none answered usefully."""
    logger = logger or log
    for upstream in upstreams:
        query_id = secrets.randbelow(0x10000)
        message = query_id.to_bytes(2, "big") + data[2:]
        try:
            raw = _exchange_udp(message, upstream, timeout, query_id, question)
            if int.from_bytes(raw[2:4], "big") & _TC:
                raw = _exchange_tcp(message, upstream, timeout, query_id, question)
        except (OSError, _BadAnswer) as exc:
            logger.debug("dns: upstream %s port %d failed for %s: %s", *upstream, question.qname, exc)
            continue
        if raw[3] & 0xF in _UPSTREAM_FAILURES:
            logger.debug("dns: upstream %s port %d answered %s for %s", *upstream, RCODE[raw[3] & 0xF], question.qname)
            continue
        return raw
    return None


def _exchange_udp(message: bytes, upstream: Upstream, timeout: float, query_id: int, question: DNSQuestion) -> bytes:
    """One UDP exchange on a connected socket (the kernel then drops datagrams from other
    sources); replies that do not match are ignored until the deadline (RFC 5452 §4)."""
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(upstream)
        sock.send(message)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout:g} s")
            sock.settimeout(remaining)
            raw = sock.recv(MAX_MESSAGE)
            if _matches(raw, query_id, question):
                return raw


def _exchange_tcp(message: bytes, upstream: Upstream, timeout: float, query_id: int, question: DNSQuestion) -> bytes:
    with socket.create_connection(upstream, timeout=timeout) as sock:
        sock.sendall(len(message).to_bytes(2, "big") + message)
        size = int.from_bytes(_recv_exactly(sock, 2), "big")
        raw = _recv_exactly(sock, size)
    if not _matches(raw, query_id, question):
        raise _BadAnswer("the TCP answer does not match the question")
    return raw


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise _BadAnswer("connection closed mid-answer")
        chunks += chunk
    return bytes(chunks)


def _matches(raw: bytes, query_id: int, question: DNSQuestion) -> bool:
    """Is ``raw`` a response to our question? Only the header and question are parsed, so an
    answer carrying record types dnslib cannot decode is still relayed intact."""
    try:
        buffer = DNSBuffer(raw)
        header = DNSHeader.parse(buffer)
        if header.id != query_id or not header.qr or header.q != 1:
            return False
        got = DNSQuestion.parse(buffer)
    except Exception:  # any parser failure on foreign bytes means "not our answer"
        return False
    same_name = [label.lower() for label in got.qname.label] == [label.lower() for label in question.qname.label]
    return same_name and got.qtype == question.qtype and got.qclass == question.qclass


def forwarded_reply(forward: Forward, raw: bytes | None) -> Reply:
    """The client's answer from an upstream's ``raw`` reply (None: every upstream failed)."""
    if raw is None:
        return _error(forward.query, RCODE.SERVFAIL, "servfail", True, forward.edns, forward.max_udp_size)
    flags = (int.from_bytes(raw[2:4], "big") & ~_AA) | _RA
    wire = forward.query.header.id.to_bytes(2, "big") + flags.to_bytes(2, "big") + raw[4:]
    if len(wire) <= forward.limit:
        return Reply(wire, ("forwarded",))
    cut = _skeleton(forward.query, raw[3] & 0xF, aa=False, ra=True, edns=forward.edns,
                    max_udp_size=forward.max_udp_size)  # fmt: skip
    cut.header.tc = 1
    return Reply(bytes(cut.pack()), ("forwarded", "truncated"))


# --------------------------------------------------------------------------- the server
@dataclass(eq=False)
class _Conn:
    """One TCP client: bytes in, bytes out, forwards in flight, when it goes idle."""

    sock: socket.socket
    peer: tuple[str, int]
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    pending: int = 0
    closed: bool = False


_Target = tuple[str, tuple[Any, ...]] | _Conn  # ("udp", address as recvfrom gave it) or a TCP connection


class DnsServer:
    """UDP and TCP on one thread; see the module docstring for the behaviour.

    :param lookup: ``(qname, qtype) -> ZoneAnswer | None``; ``qname`` is absolute with a
        trailing dot and ``\\DDD`` escapes, ``qtype`` a mnemonic. Called on the server
        thread for every query, so it must be quick (an in-memory zone).
    :param upstreams: resolvers to forward other names to, tried in order
        (:func:`parse_upstream` syntax). None: such names are REFUSED.
    :param timeout: seconds to wait for each upstream (per UDP attempt and TCP retry).
    :param max_udp_size: the largest UDP answer we send, whatever the client offers.
    :param tcp_idle_timeout: seconds before an idle TCP connection is closed.
    :param max_connections: concurrent TCP connections; more are closed on accept.
    :param max_pending_forwards: forwarded queries in flight; beyond it, SERVFAIL at once.
    """

    def __init__(
        self,
        *,
        lookup: Lookup,
        upstreams: Sequence[str] = (),
        bind_address: str = "0.0.0.0",
        port: int = 53,
        timeout: float = 2.0,
        logger: logging.Logger | None = None,
        max_udp_size: int = DEFAULT_MAX_UDP,
        tcp_idle_timeout: float = 10.0,
        max_connections: int = 128,
        max_pending_forwards: int = 256,
    ) -> None:
        if timeout <= 0 or tcp_idle_timeout <= 0 or max_connections < 1 or max_pending_forwards < 1:
            raise ValueError("timeout and tcp_idle_timeout must be > 0; max_connections and "
                             "max_pending_forwards at least 1")  # fmt: skip
        if not CLASSIC_UDP <= max_udp_size <= MAX_MESSAGE:
            raise ValueError(f"max_udp_size must be {CLASSIC_UDP}..{MAX_MESSAGE} (RFC 6891 §6.2.5)")
        self._family = socket.AF_INET6 if ipaddress.ip_address(bind_address).version == 6 else socket.AF_INET
        self._lookup = lookup
        self._upstreams = tuple(parse_upstream(text) for text in upstreams)
        self._bind_address = bind_address
        self._port = port
        self._timeout = timeout
        self._log = logger or log
        self._max_udp_size = max_udp_size
        self._idle = tcp_idle_timeout
        self._max_connections = max_connections
        self._max_pending = max_pending_forwards
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._conns: set[_Conn] = set()
        self._results: queue.SimpleQueue[tuple[_Target, Reply]] = queue.SimpleQueue()
        self._pending = 0
        self._selector: selectors.BaseSelector | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---------------------------------------------------------------- public surface
    @property
    def port(self) -> int:
        """The bound port once started (useful with ``port=0``), else the configured one."""
        return self._port

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start (a copy). ``queries`` counts every message received;
        ``answered`` the authoritative answers, of which ``nxdomain`` were NXDOMAIN;
        ``forwarded`` answers relayed from an upstream; ``servfail``, ``refused``, ``notimp``,
        ``formerr``, ``badvers`` the error answers sent; ``truncated`` UDP answers cut to a
        TC header; ``malformed`` messages dropped (or TCP connections closed) unanswered;
        ``errors`` bugs caught by the loop (logged)."""
        return dict(self._stats)

    def start(self) -> None:
        """Bind udp and tcp on the port and start the server thread.

        :raises OSError: a port cannot be bound; the message names it and says what to do.
        """
        if self._thread is not None:
            raise RuntimeError("DnsServer.start() called twice")
        self._udp, self._tcp = self._bind_both()
        self._port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a wake-up must never block a forwarding thread
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
        self._selector.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self._upstreams:
            workers = min(32, self._max_pending)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootbox-dns-fwd")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bootbox-dns", daemon=True)
        self._thread.start()
        upstreams = ", ".join(f"{h} port {p}" for h, p in self._upstreams) or "none (other names are refused)"
        self._log.info("DNS listening on %s udp/%d and tcp/%d; upstreams: %s",
                       self._bind_address, self._port, self._port, upstreams)  # fmt: skip

    def stop(self) -> None:
        """Stop the thread (it wakes at once), close every socket. Safe to call twice.

        Forwarding threads still waiting on an upstream are abandoned, not awaited: each ends
        within ``timeout`` and its result is discarded.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake()
            thread.join(timeout=_JOIN_SECONDS)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for conn in list(self._conns):
            self._close(conn)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake_r = self._wake_w = None

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- sockets
    def _bind_both(self) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one port number. With port 0, the ephemeral UDP port may be taken
        for TCP, so a few fresh pairs are tried."""
        attempts = 0
        while True:
            attempts += 1
            udp = self._open(socket.SOCK_DGRAM, self._port)
            try:
                return udp, self._open(socket.SOCK_STREAM, udp.getsockname()[1])
            except OSError:
                udp.close()
                if self._port != 0 or attempts >= 16:
                    raise

    def _open(self, kind: int, port: int) -> socket.socket:
        sock = socket.socket(self._family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT
            sock.bind((self._bind_address, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
        except OSError as exc:
            sock.close()
            proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
            raise OSError(exc.errno, bind_advice(exc, proto, self._bind_address, port)) from exc
        sock.setblocking(False)
        return sock

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:  # the buffer is full of wake-ups already, or we are closing
                pass

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        assert self._selector is not None
        while not self._stopping.is_set():
            for key, mask in self._selector.select(timeout=_SWEEP_SECONDS):
                if self._stopping.is_set():
                    break
                try:
                    if isinstance(key.data, _Conn):
                        self._on_conn(key.data, mask)
                    else:
                        key.data(key.fileobj, mask)
                except Exception:  # the loop must survive anything one event can cause
                    self._stats["errors"] += 1
                    self._log.exception("dns: unexpected error handling an event")
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            self._deliver_forwarded()
            self._close_idle()

    def _on_wake(self, sock: socket.socket, mask: int) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_udp(self, sock: socket.socket, mask: int) -> None:
        for _ in range(_UDP_DRAIN):
            try:
                data, peer = sock.recvfrom(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket; it stays usable
                self._log.debug("dns: udp recv: %s", exc)
                return
            self._dispatch(data, ("udp", peer))

    def _on_accept(self, sock: socket.socket, mask: int) -> None:
        while True:
            try:
                client, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest in the backlog for later
                self._log.warning("dns: tcp accept: %s", exc)
                return
            if len(self._conns) >= self._max_connections:
                self._log.debug("dns: tcp connection from %s refused: %d already open", peer[0], len(self._conns))
                client.close()
                continue
            client.setblocking(False)
            conn = _Conn(client, peer[:2], time.monotonic() + self._idle)
            self._conns.add(conn)
            assert self._selector is not None
            self._selector.register(client, selectors.EVENT_READ, conn)

    def _on_conn(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and not conn.closed:
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(MAX_MESSAGE + 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        conn.inbox += chunk
        conn.deadline = time.monotonic() + self._idle
        while len(conn.inbox) >= 2 and not conn.closed:
            size = int.from_bytes(conn.inbox[:2], "big")
            if len(conn.inbox) < 2 + size:
                return
            message = bytes(conn.inbox[2 : 2 + size])
            del conn.inbox[: 2 + size]
            self._dispatch(message, conn)

    # ---------------------------------------------------------------- queries
    def _dispatch(self, data: bytes, target: _Target) -> None:
        self._stats["queries"] += 1
        tcp = isinstance(target, _Conn)
        outcome = respond(data, self._lookup, forwarding=bool(self._upstreams), tcp=tcp,
                          max_udp_size=self._max_udp_size, logger=self._log)  # fmt: skip
        if isinstance(outcome, Drop):
            self._stats["malformed"] += 1
            self._log.debug("dns: dropped a message from %s: %s", _peer(target), outcome.reason)
            if isinstance(target, _Conn):
                self._close(target)
        elif isinstance(outcome, Reply):
            self._send(target, outcome)
        else:
            self._forward(outcome, target)

    def _forward(self, forward: Forward, target: _Target) -> None:
        if self._pending >= self._max_pending:
            self._log.warning("dns: %d forwarded queries in flight; answering SERVFAIL", self._pending)
            self._send(target, forwarded_reply(forward, None))
            return
        assert self._pool is not None  # Forward only happens with upstreams, which start the pool
        self._pending += 1
        if isinstance(target, _Conn):
            target.pending += 1
        self._pool.submit(self._forward_job, forward, target)

    def _forward_job(self, forward: Forward, target: _Target) -> None:
        """Runs on a pool thread: ask the upstreams, hand the reply to the loop."""
        try:
            raw = ask_upstreams(forward.data, forward.query.q, self._upstreams, self._timeout, self._log)
            reply = forwarded_reply(forward, raw)
        except Exception:  # a bug must still produce an answer and release the slot
            self._log.exception("dns: forwarding failed")
            reply = forwarded_reply(forward, None)
        self._results.put((target, reply))
        self._wake()

    def _deliver_forwarded(self) -> None:
        while True:
            try:
                target, reply = self._results.get_nowait()
            except queue.Empty:
                return
            self._pending -= 1
            if isinstance(target, _Conn):
                target.pending -= 1
                if target.closed:
                    continue
            self._send(target, reply)

    def _send(self, target: _Target, reply: Reply) -> None:
        for counter in reply.counters:
            self._stats[counter] += 1
        if isinstance(target, _Conn):
            self._queue_tcp(target, reply.data)
            return
        try:
            assert self._udp is not None
            self._udp.sendto(reply.data, target[1])
        except OSError as exc:  # a full buffer or an unreachable client: UDP may lose it
            self._log.debug("dns: udp send to %s: %s", target[1][0], exc)

    # ---------------------------------------------------------------- tcp output
    def _queue_tcp(self, conn: _Conn, data: bytes) -> None:
        conn.outbox += len(data).to_bytes(2, "big") + data
        conn.deadline = time.monotonic() + self._idle
        if len(conn.outbox) > _MAX_TCP_BACKLOG:
            self._log.debug("dns: tcp client %s does not read its answers; closing", conn.peer[0])
            self._close(conn)
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
        assert self._selector is not None
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events, conn)

    def _close_idle(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if not c.pending and not c.outbox and c.deadline <= now]:
            self._log.debug("dns: tcp client %s idle; closing", conn.peer[0])
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if self._selector is not None:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()


def _peer(target: _Target) -> str:
    return target.peer[0] if isinstance(target, _Conn) else target[1][0]


def bind_advice(exc: OSError, proto: str, address: str, port: int) -> str:
    """What failed and what to do about it, for the OSError ``start()`` raises."""
    where = f"cannot bind {proto}/{port} on {address}: {exc.strerror}."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where} Ports below 1024 need privileges: run bootbox as root or grant it "
                "CAP_NET_BIND_SERVICE, or set dns.port to a port above 1023")  # fmt: skip
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} Another DNS server owns the port (systemd-resolved's stub listener, "
                "dnsmasq, bind9): stop it or disable its listener, set dns.bind_address to one "
                "address, or set dns.port to another port")  # fmt: skip
    return f"{where} Check dns.bind_address, or set dns.port to another port"
