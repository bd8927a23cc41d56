"""Webhooks: boot events POSTed to ``[[webhooks]]`` receivers, signed, retried, never in the way.

``dispatcher`` follows the event feed and runs the sending pool, ``files`` keeps each hook's
durable queue and delivery log in ``<state_dir>/webhooks/<name>/``, ``delivery`` makes one signed
POST and computes the backoff. docs/events.md documents what a receiver gets.
"""

from bootbox.service.webhooks.delivery import SIGNATURE_HEADER, signature
from bootbox.service.webhooks.dispatcher import OUTCOMES, Webhooks

__all__ = ["OUTCOMES", "SIGNATURE_HEADER", "Webhooks", "signature"]
