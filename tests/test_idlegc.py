"""bootbox.idlegc: the young collection runs when a loop is idle, as CPython would soon run it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bootbox.idlegc import collect_if_due


@pytest.fixture
def thresholds() -> Iterator[None]:
    """Known thresholds and a clean slate; the process's settings are restored afterwards."""
    saved, enabled = gc.get_threshold(), gc.isenabled()
    gc.collect()
    gc.set_threshold(100_000, 10, 10)  # high enough that nothing is collected behind our back
    yield
    gc.set_threshold(*saved)
    (gc.enable if enabled else gc.disable)()


def _allocate(count: int) -> list[list[int]]:
    return [[i] for i in range(count)]  # container objects: each counts towards generation 0


def test_nothing_is_collected_before_the_threshold_is_half_reached(thresholds: None) -> None:
    keep = _allocate(10_000)
    assert collect_if_due() is None
    assert gc.get_count()[0] >= 10_000
    del keep


def test_a_half_due_young_collection_runs_now(thresholds: None) -> None:
    keep = _allocate(60_000)
    assert collect_if_due() == 0
    assert gc.get_count()[0] < 1_000  # generation 0 was emptied into generation 1
    del keep


def test_cyclic_garbage_is_freed_by_the_early_collection(thresholds: None) -> None:
    class Node:
        pass

    freed: list[int] = []
    for _ in range(30_000):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
    probe = Node()
    probe.self = probe
    ref = weakref.ref(probe, lambda _: freed.append(1))
    del probe, a, b
    assert collect_if_due() == 0
    assert ref() is None and freed == [1]


def test_generation_one_is_collected_when_the_young_pass_would_tip_it(thresholds: None) -> None:
    for _ in range(10):  # ten young collections: generation 1's count reaches its threshold
        gc.collect(0)
    keep = _allocate(60_000)
    assert collect_if_due() == 1
    del keep


def test_a_disabled_collector_is_left_alone(thresholds: None) -> None:
    keep = _allocate(60_000)
    gc.disable()
    assert collect_if_due() is None
    del keep
