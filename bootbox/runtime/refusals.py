"""Counting what a server refused, and saying so in the log once per interval, not per packet.

A flood is thousands of refusals a second: a log line each would be a second flood (on disk,
and in the journal's reader). :class:`Refusals` counts every one (the counters reach ``bootbox
status`` through each server's ``stats``) and logs a reason at most once per ``interval``
seconds, with how many more of it were refused meanwhile and the latest offender.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

LOG_INTERVAL = 60.0
"""Seconds between two log lines for one reason."""


class Refusals:
    """Thread-safe counters of refusals by reason, each logged once per :data:`LOG_INTERVAL`.

    :param reasons: every reason this server may count, so ``bootbox status`` shows a zero
        rather than nothing until the first refusal.
    :param describe: reason → the words of its log line (default: the reason itself).
    """

    def __init__(self, log: logging.Logger, reasons: Iterable[str], *, interval: float = LOG_INTERVAL,
                 describe: Callable[[str], str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._describe = describe or (lambda reason: reason)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(reasons, 0)
        self._unlogged = dict.fromkeys(self._counts, 0)
        self._next_log: dict[str, float] = {}

    def count(self, reason: str, who: str) -> None:
        """Count one refusal for ``reason`` by ``who`` (an address); log it unless this reason
        was logged less than an interval ago."""
        now = self._clock()
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            if now < self._next_log.get(reason, 0.0):
                self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
                return
            self._next_log[reason] = now + self._interval
            earlier, self._unlogged[reason] = self._unlogged.get(reason, 0), 0
        more = f" (and {earlier} more since the last report)" if earlier else ""
        self._log.warning("%s: %s%s; next report of this in %.0f s at the earliest",
                          who, self._describe(reason), more, self._interval)

    def counts(self) -> dict[str, int]:
        """Every reason's count since start (a copy)."""
        with self._lock:
            return dict(self._counts)
