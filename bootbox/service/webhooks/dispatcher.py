"""The webhook dispatcher: a follower thread queues matching events, a small pool POSTs them.

Nothing here runs on the boot path. The follower reads the event feed like an SSE client does
(:mod:`bootbox.service.eventfeed`: a reader never makes ``publish`` wait), so a boot request
costs the same with or without hooks, and with a receiver that hangs. For each hook it takes
the events after the hook's cursor that match its filters, writes them to the hook's queue
(``queue.jsonl``, fsynced) and moves the cursor; the feed's IDs are stable across restarts, so
after a restart the follower resumes from the cursor and queues what a crash kept it from
queueing (as far back as the feed's ring reaches).

``[webhook] workers`` threads send. A hook's deliveries go out one at a time, oldest first: a
worker takes a hook (never one another worker holds), sends its oldest delivery and, on a
failure, leaves it at the head with a backoff (:func:`~bootbox.service.webhooks.delivery.backoff`),
so a hook that is down delays only its own deliveries and keeps their order. A delivery still
failing ``[webhook] retry_horizon`` seconds after it was made is given up (``failed`` in the
log) and the next one goes. Every try is a line in the hook's delivery log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bootbox.config import Settings, Webhook, WebhookSettings
from bootbox.errors import ConfigError, NotFound
from bootbox.model import BootEvent
from bootbox.runtime.pacing import lower_priority
from bootbox.service.eventfeed import EventFeed, matcher
from bootbox.service.webhooks.delivery import (
    Answer,
    backoff,
    body_for,
    headers_for,
    masked_url,
    post,
)
from bootbox.service.webhooks.files import Delivery, DeliveryLog, HookQueue

log = logging.getLogger("bootbox.webhooks")

OUTCOMES = ("ok", "retry", "failed", "dropped")
"""How a try ended (the ``outcome`` label of ``bootbox_webhook_deliveries_total``): ``retry`` is a
failed try that will be made again, ``failed`` one given up, ``dropped`` an event not queued
because the queue was full."""
BATCH = 500
"""Events the follower queues for one hook in one write."""
CURSOR_EVERY = 30.0
"""Seconds between writes of cursors that moved without a delivery (and log prunes)."""
TEST_KIND = "webhook.test"
GATHER = 0.05
"""Seconds the follower lets new events gather before it looks at them."""


class Hook:
    """One configured hook at run time: its queue, its log, its counters, whose turn it is."""

    def __init__(self, config: Webhook, secret: bytes, queue: HookQueue, delivery_log: DeliveryLog) -> None:
        self.config = config
        self.name = config.name
        self.secret = secret
        self.queue = queue
        self.log = delivery_log
        self.accept = matcher(config.hosts, config.events)
        self.busy = False
        self.due = 0.0  # time.monotonic() before which the head is not tried again
        self.attempts = 0  # failed tries of the head delivery so far
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.dropped_logged = 0.0

    def describe(self) -> dict[str, Any]:
        """This hook for ``webhook list``: the secret never shown."""
        recent = self.log.recent(1)
        return {
            "name": self.name,
            "url": masked_url(self.config.url),
            "events": list(self.config.events),
            "hosts": list(self.config.hosts),
            "secret": "***",
            "secret_file": self.config.secret_file,
            "pending": len(self.queue),
            "counts": dict(self.counts),
            "last": recent[0] if recent else None,
        }


class Webhooks:
    """Every ``[[webhooks]]`` hook of one appliance. With none configured it starts nothing."""

    def __init__(self, settings: Settings, feed: EventFeed) -> None:
        self.settings: WebhookSettings = settings.webhook
        self._configs = settings.webhooks
        self._state = settings.state_path
        self._feed = feed
        self._hooks: dict[str, Hook] = {}
        self._turn = threading.Condition(threading.Lock())  # hooks' busy/due, and the pool waiting
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Read the secrets and the hooks' files, then start the follower and the pool.

        :raises ConfigError: a ``secret_file`` cannot be read (the key is named)."""
        if not self._configs or self._threads:
            return
        root = self._state / "webhooks"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        start_cursor = self._feed.last_id
        for config in self._configs:
            directory = root / config.name
            directory.mkdir(exist_ok=True, mode=0o700)
            self._hooks[config.name] = Hook(
                config, self._secret(config), HookQueue(directory, start_cursor),
                DeliveryLog(directory, retention=self.settings.log_retention, entries=self.settings.log_entries))
        self._threads.append(threading.Thread(target=self._follow, name="bootbox-webhooks", daemon=True))
        for n in range(self.settings.workers):
            self._threads.append(threading.Thread(target=self._work, name=f"bootbox-webhook-{n}", daemon=True))
        for thread in self._threads:
            thread.start()
        pending = sum(len(hook.queue) for hook in self._hooks.values())
        log.info("webhooks: %s (%d deliveries pending)", ", ".join(self._hooks), pending)

    def _secret(self, config: Webhook) -> bytes:
        if config.secret:
            return config.secret.encode()
        path = Path(config.secret_file)
        path = path if path.is_absolute() else self._state / path
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"webhooks.{config.name}.secret_file", f"cannot read {path}: {err}") from None
        if not secret:
            raise ConfigError(f"webhooks.{config.name}.secret_file", f"{path} is empty")
        return secret.encode()

    def close(self, timeout: float = 5.0) -> None:
        """Queue what the feed still holds, save the cursors, stop the threads. A delivery cut
        off mid-try stays queued and is sent again after the next start."""
        if not self._threads:
            return
        self._stopping.set()
        with self._turn:
            self._turn.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for hook in self._hooks.values():
            hook.queue.close()
        self._threads.clear()

    # -------------------------------------------------------------------- reading (API)

    def hooks(self) -> list[dict[str, Any]]:
        """Every hook, in the config's order (``GET /api/v1/webhooks``)."""
        if not self._hooks:  # not started (or no hooks): the configuration alone
            return [{**config.masked(), "url": masked_url(config.url), "pending": 0,
                     "counts": dict.fromkeys(OUTCOMES, 0), "last": None} for config in self._configs]
        return [hook.describe() for hook in self._hooks.values()]

    def deliveries(self, name: str, limit: int | None = None) -> dict[str, Any]:
        """A hook's pending deliveries (oldest first) and its delivery log (newest first)."""
        hook = self._hook(name)
        pending = [{"delivery": d.id, "event_id": d.event_id, "kind": d.kind, "mac": d.mac, "created": d.created}
                   for d in hook.queue.pending()]
        return {"hook": name, "pending": pending, "log": hook.log.recent(limit)}

    def stats(self) -> dict[str, dict[str, int]]:
        """Tries by outcome and deliveries pending, per hook (``/metrics``)."""
        with self._turn:
            counts = {name: dict(hook.counts) for name, hook in self._hooks.items()}
        return {name: {**counts[name], "pending": len(hook.queue)} for name, hook in self._hooks.items()}

    def _hook(self, name: str) -> Hook:
        hook = self._hooks.get(name)
        if hook is None:
            raise NotFound(f"no webhook {name!r}; configured: {', '.join(self._hooks) or '(none)'}")
        return hook

    # -------------------------------------------------------------------- test (API)

    def test(self, name: str) -> dict[str, Any]:
        """Send one ``webhook.test`` delivery now, outside the queue, once; its log entry."""
        hook = self._hook(name)
        delivery_id = uuid.uuid4().hex
        created = time.time()
        event = BootEvent(mac="", kind=TEST_KIND, message=f"a test of webhook {name}", time=created)
        delivery = Delivery(delivery_id, 0, TEST_KIND, "", created, body_for(name, delivery_id, 0, event, created))
        answer = self._send(hook, delivery, attempt=1)
        outcome = "ok" if answer.ok else "failed"
        return self._record(hook, delivery, 1, answer, outcome)

    # -------------------------------------------------------------------- the follower

    def _follow(self) -> None:
        lower_priority()
        saved = time.monotonic()
        while True:
            stopping = self._stopping.is_set()
            for hook in self._hooks.values():
                self._take(hook)
            if stopping:
                return  # a last round after the stop: events recorded while closing are queued
            if time.monotonic() - saved > CURSOR_EVERY:
                saved = time.monotonic()
                for hook in self._hooks.values():
                    hook.queue.save_cursor()
                    hook.log.prune()
            lowest = min(hook.queue.cursor for hook in self._hooks.values())
            if self._feed.closed:
                self._stopping.wait(0.2)
            elif self._feed.wait(lowest, 1.0):
                # Let a burst gather (a boot storm publishes thousands a second): one look at
                # the feed's ring per hook per round, not per event.
                self._stopping.wait(GATHER)

    def _take(self, hook: Hook) -> None:
        """Queue the events after ``hook``'s cursor that it wants."""
        while True:
            found, upto = self._feed.after(hook.queue.cursor, accept=hook.accept, limit=BATCH)
            if upto <= hook.queue.cursor:
                return
            room = self.settings.queue_limit - len(hook.queue)
            if len(found) > room:
                self._dropped(hook, found[max(room, 0):])
                found = found[:max(room, 0)]
            created = time.time()
            deliveries = []
            for event_id, event in found:
                delivery_id = uuid.uuid4().hex
                deliveries.append(Delivery(delivery_id, event_id, event.kind, event.mac, created,
                                           body_for(hook.name, delivery_id, event_id, event, created)))
            if not deliveries:
                hook.queue.advance(upto)
                continue
            try:
                hook.queue.add(deliveries, upto)
            except OSError as err:  # the cursor stays: the same events are tried again next round
                log.warning("webhook %s: cannot queue %d deliveries: %s", hook.name, len(deliveries), err)
                self._stopping.wait(1.0)
                return
            with self._turn:
                self._turn.notify_all()

    def _dropped(self, hook: Hook, events: list[tuple[int, BootEvent]]) -> None:
        with self._turn:
            hook.counts["dropped"] += len(events)
        if time.monotonic() - hook.dropped_logged > 60:
            hook.dropped_logged = time.monotonic()
            log.warning("webhook %s: %d deliveries are waiting ([webhook] queue_limit); %d new events dropped "
                        "(%d in all)", hook.name, len(hook.queue), len(events), hook.counts["dropped"])

    # -------------------------------------------------------------------- the pool

    def _work(self) -> None:
        while True:
            hook = self._next_hook()
            if hook is None:
                return
            try:
                self._try_head(hook)
            except Exception:  # a bug must not kill the pool
                log.exception("webhook %s: a delivery failed unexpectedly", hook.name)
                with self._turn:
                    hook.due = time.monotonic() + self.settings.first_delay
            finally:
                with self._turn:
                    hook.busy = False
                    self._turn.notify_all()

    def _next_hook(self) -> Hook | None:
        """The hook whose head delivery is due soonest (and due now), marked busy; None at stop."""
        with self._turn:
            while not self._stopping.is_set():
                now = time.monotonic()
                waiting = [hook for hook in self._hooks.values() if not hook.busy and len(hook.queue)]
                due = [hook for hook in waiting if hook.due <= now]
                if due:
                    hook = min(due, key=lambda h: h.due)
                    hook.busy = True
                    return hook
                wake = min((hook.due - now for hook in waiting), default=1.0)
                self._turn.wait(max(0.01, min(wake, 1.0)))
            return None

    def _try_head(self, hook: Hook) -> None:
        delivery = hook.queue.head()
        if delivery is None:
            return
        attempt = hook.attempts + 1
        answer = self._send(hook, delivery, attempt)
        if answer.ok:
            self._record(hook, delivery, attempt, answer, "ok")
            hook.queue.done(delivery.id, "ok")
            hook.attempts, hook.due = 0, 0.0
            return
        delay = backoff(attempt, self.settings.first_delay, self.settings.max_delay)
        if time.time() + delay > delivery.created + self.settings.retry_horizon:
            self._record(hook, delivery, attempt, answer, "failed")
            log.warning("webhook %s: delivery %s (%s) given up after %d tries: %s", hook.name, delivery.id,
                        delivery.kind, attempt, _reason(answer))
            hook.queue.done(delivery.id, "failed")
            hook.attempts, hook.due = 0, 0.0
            return
        self._record(hook, delivery, attempt, answer, "retry", next_try=time.time() + delay)
        with self._turn:
            hook.attempts = attempt
            hook.due = time.monotonic() + delay

    def _send(self, hook: Hook, delivery: Delivery, attempt: int) -> Answer:
        body = delivery.body.encode("utf-8")
        headers = headers_for(hook=hook.name, delivery_id=delivery.id, event_id=delivery.event_id, kind=delivery.kind,
                              attempt=attempt, secret=hook.secret, body=body, now=time.time())
        return post(hook.config.url, body, headers, self.settings.timeout)

    def _record(self, hook: Hook, delivery: Delivery, attempt: int, answer: Answer, outcome: str,
                next_try: float | None = None) -> dict[str, Any]:
        with self._turn:
            hook.counts[outcome] += 1
        entry = {"time": time.time(), "delivery": delivery.id, "event_id": delivery.event_id, "kind": delivery.kind,
                 "mac": delivery.mac, "attempt": attempt, "status": answer.status, "outcome": outcome,
                 "error": answer.error or (answer.text[:200] if not answer.ok else ""), "next_try": next_try}
        hook.log.append(entry)
        return entry


def _reason(answer: Answer) -> str:
    return answer.error or f"HTTP {answer.status}"
