"""Simulated network-boot clients for the benchmarks and robustness tests.

A benchmark must drive bootbox and the reference servers (dnsmasq, tftpd-hpa, nginx) with the
*same* client, one that behaves like the firmware on the wire, so this module models the three
clients a PXE boot consists of:

* the **PXE ROM / EDK2 / iPXE DHCP client**: DISCOVERs and udp/4011 REQUESTs carrying the option
  sets captured from real firmware (``tests/data/dhcp``: EDK2's PxeBcDxe, iPXE on BIOS and
  UEFI) or, for a legacy BIOS PXE ROM, the set of facts/references.md §5; plus raw Ethernet
  frames so a storm can come from 0.0.0.0 with a thousand distinct MACs, and kernel receive
  timestamps so latency is measured the way the reference figures were;
* a **TFTP client** speaking RFC 2347/2348/2349 and RFC 7440 windowsize (curl, the usual
  benchmark client, does not), including EDK2's tsize probe that it aborts with error 8;
* an **iPXE script walker**: expands ``${...}`` settings, follows ``chain``, fetches ``kernel``
  and ``initrd`` over HTTP and stops at ``boot``, so a boot is judged by what a real iPXE would
  have done with the script it got.

Nothing here knows bootbox's internals: the packets are encoded with bootbox's DHCP codec only
because it is a plain RFC 2131 codec (and is fuzzed against in tests).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import struct
import time
import urllib.parse
import uuid as _uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from bootbox.net.dhcp.packet import (
    BROADCAST_FLAG,
    DhcpPacket,
    MalformedPacket,
    MessageType,
    build,
    parse,
    parse_suboptions,
)

__all__ = [
    "BootFailure",
    "BootTrace",
    "PxeClient",
    "Reply",
    "TftpError",
    "TftpResult",
    "callback_url",
    "discover",
    "drain_timestamped",
    "ethernet_frame",
    "expand",
    "http_getter",
    "ipxe_settings",
    "menu_boot_item",
    "offer_boot_file",
    "open_reply_socket",
    "post",
    "recv_timestamped",
    "request_4011",
    "tftp_fetch",
    "tftp_probe_tsize",
    "walk_ipxe",
]

DHCP_SIZE = 548
"""A PXE ROM's DISCOVER is padded to the 548-byte BOOTP minimum most ROMs send (references.md §5)."""
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

# Option values captured from real firmware (tests/data/dhcp/golden.json) or, for the legacy
# BIOS PXE ROM we have no capture of, the PXE 2.1 parameter list an Intel Boot Agent sends.
_BIOS_ROM = {
    57: bytes.fromhex("05c0"),
    93: bytes.fromhex("0000"),
    94: bytes.fromhex("010201"),
    55: bytes([1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60,
               66, 67, 128, 129, 130, 131, 132, 133, 134, 135]),
    60: b"PXEClient:Arch:00000:UNDI:002001",
}
_EDK2 = {  # ovmf-edk2-discover: OVMF 2022.11 PxeBcDxe, x64
    57: bytes.fromhex("05c0"),
    55: bytes.fromhex("0102030405060c0d0f111216171c28292a2b3233363a3b3c4243618081828384858687"),
    94: bytes.fromhex("010300"),
    93: bytes.fromhex("0007"),
    60: b"PXEClient:Arch:00007:UNDI:003000",
}
_IPXE_BIOS = {  # seabios-ipxe-discover: iPXE (undionly / ROM) on BIOS
    57: bytes.fromhex("05c0"),
    93: bytes.fromhex("0000"),
    94: bytes.fromhex("010201"),
    60: b"PXEClient:Arch:00000:UNDI:002001",
    77: b"iPXE",
    55: bytes.fromhex("010306070c0f111a2b3c4243778081828384858687afcb"),
    175: bytes.fromhex("b105018086100eeb03010000170101220101130101110101270101190101290101100102210101150101180101120101"),
}
_IPXE_UEFI = {  # ovmf-snponly-ipxe-discover: snponly.efi loaded by EDK2
    57: bytes.fromhex("05c0"),
    93: bytes.fromhex("0007"),
    94: bytes.fromhex("01030a"),
    60: b"PXEClient:Arch:00007:UNDI:003010",
    77: b"iPXE",
    55: bytes.fromhex("010306070c0f111a2b3c4243778081828384858687afcb"),
    175: bytes.fromhex("b105011af41000eb03010000170101240101130101110101270101290101150101120101"),
}
_STAGES = {("bios", False): _BIOS_ROM, ("uefi", False): _EDK2, ("bios", True): _IPXE_BIOS, ("uefi", True): _IPXE_UEFI}


