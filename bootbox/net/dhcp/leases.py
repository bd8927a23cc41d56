"""The address allocator of full-DHCP mode: pure bookkeeping, no sockets, no clock, no I/O.

RFC 2131 §4.3 describes what a DHCP server must remember; this module is exactly that memory,
so the packet code in :mod:`bootbox.net.dhcp.server` stays a translation between wire and calls:

* ``discover`` picks an address and holds it for the client for ``offer_seconds``: the client's
  fixed reservation, else the address it had before (RFC 2131 §4.3.1 asks servers to give a
  client its previous address), else the one it asks for (option 50) if that is free, else the
  lowest never-used address, else the address whose lease ended longest ago;
* ``request`` binds an address for ``lease_seconds`` (SELECTING, INIT-REBOOT, RENEWING and
  REBINDING are all "this client wants this address": the answer is ACK if it may have it and
  NAK otherwise; the server is authoritative for its range, because full mode refuses to start
  beside another DHCP server);
* ``release`` ends a lease early, ``decline`` quarantines an address a client found in use
  (RFC 2131 §4.3.3: it must not be handed out again for a while), ``expire`` ages everything.

Released and expired leases are remembered (not deleted) so a client coming back gets its old
address while nobody else has taken it. Every method takes ``now`` (seconds since the epoch,
persisted as such) so tests control time and the state survives restarts meaningfully.
:meth:`LeasePool.to_dict` / :meth:`LeasePool.from_state` give a JSON-ready snapshot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = ["Lease", "LeasePool", "LeaseState", "Nak", "NoAddress", "STATE_VERSION"]

STATE_VERSION = 1
IPv4 = ipaddress.IPv4Address


class LeaseState(StrEnum):
    """Where an address stands. OFFERED and BOUND are *active*; RELEASED and EXPIRED are only
    remembered (the address is free, but preferably kept for the same client); DECLINED is an
    address in quarantine, belonging to nobody."""

    OFFERED = "offered"
    BOUND = "bound"
    RELEASED = "released"
    EXPIRED = "expired"
    DECLINED = "declined"


_ACTIVE = (LeaseState.OFFERED, LeaseState.BOUND)
_REMEMBERED = (LeaseState.RELEASED, LeaseState.EXPIRED)


@dataclass(frozen=True)
class Lease:
    """One address and who has (or had) it. ``mac`` is ``""`` for a declined address."""

    ip: str
    mac: str
    state: LeaseState
    expires: float
    hostname: str = ""

    @property
    def active(self) -> bool:
        return self.state in _ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "mac": self.mac, "state": str(self.state), "expires": self.expires,
                "hostname": self.hostname}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Lease:
        return cls(
            ip=str(IPv4(str(doc["ip"]))),
            mac=str(doc.get("mac") or "").lower(),
            state=LeaseState(str(doc["state"])),
            expires=float(doc["expires"]),
            hostname=str(doc.get("hostname") or ""),
        )


@dataclass(frozen=True)
class Nak:
    """The client may not have the address it asked for; ``reason`` goes in option 56."""

    reason: str


@dataclass(frozen=True)
class NoAddress:
    """Nothing can be offered (the range is exhausted, or a reservation clashes): stay silent."""

    reason: str


class LeasePool:
    """The leases of one subnet's range, keyed by address, with reservations by MAC.

    :param network: the subnet clients live in; reservations and the range must lie inside it.
    :param range_start: first address leased dynamically (inclusive).
    :param range_end: last address leased dynamically (inclusive).
    :param lease_seconds: how long an ACK binds an address.
    :param offer_seconds: how long an OFFER holds an address for a client that has not
        requested it yet (clients REQUEST within a few seconds; retries reuse the same hold).
    :param quarantine_seconds: how long a declined address stays out of use.
    :param reservations: MAC → fixed address; such addresses are never given to anyone else.
    :param excluded: addresses never handed out (the server's own, the router's).
    """

    def __init__(
        self,
        *,
        network: str | ipaddress.IPv4Network,
        range_start: str,
        range_end: str,
        lease_seconds: int,
        offer_seconds: int = 60,
        quarantine_seconds: int = 600,
        reservations: Mapping[str, str] | None = None,
        excluded: Iterable[str] = (),
    ) -> None:
        self.network = ipaddress.IPv4Network(network, strict=False)
        self.first, self.last = IPv4(range_start), IPv4(range_end)
        if not (self.first in self.network and self.last in self.network and self.first <= self.last):
            raise ValueError(f"range {range_start}-{range_end} is not inside {self.network}")
        self.lease_seconds = lease_seconds
        self.offer_seconds = offer_seconds
        self.quarantine_seconds = quarantine_seconds
        self._excluded = {IPv4(a) for a in excluded} | {self.network.network_address, self.network.broadcast_address}
        self._reserved: dict[str, IPv4] = {}
        self._reserved_by_ip: dict[IPv4, str] = {}
        self.set_reservations(reservations or {})
        self._by_ip: dict[IPv4, Lease] = {}
        self._by_mac: dict[str, IPv4] = {}

    # ------------------------------------------------------------------ configuration
    def set_reservations(self, reservations: Mapping[str, str]) -> None:
        """Replace the reservations (MAC → address); addresses outside the subnet are refused."""
        reserved = {mac.lower(): IPv4(ip) for mac, ip in reservations.items()}
        outside = [str(ip) for ip in reserved.values() if ip not in self.network]
        if outside:
            raise ValueError(f"reserved addresses outside {self.network}: {', '.join(outside)}")
        self._reserved = reserved
        self._reserved_by_ip = {ip: mac for mac, ip in reserved.items()}

    # ------------------------------------------------------------------ queries
    def leases(self) -> list[Lease]:
        """Every record (active, remembered and quarantined), by address."""
        return [self._by_ip[ip] for ip in sorted(self._by_ip)]

    def lease_for(self, mac: str) -> Lease | None:
        """The client's record, whatever its state."""
        ip = self._by_mac.get(mac.lower())
        return self._by_ip.get(ip) if ip is not None else None

    def active_count(self) -> int:
        return sum(1 for lease in self._by_ip.values() if lease.active)

    def _may_have(self, mac: str, ip: IPv4) -> bool:
        """Whether ``mac`` may use ``ip`` at all (ignoring who holds it now)."""
        reserved = self._reserved.get(mac)
        if reserved is not None:
            return ip == reserved
        if ip in self._excluded or ip in self._reserved_by_ip:
            return False
        return self.first <= ip <= self.last

    def _taken_by_other(self, mac: str, ip: IPv4) -> bool:
        lease = self._by_ip.get(ip)
        return lease is not None and lease.mac != mac and (lease.active or lease.state is LeaseState.DECLINED)

    def _fresh_addresses(self) -> Iterator[IPv4]:
        ip = self.first
        while ip <= self.last:
            if ip not in self._by_ip and ip not in self._excluded and ip not in self._reserved_by_ip:
                yield ip
            ip += 1

    def _choose(self, mac: str, requested: str | None) -> IPv4 | NoAddress:
        reserved = self._reserved.get(mac)
        if reserved is not None:
            if self._taken_by_other(mac, reserved):
                return NoAddress(f"its reserved address {reserved} is leased to {self._by_ip[reserved].mac}")
            return reserved
        previous = self._by_mac.get(mac)
        if previous is not None and self._may_have(mac, previous) and not self._taken_by_other(mac, previous):
            return previous
        if requested:
            try:
                wanted = IPv4(requested)
            except ValueError:
                wanted = None
            if wanted is not None and self._may_have(mac, wanted) and wanted not in self._by_ip:
                return wanted
        for ip in self._fresh_addresses():
            return ip
        remembered = [lease for lease in self._by_ip.values() if lease.state in _REMEMBERED]
        usable = [lease for lease in remembered if self._may_have(mac, IPv4(lease.ip))]
        if usable:
            return IPv4(min(usable, key=lambda lease: lease.expires).ip)
        return NoAddress(f"no free address in {self.first}-{self.last}")

    # ------------------------------------------------------------------ changes
    def _put(self, lease: Lease) -> Lease:
        ip = IPv4(lease.ip)
        old = self._by_ip.get(ip)
        if old is not None and old.mac and self._by_mac.get(old.mac) == ip and old.mac != lease.mac:
            del self._by_mac[old.mac]  # a remembered lease taken over by someone else
        if lease.mac:
            previous = self._by_mac.get(lease.mac)
            if previous is not None and previous != ip:
                self._by_ip.pop(previous, None)  # one record per client: the old address is free again
            self._by_mac[lease.mac] = ip
        self._by_ip[ip] = lease
        return lease

    def discover(self, mac: str, now: float, *, requested: str | None = None, hostname: str = "") -> Lease | NoAddress:
        """Choose an address for a DHCPDISCOVER and hold it (a bound lease stays bound)."""
        mac = mac.lower()
        self.expire(now)
        chosen = self._choose(mac, requested)
        if isinstance(chosen, NoAddress):
            return chosen
        current = self._by_ip.get(chosen)
        if current is not None and current.mac == mac and current.state is LeaseState.BOUND:
            return current
        return self._put(Lease(str(chosen), mac, LeaseState.OFFERED, now + self.offer_seconds, hostname))

    def request(self, mac: str, ip: str, now: float, *, hostname: str = "") -> Lease | Nak:
        """Bind ``ip`` to ``mac`` for a DHCPREQUEST, or say why not."""
        mac = mac.lower()
        self.expire(now)
        try:
            wanted = IPv4(ip)
        except ValueError:
            return Nak(f"{ip!r} is not an address")
        if wanted not in self.network:
            return Nak(f"{wanted} is not on this network ({self.network})")
        if not self._may_have(mac, wanted):
            reserved = self._reserved.get(mac)
            return Nak(f"{wanted} is not leased here" + (f"; this client's address is {reserved}" if reserved else ""))
        if self._taken_by_other(mac, wanted):
            return Nak(f"{wanted} is in use by another client")
        old = self._by_ip.get(wanted)
        name = hostname or (old.hostname if old is not None and old.mac == mac else "")
        return self._put(Lease(str(wanted), mac, LeaseState.BOUND, now + self.lease_seconds, name))

    def forget_offer(self, mac: str) -> None:
        """The client took another server's offer: free the address we were holding for it."""
        lease = self.lease_for(mac)
        if lease is not None and lease.state is LeaseState.OFFERED:
            del self._by_ip[IPv4(lease.ip)]
            del self._by_mac[mac.lower()]

    def release(self, mac: str, ip: str, now: float) -> Lease | None:
        """DHCPRELEASE: end the client's lease of ``ip`` now (remembered for its next visit)."""
        lease = self.lease_for(mac)
        if lease is None or lease.ip != ip or not lease.active:
            return None
        return self._put(replace(lease, state=LeaseState.RELEASED, expires=now))

    def decline(self, mac: str, ip: str, now: float) -> Lease | None:
        """DHCPDECLINE: the client found ``ip`` in use; keep the address out of use for a while."""
        mac = mac.lower()
        lease = self.lease_for(mac)
        if lease is None or lease.ip != ip:
            return None
        del self._by_mac[mac]
        return self._put(Lease(ip, "", LeaseState.DECLINED, now + self.quarantine_seconds))

    def expire(self, now: float) -> list[Lease]:
        """Age every record; return the bound leases that just ran out."""
        ended: list[Lease] = []
        for ip, lease in list(self._by_ip.items()):
            if lease.expires > now or lease.state in _REMEMBERED:
                continue
            if lease.state is LeaseState.BOUND:
                ended.append(self._put(replace(lease, state=LeaseState.EXPIRED)))
            else:  # an unanswered offer or a finished quarantine: the address is simply free
                del self._by_ip[ip]
                if lease.mac and self._by_mac.get(lease.mac) == ip:
                    del self._by_mac[lease.mac]
        return ended

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot; pending offers are left out (they last seconds)."""
        leases = [lease.to_dict() for lease in self.leases() if lease.state is not LeaseState.OFFERED]
        return {"version": STATE_VERSION, "leases": leases}

    def load(self, state: Mapping[str, Any]) -> list[str]:
        """Restore a :meth:`to_dict` snapshot; return one problem per record that was skipped.

        Records for addresses outside the subnet (after a config change) are dropped, because a
        client must not keep an address of a network it is no longer on.
        """
        problems: list[str] = []
        if not state:
            return problems
        if state.get("version") != STATE_VERSION:
            return [f"lease state version {state.get('version')!r} is not {STATE_VERSION}; starting empty"]
        for index, doc in enumerate(state.get("leases") or []):
            try:
                lease = Lease.from_dict(doc)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"lease #{index} is unreadable ({exc!r})")
                continue
            if IPv4(lease.ip) not in self.network:
                problems.append(f"lease of {lease.ip} to {lease.mac or '-'} is outside {self.network}")
                continue
            if lease.state is not LeaseState.OFFERED:
                self._put(lease)
        return problems
