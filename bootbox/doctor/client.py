"""``bootbox doctor --client``: walk the boot path as a PXE client would, and report each step.

1. **dhcp offer**: DISCOVER as a PXE ROM (``PXEClient``, the chosen arch) → an answer naming a
   boot file and next server;
2. **boot server**: REQUEST to next-server:4011 → ACK naming the same file (UEFI firmware and
   iPXE ask there; facts/pxe-dhcp.md §3);
3. **loader**: fetch that file over TFTP (or HTTP for a URL), as the firmware would;
4. **ipxe offer**: DISCOVER again as iPXE (user class ``iPXE``) → the HTTP URL of the script,
   never the loader again (the chainload loop check, §5);
5. **script**: GET that URL → an ``#!ipxe`` script.

Over loopback (no interface) the DISCOVER carries ciaddr 127.0.0.1 so answers come back by
unicast; over an interface it is broadcast like a real ROM's, and the answer carrying a boot
file is bootbox's (a site DHCP's plain address offer is reported beside it). The probe uses a
fixed, recognisable MAC (:data:`DOCTOR_MAC`), so it appears as one host in ``bootbox host list``.
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bootbox.config import Settings
from bootbox.net.dhcp.packet import (
    BOOTREPLY, BOOTREQUEST, BROADCAST_FLAG, DhcpPacket, MalformedPacket, MessageType, Opt, build, message_type, parse,
)  # fmt: skip
from bootbox.net.interface import interface_ipv4

__all__ = ["DOCTOR_MAC", "Step", "pxe_walk", "tftp_get"]

DOCTOR_MAC = "02:b0:07:d0:c7:00"
_TFTP_RRQ, _TFTP_DATA, _TFTP_ACK, _TFTP_ERROR, _TFTP_OACK = 1, 3, 4, 5, 6


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _request(kind: MessageType, mac: bytes, arch: int, *, ipxe: bool, ciaddr: str, xid: int) -> bytes:
    http = arch in (15, 16, 18, 19)
    options: dict[int, bytes] = {
        Opt.MESSAGE_TYPE: bytes((kind,)),
        Opt.VENDOR_CLASS: f"{'HTTPClient' if http else 'PXEClient'}:Arch:{arch:05d}:UNDI:003000".encode(),
        Opt.CLIENT_ARCH: arch.to_bytes(2, "big"),
        Opt.CLIENT_NDI: b"\x01\x03\x00",
        Opt.CLIENT_UUID: b"\x00" + bytes(16 - len(mac)) + mac,
    }
    if ipxe:
        options[Opt.USER_CLASS] = b"iPXE"
    return build(DhcpPacket(op=BOOTREQUEST, xid=xid, chaddr=mac, ciaddr=ciaddr,
                            flags=BROADCAST_FLAG if ciaddr == "0.0.0.0" else 0, options=options))  # fmt: skip


def _boot_file(pkt: DhcpPacket) -> str:
    return (pkt.options.get(Opt.BOOTFILE_NAME) or pkt.file).decode("ascii", "replace")


class _Client:
    """One UDP socket on the client port: loopback unicast, or broadcast on an interface."""

    def __init__(self, settings: Settings, interface: str | None, timeout: float) -> None:
        self.settings, self.timeout = settings, timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if interface:
            local = interface_ipv4(interface)
            if local is None:
                raise OSError(f"interface {interface!r} does not exist or has no IPv4 address")
            self.own_ip, self.ciaddr, self.server = str(local.ip), "0.0.0.0", "255.255.255.255"
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            self.sock.bind(("0.0.0.0", settings.dhcp.client_port))
        else:
            self.own_ip = self.ciaddr = self.server = "127.0.0.1"
            self.sock.bind(("127.0.0.1", settings.dhcp.client_port))

    def exchange(self, payload: bytes, address: tuple[str, int], xid: int) -> list[tuple[DhcpPacket, str]]:
        """Send once, then gather every reply to ``xid`` for up to ``timeout`` seconds (stopping
        early at the first reply that names a boot file)."""
        self.sock.sendto(payload, address)
        replies: list[tuple[DhcpPacket, str]] = []
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(65535)
                pkt = parse(data)
            except (TimeoutError, socket.timeout):
                break
            except MalformedPacket:
                continue
            if pkt.op == BOOTREPLY and pkt.xid == xid:
                replies.append((pkt, source[0]))
                if _boot_file(pkt):
                    break
        return replies

    def close(self) -> None:
        self.sock.close()


def _offer(client: _Client, mac: bytes, arch: int, ipxe: bool, name: str) -> tuple[Step, DhcpPacket | None]:
    xid = int.from_bytes(mac[-3:], "big") << 8 | (arch & 0xFF) ^ (0x80 if ipxe else 0)
    payload = _request(MessageType.DISCOVER, mac, arch, ipxe=ipxe, ciaddr=client.ciaddr, xid=xid)
    replies = client.exchange(payload, (client.server, client.settings.dhcp.port), xid)
    booting = [(p, src) for p, src in replies if _boot_file(p) and message_type(p) == MessageType.OFFER]
    others = [f"{src} offered {p.yiaddr} without a boot file" for p, src in replies if (p, src) not in booting]
    if not booting:
        hint = "; ".join(others) or f"no answer within {client.timeout:.0f} s"
        if client.ciaddr == "127.0.0.1" and client.settings.dhcp.mode == "full":
            hint += " (full mode answers only on dhcp.interface: use --interface from a machine on that network)"
        return Step(name, False, hint), None
    pkt, source = booting[0]
    extra = f"; also: {'; '.join(others)}" if others else ""
    lease = f", address {pkt.yiaddr}" if pkt.yiaddr != "0.0.0.0" else " (proxy: no address)"
    return Step(name, True, f"{source} offers {_boot_file(pkt)}, next-server {pkt.siaddr}{lease}{extra}"), pkt


def pxe_walk(settings: Settings, *, interface: str | None = None, mac: str = DOCTOR_MAC, arch: int = 0,
             timeout: float = 5.0) -> list[Step]:  # fmt: skip
    """Run the five steps; stop at the first that fails (later ones depend on it)."""
    raw_mac = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    try:
        client = _Client(settings, interface, timeout)
    except OSError as exc:
        return [Step("dhcp offer", False, f"cannot open the client port udp/{settings.dhcp.client_port}: {exc}. "
                     "Run as root; stop a DHCP client holding port 68")]  # fmt: skip
    steps: list[Step] = []
    try:
        step, offer = _offer(client, raw_mac, arch, False, "dhcp offer")
        steps.append(step)
        if offer is None:
            return steps
        boot_file, next_server = _boot_file(offer), offer.siaddr
        server_id = offer.options.get(Opt.SERVER_ID)
        target = next_server if next_server != "0.0.0.0" else socket.inet_ntoa(server_id or b"\x7f\0\0\1")
        if interface is None:
            target = "127.0.0.1"
        xid = int.from_bytes(raw_mac[-4:], "big")
        request = _request(MessageType.REQUEST, raw_mac, arch, ipxe=False, ciaddr=client.own_ip, xid=xid)
        acks = [p for p, _ in client.exchange(request, (target, settings.dhcp.boot_server_port), xid)]
        ack = next((p for p in acks if message_type(p) == MessageType.ACK), None)
        if ack is None or _boot_file(ack) != boot_file:
            got = f"an ACK naming {_boot_file(ack)!r}" if ack is not None else f"no ACK within {timeout:.0f} s"
            steps.append(Step("boot server", False, f"{target}:{settings.dhcp.boot_server_port}: {got}"))
            return steps
        steps.append(Step("boot server", True, f"{target}:{settings.dhcp.boot_server_port} acks {boot_file}"))
        try:
            size = _http_size(boot_file, timeout) if "://" in boot_file else tftp_get(target, settings.tftp.port,
                                                                                       boot_file, timeout)  # fmt: skip
            steps.append(Step("loader", True, f"fetched {boot_file} ({size} bytes)"))
        except OSError as exc:
            steps.append(Step("loader", False, f"{boot_file} from {target}: {exc}"))
            return steps
        step, ipxe_offer = _offer(client, raw_mac, arch, True, "ipxe offer")
        if ipxe_offer is not None and "://" not in _boot_file(ipxe_offer):
            step = Step("ipxe offer", False, f"iPXE was offered {_boot_file(ipxe_offer)} again: it would loop")
            ipxe_offer = None
        steps.append(step)
        if ipxe_offer is None:
            return steps
        url = _boot_file(ipxe_offer)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                head = response.read(4096).decode("utf-8", "replace")
            ok = head.startswith("#!ipxe")
            steps.append(Step("script", ok, f"GET {url}: " + ("an iPXE script" if ok else f"not a script: {head[:60]!r}")))
        except OSError as exc:
            steps.append(Step("script", False, f"GET {url}: {exc}"))
        return steps
    finally:
        client.close()


def _http_size(url: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return len(response.read())


def tftp_get(server: str, port: int, name: str, timeout: float = 5.0, blksize: int = 1468) -> int:
    """Read ``name`` over TFTP (RFC 1350, blksize RFC 2348) and return its size in bytes.

    :raises OSError: no answer, a TFTP error (its message included), or a transfer cut short.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!H", _TFTP_RRQ) + f"{name}\0octet\0blksize\0{blksize}\0".encode(), (server, port))
        size, expected, block_size, peer = 0, 1, 512, None
        while True:
            try:
                data, source = sock.recvfrom(65536)
            except (TimeoutError, socket.timeout):
                raise OSError(f"TFTP: no data from {server}:{port} within {timeout:.0f} s") from None
            if peer is None:
                peer = source
            elif source != peer:
                continue
            opcode = struct.unpack_from("!H", data)[0] if len(data) >= 2 else 0
            if opcode == _TFTP_ERROR:
                raise OSError(f"TFTP error {struct.unpack_from('!H', data, 2)[0]}: {data[4:].rstrip(bytes(1)).decode(errors='replace')}")
            if opcode == _TFTP_OACK:
                fields = data[2:].split(b"\0")
                opts = {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
                block_size = int(opts.get("blksize", 512))
                sock.sendto(struct.pack("!HH", _TFTP_ACK, 0), peer)
                continue
            if opcode != _TFTP_DATA:
                continue
            block = struct.unpack_from("!H", data, 2)[0]
            if block == expected & 0xFFFF:
                size += len(data) - 4
                expected += 1
            sock.sendto(struct.pack("!HH", _TFTP_ACK, block), peer)
            if block == (expected - 1) & 0xFFFF and len(data) - 4 < block_size:
                return size