# --------------------------------------------------------------------------- DHCP packets
@dataclass(frozen=True)
class PxeClient:
    """One simulated machine: its MAC, SMBIOS UUID and firmware (``bios`` or ``uefi``)."""

    mac: bytes
    uuid: bytes
    firmware: str = "bios"

    @classmethod
    def numbered(cls, n: int, firmware: str | None = None) -> "PxeClient":
        """Client ``n`` of a storm: a locally administered MAC ``02:bb:..`` and a random UUID.
        Even numbers are BIOS, odd ones UEFI, unless ``firmware`` is given."""
        mac = bytes.fromhex("02bb") + n.to_bytes(4, "big")
        return cls(mac, os.urandom(16), firmware or ("bios" if n % 2 == 0 else "uefi"))

    @property
    def mac_text(self) -> str:
        return self.mac.hex(":")

    @property
    def arch(self) -> int:
        return 0 if self.firmware == "bios" else 7

    def options(self, kind: MessageType, *, ipxe: bool) -> dict[int, bytes]:
        """The option set this firmware stage sends, in its wire order, for ``kind``."""
        options: dict[int, bytes] = {53: bytes((kind,))}
        options.update(_STAGES[(self.firmware, ipxe)])
        if ipxe:
            options[61] = b"\x01" + self.mac
        options[97] = b"\x00" + self.uuid
        return options


def discover(client: PxeClient, xid: int, *, ipxe: bool = False, broadcast: bool = True,
             ciaddr: str = "0.0.0.0") -> bytes:  # fmt: skip
    """A DHCPDISCOVER as the client's PXE ROM (or iPXE, ``ipxe=True``) sends it, 548 bytes."""
    pkt = DhcpPacket(op=1, xid=xid, chaddr=client.mac, flags=BROADCAST_FLAG if broadcast else 0, ciaddr=ciaddr,
                     options=client.options(MessageType.DISCOVER, ipxe=ipxe))  # fmt: skip
    return _padded(build(pkt))


def request_4011(client: PxeClient, xid: int, ciaddr: str, *, ipxe: bool = False,
                 boot_item: bytes | None = None) -> bytes:  # fmt: skip
    """The boot-server DHCPREQUEST to udp/4011 (PXE 2.1): unicast, with the client's address,
    echoing 43.71 when the OFFER carried a menu."""
    options = client.options(MessageType.REQUEST, ipxe=ipxe)
    if boot_item is not None:
        options[43] = bytes((71, len(boot_item))) + boot_item + b"\xff"
    pkt = DhcpPacket(op=1, xid=xid, chaddr=client.mac, ciaddr=ciaddr, options=options)
    return _padded(build(pkt))


def _padded(data: bytes) -> bytes:
    return data + bytes(max(0, DHCP_SIZE - len(data)))


@dataclass(frozen=True)
class Reply:
    """A DHCP answer as the client saw it: the decoded packet, who sent it, and the kernel's
    receive time in ``time.time_ns()`` units."""

    packet: DhcpPacket
    source: tuple[str, int]
    received_ns: int

    @property
    def kind(self) -> int | None:
        value = self.packet.options.get(53)
        return value[0] if value and len(value) == 1 else None


def offer_boot_file(packet: DhcpPacket) -> str:
    """The boot file an answer names: option 67, else the ``file`` field."""
    value = packet.options.get(67) or packet.file
    return value.split(b"\0", 1)[0].decode("ascii", "replace")


