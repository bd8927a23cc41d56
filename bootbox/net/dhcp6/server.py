"""DHCPv6 for network boot (RFC 8415, RFC 5970): boot-file URLs for UEFI PXE over IPv6 and iPXE.

A UEFI firmware doing PXE over IPv6 (after a router advertisement with the M flag) sends SOLICIT
with its architecture (option 61), vendor class (16, ``PXEClient:Arch:00007…``) and asks for
options 59/60 (facts/pxe-dhcp.md §9). The answer's option 59 is a URL: ``tftp://[addr]/file``
for a loader, ``http://…`` for iPXE's script. iPXE itself asks again with user class (15)
``iPXE`` and must get the script URL, or it loads itself forever — the same split as over IPv4,
decided by the same ``decide(Machine) -> BootSpec | None`` callable.

Addresses: EDK2 will not boot from an advertise that gives it no address, so with an
``address_pool`` bootbox hands each client one (IA_NA), derived from a hash of its DUID and
IAID: stable across boots with no lease table to keep. Without a pool it answers with boot
options only, for a network whose own DHCPv6 server gives the addresses. Router advertisements
stay the router's job.

The client's MAC (bootbox's host key) comes from a DUID-LL/LLT, else from its EUI-64 link-local
source address (EDK2 and iPXE both use one); a client neither reveals is not answered.

:mod:`bootbox.net.dhcp6.packet` is the pure codec, :func:`respond` the pure decision, and
:class:`Dhcp6Server` the thin socket loop (one thread, ``selectors``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp6.packet import (
    Dhcp6Packet,
    MalformedPacket6,
    Msg,
    Opt6,
    build,
    client_mac,
    duid_ll,
    encode_options,
    parse,
    to_machine,
)
from bootbox.net.loop import SelectorLoop

__all__ = [
    "Dhcp6Packet", "Dhcp6Server", "MalformedPacket6", "Msg", "Opt6", "Reply6", "assigned_address", "boot_url",
    "build", "client_mac", "duid_ll", "interface_global_address", "parse", "respond", "to_machine",
]  # fmt: skip

log = logging.getLogger("bootbox.dhcp6")

Decide = Callable[[Machine], BootSpec | None]
OnAnswer = Callable[[Machine, BootSpec, int], None]

ALL_SERVERS = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1)
ENTERPRISE_PXE = 343  # Intel's enterprise number, used in the PXE vendor class (RFC 5970 §3.3)
PREFERRED_LIFETIME, VALID_LIFETIME = 3600, 7200
T1, T2 = 1800, 2880
STATUS_NO_ADDRS = 2
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


# --------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class Reply6:
    """What to send back, and what it was decided from (no ``spec`` for a RELEASE/DECLINE)."""

    packet: Dhcp6Packet
    machine: Machine
    spec: BootSpec | None
    address: str | None


def boot_url(spec: BootSpec, server_ip: str) -> str:
    """Option 59 wants a URL: a bare TFTP file name becomes ``tftp://[server]/name``."""
    if "://" in spec.boot_file:
        return spec.boot_file
    return f"tftp://[{server_ip}]/{spec.boot_file.lstrip('/')}"


def assigned_address(pool: ipaddress.IPv6Network, duid: bytes, iaid: bytes, avoid: str = "") -> str:
    """A stable address in ``pool`` for one IA of one client: a hash of DUID and IAID, never the
    pool's first 256 addresses (routers and servers sit there) nor ``avoid``."""
    span = pool.num_addresses - 256
    counter = 0
    while True:
        digest = hashlib.sha256(duid + iaid + counter.to_bytes(4, "big")).digest()
        candidate = pool.network_address + 256 + int.from_bytes(digest[:16], "big") % span
        if str(candidate) != avoid:
            return str(candidate)
        counter += 1


