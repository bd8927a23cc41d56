"""Tests for bootbox.net.dhcp.proxy: the pure responder on real captures, then real sockets."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.server
import logging
import os
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootbox.lab.netns import stop_process
from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import (
    BROADCAST_FLAG,
    DhcpPacket,
    MessageType,
    build,
    parse,
)
from bootbox.net.dhcp.proxy import SO_RCVBUFFORCE, Failed, Ignored, ProxyDhcpServer, Reply, Role, respond

DATA = Path(__file__).resolve().parents[1] / "data" / "dhcp"
SERVER_IP = "198.18.0.1"
DEFAULT_SPEC = BootSpec("snponly.efi", SERVER_IP)
UUID_OPTION = bytes.fromhex("00524a3e8c1d6f7a4b9e2c1d5f0a3b7c64")


def capture(name: str) -> DhcpPacket:
    return parse((DATA / f"{name}.bin").read_bytes())


def synthetic(
    vendor: bytes = b"PXEClient:Arch:00000:UNDI:002001",
    kind: MessageType = MessageType.DISCOVER,
    arch: int | None = 0,
    **fields: object,
) -> DhcpPacket:
    """A client packet of the shape PXE ROMs send, for the kinds we have no capture of."""
    options = {53: bytes((kind,)), 60: vendor, 97: UUID_OPTION}
    if arch is not None:
        options[93] = arch.to_bytes(2, "big")
    base: dict = {"op": 1, "xid": 0x1234, "chaddr": bytes.fromhex("525400aa0001"), "flags": BROADCAST_FLAG}
    return DhcpPacket(**{**base, **fields}, options=options)


class Recorder:
    """A ``decide`` that remembers what it was asked and answers with a fixed spec."""

    def __init__(self, spec: BootSpec | None = DEFAULT_SPEC) -> None:
        self.spec = spec
        self.machines: list[Machine] = []

    def __call__(self, machine: Machine) -> BootSpec | None:
        self.machines.append(machine)
        return self.spec


def offer(pkt: DhcpPacket, decide: Recorder | None = None, source: tuple[str, int] = ("0.0.0.0", 68)):
    return respond(pkt, role=Role.SERVER, source=source, server_ip=SERVER_IP, local_port=67,
                   decide=decide or Recorder())  # fmt: skip


def ack(pkt: DhcpPacket, source: tuple[str, int], decide: Recorder | None = None):
    return respond(pkt, role=Role.BOOT_SERVER, source=source, server_ip=SERVER_IP, local_port=4011,
                   decide=decide or Recorder())  # fmt: skip


def options_of(reply: Reply) -> dict[int, str]:
    """The reply's options as hex, taken from the encoded bytes (what goes on the wire)."""
    return {code: value.hex() for code, value in parse(reply.data).options.items()}


# --------------------------------------------------------------------------- the proxy OFFER
def test_edk2_discover_gets_a_proxy_offer_per_facts_section_2() -> None:
    req = capture("ovmf-edk2-discover")
    decide = Recorder(BootSpec("snponly.efi", "198.18.0.9"))
    reply = offer(req, decide)
    assert isinstance(reply, Reply)
    out = parse(reply.data)
    assert (out.op, out.xid, out.flags, out.chaddr, out.giaddr) == (2, req.xid, req.flags, req.chaddr, req.giaddr)
    assert (out.yiaddr, out.ciaddr, out.siaddr) == ("0.0.0.0", "0.0.0.0", "198.18.0.9")
    assert out.file == b"snponly.efi"
    assert options_of(reply) == {
        53: "02",
        54: "c6120001",  # option 54 is our own address, not the next server
        60: b"PXEClient".hex(),
        97: UUID_OPTION.hex(),
        43: "060108ff",
        67: b"snponly.efi".hex(),
    }
    assert reply.address == ("255.255.255.255", 68)
    assert decide.machines[0].arch == 7 and decide.machines[0].port == 67
    assert len(reply.data) >= 300


@pytest.mark.parametrize(
    ("arch", "vendor"),
    [
        (0, b"PXEClient:Arch:00000:UNDI:002001"),
        (7, b"PXEClient:Arch:00007:UNDI:003000"),
        (9, b"PXEClient:Arch:00009:UNDI:003000"),
        (11, b"PXEClient:Arch:00011:UNDI:003000"),
    ],
    ids=["bios", "uefi-x64-7", "uefi-x64-9", "arm64"],
)
def test_pxe_clients_of_every_arch_get_an_offer_with_43(arch: int, vendor: bytes) -> None:
    decide = Recorder()
    reply = offer(synthetic(vendor, arch=arch), decide)
    assert isinstance(reply, Reply)
    assert decide.machines[0].arch == arch
    assert options_of(reply)[60] == b"PXEClient".hex()
    assert options_of(reply)[43] == "060108ff"


