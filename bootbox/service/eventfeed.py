"""Boot events with IDs, for readers that follow them live (``/api/v1/events/stream``).

Every event ``BootService.record`` makes goes through :meth:`EventFeed.publish`, which appends
it to the journal and gives it an ID under one lock, so the IDs grow in the order the journal
file holds the events. An ID is the event's time in microseconds, or one more than the previous
ID when that is not larger (two events in one microsecond, a clock stepped back). Nothing new is
stored: after a restart the events the journal reads back get the same IDs again, computed by
the same rule in the same order, so a client resuming with ``Last-Event-ID`` from before the
restart gets exactly what it missed (as far back as the feed's ring reaches). The one case the
rule cannot reproduce is an event bumped by its predecessor where that predecessor is older than
the part of the journal read back at start.

Readers never touch the disk: :meth:`after` reads the ring, :meth:`wait` sleeps on a condition
that :meth:`publish` notifies. Publishing is O(1) and never waits for a reader.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Callable, Iterable

from bootbox.model import BootEvent
from bootbox.store.journal import Journal

RING = 10_000
"""Events kept for resuming readers (the journal's ``recent`` ring holds as many)."""


def next_id(event: BootEvent, previous: int) -> int:
    """The ID of ``event`` after one with ID ``previous`` (see the module docstring)."""
    return max(int(event.time * 1_000_000), previous + 1)


class EventFeed:
    """The journal's events, numbered, in a ring that live readers follow. Thread-safe."""

    def __init__(self, journal: Journal, *, ring: int = RING) -> None:
        self._journal = journal
        self._changed = threading.Condition(threading.Lock())
        self._ids: deque[int] = deque(maxlen=ring)
        self._events: deque[BootEvent] = deque(maxlen=ring)
        self._last = 0
        self._closed = False
        for event in journal.recent(ring):  # what the journal read back at start, oldest first
            self._add(event)

    def _add(self, event: BootEvent) -> int:
        self._last = next_id(event, self._last)
        self._ids.append(self._last)
        self._events.append(event)
        return self._last

    def publish(self, event: BootEvent) -> int:
        """Append ``event`` to the journal, number it, wake the readers; returns its ID."""
        with self._changed:
            self._journal.append(event)
            event_id = self._add(event)
            self._changed.notify_all()
        return event_id

    @property
    def last_id(self) -> int:
        """The newest event's ID (0 before the first)."""
        with self._changed:
            return self._last

    def after(self, last_id: int, *, accept: Callable[[BootEvent], bool] = lambda e: True,
              limit: int = 1000) -> tuple[list[tuple[int, BootEvent]], int]:
        """Up to ``limit`` events newer than ``last_id`` that ``accept`` takes, oldest first, and
        the ID up to which the ring was looked at (a reader's next ``last_id``: events the filter
        refused are not looked at again). An ID older than the ring starts at its oldest event."""
        with self._changed:
            start = bisect.bisect_right(self._ids, last_id)
            ids, events = list(self._ids)[start:], list(self._events)[start:]
        found: list[tuple[int, BootEvent]] = []
        upto = last_id
        for event_id, event in zip(ids, events):
            if len(found) >= limit:
                break
            upto = event_id
            if accept(event):
                found.append((event_id, event))
        return found, upto

    def wait(self, last_id: int, timeout: float) -> bool:
        """Sleep until an event newer than ``last_id`` exists, the feed closes, or ``timeout``
        seconds pass; True when there is something newer."""
        with self._changed:
            self._changed.wait_for(lambda: self._last > last_id or self._closed, timeout)
            return self._last > last_id

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every reader for good (the appliance is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def matcher(macs: Iterable[str] = (), kinds: Iterable[str] = ()) -> Callable[[BootEvent], bool]:
    """A filter: events of one of ``macs`` (any when empty) and of one of ``kinds``, matched
    exactly (any when empty)."""
    wanted_macs, wanted_kinds = frozenset(macs), frozenset(kinds)

    def accept(event: BootEvent) -> bool:
        return (not wanted_macs or event.mac in wanted_macs) and (not wanted_kinds or event.kind in wanted_kinds)

    return accept
