"""Forwarding: asking the upstream resolvers for names outside the zone.

The query goes to each upstream in order over UDP with a fresh random ID (RFC 5452 §9.2), is
retried over TCP when the answer is truncated (RFC 7766 §5), and an upstream that times out, is
unreachable, or answers SERVFAIL/REFUSED/NOTIMP is skipped. :func:`ask_upstreams` returns None
when all fail, and the client then gets **SERVFAIL** (:func:`bootbox.net.dns.answer.forwarded_reply`),
never NXDOMAIN: SERVFAIL says "try later" while NXDOMAIN is a cacheable "this name does not
exist" (RFC 2308 §5, §7.1) — the defect of dnslib's own ProxyResolver recorded in
facts/libraries.md §4.

Blocking calls, each bounded by ``timeout``: the server runs them on its forwarding threads.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import time
from typing import Sequence

from dnslib import RCODE, DNSHeader, DNSQuestion
from dnslib.label import DNSBuffer

from bootbox.net.dns.answer import MAX_MESSAGE

__all__ = ["Upstream", "ask_upstreams", "parse_upstream"]

log = logging.getLogger("bootbox.dns")

Upstream = tuple[str, int]

_TC = 0x0200  # RFC 1035 §4.1.1: the answer was truncated
_UPSTREAM_FAILURES = frozenset((RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP))


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
