"""bootbox.runtime.idlegc: the young collection runs when a loop is idle, as CPython would soon run it."""

from __future__ import annotations

import collections
import gc
import weakref
from collections.abc import Iterator

import pytest

from bootbox.runtime.idlegc import collect_if_due


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
    assert collect_if_due() is False
    assert gc.get_count()[0] >= 10_000
    del keep


def test_a_half_due_young_collection_runs_now(thresholds: None) -> None:
    keep = _allocate(60_000)
    assert collect_if_due() is True
    count0, count1, _ = gc.get_count()
    assert count0 < 1_000 and count1 == 1  # generation 0 emptied into 1, counted as one pass
    del keep


def test_cyclic_garbage_is_freed_by_the_early_collection(thresholds: None) -> None:
    class Node:
        pass

    for _ in range(30_000):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
    probe = Node()
    probe.self = probe
    freed: list[int] = []
    ref = weakref.ref(probe, lambda _: freed.append(1))
    del probe, a, b
    assert collect_if_due() is True
    assert ref() is None and freed == [1]


def test_once_generation_one_is_due_the_collection_is_left_to_cpython(thresholds: None) -> None:
    """CPython picks generation 1 or a full pass then; doing either here would starve full
    passes or run them too often."""
    for _ in range(10):
        gc.collect(0)  # each young pass counts towards generation 1 (threshold 10)
    keep = _allocate(60_000)
    assert collect_if_due() is True  # count 10 is not over 10: one more young pass, as CPython would
    assert gc.get_count()[1] == 11
    more = _allocate(60_000)
    assert collect_if_due() is False  # now generation 1 is due: CPython's trigger decides
    assert gc.get_count()[0] >= 60_000
    del keep, more


def _churn(call_between: bool) -> int:
    """Cycles that live long enough to reach generation 2 and then die; returns how many full
    collections ran meanwhile."""

    class Node:
        pass

    gc.set_threshold(700, 10, 10)
    before = gc.get_stats()[2]["collections"]
    live: collections.deque[list[Node]] = collections.deque()
    for _ in range(6_000):
        batch = []
        for _ in range(150):
            node = Node()
            node.me = node  # a cycle: only the collector frees it
            batch.append(node)
        live.append(batch)
        if len(live) > 200:
            live.popleft()
        if call_between:
            collect_if_due()
    live.clear()
    return gc.get_stats()[2]["collections"] - before


def test_full_collections_still_happen_under_an_idle_loop(thresholds: None) -> None:
    """Early young passes must not keep CPython's own trigger — the only one that runs full
    passes — from firing: garbage that reached generation 2 would never be freed."""
    plain = _churn(call_between=False)
    assert plain > 0
    assert _churn(call_between=True) > 0


def test_a_disabled_collector_is_left_alone(thresholds: None) -> None:
    keep = _allocate(60_000)
    gc.disable()
    assert collect_if_due() is False
    del keep
