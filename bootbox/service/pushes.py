"""The push pool: after-boot configuration pushes, each retried with backoff under a timeout.

A stateless host forgets its configuration at every reboot, so plugins push it again each time
the host reports up (``bootbox_host_up``). A push talks to something outside bootbox (vCloud
Director, a CMDB, the host itself) that may be slow, down or broken, so every push:

* runs on this pool's threads, never on a request or protocol thread;
* gets ``policy.timeout`` seconds per attempt. Python cannot kill a thread, so an attempt runs
  in its own daemon thread that the pool stops waiting for at the deadline (the plugin is told
  the timeout and should pass it to its network calls, so the thread ends soon after);
* is retried after a failure with Auto Deploy's waiter backoff (facts §3): first
  ``first_delay`` seconds, then a random ``step_min``..``step_max`` more each try, at most
  ``max_delay``; a :class:`~bootbox.errors.PushRefused` is final at once (retrying cannot help);
* is isolated: one plugin's failure or hang never delays another's push or the server;
* reports every attempt through ``record`` (an event on the host's timeline) and its final
  outcome through the job's ``done`` callback.

Retries wait in a timer heap, not in a sleeping worker, so a flapping endpoint cannot occupy
the pool. A job whose host rebooted meanwhile (``job.current()`` is false) is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from bootbox.config import PushPolicy
from bootbox.errors import BootboxError, PushRefused

log = logging.getLogger("bootbox.pushes")


def next_delay(policy: PushPolicy, previous: float | None, rng: random.Random) -> float:
    """The wait before the next attempt, given the wait before this one (``None``: first retry)."""
    if previous is None:
        return min(policy.first_delay, policy.max_delay)
    return min(policy.max_delay, previous + rng.uniform(policy.step_min, policy.step_max))


@dataclass(frozen=True)
class PushOutcome:
    """How one job ended: ``result`` is ``ok``, ``skipped`` (nothing to push), ``failed``,
    ``refused`` or ``superseded`` (the host rebooted first)."""

    mac: str
    name: str
    boot_id: str
    result: str
    message: str
    attempts: int
    time: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "message": self.message, "attempts": self.attempts, "boot_id": self.boot_id,
                "time": self.time}


@dataclass
class PushJob:
    """One plugin's push for one boot of one host.

    ``run(timeout)`` returns a short description of what it pushed, or ``None`` when there was
    nothing to push for this host (no event is recorded then).
    """

    mac: str
    name: str
    boot_id: str
    run: Callable[[float], str | None]
    done: Callable[[PushOutcome], None]
    current: Callable[[], bool] = lambda: True
    attempt: int = 0
    delay: float | None = None


class PushPool:
    """Runs :class:`PushJob` s with retries, timeouts and isolation (see the module docstring)."""

    def __init__(self, record: Callable[..., Any], *, workers: int = 4, policy: PushPolicy | None = None,
                 rng: random.Random | None = None) -> None:
        self.policy = policy or PushPolicy()
        self._record = record
        self._rng = rng or random.Random()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootbox-push")
        self._cond = threading.Condition()
        self._timers: list[tuple[float, int, PushJob]] = []
        self._seq = itertools.count()
        self._closed = False
        self._timer_thread: threading.Thread | None = None

    def submit(self, job: PushJob) -> None:
        """Start the job's first attempt as soon as a worker is free."""
        with self._cond:
            if self._closed:
                raise BootboxError("the appliance is stopping; push again when it is back")
        self._executor.submit(self._attempt, job)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the pool (used to dispatch a host's pushes off the request thread)."""
        with self._cond:
            if self._closed:
                return
        self._executor.submit(self._guard, fn)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("after-boot dispatch failed")

    def close(self) -> None:
        """Drop waiting retries, let running attempts finish (each is bounded by its timeout)."""
        with self._cond:
            self._closed = True
            self._timers.clear()
            self._cond.notify_all()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._timer_thread is not None:
            self._timer_thread.join(5)

    # ------------------------------------------------------------------ internals

    def _later(self, job: PushJob, delay: float) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), job))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(target=self._timer_loop, name="bootbox-push-timer", daemon=True)
                self._timer_thread.start()
            self._cond.notify_all()

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._timers:
                    self._cond.wait()
                    continue
                due, _, job = self._timers[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._timers)
                try:
                    self._executor.submit(self._attempt, job)
                except RuntimeError:  # the executor was shut down under us
                    return

    def _attempt(self, job: PushJob) -> None:
        policy = self.policy
        if not job.current():
            job.done(PushOutcome(job.mac, job.name, job.boot_id, "superseded", "the host booted again", job.attempt))
            return
        job.attempt += 1
        n, total = job.attempt, policy.attempts
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = job.run(policy.timeout)
            except BaseException as exc:  # isolation: whatever the plugin raises is this attempt's result
                outcome["error"] = exc

        runner = threading.Thread(target=target, name=f"bootbox-push-{job.name}", daemon=True)
        runner.start()
        runner.join(policy.timeout)
        where = dict(plugin=job.name, attempt=n, attempts=total, boot_id=job.boot_id)
        if runner.is_alive():
            error = f"timed out after {policy.timeout:g} s"
        elif "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, PushRefused):
                self._record(job.mac, "push", f"push {job.name} refused: {exc}", result="refused", **where)
                job.done(PushOutcome(job.mac, job.name, job.boot_id, "refused", str(exc), n))
                return
            error = str(exc) or type(exc).__name__
            if not isinstance(exc, BootboxError):
                log.warning("%s push %s attempt %d raised %s", job.mac, job.name, n, type(exc).__name__)
        else:
            value = outcome.get("value")
            if value is None:
                job.done(PushOutcome(job.mac, job.name, job.boot_id, "skipped", "nothing to push", n))
                return
            message = str(value)
            self._record(job.mac, "push", f"push {job.name} attempt {n}/{total} ok: {message}", result="ok", **where)
            job.done(PushOutcome(job.mac, job.name, job.boot_id, "ok", message, n))
            return
        if n >= total:
            self._record(job.mac, "push", f"push {job.name} attempt {n}/{total} failed: {error}; giving up",
                         result="failed", error=error, **where)
            job.done(PushOutcome(job.mac, job.name, job.boot_id, "failed", error, n))
            return
        job.delay = next_delay(policy, job.delay, self._rng)
        self._record(job.mac, "push", f"push {job.name} attempt {n}/{total} failed: {error}; "
                                      f"next try in {job.delay:.3g} s", result="retry", error=error,
                     retry_in=round(job.delay, 3), **where)
        self._later(job, job.delay)
