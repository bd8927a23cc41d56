"""The DNS server over real loopback sockets, with dig as the client.

dig is the independent client for everything a resolver does (UDP, TCP, EDNS, retries on
truncation). Raw sockets are used only for what dig cannot send: malformed messages, other
opcodes, pipelined TCP, and a fake upstream that answers when the test says so.
"""

from __future__ import annotations

import errno
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterator

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from bootbox.core.dnszone import Zone, ZoneAnswer, build_zone
from bootbox.net.dns.answer import Drop, Forward, Reply, respond
from bootbox.net.dns.server import DnsServer, bind_advice
from bootbox.net.dns.upstream import parse_upstream

from tests.conftest import free_port
from tests.support.lab_fixtures import lab_unavailable

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig (dnsutils) is not installed")

LOOPBACK = "127.0.0.1"
HOSTS = [("esx01", "198.18.0.11", "2001:db8::11"), ("esx02", "198.18.0.12", None)]
STATIC = (["nas A 198.18.0.9", "www CNAME nas"] + [f"big A 198.18.1.{i}" for i in range(1, 101)]
          + [f"medium A 198.18.2.{i}" for i in range(1, 41)])  # fmt: skip
UPSTREAM_STATIC = ["www A 203.0.113.80"] + [f"big A 203.0.113.{i}" for i in range(1, 101)]


# --------------------------------------------------------------------------- dig
@dataclass
class Dig:
    """What dig printed, picked apart: status, header flags and the record sections."""

    status: str | None
    flags: set[str]
    answer: list[tuple[str, str, str]]  # (name, type, data)
    authority: list[tuple[str, str, str]]
    output: str

    def data(self, rtype: str) -> list[str]:
        return [d for _, t, d in self.answer if t == rtype]


def dig(port: int, *args: str, server: str = LOOPBACK) -> Dig:
    """Run dig once (no retries, no search list) and parse its default output."""
    command = [DIG or "dig", f"@{server}", "-p", str(port), "+time=5", "+tries=1", "+nosearch", *args]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    status = re.search(r"status: ([A-Z]+)", output)
    flags = re.search(r";; flags: ([a-z ]*);", output)
    return Dig(status.group(1) if status else None, set(flags.group(1).split()) if flags else set(),
               _section(output, "ANSWER"), _section(output, "AUTHORITY"), output)  # fmt: skip


def _section(output: str, name: str) -> list[tuple[str, str, str]]:
    records: list[tuple[str, str, str]] = []
    inside = False
    for line in output.splitlines():
        if line.startswith(";; "):
            inside = line.startswith(f";; {name} SECTION:")
            continue
        if inside and line.strip():
            owner, _ttl, _class, rtype, data = line.split(None, 4)
            records.append((owner, rtype, data.strip()))
        elif inside:
            inside = False
    return records


# --------------------------------------------------------------------------- fixtures
class ZoneHolder:
    """What the appliance does: ``lookup`` reads whatever zone is current at call time."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def lookup(self, qname: str, qtype: str) -> ZoneAnswer | None:
        return self.zone.answer(qname, qtype)


@pytest.fixture
def holder() -> ZoneHolder:
    return ZoneHolder(build_zone("lab.example", HOSTS, STATIC, nameserver_addresses=["198.18.0.1"]))


@pytest.fixture
def server(holder: ZoneHolder) -> Iterator[DnsServer]:
    with DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=0) as srv:
        yield srv


@pytest.fixture
def upstream() -> Iterator[DnsServer]:
    zone = build_zone("up.example", [("h", "203.0.113.5", None)], UPSTREAM_STATIC)
    with DnsServer(lookup=zone.answer, bind_address=LOOPBACK, port=0) as srv:
        yield srv


@pytest.fixture
def forwarder(holder: ZoneHolder, upstream: DnsServer) -> Iterator[DnsServer]:
    with DnsServer(lookup=holder.lookup, upstreams=[f"{LOOPBACK}:{upstream.port}"], bind_address=LOOPBACK,
                   port=0, timeout=2.0) as srv:  # fmt: skip
        yield srv


def ask(port: int, record: DNSRecord, *, tcp: bool = False) -> DNSRecord:
    """One query with dnslib's client, for replies dig hides (ext rcodes, raw flags)."""
    return DNSRecord.parse(record.send(LOOPBACK, port, tcp=tcp, timeout=5))


