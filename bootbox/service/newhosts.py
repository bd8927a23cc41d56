"""Bounds on host records: new ones are rate-limited, and hosts that never booted expire.

Every MAC bootbox sees costs a host record (~3 KB in memory, a line in the host log), forever,
so a client inventing MACs could fill memory and disk (issue 17 §6). Two limits, each a
``[hosts]`` key with a safe default:

* **new records per source address** (``new_hosts_per_source`` a minute): for HTTP and TFTP
  requests, whose source address is the client's. DHCP has none yet (a PXE client asks from
  0.0.0.0), so DHCP is bounded by the overall limit alone; requests from the appliance itself
  (the demo, tests, benchmarks) are not limited per source;
* **new records overall** (``new_hosts_per_second``, with a burst of ``new_hosts_burst``): a token
  bucket generous enough that 1,000 new PXE clients in one second are all recorded.

A refused record is not written: the DHCP answer still goes out (it needs no record), and a
script or TFTP request gets 503 and is retried by the client. Refusals are counted
(``bootbox status``: ``refused``) and logged once per interval, not per packet.

**Expiry**: a host that was only ever seen (state ``discovered``, no profile, no boot, no rule
association, not adopted) and not seen for ``discovered_expiry`` seconds is forgotten by a sweep
every minute. A host awaiting adoption (``[hosts] adopt = "manual"``: it asked for its script and
was told to wait) never expires: it is waiting for an operator.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from bootbox.config import HostsSettings
from bootbox.errors import Forbidden
from bootbox.model import Host, HostState

log = logging.getLogger("bootbox.hosts")

LOG_INTERVAL = 60.0
SWEEP_INTERVAL = 60.0
AWAITING_ADOPTION = "awaits adoption"
"""The start of ``Host.reason`` of a host in manual-adoption mode that asked and was told to wait."""
_MAX_SOURCES = 65536
"""Per-source windows kept at most; beyond that the oldest half is dropped (a flood of sources
is bounded by the overall limit anyway)."""


class NewHostRefused(Forbidden):
    """A new host record over a limit: the client retries later."""

    http_status = 503


class NewHostGate:
    """``allow(source)``: may a new host record be made now (``source`` "" for DHCP, or local)?"""

    def __init__(self, settings: HostsSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(settings.new_hosts_burst)
        self._filled = clock()
        self._windows: dict[str, tuple[float, int]] = {}
        self.refused = {"new_hosts_overall": 0, "new_hosts_per_source": 0}
        self._logged = (-LOG_INTERVAL, 0)

    def allow(self, source: str = "") -> bool:
        now = self._clock()
        with self._lock:
            if source and not self._source_ok(source, now):
                return self._refuse("new_hosts_per_source", source, now)
            rate, burst = self._settings.new_hosts_per_second, self._settings.new_hosts_burst
            self._tokens = min(float(burst), self._tokens + (now - self._filled) * rate)
            self._filled = now
            if self._tokens < 1.0:
                return self._refuse("new_hosts_overall", source or "DHCP", now)
            self._tokens -= 1.0
            return True

    def _source_ok(self, source: str, now: float) -> bool:
        start, count = self._windows.get(source, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        if count >= self._settings.new_hosts_per_source:
            return False
        if len(self._windows) >= _MAX_SOURCES and source not in self._windows:
            for key in sorted(self._windows, key=lambda k: self._windows[k][0])[: _MAX_SOURCES // 2]:
                del self._windows[key]
        self._windows[source] = (start, count + 1)
        return True

    def _refuse(self, which: str, source: str, now: float) -> bool:
        self.refused[which] += 1
        last, quiet = self._logged
        if now - last >= LOG_INTERVAL:
            more = f" ({quiet} more refused in the last {LOG_INTERVAL:.0f} s)" if quiet else ""
            log.warning("new host record refused for %s: %s limit ([hosts] %s)%s", source,
                        which.removeprefix("new_hosts_").replace("_", " "), _KEYS[which], more)
            self._logged = (now, 0)
        else:
            self._logged = (last, quiet + 1)
        return False


_KEYS = {"new_hosts_overall": "new_hosts_per_second / new_hosts_burst", "new_hosts_per_source": "new_hosts_per_source"}


def expired(hosts: Iterable[Host], *, now: float, after: float) -> list[str]:
    """MACs of hosts only ever seen, not seen for ``after`` seconds, and not awaiting adoption."""
    return [h.mac for h in hosts
            if h.state == HostState.DISCOVERED and not h.adopted and not h.profile and not h.boot_nonce
            and not h.associations and not h.reason.startswith(AWAITING_ADOPTION) and now - h.last_seen >= after]


class Sweeper:
    """Calls ``sweep`` every ``interval`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, sweep: Callable[[], object], interval: float = SWEEP_INTERVAL) -> None:
        self._sweep = sweep
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bootbox-host-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sweep()
            except Exception:
                log.exception("expiring discovered hosts failed; will retry")