def test_arch_is_read_from_option_60_when_93_is_missing() -> None:
    decide = Recorder()
    offer(synthetic(b"PXEClient:Arch:00011:UNDI:003000", arch=None), decide)
    assert decide.machines[0].arch == 11


def test_http_client_gets_httpclient_and_no_option_43() -> None:
    req = capture("ovmf-httpclient-discover")
    url = "http://198.18.0.1:8080/ipxe.efi"
    decide = Recorder(BootSpec(url, SERVER_IP, vendor_class="HTTPClient"))
    reply = offer(req, decide)
    assert isinstance(reply, Reply)
    opts = options_of(reply)
    assert opts[60] == b"HTTPClient".hex()
    assert 43 not in opts
    assert opts[67] == url.encode().hex()
    assert decide.machines[0].arch == 16 and decide.machines[0].http_boot


def test_http_client_is_answered_httpclient_even_if_the_spec_says_pxeclient() -> None:
    reply = offer(capture("ovmf-httpclient-discover"), Recorder(BootSpec("http://x/ipxe.efi", SERVER_IP)))
    assert isinstance(reply, Reply)
    assert options_of(reply)[60] == b"HTTPClient".hex()


def test_ipxe_discover_is_answered_and_seen_as_ipxe() -> None:
    decide = Recorder(BootSpec("http://198.18.0.1:8080/boot.ipxe", SERVER_IP))
    reply = offer(capture("seabios-ipxe-discover"), decide)
    assert isinstance(reply, Reply)
    assert decide.machines[0].is_ipxe and decide.machines[0].arch == 0
    # iPXE sent no broadcast flag but has no address yet (ciaddr 0): broadcast anyway
    assert reply.packet.flags == 0 and reply.address == ("255.255.255.255", 68)


def test_uuid_is_not_invented_when_the_client_sent_none() -> None:
    req = synthetic()
    del req.options[97]
    reply = offer(req)
    assert isinstance(reply, Reply)
    assert 97 not in options_of(reply)


def test_empty_uuid_is_echoed_as_sent() -> None:
    req = synthetic()
    req.options[97] = b""
    reply = offer(req)
    assert isinstance(reply, Reply)
    assert options_of(reply)[97] == ""


def test_long_boot_file_goes_in_option_67_only() -> None:
    url = "http://198.18.0.1:8080/boot.ipxe?" + "&".join(f"k{i}=v{i}" for i in range(40))
    reply = offer(synthetic(), Recorder(BootSpec(url, SERVER_IP)))
    assert isinstance(reply, Reply)
    assert parse(reply.data).file == b""
    assert parse(reply.data).options[67] == url.encode()


# --------------------------------------------------------------------------- addressing
def test_relayed_discover_goes_to_the_relay_on_port_67() -> None:
    reply = offer(synthetic(giaddr="198.18.5.1"))
    assert isinstance(reply, Reply)
    assert reply.address == ("198.18.5.1", 67)
    assert reply.packet.giaddr == "198.18.5.1"


def test_client_with_an_address_and_no_broadcast_flag_gets_unicast() -> None:
    reply = offer(synthetic(flags=0, ciaddr="198.18.0.50"))
    assert isinstance(reply, Reply)
    assert reply.address == ("198.18.0.50", 68)


def test_broadcast_flag_wins_over_ciaddr() -> None:
    reply = offer(synthetic(ciaddr="198.18.0.50"))
    assert isinstance(reply, Reply) and reply.address == ("255.255.255.255", 68)