def menu_boot_item(packet: DhcpPacket) -> bytes | None:
    """The first boot item of a PXE menu in option 43 (sub-option 9), as the 4-byte 43.71 value
    (type, layer 0) a client sends back to pick it; None when there is no menu."""
    value = packet.options.get(43)
    if not value:
        return None
    try:
        menu = parse_suboptions(value).get(9)
    except MalformedPacket:
        return None
    if not menu or len(menu) < 2:
        return None
    return menu[:2] + b"\x00\x00"


def ethernet_frame(src_mac: bytes, payload: bytes, *, src_ip: str = "0.0.0.0", dst_ip: str = "255.255.255.255",
                   src_port: int = 68, dst_port: int = 67, dst_mac: bytes = b"\xff" * 6) -> bytes:  # fmt: skip
    """An Ethernet + IPv4 + UDP frame around ``payload``, for an ``AF_PACKET`` socket: the only
    way to send as a client with no address yet and as many MACs as a storm needs. The UDP
    checksum is left 0 (optional over IPv4, RFC 768)."""
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(src_ip), socket.inet_aton(dst_ip))  # fmt: skip
    checksum = _ip_checksum(header)
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return dst_mac + src_mac + b"\x08\x00" + header + udp


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def open_reply_socket(port: int = 68, *, address: str = "0.0.0.0", rcvbuf: int = 16 * 2**20,
                      device: str | None = None) -> socket.socket:  # fmt: skip
    """The client's udp/68 socket: broadcast OFFERs and unicast ACKs both land here, each with
    its kernel receive timestamp (``SO_TIMESTAMPNS``). The 16 MiB buffer (``SO_RCVBUFFORCE``,
    root) makes sure the client never loses a reply, so every loss is the server's."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if device:  # only what arrives on (and leaves by) this interface: one simulated host's
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    sock.bind((address, port))
    return sock


def recv_timestamped(sock: socket.socket, timeout: float) -> Reply | None:
    """The next parseable DHCP reply and its kernel timestamp, or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data, ancdata, _, source = sock.recvmsg(4096, socket.CMSG_SPACE(16))
        except (socket.timeout, BlockingIOError):
            return None
        stamp = time.time_ns()
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanos = struct.unpack("qq", value[:16])
                stamp = seconds * 1_000_000_000 + nanos
        try:
            packet = parse(data)
        except MalformedPacket:
            continue
        if packet.op == 2:
            return Reply(packet, source, stamp)


def drain_timestamped(sock: socket.socket, quiet: float) -> Iterator[Reply]:
    """Every reply queued on ``sock`` until it has been silent for ``quiet`` seconds."""
    while True:
        reply = recv_timestamped(sock, quiet)
        if reply is None:
            return
        yield reply


def bind_device(sock: socket.socket, device: str | None) -> None:
    """Tie ``sock`` to one interface (``SO_BINDTODEVICE``), so a simulated host's packets leave
    by its own interface, with its own MAC, whatever the routing table would pick."""
    if device:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())


