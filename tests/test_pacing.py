"""bootbox.pacing: background work in slices, and background threads ranked below servers."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bootbox.pacing import BootPathActivity, lower_priority, sliced


def test_slices_keep_every_item_in_order() -> None:
    assert list(sliced(range(7), size=3, pause=0)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(sliced([], size=3, pause=0)) == []
    assert list(sliced(range(6), size=3, pause=0)) == [[0, 1, 2], [3, 4, 5]]


def test_pauses_come_between_slices_only() -> None:
    started = time.monotonic()
    assert list(sliced(range(2), size=2, pause=0.2)) == [[0, 1]]  # one slice: no pause at all
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    assert len(list(sliced(range(3), size=1, pause=0.05))) == 3  # two pauses, not three
    assert time.monotonic() - started >= 0.1


def test_slice_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        list(sliced(range(3), size=0))


def test_lower_priority_affects_only_the_calling_thread() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        lower_priority(5)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