# --------------------------------------------------------------------------- port 4011
def test_edk2_4011_request_is_acked_to_its_source_port_4011() -> None:
    req = capture("ovmf-edk2-request-4011")
    decide = Recorder()
    reply = ack(req, ("198.18.0.171", 4011), decide)
    assert isinstance(reply, Reply)
    out = parse(reply.data)
    assert reply.address == ("198.18.0.171", 4011)
    assert (out.op, out.xid, out.ciaddr, out.yiaddr, out.siaddr) == (2, req.xid, "198.18.0.171", "0.0.0.0", SERVER_IP)
    assert out.file == b"snponly.efi"
    assert options_of(reply) == {
        53: "05",
        54: "c6120001",
        60: b"PXEClient".hex(),
        97: UUID_OPTION.hex(),
        43: "060108ff",  # EDK2 sent no boot item, so none is echoed
        67: b"snponly.efi".hex(),
    }
    assert decide.machines[0].port == 4011 and decide.machines[0].client_ip == "198.18.0.171"


def test_ipxe_4011_request_with_boot_item_gets_71_echoed_to_port_68() -> None:
    req = capture("seabios-ipxe-request-4011-bootitem")
    decide = Recorder(BootSpec("http://198.18.0.1:8080/boot.ipxe", SERVER_IP))
    reply = ack(req, ("198.18.0.170", 68), decide)
    assert isinstance(reply, Reply)
    assert reply.address == ("198.18.0.170", 68)
    assert options_of(reply)[43] == "060108" + "470480030000" + "ff"
    assert decide.machines[0].is_ipxe  # iPXE repeats 77 and 175 on 4011 (facts §5)


def test_ipxe_4011_request_without_boot_item() -> None:
    reply = ack(capture("ovmf-snponly-ipxe-request-4011"), ("198.18.0.171", 68))
    assert isinstance(reply, Reply)
    assert options_of(reply)[43] == "060108ff"
    assert reply.address == ("198.18.0.171", 68)


def test_inform_on_4011_is_acked() -> None:
    reply = ack(synthetic(kind=MessageType.INFORM, ciaddr="198.18.0.60"), ("198.18.0.60", 68))
    assert isinstance(reply, Reply)
    assert parse(reply.data).options[53] == bytes((MessageType.ACK,))


def test_4011_reply_falls_back_to_ciaddr_when_the_source_is_unset() -> None:
    reply = ack(synthetic(kind=MessageType.REQUEST, ciaddr="198.18.0.60"), ("0.0.0.0", 4011))
    assert isinstance(reply, Reply) and reply.address == ("198.18.0.60", 4011)


# --------------------------------------------------------------------------- silence
@pytest.mark.parametrize(
    ("name", "role", "reason"),
    [
        ("udhcpc-discover", Role.SERVER, "vendor class 'udhcp 1.35.0'"),
        ("seabios-ipxe-request-67", Role.SERVER, "DHCPREQUEST is not answered on the server port"),
        ("ovmf-edk2-discover", Role.BOOT_SERVER, "DHCPDISCOVER is not answered on the boot-server port"),
        ("dnsmasq-offer-edk2", Role.SERVER, "not a BOOTREQUEST"),
        ("dnsmasq-ack-4011-edk2", Role.BOOT_SERVER, "not a BOOTREQUEST"),
    ],
)
def test_packets_that_are_not_ours_are_ignored(name: str, role: Role, reason: str) -> None:
    decide = Recorder()
    outcome = respond(capture(name), role=role, source=("198.18.0.9", 68), server_ip=SERVER_IP,
                      local_port=67, decide=decide)  # fmt: skip
    assert isinstance(outcome, Ignored)
    assert reason in outcome.reason
    assert outcome.mac == parse((DATA / f"{name}.bin").read_bytes()).mac
    assert decide.machines == []  # the decision is never asked about foreign packets


def test_bootp_without_message_type_is_ignored() -> None:
    req = synthetic()
    del req.options[53]
    outcome = offer(req)
    assert isinstance(outcome, Ignored) and "BOOTP" in outcome.reason


def test_non_ethernet_client_is_ignored() -> None:
    outcome = offer(synthetic(htype=32, hlen=0, chaddr=b""))
    assert isinstance(outcome, Ignored) and "Ethernet" in outcome.reason


def test_decide_none_means_silence() -> None:
    outcome = offer(synthetic(), Recorder(None))
    assert isinstance(outcome, Ignored) and "declined" in outcome.reason


def test_decide_exception_becomes_failed_with_the_mac() -> None:
    def broken(machine: Machine) -> BootSpec:
        raise KeyError("no such profile")

    outcome = respond(synthetic(), role=Role.SERVER, source=("0.0.0.0", 68), server_ip=SERVER_IP,
                      local_port=67, decide=broken)  # fmt: skip
    assert isinstance(outcome, Failed)
    assert outcome.mac == "52:54:00:aa:00:01"
    assert isinstance(outcome.error, KeyError)


