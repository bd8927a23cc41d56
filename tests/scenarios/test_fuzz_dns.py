"""Fuzzing the DNS server live: garbage over UDP and TCP at once, then a real question.

``tests/net/test_dns.py`` already fuzzes the pure responder (``answer.respond``) hard; what it cannot show
is the server loop itself under a mixed stream: datagrams and TCP connections carrying partial
length prefixes, several messages, or junk, interleaved. Afterwards the loop must be alive,
have logged no error, count no internal error, and answer a question from the zone. The pure
target for the long run is :func:`tests.support.fuzz_targets.dns_target`.
"""

from __future__ import annotations

import logging
import socket
import struct

from dnslib import QTYPE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from bootbox.net.dns.server import DnsServer
from tests.support.fuzz_targets import ErrorLog, dns_lookup, dns_target, fuzz_settings

SEEDS = [DNSRecord.question(name, kind).pack() for name, kind in
         (("esx01.lab.example", "A"), ("www.lab.example", "A"), ("11.0.18.198.in-addr.arpa", "PTR"),
          ("lab.example", "SOA"), ("esx01.lab.example", "ANY"), ("example.org", "AAAA"))]  # fmt: skip

KNOWN_HARD = [  # inputs that break naive DNS parsers
    b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a name that points at itself
    b"\x12\x34" + b"\x00" * 10,  # QDCOUNT 0
    SEEDS[0][:-1],  # question cut short
]


def _mangle(seed: bytes, edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    data = bytearray(seed)
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    return bytes(data[:cut]) + tail


def test_known_hard_inputs() -> None:
    for data in KNOWN_HARD:
        dns_target(data)


@fuzz_settings(300)
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=5),
       cut=st.integers(0, 80), tail=st.binary(max_size=20))  # fmt: skip
def test_pure_target_on_mangled_questions(seed: bytes, edits: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    dns_target(_mangle(seed, edits, cut, tail))


_STREAM_PART = st.one_of(
    st.builds(lambda m: struct.pack("!H", len(m)) + m, st.sampled_from(SEEDS)),  # a whole framed query
    st.binary(max_size=30),  # junk
    st.builds(lambda n: struct.pack("!H", n), st.integers(0, 0xFFFF)),  # a length prefix with no body
)


def test_live_server_survives_mixed_udp_and_tcp_fuzz_and_answers() -> None:
    errors = ErrorLog()
    logging.getLogger("bootbox.dns").addHandler(errors)
    server = DnsServer(lookup=dns_lookup(), bind_address="127.0.0.1", port=0, tcp_idle_timeout=0.5)
    server.start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        @fuzz_settings(200)
        @given(datagram=st.builds(_mangle, st.sampled_from(SEEDS),
                                  st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=5),
                                  st.integers(0, 80), st.binary(max_size=20)),
               stream=st.lists(_STREAM_PART, max_size=5), half_close=st.booleans())  # fmt: skip
        def attack(datagram: bytes, stream: list[bytes], half_close: bool) -> None:
            udp.sendto(datagram, ("127.0.0.1", server.port))
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as tcp:
                try:
                    tcp.sendall(b"".join(stream))
                    if half_close:
                        tcp.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the server may close on junk before we finish writing

        attack()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(DNSRecord.question("esx01.lab.example", "A").pack(), ("127.0.0.1", server.port))
            answer = DNSRecord.parse(client.recv(4096))
        assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in answer.rr] == [("A", "198.18.0.11")]
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as tcp:
            query = DNSRecord.question("esx02.lab.example", "A").pack()
            tcp.sendall(struct.pack("!H", len(query)) + query)
            size = struct.unpack("!H", tcp.recv(2))[0]
            data = b""
            while len(data) < size:
                data += tcp.recv(size - len(data))
        assert [str(rr.rdata) for rr in DNSRecord.parse(data).rr] == ["198.18.0.12"]
        assert server.stats["errors"] == 0, server.stats
    finally:
        udp.close()
        server.stop()
        logging.getLogger("bootbox.dns").removeHandler(errors)
    assert not errors.records, errors.messages()
