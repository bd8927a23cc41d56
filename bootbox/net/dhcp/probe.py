"""Is another DHCP server answering on this interface? Send one DISCOVER and listen.

Full-DHCP mode must not start beside another address server (two servers give clients
conflicting leases), and ``bootbox doctor`` reports which servers a network has. Both ask the
same question the way a client would: one broadcast DHCPDISCOVER (RFC 2131 §4.4.1) from a
random locally administered MAC, without ``PXEClient``, so proxyDHCP servers (bootbox's own
proxy included) keep quiet and only address servers answer, then every OFFER with our
transaction ID heard for ``timeout`` seconds.

Replies go to the broadcast address and port 68, where the machine's own DHCP client may be
listening, so they are read from an ``AF_PACKET`` socket (CAP_NET_RAW) that sees frames without
taking the port; without that capability a UDP socket on port 68 is tried instead. Parsing the
frame (Ethernet, IPv4, UDP, DHCP) is a pure function, :func:`parse_offer_frame`.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from dataclasses import dataclass

from bootbox.errors import BootboxError
from bootbox.net.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_FLAG,
    DhcpPacket,
    MalformedPacket,
    MessageType,
    Opt,
    build,
    message_type,
    parse,
)

__all__ = ["HeardServer", "ProbeError", "discover_packet", "parse_offer_frame", "probe"]

ETH_P_IP = 0x0800
_PARAMETERS = bytes((1, 3, 6, 15, 28, 51, 54, 66, 67))


class ProbeError(BootboxError):
    """The probe could not be sent or listened for (no privileges, no such interface)."""


@dataclass(frozen=True)
class HeardServer:
    """One DHCP server that answered the probe.

    :ivar server_id: option 54 (or the IP source when absent).
    :ivar offered: the address it offered (yiaddr); ``0.0.0.0`` from a proxy.
    :ivar next_server: siaddr: where GRUB and PXE ROMs would fetch their boot file from.
    :ivar boot_file: option 67 or the ``file`` field, when it names one.
    :ivar source_mac: the Ethernet source of the answer ("" when read from a UDP socket).
    """

    server_id: str
    source_ip: str
    offered: str
    next_server: str
    boot_file: str
    source_mac: str


def discover_packet(mac: bytes, xid: int) -> DhcpPacket:
    """The probe's DISCOVER: broadcast flag set so answers need no ARP for an unknown address."""
    return DhcpPacket(
        op=BOOTREQUEST,
        xid=xid,
        chaddr=mac,
        flags=BROADCAST_FLAG,
        options={
            Opt.MESSAGE_TYPE: bytes((MessageType.DISCOVER,)),
            Opt.CLIENT_ID: b"\x01" + mac,
            Opt.HOST_NAME: b"bootbox-probe",
            Opt.PARAMETER_LIST: _PARAMETERS,
        },
    )


def _heard(pkt: DhcpPacket, source_ip: str, source_mac: str) -> HeardServer:
    server_id = pkt.options.get(Opt.SERVER_ID, b"")
    boot_file = pkt.options.get(Opt.BOOTFILE_NAME) or pkt.file
    return HeardServer(
        server_id=socket.inet_ntoa(server_id) if len(server_id) == 4 else source_ip,
        source_ip=source_ip,
        offered=pkt.yiaddr,
        next_server=pkt.siaddr,
        boot_file=boot_file.decode("ascii", "replace"),
        source_mac=source_mac,
    )


def _matches(pkt: DhcpPacket, xid: int) -> bool:
    return pkt.op == BOOTREPLY and pkt.xid == xid and message_type(pkt) == MessageType.OFFER


def parse_offer_frame(frame: bytes, xid: int, client_port: int = 68) -> HeardServer | None:
    """The server behind an Ethernet frame carrying a DHCPOFFER for ``xid``, else None."""
    if len(frame) < 14 + 20 + 8 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ihl < 20 or ip[9] != socket.IPPROTO_UDP or len(ip) < ihl + 8:
        return None
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:  # a fragment: DHCP answers are never split
        return None
    _, dport, length, _ = struct.unpack_from("!HHHH", ip, ihl)
    if dport != client_port:
        return None
    try:
        pkt = parse(ip[ihl + 8 : ihl + length])
    except MalformedPacket:
        return None
    if not _matches(pkt, xid):
        return None
    return _heard(pkt, socket.inet_ntoa(ip[12:16]), frame[6:12].hex(":"))


def probe(
    interface: str,
    *,
    timeout: float = 2.0,
    server_port: int = 67,
    client_port: int = 68,
) -> list[HeardServer]:
    """Broadcast one DISCOVER on ``interface`` and return every server that offered, in order.

    :raises ProbeError: the interface does not exist or the process may not send or listen.
    """
    try:
        socket.if_nametoindex(interface)
    except OSError:
        raise ProbeError(f"interface {interface!r} does not exist") from None
    mac = bytes((0x02, *secrets.token_bytes(5)))
    xid = secrets.randbits(32)
    listener, raw = _listener(interface, client_port)
    try:
        _send(interface, build(discover_packet(mac, xid)), server_port)
        return _collect(listener, raw, xid, client_port, timeout)
    finally:
        listener.close()


def _listener(interface: str, client_port: int) -> tuple[socket.socket, bool]:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        sock.bind((interface, ETH_P_IP))
        return sock, True
    except PermissionError:
        pass
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", client_port))
    except OSError as exc:
        sock.close()
        raise ProbeError(
            f"cannot listen for DHCP answers on {interface}: {exc.strerror}. Run as root or with "
            "CAP_NET_RAW (the appliance's unit grants it)"
        ) from None
    return sock, False


def _send(interface: str, payload: bytes, server_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            sock.sendto(payload, ("255.255.255.255", server_port))
        except OSError as exc:
            raise ProbeError(f"cannot send a DHCP probe on {interface}: {exc.strerror}") from None


def _collect(sock: socket.socket, raw: bool, xid: int, client_port: int, timeout: float) -> list[HeardServer]:
    heard: list[HeardServer] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(65535)
        except (TimeoutError, socket.timeout):
            break
        if raw:
            server = parse_offer_frame(data, xid, client_port)
        else:
            try:
                pkt = parse(data)
            except MalformedPacket:
                continue
            server = _heard(pkt, source[0], "") if _matches(pkt, xid) else None
        if server is not None and server.server_id not in seen:
            seen.add(server.server_id)
            heard.append(server)
    return heard
