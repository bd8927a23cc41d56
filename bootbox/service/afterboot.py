"""The after-boot state machine: report-ins, and the pushes each new boot starts.

A host that reports in with a new boot ID (``POST /api/v1/hosts/<mac>/up``, or the Linux
demo's ``/booted``) moves ``booting → up → configuring → configured`` (or ``failed``, with the
reason in ``Host.reason``). "New" means a boot ID it has not reported before, or any report from
a host that fetched a boot script since its last one; a repeat of the same boot changes nothing
and is answered from the state, which is how ``/up`` gets Auto Deploy's meanings: 503 while the
pushes run, 200 once configured, 409 when a push gave up.

Each new boot is a *round*: every ``bootbox_host_up`` implementation becomes one
:class:`~bootbox.service.pushes.PushJob` on the push pool. A newer boot (or ``bootbox host push``)
starts a new round, and what is left of the old one is dropped. The round's end sets the state
and each plugin's last result in ``Host.pushes`` (shown by ``bootbox host list``); a round in
which every plugin had nothing to push leaves no event, so plain boots keep a short timeline.

It is given what it uses, not the service: the push settings, the host index, ``record``, the
plugin manager (for the two after-boot hooks), the host configuration's up-token check and the
answers a push gets.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import pluggy

from bootbox.config import PushSettings
from bootbox.errors import BootboxError, Conflict, Unauthorized
from bootbox.hooks import calls
from bootbox.model import REPORTED_STATES, BootEvent, EventKind, Host, HostState, normalize_mac
from bootbox.service.collaborators import Record
from bootbox.service.hostindex import HostIndex
from bootbox.service.pushes import PushJob, PushOutcome, PushPool

log = logging.getLogger("bootbox.afterboot")

REPORT_FIELDS = ("ip", "boot_id", "kernel", "hostname", "message", "secure_boot")
DONE, BUSY, FAILED = "done", "busy", "failed"


def _clean(value: object) -> str:
    return "".join(ch for ch in str(value).strip() if ch.isprintable())[:256]


@dataclass
class _Round:
    id: int
    boot_id: str
    pending: int = 0
    outcomes: dict[str, PushOutcome] = field(default_factory=dict)


def status_of(host: Host) -> str:
    """What a repeated report is told: ``done`` (200), ``busy`` (503) or ``failed`` (409)."""
    if host.state in (HostState.UP, HostState.CONFIGURING):
        return BUSY
    if host.state == HostState.FAILED:
        return FAILED
    return DONE


class AfterBoot:
    """Report-ins, rounds of pushes and their results, for one service."""

    def __init__(self, push: PushSettings, *, hosts: HostIndex, record: Record, pm: pluggy.PluginManager,
                 up_token_ok: Callable[[str, str | None], bool], answers: Callable[[Host], dict[str, Any]]) -> None:
        """``up_token_ok(mac, presented)``: the host's ``/up`` credential check; ``answers(host)``:
        the host's answers in clear, with its schema's defaults, for the pushes."""
        self._hosts = hosts
        self._record = record
        self._pm = pm
        self._up_token_ok = up_token_ok
        self._answers = answers
        self.pool = PushPool(
            record,
            workers=push.workers,
            policy=push,  # PushSettings is a PushPolicy
        )
        self._lock = threading.Lock()
        self._rounds: dict[str, _Round] = {}
        self._ids = itertools.count(1)
        self._reported: dict[str, float] = {}

    def close(self) -> None:
        self.pool.close()

    def resume(self) -> list[str]:
        """After a start: restart the round of every host a stop left mid-round; return their MACs.

        Rounds live in memory (a retry waits in the pool's timer heap), but the host's state is
        saved: a host left ``up`` or ``configuring`` by a stop — SIGTERM drops waiting retries,
        SIGKILL drops everything — would answer 503 "pushes running" forever, with nothing
        running. Pushes are meant to be repeated (a stateless host gets them at every boot), so
        its round simply starts again; it ends ``configured`` or ``failed`` as any round does.
        """
        resumed = []
        for host in self._hosts.all():
            if host.state not in (HostState.UP, HostState.CONFIGURING):
                continue
            with self._lock:
                if host.mac in self._rounds:
                    continue
            event = self._record(host.mac, EventKind.STATE,
                                 f"bootbox restarted while the pushes for boot {host.boot_id} were unfinished: "
                                 "pushing again", boot_id=host.boot_id)
            self._start_round(host, event)
            resumed.append(host.mac)
        if resumed:
            log.info("restarted the after-boot pushes of %d host(s) a stop had interrupted", len(resumed))
        return resumed

    # ------------------------------------------------------------------ reports

    def reported_at(self, mac: str) -> float:
        """When (``time.time()``) ``mac`` last reported a new boot since bootbox started, else 0.

        A boot step that began before this (a TFTP transfer whose record is emitted after the
        report-in was answered) belongs to the boot that reported, and must not move the host
        back to ``booting`` (``BootService._see``)."""
        return self._reported.get(mac, 0.0)

    def report(self, mac: str, report: Mapping[str, Any], client_ip: str, *, token: str | None = None,
               check_token: bool = True) -> tuple[Host, str]:
        """Record a report-in; start a round of pushes if it is a new boot. Returns the host and
        its status (``done`` / ``busy`` / ``failed``)."""
        mac = normalize_mac(mac)
        host = self._hosts.require(mac)
        if check_token and not self._up_token_ok(mac, token):
            raise Unauthorized(f"host {mac}: missing or wrong token on the up callback (use the URL bootbox gave the host)")
        data = {k: _clean(v) for k, v in report.items() if k in REPORT_FIELDS and v not in (None, "")}
        data.setdefault("ip", client_ip)
        if "boot_id" not in data and report.get("instance_id"):  # cloud-init's phone_home
            data["boot_id"] = _clean(report["instance_id"])
        boot_id = data.get("boot_id", "")
        if host.state in REPORTED_STATES and (not boot_id or boot_id == host.boot_id):
            return host, status_of(host)
        boot_id = boot_id or f"r{int(time.time() * 1000):x}"
        data["boot_id"] = boot_id
        now = time.time()
        self._reported[mac] = now  # before the state changes: a step's update that sees UP also sees this

        def change(h: Host | None) -> Host:
            base = h or Host(mac=mac, first_seen=now)
            return replace(base, state=HostState.UP, boot_id=boot_id, reason="", last_seen=now,
                           attrs={**base.attrs, "ipv4": data["ip"]})

        host = self._hosts.update(mac, change)
        event = self._record(mac, EventKind.BOOTED, f"booted and reported in from {data['ip']} (boot {boot_id})",
                             **data)
        self._start_round(host, event)
        host = self._hosts.get(mac) or host
        return host, status_of(host)

    def push(self, mac: str) -> Host:
        """``bootbox host push``: run every plugin's push again for the host's current boot."""
        host = self._hosts.require(mac)
        if host.state not in REPORTED_STATES:
            raise Conflict(f"host {host.mac} has not reported in since it last booted (state {host.state}); "
                           "nothing to push to yet")
        with self._lock:
            current = self._rounds.get(host.mac)
            if current is not None and current.pending:
                raise Conflict(f"pushes for boot {current.boot_id} of {host.mac} are still running")
        event = self._record(host.mac, EventKind.STATE, "pushes requested by the operator", boot_id=host.boot_id)
        host = self._hosts.update(host.mac, lambda h: replace(h, state=HostState.UP, reason=""))  # type: ignore[arg-type]
        self._start_round(host, event)
        return self._hosts.get(host.mac) or host

    # ------------------------------------------------------------------ rounds

    def _start_round(self, host: Host, event: BootEvent) -> None:
        pm = self._pm
        with self._lock:
            round_ = _Round(next(self._ids), host.boot_id or "")
            self._rounds[host.mac] = round_
        has_pushes = bool(calls.implementers(pm, "bootbox_host_up"))
        if not has_pushes:
            self._set_state(round_, host.mac, HostState.CONFIGURED, "", {})
        if has_pushes or calls.implementers(pm, "bootbox_host_booted"):
            self.pool.call_soon(functools.partial(self._dispatch, round_, host, event))

    def _current(self, mac: str, round_: _Round) -> bool:
        with self._lock:
            return self._rounds.get(mac) is round_

    def _dispatch(self, round_: _Round, host: Host, event: BootEvent) -> None:
        """On the pool: the notification hooks, then one push job per plugin of ``bootbox_host_up``
        (``bootbox.hooks.calls``: each plugin's call goes through pluggy, inside every wrapper)."""
        pm, record = self._pm, self._record

        def booted_failed(plugin: str, exc: Exception) -> None:
            log.error("%s after-boot hook of %s failed", host.mac, plugin, exc_info=exc)
            record(host.mac, EventKind.STATE, f"after-boot hook of {plugin} failed: {exc}")

        calls.call_each(pm, "bootbox_host_booted", on_error=booted_failed, host=host, event=event)
        pushes = calls.per_plugin(pm, "bootbox_host_up")
        if not pushes or not self._current(host.mac, round_):
            return
        try:
            answers = self._answers(host)
        except BootboxError as exc:
            self._set_state(round_, host.mac, HostState.FAILED, str(exc), {})
            record(host.mac, EventKind.STATE, f"failed: {exc}")
            return
        self._set_state(round_, host.mac, HostState.CONFIGURING, "", None)
        jobs = []
        for push in pushes:

            def run(timeout: float, push: calls.PluginCall = push) -> str | None:
                results = push(host=host, event=event, answers=answers, timeout=timeout)
                return "; ".join(str(result) for result in results) if results else None

            jobs.append(PushJob(mac=host.mac, name=push.plugin, boot_id=round_.boot_id, run=run,
                                done=functools.partial(self._done, round_),
                                current=functools.partial(self._current, host.mac, round_)))
        with self._lock:
            round_.pending = len(jobs)
        for job in jobs:
            self.pool.submit(job)

    def _done(self, round_: _Round, outcome: PushOutcome) -> None:
        with self._lock:
            if self._rounds.get(outcome.mac) is not round_:
                return
            round_.outcomes[outcome.name] = outcome
            round_.pending -= 1
            if round_.pending > 0:
                return
            outcomes = dict(round_.outcomes)
        real = {name: o for name, o in outcomes.items() if o.result != "skipped"}
        failed = [o for o in real.values() if not o.ok]
        reason = "; ".join(f"{o.name}: {o.message}" for o in failed)
        state = HostState.FAILED if failed else HostState.CONFIGURED
        self._set_state(round_, outcome.mac, state, reason, {name: o.to_dict() for name, o in real.items()})
        if failed:
            self._record(outcome.mac, EventKind.STATE, f"failed: {reason}", state=str(state))
        elif real:
            self._record(outcome.mac, EventKind.STATE, f"configured: {', '.join(sorted(real))} pushed",
                         state=str(state))

    def _set_state(self, round_: _Round, mac: str, state: HostState, reason: str,
                   pushes: Mapping[str, Any] | None) -> None:
        """Move the host to ``state`` if ``round_`` is still its current round."""
        with self._lock:
            if self._rounds.get(mac) is not round_:
                return

            def change(h: Host | None) -> Host:
                base = h or Host(mac=mac)
                merged = {**base.pushes, **pushes} if pushes else base.pushes
                return replace(base, state=state, reason=reason, pushes=merged)

            self._hosts.update(mac, change)
