"""``/api/v1/webhooks``: the configured hooks, each one's deliveries, a test delivery.

Reads follow ``[http] read_token`` like the rest of the read API; the test is a write and needs
the API token (``bootbox.web.auth``). Secrets never leave the appliance: a hook's secret shows
as ``***`` and a password in its URL too. The metric families of ``/metrics`` for webhooks are
built here, from :meth:`~bootbox.service.webhooks.Webhooks.stats` (labels: the hook's name, from
the config, and a fixed outcome: bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bootbox.service.bootservice import BootService
from bootbox.service.webhooks import OUTCOMES
from bootbox.web.deps import get_service, limit_arg

blueprint = Blueprint("webhooks", __name__, url_prefix="/api/v1")


@blueprint.get("/webhooks")
def list_webhooks() -> Response:
    return jsonify(get_service().webhooks.hooks())


@blueprint.get("/webhooks/<name>/deliveries")
def deliveries(name: str) -> Response:
    """Pending deliveries, oldest first, and the delivery log, newest first (``?limit=N``)."""
    return jsonify(get_service().webhooks.deliveries(name, limit_arg() or 100))


@blueprint.post("/webhooks/<name>/test")
def test_webhook(name: str) -> Response:
    """POST one ``webhook.test`` delivery to the hook now; the answer is its delivery-log entry."""
    return jsonify(get_service().webhooks.test(name))


def webhook_metrics(service: BootService) -> Iterator[Any]:
    """``bootbox_webhook_deliveries_total{hook,outcome}`` and ``bootbox_webhook_pending{hook}``."""
    stats = service.webhooks.stats()
    tries = CounterMetricFamily("bootbox_webhook_deliveries",
                                "Webhook delivery tries, by hook and outcome (ok, retry, failed, dropped).",
                                labels=["hook", "outcome"])
    pending = GaugeMetricFamily("bootbox_webhook_pending", "Webhook deliveries waiting to be sent, by hook.",
                                labels=["hook"])
    for name, counts in sorted(stats.items()):
        for outcome in OUTCOMES:
            tries.add_metric([name, outcome], counts.get(outcome, 0))
        pending.add_metric([name], counts.get("pending", 0))
    yield from (tries, pending)
