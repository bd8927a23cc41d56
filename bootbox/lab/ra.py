"""A minimal IPv6 router-advertisement sender for the lab segment (RFC 4861 §4.2).

iPXE runs IPv4 DHCP and IPv6 router discovery side by side and reports "Configuring ... ok"
only when both have finished. On a segment without an IPv6 router it sends router solicitations
for about 16 s before giving up, and that wait dominated a lab boot (facts/pxe-dhcp.md §7). An
advertisement with no prefix and neither the M nor the O flag tells iPXE that there is nothing
to configure, so it goes on at once.

:class:`RouterAdvertiser` answers every router solicitation immediately and also advertises
unsolicited every few seconds. Its router lifetime is 0: it is not a default router, it only
ends the wait. It uses a raw ICMPv6 socket (the kernel fills in the checksum) bound to one
interface, created inside the lab namespace so it never sees the host's network.

Run it in-process (``RouterAdvertiser(netns=...)``) or as a process in a namespace:
``ip netns exec NS python -m bootbox.lab.ra eth0``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bootbox.lab.netns import LabError, StartStop, run_in_netns

__all__ = [
    "RouterAdvertisement",
    "RouterAdvertiser",
    "build_router_advertisement",
    "main",
    "parse_router_advertisement",
]

log = logging.getLogger("bootbox.lab.ra")

ICMPV6_RS = 133
ICMPV6_RA = 134
_OPT_SOURCE_LLADDR = 1
_OPT_PREFIX_INFO = 3
_ICMP6_FILTER = 1  # <linux/icmpv6.h>; a set bit blocks that ICMPv6 type
_ALL_NODES = "ff02::1"
_ALL_ROUTERS = "ff02::2"


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def build_router_advertisement(
    source_mac: str, *, hop_limit: int = 64, router_lifetime: int = 0, managed: bool = False,
    prefix: str | None = None,
) -> bytes:
    """The ICMPv6 RA message (checksum left 0 for the kernel): by default no M/O flags, no prefix.

    A source link-layer address option is carried, so a listener can answer without neighbour
    discovery. ``router_lifetime`` 0 means "not a default router". ``managed`` sets the M flag
    (addresses come from DHCPv6: what makes UEFI firmware and iPXE run DHCPv6 for PXE), and
    ``prefix`` (e.g. ``fd42:b007::/64``) adds a prefix information option with the on-link and
    autonomous flags, so a booted Linux configures an address by itself (RFC 4861 §4.6.2).
    """
    header = struct.pack(
        "!BBHBBHII",
        ICMPV6_RA,
        0,  # code
        0,  # checksum, computed by the kernel for raw ICMPv6 sockets
        hop_limit,
        0x80 if managed else 0,  # flags: M, O=0
        router_lifetime,
        0,  # reachable time: unspecified
        0,  # retransmit timer: unspecified
    )
    option = struct.pack("!BB6s", _OPT_SOURCE_LLADDR, 1, _mac_bytes(source_mac))
    if prefix is not None:
        network = ipaddress.IPv6Network(prefix)
        option += struct.pack("!BBBBIII16s", _OPT_PREFIX_INFO, 4, network.prefixlen, 0xC0, 86400, 14400, 0,
                              network.network_address.packed)
    return header + option


@dataclass(frozen=True)
class RouterAdvertisement:
    """The fields of a received RA that the lab cares about."""

    hop_limit: int
    managed: bool
    other: bool
    router_lifetime: int
    options: tuple[int, ...]
    """Option types in order (1 source link-layer address, 3 prefix information, ...)."""


def parse_router_advertisement(message: bytes) -> RouterAdvertisement:
    """Decode an ICMPv6 RA's fixed part and option types (for tests and debugging)."""
    if len(message) < 16 or message[0] != ICMPV6_RA:
        raise ValueError("not a router advertisement")
    hop_limit, flags, lifetime = struct.unpack_from("!BBH", message, 4)
    options: list[int] = []
    offset = 16
    while offset + 2 <= len(message):
        kind, length = message[offset], message[offset + 1]
        if length == 0:
            break
        options.append(kind)
        offset += 8 * length
    return RouterAdvertisement(
        hop_limit=hop_limit,
        managed=bool(flags & 0x80),
        other=bool(flags & 0x40),
        router_lifetime=lifetime,
        options=tuple(options),
    )


