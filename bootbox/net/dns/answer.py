"""Answering one DNS message: the pure half of the DNS server (no sockets, no threads).

:func:`respond` turns the bytes of one received message into an outcome: a :class:`Reply` to
send, a :class:`Drop` (say nothing), or a :class:`Forward` (not ours: ask the upstreams, then
build the client's answer with :func:`forwarded_reply`). Names are looked up through one
callable, ``lookup(qname, qtype)``, over the zone the service builds (:mod:`bootbox.core.dnszone`).
dnslib supplies the wire format only (``DNSRecord.parse``, the RR classes, ``pack``).

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
* When every upstream failed the client gets **SERVFAIL**, never NXDOMAIN (see
  :mod:`bootbox.net.dns.upstream`); forwarded answers are relayed with the client's ID, AA
  cleared (we are not the authority) and RA set.
* UDP answers fit the client's EDNS payload size (RFC 6891 §6.2.3–6.2.5: below 512 counts as
  512; no OPT means 512, RFC 1035 §4.2.1), capped by ``max_udp_size`` (1,232 by default, the
  DNS Flag Day 2020 value that avoids IP fragmentation). A larger answer is replaced by the
  header and question with **TC** set (plus OPT), and the client retries over TCP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

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
    DNSRecord,
)

from bootbox.core.dnszone import Record, ZoneAnswer

__all__ = [
    "CLASSIC_UDP",
    "DEFAULT_MAX_UDP",
    "MAX_MESSAGE",
    "Drop",
    "Forward",
    "Lookup",
    "Outcome",
    "Reply",
    "forwarded_reply",
    "respond",
]

log = logging.getLogger("bootbox.dns")

Lookup = Callable[[str, str], ZoneAnswer | None]

HEADER_SIZE = 12
MAX_QUERY = 4096
"""Real queries are a few hundred bytes even with EDNS options and padding; anything larger is
dropped unparsed."""
CLASSIC_UDP = 512  # RFC 1035 §4.2.1
DEFAULT_MAX_UDP = 1232  # DNS Flag Day 2020
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: the TCP length prefix is two octets
MAX_LABEL, MAX_NAME = 63, 255  # RFC 1035 §2.3.4
CLASS_IN = 1
_QR, _AA, _RA = 0x8000, 0x0400, 0x0080
_OPCODE_SHIFT, _OPCODE_MASK = 11, 0xF
_EDNS_BADVERS = 16  # RFC 6891 §9
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


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