# --------------------------------------------------------------------------- the zone, with dig
def test_forward_a_and_aaaa_are_authoritative(server: DnsServer) -> None:
    a = dig(server.port, "esx01.lab.example", "A")
    aaaa = dig(server.port, "esx01.lab.example", "AAAA")
    assert (a.status, a.data("A")) == ("NOERROR", ["198.18.0.11"])
    assert (aaaa.status, aaaa.data("AAAA")) == ("NOERROR", ["2001:db8::11"])
    assert "aa" in a.flags and "ra" not in a.flags  # no upstreams: no recursion available
    assert server.stats["answered"] == 2


def test_reverse_lookups(server: DnsServer) -> None:
    v4 = dig(server.port, "-x", "198.18.0.11")
    v6 = dig(server.port, "-x", "2001:db8::11")
    assert (v4.status, v4.data("PTR")) == ("NOERROR", ["esx01.lab.example."])
    assert (v6.status, v6.data("PTR")) == ("NOERROR", ["esx01.lab.example."])
    assert dig(server.port, "-x", "198.18.0.1").data("PTR") == ["ns.lab.example."]


def test_nxdomain_carries_the_soa(server: DnsServer) -> None:
    for result in (dig(server.port, "nope.lab.example"), dig(server.port, "-x", "198.18.0.77")):
        assert result.status == "NXDOMAIN" and "aa" in result.flags
        assert [t for _, t, _ in result.authority] == ["SOA"]
        assert result.answer == []
    assert server.stats["nxdomain"] == 2


def test_nodata_is_noerror_without_answers(server: DnsServer) -> None:
    result = dig(server.port, "esx02.lab.example", "AAAA")
    assert (result.status, result.answer) == ("NOERROR", [])
    assert [(n, t) for n, t, _ in result.authority] == [("lab.example.", "SOA")]


def test_cname_is_followed_and_case_is_echoed(server: DnsServer) -> None:
    result = dig(server.port, "WWW.Lab.Example", "A")
    assert result.answer == [("WWW.Lab.Example.", "CNAME", "nas.lab.example."), ("nas.lab.example.", "A", "198.18.0.9")]


def test_records_follow_the_hosts_at_once(server: DnsServer, holder: ZoneHolder) -> None:
    assert dig(server.port, "esx01.lab.example").data("A") == ["198.18.0.11"]
    holder.zone = build_zone("lab.example", [("esx01", "198.18.0.21", None), ("esx07", "198.18.0.11", None)], [])
    assert dig(server.port, "esx01.lab.example").data("A") == ["198.18.0.21"]
    assert dig(server.port, "-x", "198.18.0.11").data("PTR") == ["esx07.lab.example."]
    assert dig(server.port, "esx02.lab.example").status == "NXDOMAIN"
    assert dig(server.port, "+tcp", "-x", "198.18.0.21").data("PTR") == ["esx01.lab.example."]


def test_other_names_are_refused_without_upstreams(server: DnsServer) -> None:
    result = dig(server.port, "example.org")
    assert result.status == "REFUSED" and not {"aa", "ra"} & result.flags
    assert server.stats["refused"] == 1


def test_other_classes_and_zone_transfers_are_refused(server: DnsServer) -> None:
    assert dig(server.port, "version.bind", "CH", "TXT").status == "REFUSED"
    axfr = ask(server.port, DNSRecord.question("lab.example", "AXFR"), tcp=True)
    assert axfr.header.rcode == RCODE.REFUSED and not axfr.rr


