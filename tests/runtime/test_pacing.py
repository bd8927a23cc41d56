"""bootbox.runtime.pacing: background work in slices, and background threads ranked below servers."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bootbox.runtime import pacing
from bootbox.runtime.pacing import BootPathActivity, lower_priority, sliced


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



class _FakeClock:
    """time.monotonic and time.sleep for bootbox.runtime.pacing: time moves only when slept, and
    ``during_sleep`` (if set) runs after each sleep, as packets arriving meanwhile would."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.during_sleep = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.during_sleep()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    fake = _FakeClock()
    monkeypatch.setattr(pacing.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(pacing.time, "sleep", fake.sleep)
    return fake


def test_defer_does_not_wait_when_the_boot_path_is_quiet(clock: _FakeClock) -> None:
    activity = BootPathActivity(quiet=0.005, max_defer=2.0, recheck=0.05)
    activity.touch()
    clock.now += 0.01  # longer ago than quiet
    activity.defer(due=clock.now)
    assert clock.sleeps == []


def test_defer_waits_out_a_storm_looking_every_recheck_seconds(clock: _FakeClock) -> None:
    activity = BootPathActivity(quiet=0.005, max_defer=2.0, recheck=0.05)
    due = clock.now
    activity.touch()
    clock.during_sleep = lambda: activity.touch() if clock.now - due < 0.27 else None  # a 0.27 s storm
    activity.defer(due)
    assert clock.sleeps == [0.05] * 6  # held through the storm, released at the first quiet look


def test_defer_never_holds_work_longer_than_max_defer(clock: _FakeClock) -> None:
    activity = BootPathActivity(quiet=0.005, max_defer=0.12, recheck=0.05)
    due = clock.now
    activity.touch()
    clock.during_sleep = activity.touch  # a storm that never ends
    activity.defer(due)
    assert clock.sleeps == pytest.approx([0.05, 0.05, 0.02])  # the last look is cut to the deadline
    assert clock.now - due == pytest.approx(0.12)