def test_unencodable_spec_becomes_failed() -> None:
    outcome = offer(synthetic(), Recorder(BootSpec("undionly.kpxe", "tftp.example")))
    assert isinstance(outcome, Failed) and "undionly.kpxe" in outcome.reason


# --------------------------------------------------------------------------- real sockets
class Client:
    """A UDP socket playing the PXE client on loopback; the server's client_port points here."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def exchange(self, data: bytes, port: int) -> tuple[DhcpPacket, tuple[str, int]]:
        self.sock.sendto(data, ("127.0.0.1", port))
        reply, source = self.sock.recvfrom(2048)
        return parse(reply), source


def loopback_discover(xid: int = 0x51) -> bytes:
    """The EDK2 capture, re-addressed so the OFFER is unicast to 127.0.0.1 (RFC 2131 §4.1)."""
    pkt = capture("ovmf-edk2-discover")
    pkt.xid, pkt.flags, pkt.ciaddr = xid, 0, "127.0.0.1"
    return build(pkt)


@pytest.fixture
def client() -> Iterator[Client]:
    c = Client()
    yield c
    c.sock.close()


@pytest.fixture
def served(client: Client) -> Iterator[tuple[ProxyDhcpServer, Recorder, list]]:
    decide = Recorder(BootSpec("snponly.efi", "127.0.0.1"))
    answers: list[tuple[Machine, BootSpec, int]] = []
    server = ProxyDhcpServer(decide=decide, on_answer=lambda *a: answers.append(a), bind_address="127.0.0.1",
                             server_port=0, boot_server_port=0, client_port=client.port)  # fmt: skip
    server.start()
    try:
        yield server, decide, answers
    finally:
        server.stop()


def test_server_answers_discover_and_4011_over_real_sockets(served, client: Client) -> None:
    server, decide, answers = served
    assert 0 not in (server.port, server.boot_server_port) and server.port != server.boot_server_port

    reply, source = client.exchange(loopback_discover(), server.port)
    assert source == ("127.0.0.1", server.port)
    assert (reply.op, reply.xid, reply.options[53], reply.file) == (2, 0x51, b"\x02", b"snponly.efi")
    assert reply.options[54] == socket.inet_aton("127.0.0.1")  # learnt from IP_PKTINFO

    edk2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a second socket: its own source port
    with edk2:
        edk2.bind(("127.0.0.1", 0))
        edk2.settimeout(5)
        edk2.sendto((DATA / "ovmf-edk2-request-4011.bin").read_bytes(), ("127.0.0.1", server.boot_server_port))
        data, source = edk2.recvfrom(2048)
    assert source == ("127.0.0.1", server.boot_server_port)
    assert parse(data).options[53] == b"\x05"

    server.stop()  # joins the thread: on_answer and the counters run after each send
    assert [(m.mac, m.port, s.boot_file) for m, s, _ in answers] == [
        ("52:54:00:bb:00:02", server.port, "snponly.efi"),
        ("52:54:00:bb:00:02", server.boot_server_port, "snponly.efi"),
    ]
    assert [port for _, _, port in answers] == [server.port, server.boot_server_port]
    assert decide.machines[0].server_ip == "127.0.0.1"
    assert server.stats == {"received": 2, "answered": 2, "ignored": 0, "malformed": 0, "errors": 0, "rate_limited": 0}


@pytest.mark.skipif(os.geteuid() != 0, reason="the test client needs SO_RCVBUFFORCE to hold 1,000 replies")
def test_a_1000_client_storm_is_answered_without_loss(served, client: Client) -> None:
    """Back-to-back DISCOVERs from 1,000 clients: the 4 MiB receive buffer holds the burst."""
    server, _, _ = served
    client.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 1024 * 1024)
    template = capture("ovmf-edk2-discover")
    template.flags, template.ciaddr = 0, "127.0.0.1"
    for n in range(1000):
        template.xid, template.chaddr = n, bytes.fromhex("02bb00") + n.to_bytes(3, "big")
        client.sock.sendto(build(template), ("127.0.0.1", server.port))
    answered = {parse(client.sock.recv(2048)).xid for _ in range(1000)}
    assert answered == set(range(1000))
    server.stop()
    assert server.stats == {"received": 1000, "answered": 1000, "ignored": 0, "malformed": 0, "errors": 0, "rate_limited": 0}


def test_server_survives_garbage_and_counts_it(served, client: Client, caplog) -> None:
    server, _, _ = served
    caplog.set_level(logging.DEBUG, logger="bootbox.dhcp")
    # each socket delivers in order, so an answer proves the garbage before it was handled
    client.sock.sendto(b"\x01" * 20, ("127.0.0.1", server.port))
    reply, _ = client.exchange(loopback_discover(xid=0x52), server.port)
    assert reply.xid == 0x52
    client.sock.sendto(b"\x00" * 300, ("127.0.0.1", server.boot_server_port))
    reply, _ = client.exchange((DATA / "ovmf-edk2-request-4011.bin").read_bytes(), server.boot_server_port)
    assert reply.options[53] == b"\x05"
    server.stop()
    assert server.stats == {"received": 4, "answered": 2, "ignored": 0, "malformed": 2, "errors": 0, "rate_limited": 0}
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_server_ignores_foreign_packets_and_says_why(served, client: Client, caplog) -> None:
    server, decide, _ = served
    caplog.set_level(logging.DEBUG, logger="bootbox.dhcp")
    client.sock.sendto((DATA / "udhcpc-discover.bin").read_bytes(), ("127.0.0.1", server.port))
    client.exchange(loopback_discover(), server.port)  # answered after the ignored one: order kept
    server.stop()
    assert server.stats["ignored"] == 1
    assert len(decide.machines) == 1
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert ignored and "udhcp 1.35.0" in ignored[0] and ignored[0].startswith("mac ")


def test_decide_and_on_answer_failures_are_logged_not_fatal(client: Client, caplog) -> None:
    calls = []

    def decide(machine: Machine) -> BootSpec:
        calls.append(machine.mac)
        if len(calls) == 1:
            raise RuntimeError("policy bug")
        return BootSpec("snponly.efi", "127.0.0.1")

    def on_answer(machine: Machine, spec: BootSpec, port: int) -> None:
        raise RuntimeError("event log full")

    server = ProxyDhcpServer(decide=decide, on_answer=on_answer, bind_address="127.0.0.1", server_port=0,
                             boot_server_port=0, client_port=client.port)  # fmt: skip
    server.start()
    try:
        client.sock.sendto(loopback_discover(xid=1), ("127.0.0.1", server.port))
        reply, _ = client.exchange(loopback_discover(xid=2), server.port)
        assert reply.xid == 2
    finally:
        server.stop()
    assert server.stats["errors"] == 1 and server.stats["answered"] == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("52:54:00:bb:00:02" in m and "decide() raised" in m for m in messages)
    assert any("on_answer" in m for m in messages)


def test_stop_ends_the_thread_and_frees_the_ports(client: Client) -> None:
    server = ProxyDhcpServer(decide=Recorder(), bind_address="127.0.0.1", server_port=0, boot_server_port=0,
                             client_port=client.port)  # fmt: skip
    server.start()
    port = server.port
    server.stop()
    assert not any(t.name == "bootbox-proxydhcp" and t.is_alive() for t in threading.enumerate())
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with probe:
        probe.bind(("127.0.0.1", port))  # no SO_REUSEADDR: fails if the server still held it
    server.stop()  # idempotent


def test_bind_conflict_names_the_port(client: Client) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        server = ProxyDhcpServer(decide=Recorder(), bind_address="127.0.0.1", server_port=0,
                                 boot_server_port=taken, client_port=client.port)  # fmt: skip
        with pytest.raises(OSError) as info:
            server.start()
    assert info.value.errno == errno.EADDRINUSE
    assert f"udp/{taken}" in str(info.value) and "other ports" in str(info.value)


def test_bind_permission_error_says_how_to_fix_it(client: Client, monkeypatch) -> None:
    def refuse(self: socket.socket, address: tuple[str, int]) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    server = ProxyDhcpServer(decide=Recorder(), bind_address="127.0.0.1", client_port=client.port)
    with pytest.raises(OSError) as info:
        server.start()
    message = str(info.value)
    assert "udp/67" in message and "root" in message and "CAP_NET_BIND_SERVICE" in message
    assert "other ports" in message


# --------------------------------------------------------------------------- network namespaces
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
needs_root_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or not Path("/run").is_dir(),
    reason="needs root and iproute2 to build network namespaces",
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``name``. Sockets made inside stay there
    after the thread switches back, so one process can play server and clients at once."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({name})")
        yield
    finally:
        if _libc.setns(home, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
        os.close(home)
        os.close(target)


@contextlib.contextmanager
def namespaces(*suffixes: str) -> Iterator[list[str]]:
    """Fresh namespaces named after this process, always deleted afterwards."""
    names = [f"bbpd{os.getpid()}{s}" for s in suffixes]
    try:
        for name in names:
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def veth(ns_a: str, if_a: str, addr_a: str | None, ns_b: str, if_b: str, addr_b: str | None) -> None:
    ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    for ns, name, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
        if addr:
            ip("-n", ns, "addr", "add", addr, "dev", name)
        ip("-n", ns, "link", "set", name, "up")


def pxe_client_socket(ns: str, interface: str, port: int) -> socket.socket:
    """A client socket on ``port`` that can broadcast out of ``interface`` like a PXE ROM."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", port))
    sock.settimeout(5)
    return sock


