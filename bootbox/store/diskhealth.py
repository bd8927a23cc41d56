"""Whether one kind of write is failing right now, said once per interval and shown in status.

A full disk makes every write of the host log, the journal and the store fail, over and over:
the host log retried every half second and wrote a traceback each time. Each writer keeps one
:class:`DiskHealth`: it logs the first failure of a run, then at most one reminder per
``interval`` with the count, and one line when writes succeed again; ``bootbox status`` and
``bootbox doctor --client`` show :meth:`DiskHealth.snapshot`. The writers keep what they could not
write in memory and retry by themselves, so space coming back is all an operator has to do.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any

log = logging.getLogger("bootbox.disk")

LOG_INTERVAL = 60.0
"""Seconds between reminders while writes keep failing."""
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskHealth:
    """The state of one writer's writes: ``ok``, or failing since when, how often, and why."""

    def __init__(self, what: str, interval: float = LOG_INTERVAL) -> None:
        self.what = what
        self.interval = interval
        self._lock = threading.Lock()
        self._error = ""
        self._full = False
        self._since = 0.0
        self._failures = 0
        self._total = 0
        self._logged_at = 0.0
        self._logged_failures = 0

    def failed(self, err: OSError, lost: str = "") -> None:
        """Count a failed write; log it if it starts a run or the interval has passed.

        ``lost`` says what the failure cost (e.g. "12 events dropped"), for the log line.
        """
        now = time.monotonic()
        with self._lock:
            self._total += 1
            self._failures += 1
            self._full = err.errno in _FULL
            self._error = err.strerror or str(err)
            first = not self._since
            if first:
                self._since = time.time()
            due = first or now - self._logged_at >= self.interval
            if due:
                self._logged_at, count, self._logged_failures = now, self._failures - self._logged_failures, self._failures
        if due:
            extra = f"; {lost}" if lost else ""
            if first:
                log.error("%s: cannot write: %s%s (kept in memory, retried; logged again at most every %g s)",
                          self.what, self._error, extra, self.interval)
            else:
                log.error("%s: still cannot write: %s (%d more failures)%s", self.what, self._error, count, extra)

    def succeeded(self) -> None:
        """A write went through: end the run of failures, saying so once."""
        with self._lock:
            if not self._since:
                return
            failing_for, failures = time.time() - self._since, self._failures
            self._since, self._failures, self._logged_failures, self._error, self._full = 0.0, 0, 0, "", False
        log.warning("%s: writing again after %.0f s and %d failed writes", self.what, failing_for, failures)

    @property
    def ok(self) -> bool:
        with self._lock:
            return not self._since

    def snapshot(self) -> dict[str, Any]:
        """For status: ``ok``, ``disk_full``, ``error``, ``since`` (epoch), ``failures`` (this run),
        ``failures_total``."""
        with self._lock:
            return {"ok": not self._since, "disk_full": self._full, "error": self._error,
                    "since": self._since or None, "failures": self._failures, "failures_total": self._total}