class _BoundConnection(http.client.HTTPConnection):
    """An HTTP connection from one simulated host: its address and its interface."""

    def __init__(self, host: str, port: int, timeout: float, source_ip: str | None, device: str | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._source_ip, self._device = source_ip, device

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            bind_device(sock, self._device)
            if self._source_ip:
                sock.bind((self._source_ip, 0))
            sock.settimeout(self.timeout)  # type: ignore[arg-type]
            sock.connect((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(parts: urllib.parse.SplitResult, timeout: float, source_ip: str | None,
                device: str | None) -> http.client.HTTPConnection:  # fmt: skip
    return _BoundConnection(parts.hostname or "", parts.port or 80, timeout, source_ip, device)


# --------------------------------------------------------------------------- TFTP
OP_RRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 3, 4, 5, 6


class TftpError(RuntimeError):
    """The transfer failed: the server sent an error, or it went silent."""


@dataclass(frozen=True)
class TftpResult:
    """A finished download: what was negotiated and what arrived."""

    size: int
    seconds: float
    blksize: int
    windowsize: int
    data: bytes = field(repr=False)


def _rrq(name: str, options: dict[str, int]) -> bytes:
    parts = [name.encode(), b"octet", *(f"{k}\0{v}".encode() for k, v in options.items())]
    return struct.pack("!H", OP_RRQ) + b"\0".join(parts) + b"\0"


def _parse_oack(data: bytes) -> dict[str, str]:
    fields = data[2:].split(b"\0")
    return {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}


def _error_text(packet: bytes) -> str:
    return packet[4:].split(b"\0", 1)[0].decode("ascii", "replace")


def _spin(seconds: float) -> None:
    """Wait ``seconds`` precisely (sleep() overshoots sub-millisecond waits by up to 100 µs)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


EDK2_TFTP_TIMEOUT, EDK2_TFTP_TRIES = 4.0, 6
"""EDK2's PxeBcDxe waits 4 s for a TFTP answer and sends a request up to 6 times
(PXEBC_MTFTP_TIMEOUT, PXEBC_MTFTP_RETRIES)."""


def tftp_probe_tsize(server: tuple[str, int], name: str, *, blksize: int = 1468, windowsize: int = 4,
                     bind: str = "0.0.0.0", timeout: float = EDK2_TFTP_TIMEOUT, tries: int = EDK2_TFTP_TRIES,
                     device: str | None = None) -> int:  # fmt: skip
    """EDK2's first RRQ: ask for tsize (plus blksize/windowsize), read the size from the OACK,
    then end the transfer with error 8 as EDK2 does (facts/pxe-dhcp.md §7). The RRQ is sent
    again after ``timeout`` seconds of silence, ``tries`` times in all, as EDK2 does."""
    request = _rrq(name, {"tsize": 0, "blksize": blksize, "windowsize": windowsize})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        bind_device(sock, device)
        sock.bind((bind, 0))
        sock.settimeout(timeout)
        for _ in range(tries):
            sock.sendto(request, server)
            try:
                data, peer = sock.recvfrom(65536)
                break
            except socket.timeout:
                continue
        else:
            raise TftpError(f"{name}: no answer to the tsize probe after {tries} tries of {timeout:g} s")
        opcode = struct.unpack("!H", data[:2])[0]
        if opcode == OP_ERROR:
            raise TftpError(f"{name}: {_error_text(data)}")
        if opcode != OP_OACK or "tsize" not in _parse_oack(data):
            raise TftpError(f"{name}: the server did not answer tsize")
        sock.sendto(struct.pack("!HH", OP_ERROR, 8) + b"tsize probe\0", peer)
        return int(_parse_oack(data)["tsize"])


def tftp_fetch(
    server: tuple[str, int],
    name: str,
    *,
    blksize: int | None = None,
    windowsize: int | None = None,
    bind: str = "0.0.0.0",
    timeout: float = 1.0,
    retries: int = 5,
    ack_delay: float = 0.0,
    device: str | None = None,
) -> TftpResult:
    """Download ``name``; ask for ``blksize``/``windowsize`` when given (RFC 2348, RFC 7440).

    The client ACKs the last block of each window (RFC 7440 §4), and on a gap ACKs the last
    block received in order so the server resends from there; a silent server gets the last
    ACK again after ``timeout``. ``ack_delay`` holds every ACK back that long, which is what a
    longer round trip does to a sender (this host has no netem to add real delay).
    """
    options = {k: v for k, v in (("blksize", blksize), ("windowsize", windowsize)) if v}
    request = _rrq(name, options)
    started = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        bind_device(sock, device)
        sock.bind((bind, 0))
        sock.settimeout(timeout)
        sock.sendto(request, server)
        peer: tuple[str, int] | None = None
        size, window = 512, 1
        chunks: list[bytes] = []
        expected, since_ack, last_ack = 1, 0, b""
        misses, gap_acked = 0, False

        def ack(block: int) -> bytes:
            if ack_delay:
                _spin(ack_delay)
            packet = struct.pack("!HH", OP_ACK, block & 0xFFFF)
            sock.sendto(packet, peer)  # type: ignore[arg-type]
            return packet

        while True:
            try:
                data, source = sock.recvfrom(65536)
            except socket.timeout:
                misses += 1
                if misses > retries:
                    raise TftpError(f"{name}: server silent after block {expected - 1}") from None
                if peer is None:
                    sock.sendto(request, server)
                else:
                    sock.sendto(last_ack, peer)
                continue
            if peer is None:
                peer = source
            elif source != peer:
                continue
            misses = 0
            opcode = struct.unpack("!H", data[:2])[0]
            if opcode == OP_ERROR:
                raise TftpError(f"{name}: error {struct.unpack('!H', data[2:4])[0]}: {_error_text(data)}")
            if opcode == OP_OACK:
                accepted = _parse_oack(data)
                size = int(accepted.get("blksize", 512))
                window = int(accepted.get("windowsize", 1))
                last_ack = ack(0)
                continue
            if opcode != OP_DATA:
                raise TftpError(f"{name}: unexpected opcode {opcode}")
            block = struct.unpack("!H", data[2:4])[0]
            if block != expected & 0xFFFF:
                if not gap_acked:  # a gap or a resent window: once, say where we are
                    last_ack = ack(expected - 1)
                    since_ack, gap_acked = 0, True
                continue
            gap_acked = False
            payload = data[4:]
            chunks.append(payload)
            expected += 1
            since_ack += 1
            if len(payload) < size:
                ack(expected - 1)
                break
            if since_ack >= window:
                last_ack = ack(expected - 1)
                since_ack = 0
    body = b"".join(chunks)
    return TftpResult(len(body), time.perf_counter() - started, size, window, body)


# --------------------------------------------------------------------------- iPXE scripts
class BootFailure(RuntimeError):
    """A simulated boot did not reach its callback; the message says at which step."""


@dataclass
class BootTrace:
    """What one simulated iPXE did: the URLs it fetched (with byte counts) and the kernel's
    command line, from which the callback URL is taken."""

    fetched: list[tuple[str, int]] = field(default_factory=list)
    kernel: str = ""
    kernel_args: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.fetched)


_SETTING = re.compile(r"\$\{([^}:]+)(?::([a-z]+))?\}")


def expand(text: str, settings: dict[str, str]) -> str:
    """iPXE's ``${name}`` / ``${name:type}`` expansion for the settings a boot script uses:
    ``hexhyp`` writes a MAC with hyphens, ``uristring`` percent-encodes; unknown names expand to
    nothing, as in iPXE."""

    def one(match: re.Match[str]) -> str:
        value = settings.get(match.group(1), "")
        kind = match.group(2)
        if kind == "hexhyp":
            return value.replace(":", "-")
        if kind == "uristring":
            return urllib.parse.quote(value, safe="")
        return value

    return _SETTING.sub(one, text)


Fetch = Callable[[str], tuple[int, bytes | None]]


def http_getter(source_ip: str | None = None, timeout: float = 30.0, keep: int = 64 * 1024,
                device: str | None = None) -> Fetch:  # fmt: skip
    """A fetch function: GET a URL from ``source_ip`` and return (bytes received, body if it is
    at most ``keep`` bytes, i.e. a script). Big files are read and counted, not kept. Raises
    BootFailure for anything but a complete 200."""

    def fetch(url: str) -> tuple[int, bytes | None]:
        parts = urllib.parse.urlsplit(url)
        conn = _connection(parts, timeout, source_ip, device)
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if response.status != 200:
                raise BootFailure(f"GET {url}: HTTP {response.status}")
            received, kept = 0, bytearray()
            buffer = memoryview(bytearray(256 * 1024))  # readinto: no new object per piece of a kernel
            while True:
                count = response.readinto(buffer)
                if not count:
                    break
                received += count
                if received <= keep:
                    kept += buffer[:count]
            if length is not None and int(length) != received:
                raise BootFailure(f"GET {url}: {received} of {length} bytes")
            return received, bytes(kept) if received <= keep else None
        except (OSError, http.client.HTTPException) as exc:
            raise BootFailure(f"GET {url}: {exc}") from exc
        finally:
            conn.close()

    return fetch


def walk_ipxe(url: str, settings: dict[str, str], fetch: Fetch, *, depth: int = 4) -> BootTrace:
    """Run the script at ``url`` as iPXE would, up to ``boot``: ``chain`` replaces the script,
    ``kernel``/``initrd`` download their URL, everything else (echo, labels, ``|| goto``) is a
    no-op. A script that reaches ``sleep`` or ``exit`` before ``boot`` is bootbox's "waiting"
    answer or a failure path, and is reported as a failure."""
    trace = BootTrace()
    current = url
    for _ in range(depth):
        size, body = fetch(current)
        trace.fetched.append((current, size))
        if body is None or not body.startswith(b"#!ipxe"):
            raise BootFailure(f"{current}: not an iPXE script")
        chained = _run_script(body.decode("utf-8", "replace"), settings, fetch, trace, current)
        if chained is None:
            return trace
        current = chained
    raise BootFailure(f"{url}: more than {depth} chained scripts")


def _run_script(text: str, settings: dict[str, str], fetch: Fetch, trace: BootTrace, url: str) -> str | None:
    """Execute one script; return the URL it chains to, or None once it booted."""
    for raw in text.splitlines():
        line = raw.split("||", 1)[0].strip()
        if not line or line.startswith(("#", ":")):
            continue
        words = expand(line, settings).split()
        command, args = words[0], _arguments(words[1:])
        if command == "chain":
            return urllib.parse.urljoin(url, args[0])
        if command in ("kernel", "initrd", "imgfetch", "module"):
            target = urllib.parse.urljoin(url, args[0])
            size, _ = fetch(target)
            trace.fetched.append((target, size))
            if command == "kernel":
                trace.kernel, trace.kernel_args = target, args[1:]
        elif command == "boot":
            if not trace.kernel:
                raise BootFailure(f"{url}: boot without a kernel")
            return None
        elif command in ("sleep", "exit", "shell", "reboot", "poweroff"):
            raise BootFailure(f"{url}: the script says {command} before booting: {text[:200]!r}")
    raise BootFailure(f"{url}: the script ended without booting")


_VALUED_OPTIONS = frozenset(("--name", "-n", "--timeout", "-t"))


def _arguments(words: list[str]) -> list[str]:
    """The positional arguments of an iPXE command: ``--name x`` / ``--timeout x`` take a value,
    other ``--flags`` (``--replace``, ``--autofree``) do not."""
    args, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in _VALUED_OPTIONS:
            skip = True
        elif not word.startswith("-") or args:
            args.append(word)
    return args


def ipxe_settings(client: PxeClient, ip: str, hostname: str = "") -> dict[str, str]:
    """The iPXE settings a boot script may expand, for ``client`` at ``ip``."""
    return {
        "netX/mac": client.mac_text,
        "net0/mac": client.mac_text,
        "uuid": str(_uuid.UUID(bytes_le=client.uuid)),
        "serial": f"SN{client.mac.hex().upper()}",
        "asset": "",
        "manufacturer": "QEMU",
        "product": "Standard PC",
        "buildarch": "x86_64" if client.firmware == "uefi" else "i386",
        "platform": "efi" if client.firmware == "uefi" else "pcbios",
        "netX/ip": ip,
        "net0/ip": ip,
        "hostname": hostname,
        "domain": "",
    }


def callback_url(args: Sequence[str]) -> str | None:
    """The report-in URL a kernel command line carries (``...callback=URL``)."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.endswith("callback") and value.startswith("http"):
            return value
    return None


def post(url: str, fields: dict[str, str], source_ip: str | None = None, timeout: float = 30.0,
         device: str | None = None) -> int:  # fmt: skip
    """POST a form (the booted payload reporting in); returns the HTTP status."""
    parts = urllib.parse.urlsplit(url)
    body = urllib.parse.urlencode(fields)
    conn = _connection(parts, timeout, source_ip, device)
    try:
        conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        raise BootFailure(f"POST {url}: {exc}") from exc
    finally:
        conn.close()