def test_tcp(server: DnsServer) -> None:
    result = dig(server.port, "+tcp", "esx01.lab.example")
    assert result.data("A") == ["198.18.0.11"]
    assert "(TCP)" in result.output


def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(server: DnsServer) -> None:
    cut = dig(server.port, "+ignore", "big.lab.example")
    assert "tc" in cut.flags and cut.answer == [] and cut.status == "NOERROR"
    full = dig(server.port, "+tcp", "big.lab.example")
    assert "tc" not in full.flags and len(full.data("A")) == 100
    retried = dig(server.port, "big.lab.example")  # dig retries over TCP by itself on TC
    assert "Truncated, retrying in TCP mode" in retried.output and len(retried.data("A")) == 100
    assert server.stats["truncated"] == 2


@pytest.mark.parametrize(("args", "truncated"), [
    (("+bufsize=512",), True),
    (("+bufsize=100",), True),  # below 512 counts as 512 (RFC 6891 §6.2.5)
    (("+noedns",), True),  # no OPT: 512 (RFC 1035 §4.2.1)
    (("+bufsize=1232",), False),
    (("+bufsize=4096",), False),
])  # fmt: skip
def test_the_clients_edns_payload_size_is_honoured(server: DnsServer, args: tuple[str, ...], truncated: bool) -> None:
    result = dig(server.port, "+ignore", *args, "medium.lab.example")  # 40 A records: about 690 bytes
    assert ("tc" in result.flags) is truncated
    assert len(result.data("A")) == (0 if truncated else 40)


def test_max_udp_size_caps_what_the_client_offers(holder: ZoneHolder) -> None:
    with DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=0, max_udp_size=512) as srv:
        result = dig(srv.port, "+ignore", "+bufsize=4096", "medium.lab.example")
        assert "tc" in result.flags
        assert "udp: 512" in result.output  # and says so in its OPT


def test_edns_version_other_than_0_gets_badvers(server: DnsServer) -> None:
    result = dig(server.port, "+edns=1", "esx01.lab.example")
    assert "BADVERS, retrying with EDNS version 0" in result.output
    assert result.data("A") == ["198.18.0.11"]
    query = DNSRecord.question("esx01.lab.example")
    query.add_ar(EDNS0(version=1, udp_len=1232))
    reply = ask(server.port, query)
    (opt,) = reply.ar
    assert ((opt.ttl >> 24) << 4 | reply.header.rcode, reply.rr) == (16, [])
    assert server.stats["badvers"] == 2


def test_two_opt_records_get_formerr(server: DnsServer) -> None:
    query = DNSRecord.question("esx01.lab.example")
    query.add_ar(EDNS0(udp_len=1232))
    query.add_ar(EDNS0(udp_len=1232))
    assert ask(server.port, query).header.rcode == RCODE.FORMERR
    assert server.stats["formerr"] == 1


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
def test_other_opcodes_get_notimp(server: DnsServer, opcode: int) -> None:
    query = DNSRecord.question("lab.example", "SOA")
    query.header.opcode = opcode
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query.pack(), (LOOPBACK, server.port))
        data = sock.recv(512)
    flags = struct.unpack("!H", data[2:4])[0]
    assert data[:2] == query.pack()[:2]
    assert (flags >> 15, (flags >> 11) & 0xF, flags & 0xF) == (1, opcode, RCODE.NOTIMP)
    assert server.stats["notimp"] == 1


def test_a_failing_lookup_is_servfail_and_the_server_carries_on(holder: ZoneHolder) -> None:
    broken = {"on": True}

    def lookup(qname: str, qtype: str) -> ZoneAnswer | None:
        if broken["on"]:
            raise RuntimeError("zone exploded")
        return holder.lookup(qname, qtype)

    with DnsServer(lookup=lookup, bind_address=LOOPBACK, port=0) as srv:
        assert dig(srv.port, "esx01.lab.example").status == "SERVFAIL"
        broken["on"] = False
        assert dig(srv.port, "esx01.lab.example").data("A") == ["198.18.0.11"]
        assert (srv.stats["servfail"], srv.stats["errors"]) == (1, 0)


