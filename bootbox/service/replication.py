"""Replication: several appliances on one PostgreSQL see each other's changes within moments.

The store's change feed (:class:`bootbox.store.pg.changefeed.ChangeFeed`, LISTEN/NOTIFY) brings
what another appliance committed into this one's memory; this module turns that into what the
boot path reads: documents of the tables the service derives state from (rule sets, profiles,
host profiles) make it rebuild that state (:meth:`BootService.reload_tables`), and host rows
replace the hosts in the in-memory index without marking them for writing back
(:meth:`HostIndex.apply_remote`). The boot path keeps reading memory only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from bootbox.model import Host, normalize_mac
from bootbox.service.bootservice import BootService
from bootbox.store.pg.changefeed import ChangeFeed, HostChanges
from bootbox.store.postgresql import PostgreSQLStore

log = logging.getLogger("bootbox.replication")


def start_replication(service: BootService, store: PostgreSQLStore, *, reconnect_max: float = 10.0,
                      ready: Callable[[], bool] = lambda: True) -> ChangeFeed:
    """Listen for other appliances' changes and apply them to ``service``; returns the feed
    (``close()`` it on stop; ``status()`` for ``bootbox status``). After an outage the feed
    reloads everything, but only once ``ready()`` (this appliance's outbox is sent)."""

    def on_hosts(keys: list[str], fetch: Callable[[], HostChanges]) -> None:
        macs = {key: _mac_of(key) for key in keys}
        marks = service.hosts.write_marks(mac for mac in macs.values() if mac)  # before the rows are read
        applied = 0
        for key, doc in fetch().items():
            host = _host(doc)
            if doc is not None and host is None:
                continue
            mac = macs.get(key) or (host.mac if host is not None else "")
            if mac and service.hosts.apply_remote(mac, host, marks.get(mac)):
                applied += 1
        if applied:
            log.debug("applied %d host change(s) from other appliances", applied)

    feed = ChangeFeed(store, on_documents=service.reload_tables, on_hosts=on_hosts, reconnect_max=reconnect_max,
                      ready=ready)
    feed.start()
    return feed


def _host(doc: dict[str, Any] | None) -> Host | None:
    if doc is None:
        return None
    try:
        return Host.from_dict(doc)
    except Exception:
        log.warning("a host row in the database has the wrong shape; ignored: %.200r", doc)
        return None


def _mac_of(key: str) -> str:
    """A host row's key (12 hex digits) as a MAC."""
    try:
        return normalize_mac(":".join(key[i:i + 2] for i in range(0, len(key), 2)))
    except Exception:
        return ""