def respond(
    pkt: Dhcp6Packet, *, source: str, server_ip: str, server_duid: bytes, decide: Decide, port: int = 547,
    pool: ipaddress.IPv6Network | None = None,
) -> Reply6 | str:
    """The ADVERTISE or REPLY for ``pkt``, or the reason to stay silent.

    Only SOLICIT, REQUEST, RENEW, REBIND and INFORMATION-REQUEST from network-boot clients (a
    vendor class or a user class ``iPXE``) are answered; a REQUEST/RENEW naming another server
    is left to it (RFC 8415 §18.3). ``decide``'s exceptions propagate to the caller.
    """
    if pkt.msg_type not in (Msg.SOLICIT, Msg.REQUEST, Msg.RENEW, Msg.REBIND, Msg.INFORMATION_REQUEST,
                            Msg.RELEASE, Msg.DECLINE):
        return f"{Msg(pkt.msg_type).name} is not answered"
    duid = pkt.get(Opt6.CLIENTID)
    if not duid:
        return "no client identifier"
    named = pkt.get(Opt6.SERVERID)
    if named is not None and named != server_duid:
        return "addressed to another server"
    if pkt.msg_type == Msg.SOLICIT and named is not None:
        return "a SOLICIT must not name a server"
    mac = client_mac(pkt, source)
    if mac is None:
        return f"cannot tell the MAC of {source} (DUID type {duid[:2].hex()}, not an EUI-64 address)"
    machine = to_machine(pkt, mac, server_ip, port)
    if pkt.msg_type in (Msg.RELEASE, Msg.DECLINE):
        if named is None:
            return f"a {Msg(pkt.msg_type).name} must name the server"
        # RFC 8415 §18.3.7-8: always answered. EDK2 hands the NIC to the loaded iPXE only after
        # its RELEASE is answered; unanswered, the hand-over stalls (seen on the wire).
        status = (Opt6.STATUS_CODE, struct.pack("!H", 0) + b"released")
        return Reply6(Dhcp6Packet(Msg.REPLY, pkt.xid, ((Opt6.SERVERID, server_duid), (Opt6.CLIENTID, duid), status)),
                      machine, None, None)
    if not machine.vendor_class.startswith(("PXEClient", "HTTPClient")) and not machine.is_ipxe:
        return f"vendor class {machine.vendor_class!r} is not PXEClient/HTTPClient, and not iPXE"
    options: list[tuple[int, bytes]] = [(Opt6.SERVERID, server_duid), (Opt6.CLIENTID, duid)]
    address = None
    if pkt.msg_type != Msg.INFORMATION_REQUEST:
        for ia in pkt.all(Opt6.IA_NA):
            if len(ia) < 12:
                return "malformed IA_NA"
            if pool is None:
                status = struct.pack("!H", STATUS_NO_ADDRS) + b"no addresses: the site's DHCPv6 server gives them"
                options.append((Opt6.IA_NA, ia[:4] + bytes(8) + encode_options(((Opt6.STATUS_CODE, status),))))
                continue
            address = assigned_address(pool, duid, ia[:4], avoid=server_ip)
            iaaddr = ipaddress.IPv6Address(address).packed + struct.pack("!II", PREFERRED_LIFETIME, VALID_LIFETIME)
            options.append((Opt6.IA_NA, ia[:4] + struct.pack("!II", T1, T2)
                            + encode_options(((Opt6.IAADDR, iaaddr),))))
    if address is not None:
        machine = replace(machine, client_ip=address)
    spec = decide(machine)
    if spec is None:
        return "decide() declined this client"
    if machine.vendor_class.startswith("HTTPClient"):
        # HTTP boot ignores an answer without it (facts §6). PXE clients must NOT get a
        # "PXEClient" echo: EDK2 then treats the answer as a PXE boot-server offer and asks
        # [server]:4011 before it loads anything (seen on the wire; PXE-E16 when nobody answers).
        klass = b"HTTPClient"
        options.append((Opt6.VENDOR_CLASS, struct.pack("!IH", ENTERPRISE_PXE, len(klass)) + klass))
    options.append((Opt6.BOOTFILE_URL, boot_url(spec, server_ip).encode()))
    if pkt.msg_type == Msg.SOLICIT:
        options.append((Opt6.PREFERENCE, b"\xff"))  # the client may take it at once (RFC 8415 §18.2.9)
    kind = Msg.ADVERTISE if pkt.msg_type == Msg.SOLICIT else Msg.REPLY
    return Reply6(Dhcp6Packet(kind, pkt.xid, tuple(options)), machine, spec, address)


# --------------------------------------------------------------------------- host helpers
def interface_global_address(interface: str, if_inet6: Path = Path("/proc/net/if_inet6")) -> str | None:
    """The first global (scope 00) IPv6 address of ``interface`` in this network namespace."""
    try:
        lines = if_inet6.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[5] == interface and fields[3] == "00":
            return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return None


