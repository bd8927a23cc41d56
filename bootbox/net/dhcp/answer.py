"""Full-DHCP mode's answers: packet in, lease decision, packet out (RFC 2131 §4.3, RFC 2132).

Pure: :func:`answer` takes the client's packet, the :class:`~bootbox.net.dhcp.leases.LeasePool`,
the clock reading and the ``decide`` callable, and returns what to send (or why not to). The
socket loop in :mod:`bootbox.net.dhcp.server` is a thin shell around it.

What a PXE client is told differs from proxy mode (facts/pxe-dhcp.md §2, §9): the answer that
gives the address also carries the boot file, in ``file`` and option 67, with ``siaddr`` set to
the next server. That is the ISC dhcpd / dnsmasq ``dhcp-boot`` layout every firmware knows, and
the only one GRUB 2.06 (the Secure Boot chain) understands, because it takes its TFTP server
from the siaddr of the ACK. Option 60 is echoed only for UEFI HTTP boot, which requires
``HTTPClient`` (§6); a PXE answer without ``PXEClient`` is an ordinary DHCP answer with a boot
file, so firmware boots it directly instead of looking for a proxy or boot server.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    DhcpPacket,
    MalformedPacket,
    MessageType,
    Opt,
    message_type,
    to_machine,
    vendor_class,
)
from bootbox.net.dhcp.leases import Lease, LeasePool, Nak, NoAddress

__all__ = ["Answer", "Decide", "FullDhcpOptions", "LeaseChange", "Silence", "answer", "build_nak", "dns_list"]

Decide = Callable[[Machine], BootSpec | None]
BROADCAST = "255.255.255.255"
ZERO = "0.0.0.0"
BOOT_CLASSES = ("PXEClient", "HTTPClient")
FILE_FIELD_MAX = 127
_MESSAGE = 56  # RFC 2132 §9.9: why a NAK was sent
_RENEWAL_T1, _REBINDING_T2, _BROADCAST_ADDRESS, _DOMAIN = 58, 59, 28, 15


@dataclass(frozen=True)
class FullDhcpOptions:
    """What every client on the segment is told besides its address (RFC 2132 §3, §8)."""

    server_ip: str
    network: ipaddress.IPv4Network
    router: str = ""
    dns_servers: tuple[str, ...] = ()
    domain: str = ""


@dataclass(frozen=True)
class Answer:
    """A packet to send and where; ``lease``/``spec`` say what it granted (for logs and events)."""

    packet: DhcpPacket
    address: tuple[str, int]
    kind: MessageType
    lease: Lease | None = None
    machine: Machine | None = None
    spec: BootSpec | None = None
    reason: str = ""


@dataclass(frozen=True)
class LeaseChange:
    """No answer is due, but the pool changed (RELEASE, DECLINE): persist and record it."""

    kind: MessageType
    lease: Lease


@dataclass(frozen=True)
class Silence:
    """Nothing to send, and why (logged at DEBUG)."""

    reason: str


Outcome = Answer | LeaseChange | Silence


def answer(
    pkt: DhcpPacket,
    *,
    pool: LeasePool,
    options: FullDhcpOptions,
    now: float,
    decide: Decide,
    server_port: int = 67,
    client_port: int = 68,
) -> Outcome:
    """What to do about ``pkt``, received on the DHCP server port of the served interface.

    ``decide`` is asked only for PXE and UEFI HTTP clients; an exception from it loses the boot
    information, never the address (the client still gets a lease and a log line explains).
    """
    if pkt.op != BOOTREQUEST:
        return Silence("not a BOOTREQUEST")
    if pkt.htype != 1 or pkt.hlen != 6:
        return Silence(f"htype {pkt.htype}/hlen {pkt.hlen} is not Ethernet")
    if pkt.giaddr != ZERO:
        return Silence(f"relayed by {pkt.giaddr}: full mode serves only its own segment")
    kind = message_type(pkt)
    mac = pkt.mac
    hostname = pkt.options.get(Opt.HOST_NAME, b"").decode("ascii", "replace")[:63]
    server_id = pkt.options.get(Opt.SERVER_ID)
    ours = server_id is None or server_id == socket.inet_aton(options.server_ip)
    requested = _address(pkt.options.get(Opt.REQUESTED_IP))
    if kind == MessageType.DISCOVER:
        offered = pool.discover(mac, now, requested=requested, hostname=hostname)
        if isinstance(offered, NoAddress):
            return Silence(offered.reason)
        return _grant(pkt, MessageType.OFFER, offered, pool, options, decide, server_port, client_port)
    if kind == MessageType.REQUEST:
        if not ours:
            pool.forget_offer(mac)
            return Silence(f"the client chose the server {_address(server_id)}")
        wanted = requested or (pkt.ciaddr if pkt.ciaddr != ZERO else None)
        if wanted is None:
            return Silence("a REQUEST naming no address (no option 50, no ciaddr)")
        bound = pool.request(mac, wanted, now, hostname=hostname)
        if isinstance(bound, Nak):
            return Answer(build_nak(pkt, options.server_ip, bound.reason), (BROADCAST, client_port),
                          MessageType.NAK, reason=bound.reason)  # fmt: skip
        return _grant(pkt, MessageType.ACK, bound, pool, options, decide, server_port, client_port)
    if kind == MessageType.RELEASE:
        released = pool.release(mac, pkt.ciaddr, now) if ours else None
        return LeaseChange(MessageType.RELEASE, released) if released else Silence(f"RELEASE of {pkt.ciaddr}, not leased to it")
    if kind == MessageType.DECLINE:
        declined = pool.decline(mac, requested or "", now) if ours else None
        return LeaseChange(MessageType.DECLINE, declined) if declined else Silence(f"DECLINE of {requested}, not leased to it")
    if kind == MessageType.INFORM:
        if pkt.ciaddr == ZERO:
            return Silence("INFORM without ciaddr")
        return _grant(pkt, MessageType.ACK, None, pool, options, decide, server_port, client_port)
    return Silence(f"message type {kind} is not served")


def _address(value: bytes | None) -> str | None:
    return socket.inet_ntoa(value) if value is not None and len(value) == 4 else None


def _boot(pkt: DhcpPacket, server_ip: str, server_port: int, decide: Decide, leased: str | None
          ) -> tuple[Machine | None, BootSpec | None, str]:
    """Ask ``decide`` about network-boot clients; everyone else gets no boot information."""
    if not vendor_class(pkt).startswith(BOOT_CLASSES):
        return None, None, ""
    try:
        machine = to_machine(pkt, server_ip, server_port)
    except MalformedPacket as exc:
        return None, None, str(exc)
    if leased:
        machine = replace(machine, client_ip=leased)
    try:
        return machine, decide(machine), ""
    except Exception as exc:  # a plugin or policy bug must cost the boot file, not the address
        return machine, None, f"decide() raised {exc!r}"


def _grant(
    pkt: DhcpPacket,
    kind: MessageType,
    lease: Lease | None,
    pool: LeasePool,
    options: FullDhcpOptions,
    decide: Decide,
    server_port: int,
    client_port: int,
) -> Answer:
    """An OFFER or ACK (``lease`` None: the ACK to an INFORM, RFC 2131 §4.3.5: no lease time)."""
    machine, spec, problem = _boot(pkt, options.server_ip, server_port, decide, lease.ip if lease else None)
    opts: dict[int, bytes] = {
        Opt.MESSAGE_TYPE: bytes((kind,)),
        Opt.SERVER_ID: socket.inet_aton(options.server_ip),
    }
    if lease is not None:
        seconds = pool.lease_seconds
        opts[Opt.LEASE_TIME] = seconds.to_bytes(4, "big")
        opts[_RENEWAL_T1] = (seconds // 2).to_bytes(4, "big")
        opts[_REBINDING_T2] = (seconds * 7 // 8).to_bytes(4, "big")
    opts[Opt.SUBNET_MASK] = options.network.netmask.packed
    opts[_BROADCAST_ADDRESS] = options.network.broadcast_address.packed
    if options.router:
        opts[Opt.ROUTER] = socket.inet_aton(options.router)
    if options.dns_servers:
        opts[Opt.DNS_SERVERS] = b"".join(socket.inet_aton(a) for a in options.dns_servers)
    if options.domain:
        opts[_DOMAIN] = options.domain.encode("ascii")
    siaddr, file = ZERO, b""
    if spec is not None:
        boot_file = spec.boot_file.encode()
        if vendor_class(pkt).startswith("HTTPClient"):
            opts[Opt.VENDOR_CLASS] = b"HTTPClient"  # without it EDK2 ignores the URL (§6, §9)
        if Opt.CLIENT_UUID in pkt.options:
            opts[Opt.CLIENT_UUID] = pkt.options[Opt.CLIENT_UUID]
        opts[Opt.BOOTFILE_NAME] = boot_file
        siaddr = spec.next_server or options.server_ip
        file = boot_file if len(boot_file) <= FILE_FIELD_MAX else b""
    reply = DhcpPacket(
        op=BOOTREPLY,
        htype=pkt.htype,
        hlen=pkt.hlen,
        xid=pkt.xid,
        flags=pkt.flags,
        ciaddr=pkt.ciaddr if kind == MessageType.ACK else ZERO,
        yiaddr=lease.ip if lease is not None else ZERO,
        siaddr=siaddr,
        chaddr=pkt.chaddr,
        file=file,
        options=opts,
    )
    # No relay (refused above): unicast to a client that already has its address, else
    # broadcast, which needs no ARP entry for an address the client does not hold yet.
    destination = pkt.ciaddr if pkt.ciaddr != ZERO else BROADCAST
    return Answer(reply, (destination, client_port), kind, lease, machine, spec, problem)


def build_nak(pkt: DhcpPacket, server_ip: str, reason: str) -> DhcpPacket:
    """A DHCPNAK (RFC 2131 table 3): no address, no parameters, the reason in option 56."""
    return DhcpPacket(
        op=BOOTREPLY,
        htype=pkt.htype,
        hlen=pkt.hlen,
        xid=pkt.xid,
        flags=pkt.flags,
        chaddr=pkt.chaddr,
        options={
            Opt.MESSAGE_TYPE: bytes((MessageType.NAK,)),
            Opt.SERVER_ID: socket.inet_aton(server_ip),
            _MESSAGE: reason.encode("ascii", "replace")[:255],
        },
    )


def dns_list(configured: Sequence[str], server_ip: str, dns_running: bool) -> tuple[str, ...]:
    """Option 6: the configured servers, else bootbox itself when its DNS server runs."""
    if configured:
        return tuple(configured)
    return (server_ip,) if dns_running else ()
