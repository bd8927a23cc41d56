"""Who may act for a host: "a host is who the network says it is" (docs/security.md).

PXE authenticates nobody, and every DHCP field (``chaddr``, option 50, option 61) can be forged
from any machine, so a MAC named in a URL or a packet proves nothing. What the appliance can
check is the link it shares with the requester: the kernel's neighbour table maps each on-link
address that talked to the appliance to the hardware address it answered ARP/ND with. A request
may act for MAC X when

* the neighbour entry of its source address carries X (the requester is on the appliance's own
  segment and answers for that address with X's hardware address); or
* its source is a network listed in ``[hosts] trusted_networks`` (hosts behind a DHCP relay or
  router, whose MAC the appliance never sees: the router's MAC stands in front of them); or
* it comes from the appliance itself (loopback, or one of the appliance's own addresses: a
  process on the appliance, such as a caching proxy or a test helper) and ``[hosts]
  trust_loopback`` is on. Nobody else can hold a TCP connection from those addresses: the
  appliance's answers to them never leave it.

In full-DHCP mode the address bootbox leased to X is on the same segment, so the neighbour entry
is the evidence there too; the lease alone is not (its ``chaddr`` was the client's word).

What it does not stop: a machine on the same segment that takes both X's MAC and an address
(its own or X's) answers ARP as X and passes. That needs switch-port security or 802.1X.

The table is read from memory on the boot path: ``/proc/net/arp`` (IPv4) and ``ip -6 neigh``
(IPv6) are read at most once per ``[hosts] neighbour_cache`` seconds, and again on a miss (a
client that has just connected is in the kernel's table before its first request arrives).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from bootbox.config import HostsSettings

ARP_TABLE = Path("/proc/net/arp")
IP6_NEIGH = ("ip", "-6", "neigh", "show")
_MIN_REREAD = 0.05
"""A miss reads the table again at most this often, so a flood of strangers costs one read per 50 ms."""


def canonical_ip(text: str) -> str:
    """The address as the neighbour table spells it (``::ffff:a.b.c.d`` → ``a.b.c.d``); "" if none."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


_MAC_TEXT = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def _mac(text: str) -> str | None:
    """A neighbour entry's MAC in lower case, or None (malformed, or the all-zero placeholder).
    One compiled match: the whole table is parsed on every re-read, ~1,000 entries in a storm,
    and a per-character check made that parse 3-4 ms of interpreter time each time."""
    text = text.lower()
    if _MAC_TEXT.fullmatch(text) is None or text == "00:00:00:00:00:00":
        return None
    return text


def read_arp(path: Path = ARP_TABLE) -> dict[str, str]:
    """IPv4 address → MAC of the complete entries of ``/proc/net/arp``."""
    table: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return table
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and int(fields[2], 16) & 0x2:  # ATF_COM: resolved
            mac = _mac(fields[3])
            if mac:
                table[fields[0]] = mac
    return table


def read_ip6_neigh(command: tuple[str, ...] = IP6_NEIGH) -> dict[str, str]:
    """IPv6 address → MAC of ``ip -6 neigh`` entries that carry a link-layer address."""
    table: dict[str, str] = {}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=2, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return table
    for line in out.splitlines():
        fields = line.split()
        if "lladdr" in fields and fields[-1] not in ("FAILED", "INCOMPLETE"):
            mac = _mac(fields[fields.index("lladdr") + 1]) if fields.index("lladdr") + 1 < len(fields) else None
            if mac:
                table[canonical_ip(fields[0])] = mac
    return table


