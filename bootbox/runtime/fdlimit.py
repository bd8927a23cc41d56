"""Raise the process's open-file limit to what the configured limits need.

Why: every TFTP transfer holds a socket and the file it sends, every HTTP connection a socket,
so ``[tftp] max_transfers`` and ``[http] connection_limit`` only mean what they say when the
process may open that many descriptors. systemd starts the appliance with ``LimitNOFILE=65536``
(appliance/bootbox.service), but started by hand from a root shell it inherits the shell's soft
limit, 1,024 on Debian: a 1,000-host boot storm then ends in EMFILE ("internal error" to the
client) long before either limit. The soft limit may be raised up to the hard one without any
privilege, as nginx's ``worker_rlimit_nofile`` does, so the appliance does that at start and
says so when even the hard limit is short.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["RESERVE", "descriptors_needed", "raise_open_file_limit"]

RESERVE = 512
"""Descriptors beyond the transfers and connections: the store, the journal, log files, epoll,
eventfds, the DNS/DHCP sockets, plugin files, a backup being written."""


def descriptors_needed(*, max_transfers: int, connection_limit: int) -> int:
    """Descriptors the appliance may hold at its configured limits: two per TFTP transfer (its
    socket and the file), one per HTTP connection plus one for a file it sends, and
    :data:`RESERVE`."""
    return 2 * max_transfers + 2 * connection_limit + RESERVE


def raise_open_file_limit(wanted: int, log: logging.Logger) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` (never lower it, never above the hard
    limit) and return the soft limit now in force; warn, naming the keys, when it stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            log.info("open-file limit raised from %d to %d (the configured limits need %d)", soft, ceiling, wanted)
            soft = ceiling
        except (ValueError, OSError) as exc:
            log.warning("open-file limit %d could not be raised to %d: %s", soft, ceiling, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open-file limit is %d but [tftp] max_transfers and [http] connection_limit need about %d: "
                    "raise the hard limit (LimitNOFILE= in the service, ulimit -Hn) or lower those keys", soft, wanted)
    return soft
