"""Fuzzing the DHCP codec and the proxyDHCP responder, pure and over a live socket.

Bounded for CI by ``tests.support.fuzz_targets.fuzz_settings`` (a few seconds per test); the long run
is ``scripts/fuzz-long.sh``. The properties are in :func:`tests.support.fuzz_targets.dhcp_target`.
"""

from __future__ import annotations

import logging
import socket

from hypothesis import given
from hypothesis import strategies as st

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import DhcpPacket, MessageType, build, parse
from bootbox.net.dhcp.proxy import ProxyDhcpServer
from tests.support.fuzz_targets import DATA, ErrorLog, dhcp_seeds, dhcp_target, fuzz_settings

SEEDS = dhcp_seeds()


def _with_options(capture: str, **changes: bytes) -> bytes:
    pkt = parse((DATA / f"{capture}.bin").read_bytes())
    for key, value in changes.items():
        pkt.options[int(key.removeprefix("o"))] = value
    return build(pkt)


REGRESSIONS = {
    # A 4011 request whose 43.71 sub-option claims 9 bytes in a 5-byte option 43: the ACK
    # builder raised MalformedPacket, logged as a server error with a traceback (now Ignored).
    "43.71 overruns 43 on 4011": _with_options("seabios-ipxe-request-4011-bootitem", o43=bytes.fromhex("470980030000ff")),
    "43 is only a sub-option code": _with_options("seabios-ipxe-request-4011-bootitem", o43=b"\x47"),
    "UUID of 4096 bytes": _with_options("ovmf-edk2-discover", o97=b"\x00" * 4096),
    "empty vendor class": _with_options("ovmf-edk2-discover", o60=b""),
    "vendor class not ASCII": _with_options("ovmf-edk2-discover", o60=b"PXEClient:\xff\xfe"),
    "arch option of odd length": _with_options("ovmf-edk2-discover", o93=b"\x00"),
    "user class of zero-length items": _with_options("seabios-ipxe-discover", o77=b"\x00\x00"),
}


def test_regressions_stay_fixed() -> None:
    for name, data in REGRESSIONS.items():
        try:
            dhcp_target(data)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


@fuzz_settings(400)
@given(st.binary(max_size=700))
def test_arbitrary_bytes(data: bytes) -> None:
    dhcp_target(data)


@fuzz_settings(700)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=12),
    cut=st.integers(0, 700),
    tail=st.binary(max_size=64),
)
def test_mutated_captures(seed: bytes, edits: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    """Real packets with bytes changed, cut short and extended: reaches option walking,
    overload, RFC 3396 joins and the PXE sub-options far more often than random bytes."""
    data = bytearray(seed)
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    dhcp_target(bytes(data[: max(cut, 240)]) + tail)


_OPTION_VALUES = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=250, max_size=600),  # long enough to need RFC 3396 splitting
    st.sampled_from([b"PXEClient:Arch:00007:UNDI:003000", b"HTTPClient:Arch:00016", b"iPXE", b"\x00\x07",
                     b"\x00" + bytes(16), b"\x47\x04\x80\x03\x00\x00\xff"]),
)


@fuzz_settings(500)
@given(
    kind=st.sampled_from([MessageType.DISCOVER, MessageType.REQUEST, MessageType.INFORM, 0, 9]),
    vendor=st.one_of(st.sampled_from([b"PXEClient", b"PXEClient:Arch:00000:UNDI:002001", b"HTTPClient:Arch:00016"]),
                     st.binary(max_size=40)),
    options=st.dictionaries(st.integers(1, 254), _OPTION_VALUES, max_size=8),
    hlen=st.integers(0, 16),
    flags=st.integers(0, 0xFFFF),
    ciaddr=st.sampled_from(["0.0.0.0", "198.18.0.50", "255.255.255.255"]),
)
def test_structured_requests_reach_the_responder(kind: int, vendor: bytes, options: dict[int, bytes], hlen: int,
                                                 flags: int, ciaddr: str) -> None:  # fmt: skip
    """Packets that pass the responder's first checks, so decide, build_reply and the echoed
    options (43.71, 97) are exercised with hostile values."""
    options = {53: bytes((kind,)), 60: vendor, **{k: v for k, v in options.items() if k not in (52, 53)}}
    pkt = DhcpPacket(op=1, xid=0x1234, chaddr=bytes(range(hlen)), hlen=hlen, flags=flags, ciaddr=ciaddr,
                     options=options)  # fmt: skip
    dhcp_target(build(pkt))


def test_live_proxy_survives_fuzz_and_still_answers() -> None:
    """Fuzzed datagrams at both ports of a running server (rate limit off, so every packet is
    parsed); afterwards the loop is alive, logged no error, and answers a real DISCOVER."""
    errors = ErrorLog()
    logging.getLogger("bootbox.dhcp").addHandler(errors)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)

    def decide(machine: Machine) -> BootSpec:
        return BootSpec("undionly.kpxe", "127.0.0.1")

    server = ProxyDhcpServer(decide=decide, bind_address="127.0.0.1", server_port=0, boot_server_port=0,
                             client_port=client.getsockname()[1], rate_limit=0)  # fmt: skip
    server.start()
    try:
        @fuzz_settings(300)
        @given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)),
                                                           max_size=8), port=st.booleans())  # fmt: skip
        def send(seed: bytes, edits: list[tuple[int, int]], port: bool) -> None:
            data = bytearray(seed)
            for offset, value in edits:
                if offset < len(data):
                    data[offset] = value
            client.sendto(bytes(data), ("127.0.0.1", server.boot_server_port if port else server.port))

        send()
        while True:  # drop whatever the fuzzed packets were answered with
            client.settimeout(0.3)
            try:
                client.recv(4096)
            except TimeoutError:
                break
        client.settimeout(5)
        pkt = parse((DATA / "ovmf-edk2-discover.bin").read_bytes())
        pkt.xid, pkt.flags, pkt.ciaddr = 0xFEED, 0, "127.0.0.1"
        client.sendto(build(pkt), ("127.0.0.1", server.port))
        reply = parse(client.recv(4096))
        assert (reply.xid, reply.options[53], reply.options[67]) == (0xFEED, b"\x02", b"undionly.kpxe")
        assert server.alive
    finally:
        server.stop()
        client.close()
        logging.getLogger("bootbox.dhcp").removeHandler(errors)
    assert server.stats["errors"] == 0, server.stats
    assert server.stats["received"] >= 100  # the fuzzed traffic reached the loop
    assert not errors.records, errors.messages()