@needs_root_netns
@pytest.mark.netns
def test_multihomed_server_broadcasts_out_of_the_arrival_interface_with_its_address() -> None:
    """Two segments, one unbound server: each client hears the OFFER on its own segment, with
    that segment's server address in option 54 (IP_PKTINFO in and out), and EDK2's 4011 ACK
    comes back to port 4011."""
    with namespaces("s", "a", "b") as (srv, seg_a, seg_b):
        veth(srv, "s1", "198.18.1.1/24", seg_a, "c1", "198.18.1.2/24")
        veth(srv, "s2", "198.18.2.1/24", seg_b, "c2", "198.18.2.2/24")
        decide = Recorder(BootSpec("snponly.efi", "198.18.9.9"))
        with in_netns(srv):
            server = ProxyDhcpServer(decide=decide)  # 0.0.0.0, udp/67 and udp/4011
            server.start()
        try:
            discover = (DATA / "ovmf-edk2-discover.bin").read_bytes()
            for ns, interface, local in ((seg_b, "c2", "198.18.2.1"), (seg_a, "c1", "198.18.1.1")):
                with contextlib.closing(pxe_client_socket(ns, interface, 68)) as sock:
                    sock.sendto(discover, ("255.255.255.255", 67))
                    data, source = sock.recvfrom(2048)
                reply = parse(data)
                assert source == (local, 67)
                assert reply.options[54] == socket.inet_aton(local)
                assert (reply.yiaddr, reply.siaddr, reply.options[53]) == ("0.0.0.0", "198.18.9.9", b"\x02")

            with contextlib.closing(pxe_client_socket(seg_a, "c1", 4011)) as sock:
                sock.sendto((DATA / "ovmf-edk2-request-4011.bin").read_bytes(), ("198.18.1.1", 4011))
                data, source = sock.recvfrom(2048)
            assert source == ("198.18.1.1", 4011) and parse(data).options[53] == b"\x05"
        finally:
            server.stop()
        assert [m.server_ip for m in decide.machines] == ["198.18.2.1", "198.18.1.1", "198.18.1.1"]
        assert server.stats == {"received": 3, "answered": 3, "ignored": 0, "malformed": 0, "errors": 0, "rate_limited": 0}


