"""A pure DHCP/BOOTP codec with the PXE options bootbox needs; no sockets, no I/O.

Wire format: RFC 2131 §2 (fixed header, magic cookie), RFC 2132 (options; §9.3 overload),
RFC 3396 (long options are split into several instances and concatenated on receipt),
RFC 3004 (user class), RFC 4578 (client architecture 93, NDI 94, UUID 97) and the PXE 2.1
specification (vendor options in 43). iPXE's own block 175 is recognised by presence only.

``parse`` is written against hostile input: every length is bounds-checked, and the only
exception it can raise is :class:`MalformedPacket`, so the server loop treats any failure as
"drop the packet". It is plain ``struct`` code because it runs once per received packet: a DHCP
storm of a thousand clients must be parsed on one thread (facts/libraries.md §6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from socket import inet_aton, inet_ntoa

from bootbox.model import Machine

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "BROADCAST_FLAG",
    "MAGIC_COOKIE",
    "DhcpPacket",
    "MalformedPacket",
    "MessageType",
    "Opt",
    "PxeOpt",
    "build",
    "build_suboptions",
    "client_arch",
    "client_uuid",
    "has_ipxe_options",
    "is_ipxe",
    "message_type",
    "parse",
    "parse_suboptions",
    "pxe_boot_item",
    "pxe_suboptions",
    "to_machine",
    "user_classes",
    "vendor_class",
]

BOOTREQUEST, BOOTREPLY = 1, 2
BROADCAST_FLAG = 0x8000  # RFC 2131 §2, figure 2: the leftmost bit of 'flags'
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3, RFC 2132 §2

# op htype hlen hops | xid | secs flags | ciaddr yiaddr siaddr giaddr | chaddr | sname | file
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_CODE_LENGTH = struct.Struct("BB")
_HEADER_LEN = _HEADER.size  # 236
_OPTIONS_START = _HEADER_LEN + len(MAGIC_COOKIE)  # 240: the fixed header plus the cookie
_SNAME, _FILE = slice(44, 108), slice(108, 236)

MIN_PACKET = _OPTIONS_START
MAX_PACKET = 65507
"""The largest UDP payload IPv4 can carry; anything longer did not come off a socket."""
MAX_OPTION_LENGTH = 4096
"""Cap on one option after RFC 3396 concatenation. No client or server option comes near it
(real packets fit an Ethernet frame); the cap bounds what a crafted packet can make us hold."""
BUILD_MIN_SIZE = 300
"""RFC 1542 §2.1: some relay agents and old clients drop BOOTP messages shorter than 300 bytes,
so servers pad replies up to it (dnsmasq and ISC dhcpd do)."""


class MalformedPacket(ValueError):
    """The bytes are not a well-formed DHCP message; the server drops them and counts it."""


class MessageType(IntEnum):
    """DHCP message types (option 53, RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """Option codes bootbox reads or writes (RFC 2132 unless noted)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOST_NAME = 12
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_LIST = 55
    MAX_MESSAGE_SIZE = 57
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77  # RFC 3004
    CLIENT_ARCH = 93  # RFC 4578 §2.1
    CLIENT_NDI = 94  # RFC 4578 §2.2
    CLIENT_UUID = 97  # RFC 4578 §2.3
    IPXE_ENCAP = 175  # iPXE's encapsulated feature block
    END = 255


class PxeOpt(IntEnum):
    """PXE 2.1 vendor sub-options carried inside option 43 (PXE 2.1 specification)."""

    DISCOVERY_CONTROL = 6
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    BOOT_ITEM = 71


@dataclass(slots=True)
class DhcpPacket:
    """One DHCP message: the fixed BOOTP header plus options in wire order.

    ``options`` maps a code to its value with RFC 3396 fragments already joined; ``build``
    splits long values again. ``chaddr`` holds only the ``hlen`` significant bytes; ``sname``
    and ``file`` are cut at their first NUL (they are C strings, RFC 2131 §2).
    """

    op: int
    xid: int
    chaddr: bytes
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> str:
        """``chaddr`` as ``aa:bb:cc:dd:ee:ff`` (any length; Ethernet gives six octets)."""
        return self.chaddr.hex(":")

    @property
    def broadcast(self) -> bool:
        """The client asked for broadcast replies (RFC 2131 §4.1)."""
        return bool(self.flags & BROADCAST_FLAG)


# --------------------------------------------------------------------------- parse
def parse(data: bytes) -> DhcpPacket:
    """Decode one DHCP message, raising :class:`MalformedPacket` for anything unusable.

    Honours option overload (RFC 2132 §9.3): options continue in ``file`` and then ``sname``,
    in that order (RFC 3396), and those fields then carry no strings.
    """
    try:
        return _parse(data)
    except MalformedPacket:
        raise
    except Exception as exc:  # belt and braces: the contract is "only MalformedPacket"
        raise MalformedPacket(f"undecodable packet: {exc!r}") from exc


def _parse(data: bytes) -> DhcpPacket:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedPacket(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    size = len(data)
    if size < MIN_PACKET:
        raise MalformedPacket(f"{size} bytes is shorter than the {MIN_PACKET}-byte DHCP minimum")
    if size > MAX_PACKET:
        raise MalformedPacket(f"{size} bytes is longer than any UDP datagram")
    if data[_HEADER_LEN:_OPTIONS_START] != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie (a plain BOOTP packet or not DHCP at all)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = (
        _HEADER.unpack_from(data)
    )
    if hlen > 16:
        # chaddr is 16 octets (RFC 2131 §2); a longer hlen describes no address we can read.
        raise MalformedPacket(f"hlen {hlen} exceeds the 16-byte chaddr field")

    options: dict[int, bytes] = {}
    fragments: dict[int, list[bytes]] = {}
    _walk_options(data, _OPTIONS_START, size, options, fragments)
    overload = _overload(options, fragments)
    if overload & 1:
        _walk_options(data, _FILE.start, _FILE.stop, options, fragments)
        file = b""
    if overload & 2:
        _walk_options(data, _SNAME.start, _SNAME.stop, options, fragments)
        sname = b""
    for code, parts in fragments.items():
        joined = b"".join(parts)
        if len(joined) > MAX_OPTION_LENGTH:
            raise MalformedPacket(f"option {code} repeated to {len(joined)} bytes (limit {MAX_OPTION_LENGTH})")
        options[code] = joined

    return DhcpPacket(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=inet_ntoa(ciaddr),
        yiaddr=inet_ntoa(yiaddr),
        siaddr=inet_ntoa(siaddr),
        giaddr=inet_ntoa(giaddr),
        chaddr=chaddr[:hlen],
        sname=sname.split(b"\0", 1)[0],
        file=file.split(b"\0", 1)[0],
        options=options,
    )


def _walk_options(
    data: bytes, start: int, end: int, options: dict[int, bytes], fragments: dict[int, list[bytes]]
) -> None:
    """Read code/length/value triples in ``data[start:end]`` until END (RFC 2132 §2).

    A repeated code is collected in ``fragments`` and joined once at the end (RFC 3396):
    joining as we go would be quadratic in the number of repeats. A missing END is tolerated,
    because some clients stop at the end of the buffer; a length that runs past ``end`` is not.
    """
    i = start
    while i < end:
        code = data[i]
        if code == 0:  # PAD
            i += 1
            continue
        if code == 255:  # END
            return
        if i + 1 >= end:
            raise MalformedPacket(f"option {code} at offset {i} has no length byte")
        stop = i + 2 + data[i + 1]
        if stop > end:
            raise MalformedPacket(f"option {code} at offset {i} (length {data[i + 1]}) runs past byte {end}")
        value = data[i + 2 : stop]
        first = options.get(code)
        if first is None:
            options[code] = value
        elif code in fragments:
            fragments[code].append(value)
        else:
            fragments[code] = [first, value]
        i = stop


def _overload(options: dict[int, bytes], fragments: dict[int, list[bytes]]) -> int:
    """The option-overload value (RFC 2132 §9.3): 1 = file, 2 = sname, 3 = both, 0 = none."""
    value = options.get(Opt.OVERLOAD)
    if value is None:
        return 0
    if Opt.OVERLOAD in fragments or len(value) != 1 or value[0] not in (1, 2, 3):
        raise MalformedPacket(f"bad option-overload value {value.hex()}")
    return value[0]


# --------------------------------------------------------------------------- build
def build(pkt: DhcpPacket) -> bytes:
    """Encode a packet: header, cookie, options (split at 255 bytes, RFC 3396), END, padding.

    Raises ``ValueError`` for values that cannot be encoded (a programming error on our side,
    not a malformed input): ``sname``/``file`` longer than their fields or a bad address.
    """
    if len(pkt.sname) > 64 or len(pkt.file) > 128:
        raise ValueError("sname is limited to 64 bytes and file to 128; send long names in options 66/67")
    if len(pkt.chaddr) > 16:
        raise ValueError("chaddr is limited to 16 bytes")
    try:
        header = _HEADER.pack(
            pkt.op, pkt.htype, pkt.hlen, pkt.hops, pkt.xid, pkt.secs, pkt.flags,
            inet_aton(pkt.ciaddr), inet_aton(pkt.yiaddr), inet_aton(pkt.siaddr), inet_aton(pkt.giaddr),
            pkt.chaddr, pkt.sname, pkt.file,
        )  # fmt: skip
    except (OSError, struct.error) as exc:
        raise ValueError(f"cannot encode DHCP header: {exc}") from exc
    out = bytearray(header)
    out += MAGIC_COOKIE
    out += _encode_options(pkt.options)
    out.append(Opt.END)
    if len(out) < BUILD_MIN_SIZE:
        out += bytes(BUILD_MIN_SIZE - len(out))
    return bytes(out)


def _encode_options(options: dict[int, bytes]) -> bytes:
    """Encode options in dict order; values over 255 bytes become consecutive instances."""
    parts: list[bytes] = []
    for code, value in options.items():
        if code == Opt.PAD or code == Opt.END:
            continue
        if not 0 < code < 255:
            raise ValueError(f"option code {code} is outside 1..254")
        size = len(value)
        if size <= 255:  # the usual case: one instance (an empty value is code, 0)
            parts.append(_CODE_LENGTH.pack(code, size))
            parts.append(value)
            continue
        for pos in range(0, size, 255):
            chunk = value[pos : pos + 255]
            parts.append(_CODE_LENGTH.pack(code, len(chunk)))
            parts.append(chunk)
    return b"".join(parts)


def parse_suboptions(value: bytes) -> dict[int, bytes]:
    """Decode an encapsulated option block such as 43 or 175 (RFC 2132 §8.4 layout).

    Uses the same rules as the top level: PAD/END, bounds checks, repeats concatenated.
    """
    options: dict[int, bytes] = {}
    fragments: dict[int, list[bytes]] = {}
    _walk_options(value, 0, len(value), options, fragments)
    for code, parts in fragments.items():
        options[code] = b"".join(parts)
    return options


def build_suboptions(suboptions: dict[int, bytes]) -> bytes:
    """Encode an encapsulated block and close it with END, as PXE ROMs expect (PXE 2.1)."""
    return _encode_options(suboptions) + bytes((Opt.END,))


# --------------------------------------------------------------------------- helpers
def message_type(pkt: DhcpPacket) -> int | None:
    """Option 53, or None for BOOTP and broken packets (RFC 2132 §9.6: exactly one octet)."""
    value = pkt.options.get(Opt.MESSAGE_TYPE)
    return value[0] if value is not None and len(value) == 1 else None


def vendor_class(pkt: DhcpPacket) -> str:
    """Option 60 as text (``PXEClient:Arch:00007:UNDI:003000``), or ``""``."""
    return pkt.options.get(Opt.VENDOR_CLASS, b"").decode("ascii", "replace")


def user_classes(pkt: DhcpPacket) -> tuple[str, ...]:
    """Option 77 as a tuple of class names.

    RFC 3004 encodes a list of length-prefixed items; iPXE and many other clients send one
    raw string (``iPXE``) instead. The value is read as RFC 3004 only when the items exactly
    fill it, otherwise as a single raw string.
    """
    value = pkt.options.get(Opt.USER_CLASS)
    if not value:
        return ()
    items = _rfc3004_items(value)
    if items is None:
        items = [value]
    return tuple(item.decode("ascii", "replace") for item in items)


def _rfc3004_items(value: bytes) -> list[bytes] | None:
    items, i = [], 0
    while i < len(value):
        length = value[i]
        if length == 0 or i + 1 + length > len(value):
            return None
        items.append(value[i + 1 : i + 1 + length])
        i += 1 + length
    return items


def has_ipxe_options(pkt: DhcpPacket) -> bool:
    """True when iPXE's encapsulated option 175 is present (facts/pxe-dhcp.md §5)."""
    return Opt.IPXE_ENCAP in pkt.options


def is_ipxe(pkt: DhcpPacket) -> bool:
    """iPXE announces itself with user class ``iPXE`` and/or option 175; custom builds may
    drop 175, and some vendor builds drop the user class, so either one is enough."""
    return has_ipxe_options(pkt) or "iPXE" in user_classes(pkt)


def client_arch(pkt: DhcpPacket) -> int | None:
    """The client architecture: option 93 (RFC 4578 §2.1, first code of the list), else the
    ``Arch:NNNNN`` field of a ``PXEClient``/``HTTPClient`` vendor class (PXE 2.1)."""
    value = pkt.options.get(Opt.CLIENT_ARCH)
    if value is not None and len(value) >= 2 and len(value) % 2 == 0:
        return int.from_bytes(value[:2], "big")
    fields = vendor_class(pkt).split(":")
    if len(fields) >= 3 and fields[1] == "Arch" and fields[2].isdigit() and len(fields[2]) <= 5:
        return int(fields[2])
    return None


def client_uuid(pkt: DhcpPacket) -> str | None:
    """Option 97 (RFC 4578 §2.3: type 0 + 16-byte UUID) as a canonical UUID string.

    Empty or odd-sized values (buggy ROMs) and the SMBIOS "not set" values all-zero and
    all-ones are treated as absent, so they never make different machines look alike.
    """
    value = pkt.options.get(Opt.CLIENT_UUID)
    if value is None or len(value) != 17 or value[0] != 0:
        return None
    raw = value[1:]
    if raw in (bytes(16), b"\xff" * 16):
        return None
    # Firmware copies the SMBIOS bytes, whose first three fields are little-endian (SMBIOS
    # 2.6+). Decoding them so gives the UUID that dmidecode, the BMC, iPXE's ${uuid} and QEMU's
    # -uuid show: our captures carry QEMU's 8c3e4a52-... as 52 4a 3e 8c ... on the wire, from
    # SeaBIOS+iPXE and from EDK2 alike. (Pre-2.6 SMBIOS was big-endian; the wire cannot tell.)
    # Formatted by hand: uuid.UUID costs twice as much on every DISCOVER, and gives the same
    # text (a property test in tests/test_dhcp_packet.py holds the two together).
    return (f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-"
            f"{raw[8:10].hex()}-{raw[10:].hex()}")  # fmt: skip


def pxe_suboptions(pkt: DhcpPacket) -> dict[int, bytes]:
    """Option 43 decoded as PXE vendor sub-options; ``{}`` when absent (PXE 2.1)."""
    value = pkt.options.get(Opt.VENDOR_SPECIFIC)
    return parse_suboptions(value) if value else {}


def pxe_boot_item(pkt: DhcpPacket) -> bytes | None:
    """PXE sub-option 71 (boot item: type + layer, 4 bytes) that a 4011 ACK must echo."""
    return pxe_suboptions(pkt).get(PxeOpt.BOOT_ITEM)


def to_machine(pkt: DhcpPacket, server_ip: str, port: int) -> Machine:
    """The bootbox view of the client that sent ``pkt`` to ``server_ip``:``port``.

    Raises :class:`MalformedPacket` for non-Ethernet clients: bootbox identifies hosts by a
    six-byte MAC, and a chaddr of any other size is not one.
    """
    if pkt.htype != 1 or pkt.hlen != 6:
        raise MalformedPacket(f"htype {pkt.htype} / hlen {pkt.hlen} is not Ethernet")
    return Machine(
        mac=pkt.mac,
        arch=client_arch(pkt),
        vendor_class=vendor_class(pkt),
        user_class=",".join(user_classes(pkt)),
        is_ipxe=is_ipxe(pkt),
        uuid=client_uuid(pkt),
        server_ip=server_ip,
        client_ip=pkt.ciaddr if pkt.ciaddr != "0.0.0.0" else None,
        port=port,
    )
