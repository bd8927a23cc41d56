"""DHCPv6 for network boot: the codec, the client's identity, and the decision (bootbox.net.dhcp6.server).

The client messages are built the way EDK2 2022.11 and iPXE sent them in the lab (captured in
tests/test_firmware_matrix.py's uefi-pxe6 case): DUID-LLT, one IA_NA, option request 59/60,
option 62 (network interface id), 61 (arch) and 16 (vendor class); iPXE adds user class 15.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp6.server import (
    Dhcp6Packet,
    Dhcp6Server,
    MalformedPacket6,
    Msg,
    Opt6,
    Reply6,
    assigned_address,
    build,
    client_mac,
    duid_ll,
    parse,
    respond,
    to_machine,
)
from tests.support.lab_fixtures import lab_unavailable

MAC = "02:42:cb:d9:be:0f"
LINK_LOCAL = "fe80::42:cbff:fed9:be0f"
SERVER = "fd42:b007::1"
SERVER_DUID = duid_ll("8a:e5:d2:f8:70:29")
POOL = ipaddress.IPv6Network("fd42:b007::/64")
DUID_LLT = struct.pack("!HHI", 1, 1, 836623271) + bytes.fromhex(MAC.replace(":", ""))
IA = struct.pack("!III", 4293656510, 0xFFFFFFFF, 0xFFFFFFFF)


def _list(*items: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(item)) + item for item in items)


def _client(msg: int, *, arch: int | None = 7, vendor: str = "PXEClient:Arch:00007:UNDI:003016",
            user: str | None = None, duid: bytes = DUID_LLT, server: bytes | None = None) -> Dhcp6Packet:
    options: list[tuple[int, bytes]] = [(Opt6.CLIENTID, duid)]
    if server is not None:
        options.append((Opt6.SERVERID, server))
    options += [(Opt6.IA_NA, IA), (Opt6.ORO, struct.pack("!4H", 59, 60, 23, 16)), (62, b"\x01\x03\x00")]
    if arch is not None:
        options.append((Opt6.CLIENT_ARCH, struct.pack("!H", arch)))
    if vendor:
        options.append((Opt6.VENDOR_CLASS, struct.pack("!I", 343) + _list(vendor.encode())))
    if user is not None:
        options.append((Opt6.USER_CLASS, _list(user.encode())))
    return Dhcp6Packet(msg, b"\xbf\xb0\x9c", tuple(options))


def _decide(machine: Machine) -> BootSpec | None:
    """bootbox's split: iPXE gets the script URL, firmware the loader by architecture."""
    if machine.is_ipxe:
        return BootSpec(f"http://[{SERVER}]:8080/boot.ipxe", "", "PXEClient", "iPXE")
    return {7: BootSpec("snponly.efi", "", "PXEClient"),
            16: BootSpec(f"http://[{SERVER}]:8080/boot/loaders/snponly.efi", "", "HTTPClient")}.get(machine.arch or 0)


def _respond(pkt: Dhcp6Packet, source: str = LINK_LOCAL, pool: ipaddress.IPv6Network | None = POOL) -> Reply6 | str:
    return respond(parse(build(pkt)), source=source, server_ip=SERVER, server_duid=SERVER_DUID, decide=_decide,
                   pool=pool)


def test_codec_round_trips_and_rejects_truncation() -> None:
    pkt = _client(Msg.SOLICIT)
    assert parse(build(pkt)) == pkt
    with pytest.raises(MalformedPacket6, match="runs past the end"):
        parse(build(pkt)[:-1])
    with pytest.raises(MalformedPacket6, match="message type 12"):
        parse(b"\x0c" + bytes(40))  # RELAY-FORW: bootbox serves one link


def test_mac_from_duid_or_eui64_link_local() -> None:
    assert client_mac(_client(Msg.SOLICIT), "fe80::1") == MAC  # DUID-LLT
    duid_uuid = b"\x00\x04" + bytes(range(16))
    assert client_mac(_client(Msg.SOLICIT, duid=duid_uuid), LINK_LOCAL) == MAC  # EUI-64 address
    assert client_mac(_client(Msg.SOLICIT, duid=duid_uuid), "fe80::1234:5678:9abc:def0") is None
    machine = to_machine(_client(Msg.SOLICIT, duid=duid_uuid), MAC, SERVER, 547)
    assert machine.uuid == "00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_machine_reads_arch_classes_and_ipxe() -> None:
    machine = to_machine(_client(Msg.SOLICIT, user="iPXE"), MAC, SERVER, 547)
    assert (machine.arch, machine.vendor_class, machine.is_ipxe) == (7, "PXEClient:Arch:00007:UNDI:003016", True)
    no_arch = to_machine(_client(Msg.SOLICIT, arch=None, vendor="HTTPClient:Arch:00016:UNDI:003000"), MAC, SERVER, 547)
    assert no_arch.arch == 16 and no_arch.http_boot  # OVMF and iPXE may omit option 61 (facts §9)


def test_firmware_solicit_gets_an_address_and_a_tftp_url_without_a_pxeclient_echo() -> None:
    reply = _respond(_client(Msg.SOLICIT))
    assert isinstance(reply, Reply6)
    packet = reply.packet
    assert packet.msg_type == Msg.ADVERTISE and packet.xid == b"\xbf\xb0\x9c"
    assert packet.get(Opt6.SERVERID) == SERVER_DUID and packet.get(Opt6.CLIENTID) == DUID_LLT
    assert packet.get(Opt6.BOOTFILE_URL) == f"tftp://[{SERVER}]/snponly.efi".encode()
    assert packet.get(Opt6.PREFERENCE) == b"\xff"
    # EDK2 takes a PXEClient echo for a boot-server offer and asks [server]:4011 first.
    assert packet.get(Opt6.VENDOR_CLASS) is None
    ia = packet.get(Opt6.IA_NA)
    assert ia is not None and ia[:4] == IA[:4] and struct.unpack("!II", ia[4:12]) == (1800, 2880)
    code, length = struct.unpack_from("!HH", ia, 12)
    address = ipaddress.IPv6Address(ia[16:32])
    assert code == Opt6.IAADDR and length == 24 and address in POOL and str(address) == reply.address
    assert reply.machine.client_ip == reply.address


