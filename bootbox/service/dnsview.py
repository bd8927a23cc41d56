"""The DNS zone as a view of the host index: rebuilt when hosts change, swapped in whole.

The DNS server asks ``lookup(name, qtype)`` on its own thread for every query; building the
zone costs time proportional to the hosts, so it happens only when the host index's version
moved since the last build — a renamed or re-addressed host is answered with its new records on
the next query, and an unchanged appliance answers from the same immutable zone.
"""

from __future__ import annotations

import logging
import threading

from bootbox.config import DnsSettings
from bootbox.core.dnszone import Zone, ZoneAnswer, build_zone
from bootbox.service.hostindex import HostIndex

log = logging.getLogger("bootbox.dns")


class ZoneView:
    """``lookup`` for :class:`bootbox.net.dns.server.DnsServer`, over the appliance's hosts."""

    def __init__(self, settings: DnsSettings, hosts: HostIndex, *, server_address: str = "") -> None:
        self._settings = settings
        self._hosts = hosts
        self._server_address = server_address
        self._lock = threading.Lock()
        self._version = -1
        self._zone = self._build()  # validates [dns] at start-up (ConfigError names the key)

    def _build(self) -> Zone:
        s = self._settings
        entries = [
            (host.attrs.get("hostname") or None, host.attrs.get("ipv4") or None, host.attrs.get("ipv6") or None)
            for host in self._hosts.all()
        ]
        zone = build_zone(
            s.domain,
            entries,
            s.records,
            ttl=s.ttl,
            nameserver=s.nameserver,
            nameserver_addresses=[self._server_address] if self._server_address else [],
            reverse_networks=s.reverse_networks,
        )
        for problem in zone.problems:
            log.debug("dns: %s", problem)
        return zone

    def zone(self) -> Zone:
        """The current zone, rebuilt first if any host changed since the last build."""
        version = self._hosts.version
        with self._lock:
            if version != self._version:
                self._zone = self._build()
                self._version = version
            return self._zone

    def lookup(self, qname: str, qtype: str) -> ZoneAnswer | None:
        return self.zone().answer(qname, qtype)
