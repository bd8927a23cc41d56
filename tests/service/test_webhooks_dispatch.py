"""The webhook dispatcher against a real HTTP receiver on loopback, fed by a real event feed:
order per hook, signatures, retries with backoff until the receiver is back, giving up at the
retry horizon, filters, the queue limit, and a restart of the dispatcher with deliveries pending.

:class:`Receiver` is the test's webhook endpoint (a real ``http.server`` on 127.0.0.1); the
scenario tests (tests/scenarios/test_webhooks.py) use it too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bootbox.config import Settings, Webhook, WebhookSettings, load_settings
from bootbox.model import BootEvent
from bootbox.service.eventfeed import EventFeed
from bootbox.service.webhooks import Webhooks
from bootbox.store.journal import Journal

SECRET = "hook-secret-5e1"
MAC = "52:54:00:de:11:01"
OTHER = "52:54:00:de:11:02"


class Receiver:
    """A webhook receiver: a real HTTP server on loopback that keeps every POST it answered.

    ``hold`` cleared makes requests wait (a slow receiver); :meth:`stop` closes the port (a
    receiver that is down: connections are refused), :meth:`start` opens it again, same port."""

    def __init__(self, secret: str = SECRET, status: int = 200, *, host: str = "127.0.0.1", port: int = 0,
                 bind: Callable[[Callable[[], ThreadingHTTPServer]], ThreadingHTTPServer] = lambda make: make()) -> None:
        self.secret = secret.encode()
        self.host = host
        self._bind = bind  # makes the socket; a lab test makes it inside a network namespace
        self.status = status
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.waiting = 0  # requests held by ``hold`` right now
        self.hold = threading.Event()
        self.hold.set()
        self._changed = threading.Condition()
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.waiting += 1
                    receiver._changed.notify_all()
                receiver.hold.wait(60)
                with receiver._changed:
                    receiver.waiting -= 1
                    if 200 <= receiver.status < 300:
                        receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver._changed.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = self._bind(lambda: ThreadingHTTPServer((self.host, self.port), Handler))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_until(self, done: Callable[[Receiver], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"the receiver did not get there in {timeout} s; it got {self.kinds()}")
                self._changed.wait(min(left, 0.2))

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The first ``count`` deliveries' bodies, each checked for a valid signature."""
        self.wait_until(lambda r: len(r.got) >= count, timeout)
        return [self.verified(headers, body) for headers, body in self.got[:count]]

    def verified(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The JSON body, after checking the HMAC-SHA256 signature as a receiver must."""
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-bootbox-signature"], expected), "bad signature"
        doc = json.loads(body)
        assert headers["x-bootbox-delivery"] == doc["delivery"]
        assert headers["x-bootbox-event-id"] == str(doc["event"]["id"])
        assert headers["x-bootbox-event"] == doc["event"]["kind"]
        assert headers["content-type"] == "application/json"
        assert int(headers["x-bootbox-timestamp"]) > 0
        return doc

    def kinds(self) -> list[str]:
        return [json.loads(body)["event"]["kind"] for _, body in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.hold.set()
        running.stop()


FAST = WebhookSettings(workers=2, timeout=5.0, first_delay=0.05, max_delay=0.2, retry_horizon=3600.0)


def settings_for(state: Path, *hooks: Webhook, webhook: WebhookSettings = FAST) -> Settings:
    empty = state.parent / "empty.toml"
    empty.write_text("")
    base = load_settings(empty, env={}, overrides={"state_dir": str(state), "demo": {"enabled": False}})
    return replace(base, webhook=webhook, webhooks=hooks)


class Rig:
    """A journal, its feed and a dispatcher, as the service wires them; restartable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.journal = Journal(settings.state_path / "events.jsonl")
        self.journal.start()
        self.feed = EventFeed(self.journal)
        self.hooks = Webhooks(settings, self.feed)
        self.hooks.start()

    def record(self, mac: str, kind: str) -> int:
        return self.feed.publish(BootEvent(mac=mac, kind=kind, message=f"{kind} for {mac}"))

    def stop(self) -> None:
        self.feed.close()
        self.hooks.close()
        self.journal.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def eventually(done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``done()`` (a worker's bookkeeping follows the receiver's answer)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


def hook(receiver: Receiver, name: str = "ops", **fields: Any) -> Webhook:
    return Webhook(name=name, url=receiver.url, secret=SECRET, **fields)


def test_events_arrive_in_order_signed_with_their_feed_ids(state: Path, receiver: Receiver) -> None:
    rig = Rig(settings_for(state, hook(receiver)))
    try:
        ids = [rig.record(MAC, kind) for kind in ("dhcp.offer", "tftp.sent", "http.script", "booted")]
        docs = receiver.wait_for(4)
        assert [doc["event"]["id"] for doc in docs] == ids
        assert [doc["event"]["kind"] for doc in docs] == ["dhcp.offer", "tftp.sent", "http.script", "booted"]
        assert {doc["event"]["mac"] for doc in docs} == {MAC} and {doc["hook"] for doc in docs} == {"ops"}
        assert len({doc["delivery"] for doc in docs}) == 4
        eventually(lambda: rig.hooks.stats()["ops"]["ok"] == 4)
    finally:
        rig.stop()


def test_a_hook_gets_only_the_kinds_and_hosts_it_names(state: Path, receiver: Receiver) -> None:
    rig = Rig(settings_for(state, hook(receiver, events=("booted", "push"), hosts=(MAC,))))
    try:
        rig.record(OTHER, "booted")
        rig.record(MAC, "dhcp.offer")
        wanted = rig.record(MAC, "booted")
        rig.record(OTHER, "push")
        last = rig.record(MAC, "push")
        docs = receiver.wait_for(2)
        assert [(doc["event"]["id"], doc["event"]["kind"]) for doc in docs] == [(wanted, "booted"), (last, "push")]
        time.sleep(0.3)  # nothing else trickles in
        assert len(receiver.got) == 2
    finally:
        rig.stop()


def test_a_receiver_that_is_down_gets_everything_in_order_once_it_is_back(state: Path, receiver: Receiver) -> None:
    receiver.stop()
    rig = Rig(settings_for(state, hook(receiver)))
    try:
        ids = [rig.record(MAC, f"step.{n}") for n in range(5)]
        deadline = time.monotonic() + 20
        while rig.hooks.stats()["ops"]["retry"] < 3:  # refused, retried with backoff, still queued
            assert time.monotonic() < deadline, rig.hooks.deliveries("ops")
            time.sleep(0.05)
        pending = rig.hooks.deliveries("ops")
        assert [d["event_id"] for d in pending["pending"]] == ids
        assert {e["outcome"] for e in pending["log"]} == {"retry"} and pending["log"][0]["status"] == 0
        assert "Connection refused" in pending["log"][0]["error"]
        receiver.start()
        docs = receiver.wait_for(5)
        assert [doc["event"]["id"] for doc in docs] == ids
        deadline = time.monotonic() + 5
        while rig.hooks.deliveries("ops")["pending"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        rig.stop()


def test_a_delivery_past_the_retry_horizon_is_given_up_and_the_next_one_goes(state: Path, receiver: Receiver) -> None:
    receiver.status = 500
    horizon = replace(FAST, retry_horizon=0.5)
    rig = Rig(settings_for(state, hook(receiver), webhook=horizon))
    try:
        first = rig.record(MAC, "dhcp.offer")
        deadline = time.monotonic() + 20
        while rig.hooks.stats()["ops"]["failed"] < 1:
            assert time.monotonic() < deadline, rig.hooks.deliveries("ops")
            time.sleep(0.05)
        log = rig.hooks.deliveries("ops")["log"]
        assert log[0]["outcome"] == "failed" and log[0]["event_id"] == first and log[0]["status"] == 500
        assert all(entry["outcome"] == "retry" for entry in log[1:]) and len(log) >= 2
        receiver.status = 200
        second = rig.record(MAC, "booted")
        assert [doc["event"]["id"] for doc in receiver.wait_for(1)] == [second]
    finally:
        rig.stop()


def test_pending_deliveries_survive_a_restart_and_events_recorded_meanwhile_are_queued(
        state: Path, receiver: Receiver) -> None:
    receiver.stop()
    settings = settings_for(state, hook(receiver))
    rig = Rig(settings)
    before = [rig.record(MAC, f"before.{n}") for n in range(3)]
    rig.stop()
    # While the dispatcher is down, the journal alone takes more events (as if the process
    # crashed between journaling them and queueing them).
    journal = Journal(settings.state_path / "events.jsonl")
    journal.start()
    feed = EventFeed(journal)
    between = [feed.publish(BootEvent(mac=MAC, kind="between", message="")) for _ in range(2)]
    journal.close()
    receiver.start()
    again = Rig(settings_for(state, hook(receiver)))
    try:
        after = again.record(MAC, "after")
        docs = receiver.wait_for(6)
        assert [doc["event"]["id"] for doc in docs] == [*before, *between, after]
        time.sleep(0.3)
        assert len(receiver.got) == 6  # nothing twice
    finally:
        again.stop()
    # A third start has nothing left to send.
    third = Rig(settings_for(state, hook(receiver)))
    try:
        assert third.hooks.deliveries("ops")["pending"] == []
        time.sleep(0.3)
        assert len(receiver.got) == 6
    finally:
        third.stop()


def test_a_new_hook_starts_at_the_newest_event_not_at_history(state: Path, receiver: Receiver) -> None:
    plain = Rig(settings_for(state))
    plain.record(MAC, "old")
    plain.stop()
    rig = Rig(settings_for(state, hook(receiver)))
    try:
        new = rig.record(MAC, "new")
        assert [doc["event"]["id"] for doc in receiver.wait_for(1)] == [new]
        time.sleep(0.3)
        assert receiver.kinds() == ["new"]
    finally:
        rig.stop()


def test_a_full_queue_drops_new_events_and_counts_them(state: Path, receiver: Receiver) -> None:
    receiver.stop()
    rig = Rig(settings_for(state, hook(receiver), webhook=replace(FAST, queue_limit=3, first_delay=5.0, max_delay=5.0)))
    try:
        for n in range(5):
            rig.record(MAC, f"step.{n}")
        deadline = time.monotonic() + 10
        while rig.hooks.stats()["ops"]["dropped"] < 2:
            assert time.monotonic() < deadline, rig.hooks.stats()
            time.sleep(0.05)
        assert [d["kind"] for d in rig.hooks.deliveries("ops")["pending"]] == ["step.0", "step.1", "step.2"]
    finally:
        rig.stop()


def test_one_hook_down_does_not_hold_up_another(state: Path, receiver: Receiver) -> None:
    down = Receiver()
    down.stop()
    rig = Rig(settings_for(state, Webhook(name="down", url=down.url, secret=SECRET), hook(receiver, name="up")))
    try:
        ids = [rig.record(MAC, kind) for kind in ("a", "b", "c")]
        assert [doc["event"]["id"] for doc in receiver.wait_for(3)] == ids
        assert len(rig.hooks.deliveries("down")["pending"]) == 3
    finally:
        rig.stop()


def test_the_test_delivery_is_signed_and_logged(state: Path, receiver: Receiver) -> None:
    rig = Rig(settings_for(state, hook(receiver)))
    try:
        entry = rig.hooks.test("ops")
        assert entry["outcome"] == "ok" and entry["status"] == 200 and entry["kind"] == "webhook.test"
        doc = receiver.wait_for(1)[0]
        assert doc["event"]["kind"] == "webhook.test" and doc["delivery"] == entry["delivery"]
        assert rig.hooks.deliveries("ops")["log"][0]["delivery"] == entry["delivery"]
        listed = rig.hooks.hooks()
        assert listed[0]["secret"] == "***" and SECRET not in json.dumps(listed)
    finally:
        rig.stop()


def test_a_secret_file_is_read_relative_to_the_state_dir(state: Path, receiver: Receiver) -> None:
    (state / "hook.secret").write_text(SECRET + "\n")
    rig = Rig(settings_for(state, Webhook(name="ops", url=receiver.url, secret_file="hook.secret")))
    try:
        rig.record(MAC, "booted")
        receiver.wait_for(1)  # verified with SECRET
    finally:
        rig.stop()