def _open_socket(interface: str) -> tuple[socket.socket, int, str]:
    """Raw ICMPv6 socket on ``interface`` that receives only router solicitations."""
    try:
        index = socket.if_nametoindex(interface)
    except OSError as exc:
        raise LabError(f"no interface {interface!r} here") from exc
    with open(f"/sys/class/net/{interface}/address") as f:
        mac = f.read().strip()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        # RFC 4861: hop limit 255 proves the packet was not forwarded; receivers drop others.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        # Solicitations go to all-routers, a group a non-forwarding host has not joined.
        group = socket.inet_pton(socket.AF_INET6, _ALL_ROUTERS) + struct.pack("@I", index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        blocked = [0xFFFFFFFF] * 8
        blocked[ICMPV6_RS >> 5] &= ~(1 << (ICMPV6_RS & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("@8I", *blocked))
    except OSError:
        sock.close()
        raise
    return sock, index, mac


class RouterAdvertiser(StartStop):
    """Answer router solicitations on one interface with a prefix-less RA, in a thread.

    :param interface: interface to serve (inside ``netns`` when given). IPv6 must be enabled on
        it: the lab's ``Segment.add_namespace(..., ipv6=True)``.
    :param netns: namespace to create the socket in; None for the caller's own.
    :param interval: seconds between unsolicited adverts; None to answer solicitations only.
    :param managed: set the M flag (clients run DHCPv6).
    :param prefix: advertise this prefix for stateless autoconfiguration
        (see :func:`build_router_advertisement`).
    """

    def __init__(
        self, interface: str = "eth0", *, netns: str | None = None, interval: float | None = 3.0,
        managed: bool = False, prefix: str | None = None,
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.interval = interval
        self.managed = managed
        self.prefix = prefix
        self.solicitations = 0
        self.adverts = 0
        self._sock: socket.socket | None = None
        self._index = 0
        self._message = b""
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    def start(self) -> None:
        """Open the socket, send a first advert and start answering. Returns immediately."""
        if self._thread is not None:
            raise LabError("router advertiser already started")
        if self.netns is None:
            sock, index, mac = _open_socket(self.interface)
        else:
            sock, index, mac = run_in_netns(self.netns, _open_socket, self.interface)
        self._sock, self._index = sock, index
        self._message = build_router_advertisement(mac, managed=self.managed, prefix=self.prefix)
        self._wake_r, self._wake_w = os.pipe()
        self._advertise()
        self._thread = threading.Thread(
            target=self._serve, name=f"ra-{self.interface}", daemon=True
        )
        self._thread.start()
        log.info("sending router advertisements on %s (%s)", self.interface, mac)

    def _advertise(self, destination: str = _ALL_NODES) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(self._message, (destination, 0, 0, self._index))
            self.adverts += 1
        except OSError as exc:  # e.g. the link went down during teardown
            log.debug("RA send failed: %s", exc)

    def _serve(self) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        next_unsolicited = (
            time.monotonic() + self.interval if self.interval is not None else float("inf")
        )
        while True:
            wait = max(0.0, next_unsolicited - time.monotonic())
            events = poller.poll(None if wait == float("inf") else wait * 1000)
            if any(fd == self._wake_r for fd, _ in events):
                return
            if events:
                try:
                    data, sender = self._sock.recvfrom(1500)
                except OSError:
                    return
                if data and data[0] == ICMPV6_RS:
                    self.solicitations += 1
                    log.debug("router solicitation from %s", sender[0])
                    self._advertise()
            if self.interval is not None and time.monotonic() >= next_unsolicited:
                self._advertise()
                next_unsolicited = time.monotonic() + self.interval

    def stop(self) -> None:
        """Stop the thread and close the socket. Safe to call twice."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootbox.lab.ra IFACE [--interval S]``: advertise until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m bootbox.lab.ra", description=__doc__.split("\n")[0]
    )
    parser.add_argument("interface", help="interface to advertise on (IPv6 enabled)")
    parser.add_argument("--interval", type=float, default=3.0, help="unsolicited advert period")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with RouterAdvertiser(args.interface, interval=args.interval) as ra:
        done.wait()
        log.info("answered %d solicitations, sent %d adverts", ra.solicitations, ra.adverts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