def test_unencodable_records_are_servfail(holder: ZoneHolder) -> None:
    def lookup(qname: str, qtype: str) -> ZoneAnswer | None:
        return ZoneAnswer("NOERROR", (("x.lab.example", "HINFO", 60, ("a",)),), ())  # type: ignore[arg-type]

    with DnsServer(lookup=lookup, bind_address=LOOPBACK, port=0) as srv:
        assert dig(srv.port, "x.lab.example").status == "SERVFAIL"


# --------------------------------------------------------------------------- forwarding
def test_forwarding_to_an_upstream(forwarder: DnsServer, upstream: DnsServer) -> None:
    result = dig(forwarder.port, "h.up.example")
    assert (result.status, result.data("A")) == ("NOERROR", ["203.0.113.5"])
    assert "ra" in result.flags and "aa" not in result.flags  # relayed, not ours
    missing = dig(forwarder.port, "nope.up.example")
    assert missing.status == "NXDOMAIN" and [t for _, t, _ in missing.authority] == ["SOA"]
    own = dig(forwarder.port, "esx01.lab.example")
    assert {"aa", "ra"} <= own.flags and own.data("A") == ["198.18.0.11"]
    assert (forwarder.stats["forwarded"], forwarder.stats["answered"]) == (2, 1)
    assert upstream.stats["answered"] == 2


def test_forwarding_over_tcp_and_truncation(forwarder: DnsServer, upstream: DnsServer) -> None:
    cut = dig(forwarder.port, "+ignore", "big.up.example")
    assert "tc" in cut.flags and cut.answer == []
    full = dig(forwarder.port, "+tcp", "big.up.example")  # needs our own TCP retry upstream
    assert len(full.data("A")) == 100 and "tc" not in full.flags
    assert dig(forwarder.port, "+tcp", "www.up.example").data("A") == ["203.0.113.80"]


def test_upstream_down_is_servfail(holder: ZoneHolder) -> None:
    with DnsServer(lookup=holder.lookup, upstreams=[f"{LOOPBACK}:{free_port()}"], bind_address=LOOPBACK,
                   port=0, timeout=2.0) as srv:  # fmt: skip
        result = dig(srv.port, "example.org")
        assert result.status == "SERVFAIL" and "ra" in result.flags
        assert dig(srv.port, "esx01.lab.example").data("A") == ["198.18.0.11"]  # the zone is unaffected
        assert srv.stats["servfail"] == 1


