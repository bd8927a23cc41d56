"""A hook's durable queue and delivery log (bootbox.service.webhooks.files), the backoff, the
signature, and the ``[[webhooks]]`` / ``[webhook]`` settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from bootbox.config import load_settings
from bootbox.errors import ConfigError
from bootbox.service.webhooks.delivery import backoff, masked_url, signature
from bootbox.service.webhooks.files import (
    COMPACT_SLACK,
    Delivery,
    DeliveryLog,
    HookQueue,
)


def delivery(n: int, created: float = 1000.0) -> Delivery:
    return Delivery(id=f"d{n}", event_id=100 + n, kind="booted", mac="52:54:00:00:00:01", created=created,
                    body=json.dumps({"n": n}))


def test_a_new_queue_starts_at_the_given_cursor_and_remembers_it(tmp_path: Path) -> None:
    queue = HookQueue(tmp_path, start_cursor=42)
    assert queue.cursor == 42 and len(queue) == 0
    assert HookQueue(tmp_path, start_cursor=999).cursor == 42  # not new any more


def test_pending_deliveries_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    queue = HookQueue(tmp_path, start_cursor=0)
    queue.add([delivery(1), delivery(2), delivery(3)], cursor=105)
    queue.done("d1", "ok")
    queue.add([delivery(4)], cursor=110)
    again = HookQueue(tmp_path, start_cursor=0)
    assert [d.id for d in again.pending()] == ["d2", "d3", "d4"]
    assert again.head() == delivery(2)
    assert again.cursor == 104  # the newest queued event; events after it are looked at again


def test_a_moved_cursor_is_kept_once_saved(tmp_path: Path) -> None:
    queue = HookQueue(tmp_path, start_cursor=5)
    queue.advance(50)
    assert HookQueue(tmp_path, start_cursor=0).cursor == 5  # only in memory so far
    queue.save_cursor()
    assert HookQueue(tmp_path, start_cursor=0).cursor == 50
    queue.advance(60)
    queue.close()  # close saves it
    assert HookQueue(tmp_path, start_cursor=0).cursor == 60


def test_done_deliveries_are_compacted_away(tmp_path: Path) -> None:
    queue = HookQueue(tmp_path, start_cursor=0)
    total = COMPACT_SLACK * 2
    for n in range(total):
        queue.add([delivery(n)], cursor=100 + n)
        if n != total - 1:
            queue.done(f"d{n}", "ok")
    lines = (tmp_path / "queue.jsonl").read_text().splitlines()
    assert len(lines) < total  # add + done for each would be twice ``total``
    again = HookQueue(tmp_path, start_cursor=0)
    assert [d.id for d in again.pending()] == [f"d{total - 1}"]
    assert again.cursor == 100 + total - 1


def test_a_torn_last_line_is_skipped_and_damage_is_set_aside(tmp_path: Path) -> None:
    queue = HookQueue(tmp_path, start_cursor=0)
    queue.add([delivery(1), delivery(2)], cursor=102)
    path = tmp_path / "queue.jsonl"
    with path.open("ab") as fh:
        fh.write(b'{"op":"add","deliv')  # a crash mid-write
    assert [d.id for d in HookQueue(tmp_path, start_cursor=0).pending()] == ["d1", "d2"]
    assert not (tmp_path / "set-aside").exists()
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], "garbage \x00\x00", *text[1:]]) + "\n")
    assert len(HookQueue(tmp_path, start_cursor=0).pending()) >= 1
    assert any((tmp_path / "set-aside").iterdir())


def test_the_log_keeps_its_newest_entries_and_drops_old_ones(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path, retention=100.0, entries=5)
    now = time.time()
    for n in range(8):
        log.append({"time": now - 50 + n, "delivery": f"d{n}", "outcome": "ok"})
    assert [e["delivery"] for e in log.recent()] == ["d7", "d6", "d5", "d4", "d3"]
    assert [e["delivery"] for e in log.recent(2)] == ["d7", "d6"]
    log.append({"time": now - 500, "delivery": "ancient", "outcome": "ok"})  # past the retention
    assert "ancient" not in [e["delivery"] for e in log.recent()]
    again = DeliveryLog(tmp_path, retention=100.0, entries=5)  # read back, bounded, old ones out
    assert [e["delivery"] for e in again.recent()] == ["d7", "d6", "d5", "d4"]
    again.prune(now=now + 1000)  # everything is past the retention then
    assert again.recent() == [] and (tmp_path / "deliveries.jsonl").read_text() == ""


def test_the_log_file_is_rewritten_before_it_grows_past_its_bound(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path, retention=3600.0, entries=10)
    for n in range(3 * (2 * 10 + COMPACT_SLACK)):
        log.append({"time": time.time(), "delivery": f"d{n}", "outcome": "retry"})
    assert len((tmp_path / "deliveries.jsonl").read_text().splitlines()) <= 2 * 10 + COMPACT_SLACK + 1


def test_backoff_doubles_up_to_the_cap_within_a_tenth() -> None:
    exact = [backoff(n, 2.0, 60.0, rng=lambda low, high: 1.0) for n in range(1, 8)]
    assert exact == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff(1, 2.0, 60.0, rng=lambda low, high: low) == pytest.approx(1.8)
    assert backoff(2, 2.0, 60.0, rng=lambda low, high: high) == pytest.approx(4.4)
    assert backoff(10, 2.0, 60.0, rng=lambda low, high: high) == 60.0  # never past the cap
    assert backoff(10_000, 2.0, 60.0) <= 60.0  # no overflow
    for n in range(1, 20):
        assert 0.9 * min(2.0 * 2 ** (n - 1), 60.0) <= backoff(n, 2.0, 60.0) <= 60.0


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"event":{"kind":"booted"}}'
    assert signature(b"s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature(b"other", body) != signature(b"s3cret", body)


def test_a_password_in_a_hook_url_is_masked() -> None:
    assert masked_url("https://ops:hunter2@hooks.lab:8443/x?y=1") == "https://ops:***@hooks.lab:8443/x?y=1"
    assert masked_url("http://hooks.lab/x") == "http://hooks.lab/x"


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "bootbox.toml"
    path.write_text(text)
    return load_settings(path, env={})


def test_webhooks_load_from_toml_and_show_masked(tmp_path: Path) -> None:
    settings = _load(tmp_path, """
