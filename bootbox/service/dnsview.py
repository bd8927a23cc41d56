"""The DNS zone as a view of the host index, updated one host at a time.

The DNS server asks ``lookup(name, qtype)`` on its own thread for every query. When the host
index moved since the last query, only the hosts that changed are applied to the
:class:`~bootbox.core.dnszone.LiveZone` (``HostIndex.changed_since``); the whole index is read
again only at start-up or when more changes happened than the index remembers. At 11,000 hosts
a whole rebuild took ~170 ms per host change; one host's update is O(its names).

What a host gets in DNS (issue 16: what a host says about itself stays its own):

* its **name** is the one an operator gave it (``bootbox host adopt MAC --hostname``), else the
  ``hostname`` answer of its host profile, else the hostname it reported — and a reported name
  never takes a name a static record, the name server, a configured name or an earlier host
  holds;
* its **addresses** are those its verified requests came from (``Host.verified``: the network
  vouched for them, bootbox.service.identity), never an ``ip=`` it reported or a DHCP field.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from bootbox.config import DnsSettings
from bootbox.core.dnszone import LiveZone, ZoneAnswer
from bootbox.model import Host
from bootbox.service.hostindex import HostIndex

log = logging.getLogger("bootbox.dns")

CONFIGURED, REPORTED = 0, 1
"""Claim priorities: a configured name wins a contested name over a reported one."""


class ZoneView:
    """``lookup`` for :class:`bootbox.net.dns.server.DnsServer`, over the appliance's hosts."""

    def __init__(self, settings: DnsSettings, hosts: HostIndex, *, server_address: str = "",
                 configured_name: Callable[[Host], str] | None = None) -> None:
        """``configured_name(host)``: the name its host profile's answers give it ("" for none)."""
        self._settings = settings
        self._hosts = hosts
        self._configured_name = configured_name or (lambda host: "")
        self._lock = threading.Lock()
        self._version = -1
        s = settings
        self._zone = LiveZone(s.domain, s.records, ttl=s.ttl, nameserver=s.nameserver,
                              nameserver_addresses=[server_address] if server_address else [],
                              reverse_networks=s.reverse_networks)  # validates [dns] at start-up
        self.full_syncs = 0
        """How often every host was read (start-up, or a change log that did not reach back)."""
        self.host_updates = 0
        self._sync()

    def _entry(self, host: Host) -> tuple[str, str, str, int]:
        try:
            configured = host.name or self._configured_name(host)
        except Exception:  # a store hiccup must not stop DNS; the reported name is used meanwhile
            log.exception("%s: could not read its configured name", host.mac)
            configured = ""
        name = configured or host.attrs.get("hostname", "")
        return (name, host.verified.get("ipv4", ""), host.verified.get("ipv6", ""),
                CONFIGURED if configured else REPORTED)

    def _apply(self, mac: str) -> None:
        self.host_updates += 1
        host = self._hosts.get(mac)
        if host is None:
            self._zone.remove_host(mac)
            return
        name, ipv4, ipv6, priority = self._entry(host)
        self._zone.set_host(mac, name, ipv4, ipv6, priority=priority, first_seen=host.first_seen)
        problem = self._zone.problems.get(mac)
        if problem:
            log.debug("dns: %s", problem)

    def _sync(self) -> None:
        with self._lock:
            version, changed = self._hosts.changed_since(self._version)
            if changed is None:
                known = {host.mac for host in self._hosts.all()}
                for mac in set(self._zone._hosts) - known:  # gone while the log could not say
                    self._zone.remove_host(mac)
                changed = known
                self.full_syncs += 1
            for mac in changed:
                self._apply(mac)
            self._version = version

    def zone(self) -> LiveZone:
        """The zone, brought up to date with the hosts that changed since the last query."""
        if self._hosts.version != self._version:
            self._sync()
        return self._zone

    def lookup(self, qname: str, qtype: str) -> ZoneAnswer | None:
        zone = self.zone()
        with self._lock:
            return zone.answer(qname, qtype)