def test_silent_upstream_times_out_to_servfail(holder: ZoneHolder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((LOOPBACK, 0))
        with DnsServer(lookup=holder.lookup, upstreams=[f"{LOOPBACK}:{hole.getsockname()[1]}"],
                       bind_address=LOOPBACK, port=0, timeout=0.3) as srv:  # fmt: skip
            assert dig(srv.port, "example.org").status == "SERVFAIL"


def test_upstreams_are_tried_in_order(holder: ZoneHolder, upstream: DnsServer) -> None:
    refusing = build_zone("other.example", [], [])  # an authoritative-only server: REFUSED for up.example
    with DnsServer(lookup=refusing.answer, bind_address=LOOPBACK, port=0) as refuser:
        upstreams = [f"{LOOPBACK}:{free_port()}", f"{LOOPBACK}:{refuser.port}", f"{LOOPBACK}:{upstream.port}"]
        with DnsServer(lookup=holder.lookup, upstreams=upstreams, bind_address=LOOPBACK, port=0, timeout=1.0) as srv:
            assert dig(srv.port, "h.up.example").data("A") == ["203.0.113.5"]
        assert refuser.stats["refused"] == 1


class FakeUpstream:
    """A UDP socket the test answers by hand: receives a forwarded query, replies when told."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(5)
        self.address = f"{LOOPBACK}:{self.sock.getsockname()[1]}"

    def receive(self) -> tuple[DNSRecord, tuple[str, int]]:
        data, peer = self.sock.recvfrom(4096)
        return DNSRecord.parse(data), peer

    def answer(self, query: DNSRecord, peer: tuple[str, int], address: str, *, id_delta: int = 0,
               qname: str | None = None) -> None:  # fmt: skip
        reply = DNSRecord.question(qname or str(query.q.qname)).reply()
        reply.header.id = (query.header.id + id_delta) & 0xFFFF
        reply.add_answer(*RR.fromZone(f"{reply.q.qname} 60 A {address}"))
        self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def test_forwarded_answers_must_match_id_and_question(holder: ZoneHolder, fake_upstream: FakeUpstream) -> None:
    with DnsServer(lookup=holder.lookup, upstreams=[fake_upstream.address], bind_address=LOOPBACK, port=0,
                   timeout=5.0) as srv:  # fmt: skip
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.settimeout(5)
            query = DNSRecord.question("example.org")
            client.sendto(query.pack(), (LOOPBACK, srv.port))
            forwarded, peer = fake_upstream.receive()
            fake_upstream.answer(forwarded, peer, "192.0.2.1", id_delta=1)  # spoofed: wrong ID
            fake_upstream.answer(forwarded, peer, "192.0.2.2", qname="evil.example")  # wrong question
            fake_upstream.answer(forwarded, peer, "192.0.2.3")
            reply = DNSRecord.parse(client.recv(4096))
        finally:
            client.close()
    assert reply.header.id == query.header.id
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.3"]


def test_too_many_forwards_in_flight_get_servfail_at_once(holder: ZoneHolder, fake_upstream: FakeUpstream) -> None:
    with DnsServer(lookup=holder.lookup, upstreams=[fake_upstream.address], bind_address=LOOPBACK, port=0,
                   timeout=5.0, max_pending_forwards=1) as srv:  # fmt: skip
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.settimeout(5)
            first, second = DNSRecord.question("one.example"), DNSRecord.question("two.example")
            client.sendto(first.pack(), (LOOPBACK, srv.port))
            forwarded, peer = fake_upstream.receive()  # the first is now in flight
            client.sendto(second.pack(), (LOOPBACK, srv.port))
            refused = DNSRecord.parse(client.recv(4096))
            fake_upstream.answer(forwarded, peer, "192.0.2.1")
            answered = DNSRecord.parse(client.recv(4096))
        finally:
            client.close()
    assert (refused.header.id, refused.header.rcode) == (second.header.id, RCODE.SERVFAIL)
    assert (answered.header.id, answered.header.rcode) == (first.header.id, RCODE.NOERROR)


# --------------------------------------------------------------------------- malformed input
def _query_bytes(name: str = "esx01.lab.example", qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


def _with_header(data: bytes, **fields: int) -> bytes:
    ident, flags, qd, an, ns, ar = struct.unpack("!6H", data[:12])
    values = {"id": ident, "flags": flags, "qd": qd, "an": an, "ns": ns, "ar": ar, **fields}
    return struct.pack("!6H", *values.values()) + data[12:]


MALFORMED = {
    "empty": b"",
    "one byte": b"\x00",
    "short header": bytes(11),
    "garbage": random.Random(5).randbytes(100),
    "qdcount 0": _with_header(_query_bytes(), qd=0)[:12],
    "qdcount 2": _with_header(_query_bytes() + _query_bytes()[12:], qd=2),
    "cut mid-name": _query_bytes()[:20],
    "a response": _with_header(_query_bytes(), flags=0x8180),
    "too many answers claimed": _with_header(_query_bytes(), an=65535),
    "compression loop": bytes(12)[:4] + struct.pack("!4H", 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
    "label past the end": _with_header(bytes(12), qd=1) + b"\x3fabc",
    "label of 64 octets": _with_header(bytes(12), qd=1) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name of 257 octets": _with_header(bytes(12), qd=1) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
    "huge": _query_bytes() + bytes(5000),
}


def test_malformed_udp_is_dropped_and_counted(server: DnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for packet in MALFORMED.values():
            sock.sendto(packet, (LOOPBACK, server.port))
        good = DNSRecord.question("esx01.lab.example")
        sock.sendto(good.pack(), (LOOPBACK, server.port))
        first_reply = DNSRecord.parse(sock.recv(4096))  # nothing came back for the junk before it
    assert first_reply.header.id == good.header.id
    assert dig(server.port, "esx01.lab.example").data("A") == ["198.18.0.11"]
    assert server.stats["malformed"] == len(MALFORMED)
    assert server.stats["errors"] == 0


@pytest.mark.parametrize("name", [n for n in MALFORMED if n != "huge"])
def test_malformed_tcp_closes_the_connection(server: DnsServer, name: str) -> None:
    packet = MALFORMED[name]
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as conn:
        conn.sendall(len(packet).to_bytes(2, "big") + packet)
        assert conn.recv(4096) == b""
    assert dig(server.port, "+tcp", "esx01.lab.example").data("A") == ["198.18.0.11"]
    assert server.stats["malformed"] == 1


def test_huge_tcp_message_closes_the_connection(server: DnsServer) -> None:
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as conn:
        conn.sendall(b"\xff\xff" + bytes(65535))
        assert conn.recv(4096) == b""
    assert server.stats["malformed"] == 1


def _read_tcp_replies(conn: socket.socket, count: int) -> list[DNSRecord]:
    buffer = b""
    replies: list[DNSRecord] = []
    while len(replies) < count:
        chunk = conn.recv(65535)
        assert chunk, "the server closed the connection"
        buffer += chunk
        while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
            size = int.from_bytes(buffer[:2], "big")
            replies.append(DNSRecord.parse(buffer[2 : 2 + size]))
            buffer = buffer[2 + size :]
    return replies


def test_tcp_pipelined_and_split_queries_on_one_connection(server: DnsServer) -> None:
    queries = [DNSRecord.question(n) for n in ("esx01.lab.example", "esx02.lab.example", "nas.lab.example")]
    framed = [len(q.pack()).to_bytes(2, "big") + q.pack() for q in queries]
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as conn:
        conn.sendall(framed[0] + framed[1])  # two in one segment
        first_two = _read_tcp_replies(conn, 2)
        for byte in framed[2]:  # one sent a byte at a time
            conn.sendall(bytes([byte]))
        (last,) = _read_tcp_replies(conn, 1)
    answers = {r.header.id: [str(rr.rdata) for rr in r.rr] for r in [*first_two, last]}
    assert answers == {queries[0].header.id: ["198.18.0.11"], queries[1].header.id: ["198.18.0.12"],
                       queries[2].header.id: ["198.18.0.9"]}  # fmt: skip


def test_idle_tcp_connections_are_closed(holder: ZoneHolder) -> None:
    with DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=0, tcp_idle_timeout=0.2) as srv:
        with socket.create_connection((LOOPBACK, srv.port), timeout=10) as conn:
            assert conn.recv(4096) == b""


def test_connections_beyond_the_limit_are_closed(holder: ZoneHolder) -> None:
    with DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=0, max_connections=1) as srv:
        with socket.create_connection((LOOPBACK, srv.port), timeout=5) as first:
            query = DNSRecord.question("esx01.lab.example").pack()
            first.sendall(len(query).to_bytes(2, "big") + query)
            assert _read_tcp_replies(first, 1)[0].rr  # accepted and registered
            with socket.create_connection((LOOPBACK, srv.port), timeout=5) as second:
                assert second.recv(4096) == b""
            first.sendall(len(query).to_bytes(2, "big") + query)
            assert _read_tcp_replies(first, 1)[0].rr


# --------------------------------------------------------------------------- lifecycle
def test_port_in_use_names_the_port_and_the_fix(holder: ZoneHolder) -> None:
    for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        with socket.socket(socket.AF_INET, kind) as taken:
            taken.bind((LOOPBACK, 0))
            if kind == socket.SOCK_STREAM:
                taken.listen()
            port = taken.getsockname()[1]
            srv = DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=port)
            with pytest.raises(OSError) as caught:
                srv.start()
            srv.stop()
        assert caught.value.errno == errno.EADDRINUSE
        assert f"{proto}/{port}" in str(caught.value) and "dns.port" in str(caught.value)


def test_privileged_port_advice() -> None:
    message = bind_advice(PermissionError(errno.EACCES, "Permission denied"), "udp", "0.0.0.0", 53)
    assert "udp/53" in message and "CAP_NET_BIND_SERVICE" in message and "root" in message and "dns.port" in message


def test_stop_ends_the_thread_and_frees_the_port(holder: ZoneHolder) -> None:
    srv = DnsServer(lookup=holder.lookup, bind_address=LOOPBACK, port=0)
    srv.start()
    port = srv.port
    assert dig(port, "esx01.lab.example").status == "NOERROR"
    with socket.create_connection((LOOPBACK, port), timeout=5):  # an open TCP client does not hold it up
        srv.stop()
    srv.stop()
    assert not [t for t in threading.enumerate() if t.name == "bootbox-dns"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((LOOPBACK, port))
        tcp.bind((LOOPBACK, port))


def test_ipv6_loopback(holder: ZoneHolder) -> None:
    if not socket.has_ipv6:
        lab_unavailable("no IPv6")
    with DnsServer(lookup=holder.lookup, bind_address="::1", port=0) as srv:
        assert dig(srv.port, "esx01.lab.example", "AAAA", server="::1").data("AAAA") == ["2001:db8::11"]
        assert dig(srv.port, "+tcp", "esx01.lab.example", server="::1").data("A") == ["198.18.0.11"]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"timeout": 0}, "timeout"),
    ({"max_udp_size": 100}, "max_udp_size"),
    ({"upstreams": ["dns.google"]}, "not an IP address"),
    ({"bind_address": "localhost"}, "does not appear to be an IPv4 or IPv6 address"),
])  # fmt: skip
def test_bad_arguments_are_refused(holder: ZoneHolder, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        DnsServer(lookup=holder.lookup, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("198.18.0.1", ("198.18.0.1", 53)),
    (" 198.18.0.1:5353 ", ("198.18.0.1", 5353)),
    ("2001:db8::1", ("2001:db8::1", 53)),
    ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ("[2001:db8::1]", ("2001:db8::1", 53)),
])  # fmt: skip
def test_parse_upstream(text: str, expected: tuple[str, int]) -> None:
    assert parse_upstream(text) == expected


@pytest.mark.parametrize("text", ["", "dns.google", "198.18.0.1:0", "198.18.0.1:70000", "198.18.0.1:x",
                                  "[2001:db8::1]x", "[2001:db8::1]:", "1.2.3.4.5"])
def test_parse_upstream_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="upstream"):
        parse_upstream(text)


# --------------------------------------------------------------------------- the handler, fuzzed
FUZZ_ZONE = build_zone("lab.example", HOSTS, STATIC)


def _check_outcome(data: bytes, outcome: object) -> None:
    """Whatever came in, what comes out is a drop, a forward of a parsed query, or a reply
    that parses and answers the same ID."""
    assert isinstance(outcome, (Drop, Forward, Reply))
    if isinstance(outcome, Reply):
        reply = DNSRecord.parse(outcome.data)
        assert reply.header.qr == 1 and reply.header.id == int.from_bytes(data[:2], "big")
        assert len(outcome.data) <= 65535
    if isinstance(outcome, Forward):
        assert outcome.data == data and len(outcome.query.questions) == 1


@settings(max_examples=600, deadline=None)
@given(data=st.binary(max_size=700), forwarding=st.booleans(), tcp=st.booleans())
def test_respond_never_raises_on_arbitrary_bytes(data: bytes, forwarding: bool, tcp: bool) -> None:
    _check_outcome(data, respond(data, FUZZ_ZONE.answer, forwarding=forwarding, tcp=tcp))


QUERY_SEEDS = [
    _query_bytes(),
    _query_bytes("big.lab.example"),
    _query_bytes("nope.lab.example", "AAAA"),
    _query_bytes("11.0.18.198.in-addr.arpa", "PTR"),
    _query_bytes("www.lab.example", "ANY"),
    _query_bytes("example.org", "MX"),
]


@settings(max_examples=1500, deadline=None)
@given(seed=st.sampled_from(QUERY_SEEDS), edits=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)),
                                                           max_size=6),
       tail=st.binary(max_size=40), forwarding=st.booleans())  # fmt: skip
def test_respond_never_raises_on_mangled_queries(seed: bytes, edits: list[tuple[int, int]], tail: bytes,
                                                 forwarding: bool) -> None:  # fmt: skip
    data = bytearray(seed + tail)
    for position, value in edits:
        if position < len(data):
            data[position] = value
    _check_outcome(bytes(data), respond(bytes(data), FUZZ_ZONE.answer, forwarding=forwarding))


ZONE_LABELS = [b"esx01", b"ESX01", b"lab", b"example", b"big", b"www", b"11", b"0", b"18", b"198", b"in-addr", b"arpa",
               b"a.b", b"*", b""]  # fmt: skip


def _message(ident: int, flags: int, extra_counts: tuple[int, int, int], labels: list[bytes], qtype: int,
             qclass: int, opt: tuple[int, int, bytes] | None, tail: bytes) -> bytes:  # fmt: skip
    """A message shaped like a query, with every field free: label lengths up to 70 (past the
    63 limit, into the 0x40-0xBF "extended label" range), any type, class and OPT contents."""
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    body = name + struct.pack("!HH", qtype, qclass)
    if opt is not None:
        udp_len, ttl, rdata = opt
        body += b"\x00" + struct.pack("!HHIH", 41, udp_len, ttl, len(rdata)) + rdata
    qd, an, extra_ar = extra_counts
    header = struct.pack("!6H", ident, flags, qd, an, 0, extra_ar + (opt is not None))
    return header + body + tail


MESSAGES = st.builds(
    _message,
    st.integers(0, 0xFFFF),
    st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x0100, 0x0000, 0x0110, 0x2100, 0x7900])),
    st.tuples(st.sampled_from([1, 1, 1, 0, 2]), st.sampled_from([0, 0, 1]), st.sampled_from([0, 0, 1])),
    st.lists(st.one_of(st.sampled_from(ZONE_LABELS), st.binary(max_size=70),
                       st.integers(60, 70).map(lambda n: b"x" * n)), max_size=6),  # fmt: skip
    st.one_of(st.sampled_from([1, 28, 12, 5, 6, 2, 255, 252, 251, 41, 16, 15]), st.integers(0, 0xFFFF)),
    st.one_of(st.just(1), st.integers(0, 0xFFFF)),
    st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.binary(max_size=24)),
    st.binary(max_size=16),
)


@settings(max_examples=1500, deadline=None)
@given(data=MESSAGES, forwarding=st.booleans(), tcp=st.booleans())
def test_respond_never_raises_on_query_shaped_messages(data: bytes, forwarding: bool, tcp: bool) -> None:
    _check_outcome(data, respond(data, FUZZ_ZONE.answer, forwarding=forwarding, tcp=tcp))


def test_respond_answers_a_well_formed_query() -> None:
    outcome = respond(_query_bytes(), FUZZ_ZONE.answer, forwarding=False)
    assert isinstance(outcome, Reply) and outcome.counters == ("answered",)
    reply = DNSRecord.parse(outcome.data)
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.11"]
    assert (reply.header.aa, reply.header.ra, QTYPE[reply.q.qtype]) == (1, 0, "A")