class NeighbourTable:
    """The kernel's neighbour table, cached: ``mac_of(ip)`` reads memory on the boot path."""

    def __init__(self, *, max_age: float = 1.0, read_v4: Callable[[], dict[str, str]] = read_arp,
                 read_v6: Callable[[], dict[str, str]] = read_ip6_neigh,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._max_age = max_age
        self._readers = {4: read_v4, 6: read_v6}
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._reading = {4: threading.Lock(), 6: threading.Lock()}
        self._tables: dict[int, tuple[float, dict[str, str]]] = {4: (-1e9, {}), 6: (-1e9, {})}
        self.reads = 0

    def mac_of(self, ip: str, *, unless: str | None = None, wait: bool = True) -> str | None:
        """The MAC the neighbour entry of ``ip`` carries, or None (not on-link, or not resolved).

        A cached entry younger than ``max_age`` answers from memory. Otherwise — no entry, an old
        one, or (with ``unless``) an entry that names another MAC than the one claimed — the
        answer comes from a read of the table made *after* this call started: a host whose first
        request arrives just after another new host's is not refused on a copy read before its
        ARP entry existed (seen in a 1,000-host boot storm). Reads are shared between concurrent
        callers and happen at most every ``_MIN_REREAD`` seconds, so a burst of strangers costs
        one read per interval and each waits at most that long. ``wait=False`` (attributing a
        finished transfer, on a protocol thread) never waits: within the interval it answers from
        the last read."""
        ip = canonical_ip(ip)
        if not ip:
            return None
        family = 6 if ":" in ip else 4
        asked = self._clock()
        with self._lock:
            read_at, table = self._tables[family]
            cached = table.get(ip)
            if cached is not None and asked - read_at <= self._max_age and (unless is None or cached == unless):
                return cached
        with self._reading[family]:
            with self._lock:
                read_at, table = self._tables[family]
            if read_at >= asked:  # another caller read the table after we asked
                return table.get(ip)
            pause = read_at + _MIN_REREAD - self._clock()
            if pause > 0:
                if not wait:
                    return table.get(ip)
                self._sleep(pause)
            started = self._clock()
            fresh = self._readers[family]()
            with self._lock:
                self._tables[family] = (started, fresh)
                self.reads += 1
        return fresh.get(ip)


def is_local_address(address: str) -> bool:
    """Whether ``address`` is one of this machine's own (a socket can bind to it): a syscall,
    no subprocess, so it is cheap enough for the boot path."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


class Verdict(NamedTuple):
    """Whether a request may act for a MAC, and why (for the audit event and the docs)."""

    ok: bool
    reason: str
    vouched: bool = False
    """The address is the host's own (its neighbour entry, or a trusted routed network; not
    loopback): it may be published in DNS as the host's."""


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass
class Identity:
    """``check(mac, ip)``: may a request from ``ip`` act for ``mac``? Counts refusals."""

    settings: HostsSettings
    neighbours: NeighbourTable

    def __post_init__(self) -> None:
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in self.settings.trusted_networks)
        self._lock = threading.Lock()
        self.refused = 0

    @classmethod
    def from_settings(cls, settings: HostsSettings) -> "Identity":
        return cls(settings, NeighbourTable(max_age=settings.neighbour_cache))

    def check(self, mac: str, ip: str) -> Verdict:
        verdict = self._check(mac, ip)
        if not verdict.ok:
            with self._lock:
                self.refused += 1
        return verdict

    def _check(self, mac: str, ip: str) -> Verdict:
        address = canonical_ip(ip)
        if not address:
            return Verdict(False, f"the request's source {ip!r} is not an address")
        addr = ipaddress.ip_address(address)
        loopback = any(addr in net for net in _LOOPBACK)
        seen = None if loopback else self.neighbours.mac_of(address, unless=mac)
        if seen is None and (loopback or is_local_address(address)):
            if self.settings.trust_loopback:
                return Verdict(True, "from the appliance itself ([hosts] trust_loopback)")
            return Verdict(False, "requests from the appliance itself are not trusted ([hosts] trust_loopback = false)")
        if seen == mac:
            return Verdict(True, f"the neighbour entry of {address} is {mac}", vouched=True)
        if seen is not None:  # on-link with another hardware address: trusted networks do not cover it
            return Verdict(False, f"the neighbour entry of {address} is {seen}, not {mac}")
        if any(addr.version == net.version and addr in net for net in self._trusted):
            return Verdict(True, f"{address} is in [hosts] trusted_networks", vouched=True)
        return Verdict(False, f"{address} has no neighbour entry on the appliance's segments "
                              "(routed hosts need [hosts] trusted_networks)")
