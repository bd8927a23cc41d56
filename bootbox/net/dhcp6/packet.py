"""The DHCPv6 message codec and client identity for network boot (RFC 8415, RFC 5970).

Pure: bytes in, :class:`Dhcp6Packet` out and back, plus what bootbox reads from a client
message: its MAC (:func:`client_mac`) and the :class:`~bootbox.model.Machine` the boot decision
takes (:func:`to_machine`: architecture from option 61, vendor class 16, user class 15). The
responder around it is :mod:`bootbox.net.dhcp6.server`.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid as _uuid
from dataclasses import dataclass, field
from enum import IntEnum

from bootbox.model import Machine

__all__ = ["Dhcp6Packet", "MalformedPacket6", "Msg", "Opt6", "build", "client_mac", "duid_ll", "encode_options",
           "parse", "to_machine"]


class MalformedPacket6(ValueError):
    """The bytes are not a DHCPv6 client message this server can read."""


class Msg(IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    INFORMATION_REQUEST = 11


class Opt6(IntEnum):
    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    STATUS_CODE = 13
    USER_CLASS = 15
    VENDOR_CLASS = 16
    BOOTFILE_URL = 59
    BOOTFILE_PARAM = 60
    CLIENT_ARCH = 61


@dataclass(frozen=True)
class Dhcp6Packet:
    """A DHCPv6 message: type, 3-byte transaction id, options in order (code, data)."""

    msg_type: int
    xid: bytes
    options: tuple[tuple[int, bytes], ...] = field(default_factory=tuple)

    def get(self, code: int) -> bytes | None:
        """The first option ``code``'s data, or None."""
        return next((data for c, data in self.options if c == code), None)

    def all(self, code: int) -> list[bytes]:
        return [data for c, data in self.options if c == code]


# --------------------------------------------------------------------------- codec
def _options(data: bytes, where: str) -> tuple[tuple[int, bytes], ...]:
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise MalformedPacket6(f"truncated option header in {where} at byte {offset}")
        code, length = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + length
        if end > len(data):
            raise MalformedPacket6(f"option {code} in {where} runs past the end ({length} bytes)")
        out.append((code, data[offset + 4 : end]))
        offset = end
    return tuple(out)


def parse(data: bytes) -> Dhcp6Packet:
    """Decode a client message (relay messages are not accepted: bootbox serves one link)."""
    if len(data) < 4:
        raise MalformedPacket6("shorter than a DHCPv6 header")
    if data[0] not in {m.value for m in Msg}:
        raise MalformedPacket6(f"message type {data[0]} is not a client/server message")
    return Dhcp6Packet(data[0], bytes(data[1:4]), _options(data[4:], "the message"))


def encode_options(options: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)


def build(packet: Dhcp6Packet) -> bytes:
    """Encode a message (the inverse of :func:`parse`)."""
    return bytes((packet.msg_type,)) + packet.xid + encode_options(packet.options)


def _length_prefixed(data: bytes) -> list[bytes]:
    """The opaque-data lists of user class (15) and vendor class (16, after its enterprise)."""
    items, offset = [], 0
    while offset + 2 <= len(data):
        (length,) = struct.unpack_from("!H", data, offset)
        items.append(data[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return items


# --------------------------------------------------------------------------- client identity
def client_mac(pkt: Dhcp6Packet, source: str) -> str | None:
    """The client's MAC: from a DUID-LLT/LL with hardware type Ethernet, else from an EUI-64
    link-local source address (``fe80::5054:ff:fe12:3456`` → ``52:54:00:12:34:56``: the ``ff:fe``
    in the middle dropped, the U/L bit flipped back)."""
    duid = pkt.get(Opt6.CLIENTID) or b""
    if len(duid) >= 4:
        kind, hwtype = struct.unpack_from("!HH", duid)
        if hwtype == 1 and kind == 1 and len(duid) == 14:
            return duid[8:14].hex(":")
        if hwtype == 1 and kind == 3 and len(duid) == 10:
            return duid[4:10].hex(":")
    try:
        address = ipaddress.IPv6Address(source.split("%")[0])
    except ValueError:
        return None
    iid = address.packed[8:]
    if address.is_link_local and iid[3:5] == b"\xff\xfe":
        return bytes((iid[0] ^ 0x02, *iid[1:3], *iid[5:8])).hex(":")
    return None


def _client_uuid(pkt: Dhcp6Packet) -> str | None:
    duid = pkt.get(Opt6.CLIENTID) or b""
    if len(duid) == 18 and duid[:2] == b"\x00\x04":  # DUID-UUID (RFC 6355)
        return str(_uuid.UUID(bytes=duid[2:]))
    return None


def to_machine(pkt: Dhcp6Packet, mac: str, server_ip: str, port: int) -> Machine:
    """The bootbox view of a DHCPv6 client (arch from option 61, classes from 15 and 16)."""
    arch_data = pkt.get(Opt6.CLIENT_ARCH) or b""
    arch = struct.unpack_from("!H", arch_data)[0] if len(arch_data) >= 2 else None
    vendor = pkt.get(Opt6.VENDOR_CLASS) or b""
    vendor_items = _length_prefixed(vendor[4:]) if len(vendor) >= 4 else []
    vendor_class = vendor_items[0].decode("ascii", "replace") if vendor_items else ""
    user = [item.decode("ascii", "replace") for item in _length_prefixed(pkt.get(Opt6.USER_CLASS) or b"")]
    if arch is None and vendor_class.startswith(("PXEClient:Arch:", "HTTPClient:Arch:")):
        digits = vendor_class.split(":")[2]
        arch = int(digits) if digits.isdigit() else None
    return Machine(mac=mac, arch=arch, vendor_class=vendor_class, user_class=",".join(user),
                   is_ipxe="iPXE" in user, uuid=_client_uuid(pkt), server_ip=server_ip, port=port)


def duid_ll(mac: str) -> bytes:
    """A DUID-LL (type 3, hardware type 1) for our own identity."""
    return struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))
