"""Background work in short slices, so the boot path keeps the interpreter lock and a CPU.

A thread that wakes for a DHCP packet needs the interpreter lock *and* a CPU. A background
writer that encodes 500 hosts in one go keeps a CPU busy for 5-10 ms and hands the lock over only
every switch interval, and on a small machine the packet's thread also waits for the scheduler:
measured in the boot-storm benchmark, DHCP answers queued for up to 5 ms behind each host-log
round (the whole OFFER p99). Cutting such work into slices and sleeping briefly between them
gives both back while the work still finishes in milliseconds.
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


def sliced(items: Iterable[T], size: int = SLICE, pause: float = PAUSE) -> Iterator[list[T]]:
    """Yield ``items`` as lists of at most ``size``, sleeping ``pause`` seconds before each list
    after the first (``pause`` 0: no sleep, e.g. for a flush someone is waiting on)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    batch: list[T] = []
    started = False
    for item in items:
        batch.append(item)
        if len(batch) == size:
            if started and pause:
                time.sleep(pause)
            started = True
            yield batch
            batch = []
    if batch:
        if started and pause:
            time.sleep(pause)
        yield batch


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
