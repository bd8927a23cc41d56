"""Boot counters that no server keeps: boots started, reported in and failed, how long each took,
pushes by outcome and TFTP bytes, tallied from the boot events as they are recorded.

The protocol servers already count packets, transfers and refusals (their ``stats``); what they
cannot see is a *boot*: it spans a DHCP answer, a script, files and a report-in on different
servers. Every one of those steps passes through ``BootService.record``, so :meth:`BootTally.observe`
is called there with each event and adds to a few integers under a lock: O(1), no I/O, nothing
kept per host. ``/metrics`` (``bootbox.web.metrics``) reads :meth:`BootTally.snapshot` at scrape
time.

A boot's duration runs from the script that began it (``Host.boot_started``, set when bootbox
hands out a new boot's tokens) to its report-in (the ``booted`` event). Labels are the host's
firmware, one of :data:`FIRMWARES` (anything else is ``other``), and a push's result, one of
:data:`PUSH_RESULTS`: the label sets stay bounded whatever the network sends.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from bootbox.model import BootEvent, EventKind, Host

FIRMWARES = ("bios", "uefi", "uefi-http", "pcbios", "efi")
"""Firmware label values (``Host.attrs['firmware']``, else ``['platform']``); others are ``other``."""
PUSH_RESULTS = ("ok", "retry", "failed", "refused")
"""Push outcomes as ``bootbox.service.pushes`` records them; others are ``other``."""
DURATION_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0)
"""Upper bounds (seconds) of the boot-duration histogram: a VM boots in seconds, ESXi in minutes."""


@dataclass
class Histogram:
    """Cumulative-ready bucket counts, their sum and count (Prometheus histogram semantics)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def copy(self) -> "Histogram":
        return Histogram(list(self.counts), self.total)


@dataclass(frozen=True)
class TallySnapshot:
    """What :meth:`BootTally.snapshot` returns: copies, safe to read anywhere."""

    started: dict[str, int]
    reported: dict[str, int]
    failed: dict[str, int]
    durations: dict[str, Histogram]
    pushes: dict[str, int]
    tftp_bytes: int
    events: dict[str, int]


def firmware_of(host: Host | None) -> str:
    """The host's firmware label: one of :data:`FIRMWARES`, ``unknown`` or ``other``."""
    if host is None:
        return "unknown"
    value = host.attrs.get("firmware") or host.attrs.get("platform") or ""
    if not value:
        return "unknown"
    return value if value in FIRMWARES else "other"


class BootTally:
    """Counters fed by every recorded boot event (see the module docstring). Thread-safe."""

    def __init__(self, host: Callable[[str], Host | None], *, clock: Callable[[], float] = time.time) -> None:
        """``host(mac)``: the host index's lookup (memory only), for a boot's firmware and start."""
        self._host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._started: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._durations: dict[str, Histogram] = {}
        self._pushes = dict.fromkeys(PUSH_RESULTS, 0)
        self._tftp_bytes = 0
        self._events: dict[str, int] = {str(kind): 0 for kind in EventKind}

    def observe(self, event: BootEvent) -> None:
        """Count one recorded event (called by ``BootService.record`` for every event)."""
        kind = event.kind
        data = event.data
        label = kind if kind in self._events else "other"  # plugins may record kinds of their own
        with self._lock:
            self._events[label] = self._events.get(label, 0) + 1
        if kind == EventKind.TFTP_SENT:
            amount = data.get("bytes")
            if isinstance(amount, int):
                with self._lock:
                    self._tftp_bytes += amount
        elif kind == EventKind.PUSH:
            result = str(data.get("result", ""))
            with self._lock:
                key = result if result in self._pushes else "other"
                self._pushes[key] = self._pushes.get(key, 0) + 1
        elif kind == EventKind.HTTP_SCRIPT and "profile" in data and "reason" not in data:
            self._add(self._started, firmware_of(self._host(event.mac)))  # a script that boots a profile
        elif kind == EventKind.BOOTED:
            host = self._host(event.mac)
            firmware = firmware_of(host)
            self._add(self._reported, firmware)
            if host is not None and host.boot_started > 0:
                elapsed = max(0.0, event.time - host.boot_started)
                with self._lock:
                    self._durations.setdefault(firmware, Histogram()).observe(elapsed)
        elif kind == EventKind.STATE and data.get("state") == "failed":
            self._add(self._failed, firmware_of(self._host(event.mac)))

    def _add(self, counts: dict[str, int], label: str) -> None:
        with self._lock:
            counts[label] = counts.get(label, 0) + 1

    def snapshot(self) -> TallySnapshot:
        with self._lock:
            return TallySnapshot(
                started=dict(self._started), reported=dict(self._reported), failed=dict(self._failed),
                durations={name: h.copy() for name, h in self._durations.items()}, pushes=dict(self._pushes),
                tftp_bytes=self._tftp_bytes, events=dict(self._events),
            )
