"""Background work in short slices, so the boot path keeps the interpreter lock and a CPU.

A thread that wakes for a DHCP packet needs the interpreter lock *and* a CPU. A background
writer that encodes 500 hosts in one go keeps a CPU busy for 5-10 ms and hands the lock over only
every switch interval, and on a small machine the packet's thread also waits for the scheduler:
measured in the boot-storm benchmark, DHCP answers queued for up to 5 ms behind each host-log
round (the whole OFFER p99). Cutting such work into slices and sleeping briefly between them
gives both back while the work still finishes in milliseconds.

During a boot storm even sliced work costs the answers that arrive mid-slice a tenth of a
millisecond or more, so writers also *defer* to the boot path (:data:`BOOT_PATH`): while DHCP
packets keep coming they hold their next slice back until it has been quiet for a few
milliseconds, never longer than :data:`MAX_DEFER` after the work became due. The morning the power
returns, a rack's DHCP answers go out first and its host log and journal lines a second later.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

SLICE = 32
"""Items per slice: about a third of a millisecond of encoding on a slow core."""
PAUSE = 0.001
"""Seconds to sleep between slices of background work."""
QUIET = 0.005
"""The boot path counts as idle once no packet came for this long."""
MAX_DEFER = 2.0
"""Seconds background work may be held back for the boot path, counted from when it became due."""
RECHECK = 0.05
"""Seconds a held-back writer sleeps before looking again while packets keep coming: each look
wakes a thread that wants the interpreter lock, so three writers looking every 5 ms were 600
chances a second to delay a DHCP answer."""


class BootPathActivity:
    """When the boot path last took a packet, so background writers can keep out of its way."""

    def __init__(self, quiet: float = QUIET, max_defer: float = MAX_DEFER, recheck: float = RECHECK) -> None:
        self.quiet, self.max_defer, self.recheck = quiet, max_defer, recheck
        self._last = float("-inf")

    def touch(self) -> None:
        """A packet is being answered (called on the boot path: one clock read)."""
        self._last = time.monotonic()

    def defer(self, due: float) -> None:
        """Sleep while packets keep coming, until the boot path has been quiet for ``quiet``
        seconds or ``max_defer`` seconds have passed since ``due`` (a ``time.monotonic()``),
        looking every ``recheck`` seconds."""
        while True:
            now = time.monotonic()
            if now - self._last >= self.quiet or now - due >= self.max_defer:
                return
            time.sleep(min(self.recheck, due + self.max_defer - now))


BOOT_PATH = BootPathActivity()
"""The process's boot path: the service touches it for every DHCP answer."""


def sliced(items: Iterable[T], size: int = SLICE, pause: float = PAUSE) -> Iterator[list[T]]:
    """Yield ``items`` as lists of at most ``size``; with ``pause`` > 0, defer each list to the
    boot path (:data:`BOOT_PATH`) and sleep ``pause`` seconds between lists. ``pause`` 0 does
    neither, for work someone is waiting on (a flush)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    due = time.monotonic()
    batch: list[T] = []
    started = False
    for item in items:
        batch.append(item)
        if len(batch) == size:
            _before_slice(started, pause, due)
            started = True
            yield batch
            batch = []
    if batch:
        _before_slice(started, pause, due)
        yield batch


def _before_slice(started: bool, pause: float, due: float) -> None:
    if not pause:
        return
    if started:
        time.sleep(pause)
    BOOT_PATH.defer(due)


BACKGROUND_NICE = 10
"""How much lower the scheduler ranks background writer threads than the boot path's."""


def lower_priority(increment: int = BACKGROUND_NICE) -> None:
    """Make the calling thread yield the CPU to the server threads (Linux ranks threads
    separately: ``setpriority`` on the thread id). Call it first thing in a writer thread. When a
    packet wakes the DHCP thread while a writer is mid-slice on the same core, the scheduler
    then runs the DHCP thread first. Never fails: without the call, only latency suffers."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError):
        pass
