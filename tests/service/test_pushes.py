"""The push pool: retries with backoff, a timeout per attempt, isolation, an event per attempt."""

from __future__ import annotations

import random
import threading
from typing import Any, Callable, Iterator

import pytest

from bootbox.config import PushPolicy
from bootbox.errors import PushRefused
from bootbox.service.pushes import PushJob, PushOutcome, PushPool, next_delay

FAST = PushPolicy(attempts=3, timeout=2.0, first_delay=0.01, step_min=0.01, step_max=0.02, max_delay=0.05)


class Recorder:
    """Collects the pool's events and outcomes; ``wait`` blocks until ``n`` outcomes arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.outcomes: list[PushOutcome] = []
        self._cond = threading.Condition()

    def record(self, mac: str, kind: str, message: str, **data: Any) -> None:
        with self._cond:
            self.events.append((kind, message, data))

    def done(self, outcome: PushOutcome) -> None:
        with self._cond:
            self.outcomes.append(outcome)
            self._cond.notify_all()

    def wait(self, n: int) -> list[PushOutcome]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.outcomes) >= n, timeout=30), self.events
            return list(self.outcomes)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def pool(rec: Recorder) -> Iterator[PushPool]:
    pool = PushPool(rec.record, workers=2, policy=FAST, rng=random.Random(7))
    try:
        yield pool
    finally:
        pool.close()


def _job(rec: Recorder, name: str, run: Callable[[float], str | None], **kw: Any) -> PushJob:
    return PushJob(mac="52:54:00:00:00:01", name=name, boot_id="b1", run=run, done=rec.done, **kw)


def test_a_failing_push_is_retried_until_it_succeeds(pool: PushPool, rec: Recorder) -> None:
    calls: list[float] = []

    def flaky(timeout: float) -> str:
        calls.append(timeout)
        if len(calls) < 3:
            raise RuntimeError(f"HTTP 500 number {len(calls)}")
        return "pushed"

    pool.submit(_job(rec, "vcd", flaky))
    [outcome] = rec.wait(1)
    assert outcome.result == "ok" and outcome.attempts == 3 and outcome.message == "pushed"
    assert calls == [FAST.timeout] * 3
    assert [d["result"] for _, _, d in rec.events] == ["retry", "retry", "ok"]
    assert "attempt 1/3 failed: HTTP 500 number 1; next try in" in rec.events[0][1]
    assert rec.events[2][1] == "push vcd attempt 3/3 ok: pushed"


def test_a_push_gives_up_after_its_attempts(pool: PushPool, rec: Recorder) -> None:
    pool.submit(_job(rec, "vcd", lambda timeout: (_ for _ in ()).throw(OSError("connection refused"))))
    [outcome] = rec.wait(1)
    assert outcome.result == "failed" and outcome.attempts == 3 and "connection refused" in outcome.message
    assert rec.events[-1][1].endswith("giving up")


def test_a_refused_push_is_not_retried(pool: PushPool, rec: Recorder) -> None:
    def refuse(timeout: float) -> str:
        raise PushRefused("unprepare it first")

    pool.submit(_job(rec, "vcd", refuse))
    [outcome] = rec.wait(1)
    assert (outcome.result, outcome.attempts, outcome.message) == ("refused", 1, "unprepare it first")


def test_a_hanging_push_times_out_and_does_not_block_others(rec: Recorder) -> None:
    release = threading.Event()
    policy = PushPolicy(attempts=1, timeout=0.2, first_delay=0.01, step_min=0.01, step_max=0.01, max_delay=0.01)
    pool = PushPool(rec.record, workers=1, policy=policy)
    try:
        pool.submit(_job(rec, "stuck", lambda timeout: "never" if release.wait(60) else None))
        pool.submit(_job(rec, "quick", lambda timeout: "fine"))
        outcomes = {o.name: o for o in rec.wait(2)}
    finally:
        release.set()
        pool.close()
    assert outcomes["stuck"].result == "failed" and "timed out after 0.2 s" in outcomes["stuck"].message
    assert outcomes["quick"].result == "ok"


def test_nothing_to_push_leaves_no_event(pool: PushPool, rec: Recorder) -> None:
    pool.submit(_job(rec, "idle", lambda timeout: None))
    [outcome] = rec.wait(1)
    assert outcome.result == "skipped" and outcome.ok and rec.events == []


def test_a_job_for_an_older_boot_is_dropped_before_its_retry(pool: PushPool, rec: Recorder) -> None:
    current = [True]

    def fail_and_reboot(timeout: float) -> str:
        current[0] = False  # the host reboots while this attempt fails
        raise RuntimeError("HTTP 503")

    pool.submit(_job(rec, "vcd", fail_and_reboot, current=lambda: current[0]))
    [outcome] = rec.wait(1)
    assert outcome.result == "superseded" and outcome.attempts == 1


def test_backoff_grows_by_a_random_step_and_is_capped() -> None:
    policy = PushPolicy()
    rng = random.Random(1)
    delays = [next_delay(policy, None, rng)]
    for _ in range(40):
        delays.append(next_delay(policy, delays[-1], rng))
    assert delays[0] == 10.0
    steps = [b - a for a, b in zip(delays, delays[1:]) if b < policy.max_delay]
    assert steps and all(8.0 <= s <= 12.0 for s in steps)
    assert max(delays) == policy.max_delay == delays[-1]


def test_a_closed_pool_refuses_new_jobs(rec: Recorder) -> None:
    pool = PushPool(rec.record, policy=FAST)
    pool.close()
    with pytest.raises(Exception, match="stopping"):
        pool.submit(_job(rec, "late", lambda timeout: "x"))