[webhook]
workers = 3
retry_horizon = 3600.0

[[webhooks]]
name = "ops"
url = "https://hooks.lab/bootbox"
events = ["booted", "push"]
hosts = ["52-54-00-AA-BB-CC"]
secret = "s3cret-value"

[[webhooks]]
name = "cmdb"
url = "http://cmdb.lab:8000/in"
secret_file = "/etc/bootbox/cmdb.secret"
""")
    hooks = settings.webhooks  # type: ignore[attr-defined]
    assert [h.name for h in hooks] == ["ops", "cmdb"] and hooks[0].hosts == ("52:54:00:aa:bb:cc",)
    assert hooks[0].events == ("booted", "push") and hooks[1].events == ()
    assert settings.webhook.workers == 3 and settings.webhook.retry_horizon == 3600.0  # type: ignore[attr-defined]
    shown = json.dumps(settings.to_dict())  # type: ignore[attr-defined]
    assert "s3cret-value" not in shown and '"secret": "***"' in shown
    assert "s3cret-value" not in repr(settings)


@pytest.mark.parametrize(("text", "key"), [
    ('[[webhooks]]\nurl = "http://a/"\nsecret = "x"', "webhooks.0.name"),
    ('[[webhooks]]\nname = "a"\nurl = "ftp://a/"\nsecret = "x"', "webhooks.a.url"),
    ('[[webhooks]]\nname = "a"\nurl = "http://a/"', "webhooks.a.secret"),
    ('[[webhooks]]\nname = "a"\nurl = "http://a/"\nsecret = "x"\nsecret_file = "f"', "webhooks.a.secret"),
    ('[[webhooks]]\nname = "a"\nurl = "http://a/"\nsecret = "x"\nhosts = ["nope"]', "webhooks.a.hosts"),
    ('[[webhooks]]\nname = "a"\nurl = "http://a/"\nsecret = "x"\nretries = 3', "webhooks.a.retries"),
    ('[[webhooks]]\nname = "A b"\nurl = "http://a/"\nsecret = "x"', "webhooks.A b.name"),
    ('[[webhooks]]\nname = "a"\nurl = "http://a/"\nsecret = "x"\n[[webhooks]]\nname = "a"\nurl = "http://b/"\nsecret = "y"',
     "webhooks.a.name"),
    ("[webhook]\nworkers = 0", "webhook.workers"),
    ("[webhook]\ntimeout = 0", "webhook.timeout"),
    ("[webhook]\nretry_horizon = 0", "webhook.retry_horizon"),
    ("[webhook]\nfirst_delay = 700.0", "webhook.first_delay"),
    ("[webhook]\nqueue_limit = 0", "webhook.queue_limit"),
])
def test_a_wrong_webhook_setting_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert str(raised.value).startswith(key + ":"), str(raised.value)