@needs_root_netns
@pytest.mark.netns
def test_interface_bound_server_uses_that_interface() -> None:
    with namespaces("s", "a") as (srv, seg):
        veth(srv, "s1", "198.18.1.1/24", seg, "c1", None)  # the client has no address yet
        with in_netns(srv):
            server = ProxyDhcpServer(decide=Recorder(), interface="s1")
            server.start()
        try:
            with contextlib.closing(pxe_client_socket(seg, "c1", 68)) as sock:
                sock.sendto((DATA / "seabios-ipxe-discover.bin").read_bytes(), ("255.255.255.255", 67))
                data, source = sock.recvfrom(2048)
        finally:
            server.stop()
        assert source == ("198.18.1.1", 67)
        assert parse(data).options[54] == socket.inet_aton("198.18.1.1")


# --------------------------------------------------------------------------- real firmware
IPXE_DIR = Path("/usr/lib/ipxe")
OVMF_CODE, OVMF_VARS = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
needs_firmware = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("qemu-system-x86_64", "dnsmasq"))
    or not all(p.exists() for p in (IPXE_DIR / "snponly.efi", OVMF_CODE, OVMF_VARS, Path("/dev/net/tun"))),
    reason="needs qemu-system-x86, dnsmasq-base, ipxe, ipxe-qemu, ovmf and /dev/net/tun",
)
BOOT_SCRIPT = "/boot.ipxe"