# --------------------------------------------------------------------------- socket server
class Dhcp6Server:
    """udp/547 on one interface (joined to ff02::1:2), one thread; see :func:`respond`.

    ``on_answer(machine, spec, port)`` runs after each answer is sent.
    """

    def __init__(self, *, decide: Decide, interface: str, on_answer: OnAnswer | None = None,
                 server_address: str = "", address_pool: str = "", port: int = 547, client_port: int = 546) -> None:
        self._decide, self._on_answer = decide, on_answer
        self.interface = interface
        self._server_address = server_address
        self._pool = ipaddress.IPv6Network(address_pool) if address_pool else None
        self._port, self._client_port = port, client_port
        self._sock: socket.socket | None = None
        self._loop = SelectorLoop("bootbox-dhcp6", self._readable)
        self._duid = b""
        self.stats = dict.fromkeys(("received", "answered", "ignored", "errors"), 0)

    @property
    def port(self) -> int:
        return self._port

    @property
    def server_address(self) -> str:
        return self._server_address

    def start(self) -> None:
        """Find our address and DUID, bind udp/547 on the interface, join ff02::1:2, serve."""
        address = self._server_address or interface_global_address(self.interface)
        if not address:
            raise OSError(f"interface {self.interface} has no global IPv6 address for boot URLs; "
                          "add one or set dhcp6.server_address")
        self._server_address = address
        try:
            mac = Path(f"/sys/class/net/{self.interface}/address").read_text().strip()
            index = socket.if_nametoindex(self.interface)
        except OSError as exc:
            raise OSError(f"no interface {self.interface!r} for DHCPv6: {exc}") from exc
        self._duid = duid_ll(mac)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.bind(("::", self._port))
            group = socket.inet_pton(socket.AF_INET6, ALL_SERVERS) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot serve DHCPv6 on {self.interface} udp/{self._port}: {exc.strerror}. "
                          "Another DHCPv6 server (dnsmasq?) may hold the port; ports below 1024 need root "
                          "or CAP_NET_BIND_SERVICE") from exc
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self._sock = sock
        self._loop.start({"dhcp6": sock})
        log.info("DHCPv6 listening on %s udp/%d; boot URLs name [%s]%s", self.interface, self._port, address,
                 f", addresses from {self._pool}" if self._pool else ", no addresses (boot options only)")

    def stop(self) -> None:
        self._loop.stop()
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _readable(self, sock: socket.socket, key: object) -> None:
        try:
            self._receive()
        except Exception:  # one packet must never stop the service
            self.stats["errors"] += 1
            log.exception("DHCPv6: unexpected error handling a packet")

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            data, _, _, source = self._sock.recvmsg(65535, socket.CMSG_SPACE(20))
        except (BlockingIOError, InterruptedError):
            return
        self.stats["received"] += 1
        try:
            pkt = parse(data)
        except MalformedPacket6 as exc:
            self.stats["ignored"] += 1
            log.debug("DHCPv6 from %s: dropped: %s", source[0], exc)
            return
        try:
            outcome = respond(pkt, source=source[0], server_ip=self._server_address, server_duid=self._duid,
                              decide=self._decide, port=self._port, pool=self._pool)
        except Exception as exc:
            self.stats["errors"] += 1
            log.error("DHCPv6 from %s: decide() raised %r", source[0], exc, exc_info=exc)
            return
        if isinstance(outcome, str):
            self.stats["ignored"] += 1
            log.debug("DHCPv6 %s from %s ignored: %s", _type_name(pkt.msg_type), source[0], outcome)
            return
        destination = (source[0], self._client_port, 0, source[3])  # back to the link-local sender
        try:
            self._sock.sendto(build(outcome.packet), destination)
        except OSError as exc:
            self.stats["errors"] += 1
            log.error("mac %s: cannot send the DHCPv6 answer to %s: %s", outcome.machine.mac, source[0], exc)
            return
        self.stats["answered"] += 1
        if outcome.spec is None:
            log.info("mac %s: DHCPv6 REPLY to %s %s", outcome.machine.mac, _type_name(pkt.msg_type), source[0])
            return
        log.info("mac %s: DHCPv6 %s %s%s to %s", outcome.machine.mac, _type_name(outcome.packet.msg_type),
                 boot_url(outcome.spec, self._server_address),
                 f" (address {outcome.address})" if outcome.address else "", source[0])
        if self._on_answer is not None:
            try:
                self._on_answer(outcome.machine, outcome.spec, self._port)
            except Exception:
                log.exception("mac %s: on_answer callback failed", outcome.machine.mac)


def _type_name(kind: int) -> str:
    try:
        return Msg(kind).name
    except ValueError:
        return f"type {kind}"