def test_request_gets_the_same_address_in_a_reply() -> None:
    advertised = _respond(_client(Msg.SOLICIT))
    replied = _respond(_client(Msg.REQUEST, server=SERVER_DUID))
    assert isinstance(advertised, Reply6) and isinstance(replied, Reply6)
    assert replied.packet.msg_type == Msg.REPLY and replied.address == advertised.address


def test_ipxe_gets_the_script_url_so_it_does_not_load_itself_again() -> None:
    reply = _respond(_client(Msg.SOLICIT, user="iPXE"))
    assert isinstance(reply, Reply6)
    assert reply.packet.get(Opt6.BOOTFILE_URL) == f"http://[{SERVER}]:8080/boot.ipxe".encode()


def test_http_boot_gets_the_url_and_the_httpclient_echo() -> None:
    reply = _respond(_client(Msg.SOLICIT, arch=16, vendor="HTTPClient:Arch:00016:UNDI:003000"))
    assert isinstance(reply, Reply6)
    assert reply.packet.get(Opt6.VENDOR_CLASS) == struct.pack("!IH", 343, 10) + b"HTTPClient"
    assert reply.packet.get(Opt6.BOOTFILE_URL) == f"http://[{SERVER}]:8080/boot/loaders/snponly.efi".encode()


def test_release_is_answered_so_edk2_can_hand_the_nic_to_ipxe() -> None:
    reply = _respond(_client(Msg.RELEASE, server=SERVER_DUID))
    assert isinstance(reply, Reply6) and reply.spec is None
    assert reply.packet.msg_type == Msg.REPLY
    assert (reply.packet.get(Opt6.STATUS_CODE) or b"")[:2] == b"\x00\x00"  # Success
    assert _respond(_client(Msg.RELEASE)) == "a RELEASE must name the server"


@pytest.mark.parametrize(
    ("pkt", "source", "why"),
    [
        (_client(Msg.REQUEST, server=duid_ll("02:00:00:00:00:09")), LINK_LOCAL, "another server"),
        (_client(Msg.SOLICIT, server=SERVER_DUID), LINK_LOCAL, "must not name a server"),
        (_client(Msg.SOLICIT, vendor=""), LINK_LOCAL, "not PXEClient/HTTPClient, and not iPXE"),
        (_client(Msg.SOLICIT, arch=10, vendor="PXEClient:Arch:00010"), LINK_LOCAL, "declined"),
        (_client(Msg.SOLICIT, duid=b"\x00\x04" + bytes(16)), "fe80::1", "cannot tell the MAC"),
        (_client(Msg.CONFIRM), LINK_LOCAL, "CONFIRM is not answered"),
    ],
)
def test_silence_and_its_reason(pkt: Dhcp6Packet, source: str, why: str) -> None:
    outcome = _respond(pkt, source)
    assert isinstance(outcome, str) and why in outcome


def test_without_a_pool_no_address_is_given() -> None:
    reply = _respond(_client(Msg.SOLICIT), pool=None)
    assert isinstance(reply, Reply6) and reply.address is None
    ia = reply.packet.get(Opt6.IA_NA)
    assert ia is not None and struct.unpack_from("!HHH", ia, 12) == (Opt6.STATUS_CODE, len(ia) - 16, 2)


def test_assigned_addresses_are_stable_distinct_and_avoid_the_server() -> None:
    first = assigned_address(POOL, DUID_LLT, b"\x00\x00\x00\x01")
    assert first == assigned_address(POOL, DUID_LLT, b"\x00\x00\x00\x01")
    assert first != assigned_address(POOL, DUID_LLT, b"\x00\x00\x00\x02")
    small = ipaddress.IPv6Network("fd42::/120")  # 256 addresses: only offsets 256+ are used
    with pytest.raises(ZeroDivisionError):
        assigned_address(small, DUID_LLT, b"1")
    tiny = ipaddress.IPv6Network("fd42::/119")
    taken = assigned_address(tiny, DUID_LLT, b"1")
    assert assigned_address(tiny, DUID_LLT, b"1", avoid=taken) != taken


def test_server_answers_on_loopback() -> None:
    """The socket loop end to end on ::1 (no interface binding needs a lab for that: lo)."""
    answered: list[tuple[Machine, BootSpec, int]] = []
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind(("::1", 0))
    client.settimeout(5)
    server = Dhcp6Server(decide=_decide, interface="lo", server_address="::1", address_pool=str(POOL), port=0,
                         client_port=client.getsockname()[1], on_answer=lambda m, s, p: answered.append((m, s, p)))
    try:
        server.start()
    except OSError as exc:
        client.close()
        lab_unavailable(f"cannot bind DHCPv6 on lo here (SO_BINDTODEVICE needs CAP_NET_RAW): {exc}")
    try:
        with client:
            client.sendto(build(_client(Msg.SOLICIT)), ("::1", server.port))
            data, _ = client.recvfrom(2048)
        reply = parse(data)
        assert reply.msg_type == Msg.ADVERTISE and reply.get(Opt6.BOOTFILE_URL) == b"tftp://[::1]/snponly.efi"
        deadline = time.monotonic() + 2
        while not answered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answered and answered[0][0].mac == MAC
    finally:
        server.stop()