class BootLab:
    """One Ethernet segment with a site DHCP (dnsmasq, addresses only), TFTP (dnsmasq, no
    DHCP), an HTTP server and bootbox's responder, plus a tap for a QEMU guest
    (facts/references.md §5). Owns every process and namespace it makes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.answers: list[tuple[Machine, BootSpec, int]] = []
        self.http_paths: list[tuple[str, str]] = []
        self.fetched = threading.Condition()

    def decide(self, machine: Machine) -> BootSpec:
        """The split of facts §4–§6: PXE ROMs get a loader over TFTP, iPXE its script."""
        if machine.is_ipxe:
            return BootSpec(f"http://198.18.0.1:8080{BOOT_SCRIPT}?mac={machine.mac}", "198.18.0.1")
        if machine.http_boot:
            return BootSpec("http://198.18.0.1:8080/snponly.efi", "198.18.0.1", vendor_class="HTTPClient")
        loader = "undionly.kpxe" if machine.arch == 0 else "snponly.efi"
        return BootSpec(loader, "198.18.0.1")

    def start(self, sw: str, srv: str, org: str) -> None:
        ip("-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        ip("-n", sw, "link", "set", "br0", "up")
        veth(srv, "srv0", "198.18.0.1/24", sw, "p-srv0", None)
        veth(org, "org0", "198.18.0.2/24", sw, "p-org0", None)
        ip("-n", sw, "tuntap", "add", "tap0", "mode", "tap")
        for port in ("p-srv0", "p-org0", "tap0"):
            ip("-n", sw, "link", "set", port, "master", "br0", "up")
        common = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
                  "--user=root", "--group=root", "--pid-file", "--log-dhcp"]  # fmt: skip
        self.spawn(org, "org", *common, "--interface=org0", "--dhcp-range=198.18.0.100,198.18.0.199,1h",
                   "--no-ping", "--dhcp-option=3", "--dhcp-option=6", f"--dhcp-leasefile={self.work}/leases")
        self.spawn(srv, "tftp", *common, "--interface=srv0", "--enable-tftp", f"--tftp-root={IPXE_DIR}")
        with in_netns(srv):
            self.http = http.server.ThreadingHTTPServer(("198.18.0.1", 8080), self.handler())
            self.server = ProxyDhcpServer(decide=self.decide, on_answer=lambda *a: self.answers.append(a),
                                          interface="srv0")  # fmt: skip
            self.server.start()
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        lab = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(IPXE_DIR), **kwargs)

            def send_head(self):  # type: ignore[no-untyped-def]
                with lab.fetched:
                    lab.http_paths.append((self.command, self.path))
                    lab.fetched.notify_all()
                return super().send_head()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def spawn(self, ns: str, name: str, *argv: str) -> subprocess.Popen[bytes]:
        out = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        return proc

    def wait_for_script(self, mac: str, timeout: float) -> bool:
        """Until iPXE fetches its script with this MAC: the end of the DHCP story."""
        wanted = ("GET", f"{BOOT_SCRIPT}?mac={mac}")  # iPXE sends the colons as %3A
        with self.fetched:
            return self.fetched.wait_for(
                lambda: wanted in [(c, urllib.parse.unquote(p)) for c, p in self.http_paths], timeout=timeout
            )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        if hasattr(self, "server"):
            self.server.stop()
        if hasattr(self, "http"):
            self.http.shutdown()
            self.http.server_close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[BootLab, str]]:
    with namespaces("sw", "srv", "org") as (sw, srv, org):
        bench = BootLab(tmp_path)
        try:
            bench.start(sw, srv, org)
            yield bench, sw
        finally:
            bench.stop()


def qemu_argv(kind: str, mac: str, work: Path) -> list[str]:
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "512", "-nographic", "-no-reboot",
            "-monitor", "none", "-serial", f"file:{work}/serial.log",
            "-uuid", "8c3e4a52-6f1d-4b7a-9e2c-1d5f0a3b7c64",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]  # fmt: skip
    if kind == "seabios-ipxe":
        return argv + ["-machine", "pc", "-device", f"e1000,netdev=n0,mac={mac},bootindex=1"]
    vars_copy = work / "OVMF_VARS_4M.fd"
    shutil.copy(OVMF_VARS, vars_copy)
    argv += ["-machine", "q35", "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
             "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
             "-device", f"virtio-net-pci,netdev=n0,romfile=,mac={mac},bootindex=1"]  # fmt: skip
    if kind == "ovmf-http":  # switch EDK2's PXE off so the UEFI HTTPv4 entry runs (facts §9)
        argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
                 "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]  # fmt: skip
    return argv


@needs_root_netns
@needs_firmware
@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.parametrize(
    ("kind", "first_hop"),
    [
        ("seabios-ipxe", None),  # iPXE in the NIC ROM: straight to the script
        ("ovmf-pxe", ("PXEClient", 7, "snponly.efi")),  # EDK2 PXE → snponly.efi over TFTP → iPXE
        ("ovmf-http", ("HTTPClient", 16, "http://198.18.0.1:8080/snponly.efi")),  # UEFI HTTP boot → iPXE
    ],
)
def test_real_firmware_boots_through_bootbox_to_the_ipxe_script(lab, kind: str, first_hop, tmp_path: Path) -> None:
    bench, sw = lab
    mac = {"seabios-ipxe": "52:54:00:bb:01:01", "ovmf-pxe": "52:54:00:bb:01:02", "ovmf-http": "52:54:00:bb:01:03"}[kind]
    bench.spawn(sw, "qemu", *qemu_argv(kind, mac, tmp_path))
    reached = bench.wait_for_script(mac, timeout=300)
    serial = (tmp_path / "serial.log").read_bytes().decode("ascii", "replace")[-2000:]
    assert reached, f"no script fetch; answers={bench.answers}; http={bench.http_paths}\n{serial}"

    mine = [(m, s, port) for m, s, port in bench.answers if m.mac == mac]
    ipxe = [(m, port) for m, _, port in mine if m.is_ipxe]
    assert ipxe and ipxe[0][1] == 67  # iPXE took bootbox's OFFER (it then may or may not use 4011)
    if first_hop is not None:
        vendor, arch, boot_file = first_hop
        firmware = [(m, s) for m, s, _ in mine if not m.is_ipxe]
        assert firmware, "the firmware's own DHCP was never answered"
        assert firmware[0][0].vendor_class.startswith(vendor) and firmware[0][0].arch == arch
        assert firmware[0][1].boot_file == boot_file
    if kind == "ovmf-http":  # the firmware fetched the loader from the URL in the proxy OFFER
        assert ("GET", "/snponly.efi") in bench.http_paths
    assert bench.server.stats["errors"] == 0


def test_copies_queued_before_the_answer_left_are_not_answered_again(client: Client) -> None:
    """A backlog of retransmitted DISCOVERs (same xid) costs one answer, not one each; a copy
    sent after the answer left (the answer may have been lost) is answered again."""
    first_seen, release = threading.Event(), threading.Event()

    def decide(machine: Machine) -> BootSpec:
        first_seen.set()
        assert release.wait(10)  # the server is busy while the copies queue up in the kernel
        return BootSpec("snponly.efi", "127.0.0.1")

    server = ProxyDhcpServer(decide=decide, bind_address="127.0.0.1", server_port=0, boot_server_port=0,
                             client_port=client.port, rate_limit=0)  # fmt: skip
    server.start()
    try:
        request = bytearray(loopback_discover(0x77))
        client.sock.sendto(bytes(request), ("127.0.0.1", server.port))
        assert first_seen.wait(10)
        for secs in (4, 8):  # a ROM's retransmissions advance `secs`
            request[8:10] = secs.to_bytes(2, "big")
            client.sock.sendto(bytes(request), ("127.0.0.1", server.port))
        other = loopback_discover(0x78)  # another transaction queued behind them is answered
        client.sock.sendto(other, ("127.0.0.1", server.port))
        release.set()
        marker = loopback_discover(0x79)  # one thread, in order: a copy's answer would come before this one's
        client.sock.sendto(marker, ("127.0.0.1", server.port))
        assert [parse(client.sock.recv(2048)).xid for _ in range(3)] == [0x77, 0x78, 0x79]
        client.sock.sendto(bytes(request), ("127.0.0.1", server.port))  # after the answer: answered again
        assert parse(client.sock.recv(2048)).xid == 0x77
    finally:
        server.stop()
    assert server.duplicates == 2
    assert server.stats == {"received": 6, "answered": 4, "ignored": 2, "malformed": 0, "errors": 0, "rate_limited": 0}
