"""One delivery on the wire: the JSON body, its HMAC-SHA256 signature, the POST, the backoff.

The signature is ``X-Bootbox-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes
under the hook's secret (the scheme GitHub's webhooks use, so receivers have code for it). The
body carries the delivery ID, the event's feed ID (the ID ``/api/v1/events/stream`` gives it,
stable across restarts) and the time the delivery was made; it is fixed when the delivery is
queued, so a retry sends the same bytes with the same signature and a receiver can drop a
repeat by its delivery ID (deliveries are at least once: a try whose answer was lost is made
again).

The POST uses :mod:`http.client` directly: no proxy from the environment, no redirect followed
(a 3xx is a failed try: a receiver that moved should be configured where it is now), the
receiver's answer read only up to :data:`ANSWER_BYTES` for the delivery log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import random
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bootbox.model import BootEvent
from bootbox.version import __version__

ANSWER_BYTES = 512
"""How much of a receiver's answer the delivery log keeps."""
SIGNATURE_HEADER = "X-Bootbox-Signature"


def body_for(hook: str, delivery_id: str, event_id: int, event: BootEvent, created: float) -> str:
    """The JSON a hook receives for ``event``: the event as the event stream shows it, under
    ``event``, with the delivery's ID and the hook's name around it."""
    doc: dict[str, Any] = {"hook": hook, "delivery": delivery_id, "created": created,
                           "event": {"id": event_id, **event.to_dict()}}
    try:
        return json.dumps(doc, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):  # a plugin's data JSON cannot hold
        doc["event"]["data"] = {"unencodable": repr(event.data)}
        return json.dumps(doc, separators=(",", ":"), default=str)


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: what a receiver recomputes over the body it got, and compares in
    constant time (``hmac.compare_digest``)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def headers_for(*, hook: str, delivery_id: str, event_id: int, kind: str, attempt: int, secret: bytes,
                body: bytes, now: float) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"bootbox/{__version__}",
        "X-Bootbox-Hook": hook,
        "X-Bootbox-Delivery": delivery_id,
        "X-Bootbox-Event": kind,
        "X-Bootbox-Event-Id": str(event_id),
        "X-Bootbox-Timestamp": str(int(now)),
        "X-Bootbox-Attempt": str(attempt),
        SIGNATURE_HEADER: signature(secret, body),
    }


@dataclass(frozen=True)
class Answer:
    """What one try got: the HTTP status (0: no answer), its start, or the error."""

    status: int
    text: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST ``body`` to ``url``; never raises for a network or HTTP failure (the answer says it)."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            request_headers = dict(headers)
            if parts.username is not None:  # http://user:pass@host/: HTTP Basic
                pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
                request_headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            conn.request("POST", path, body=body, headers=request_headers)
            response = conn.getresponse()
            text = response.read(ANSWER_BYTES).decode("utf-8", "replace")
            return Answer(response.status, text)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as err:
        return Answer(0, error=f"{type(err).__name__}: {err}"[:300])


def backoff(attempt: int, first: float, most: float, *, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, …): ``first``, doubling each
    time, at most ``most``, spread by up to a tenth either way so that hooks failing together do
    not retry in step."""
    base = min(first * 2 ** min(attempt - 1, 62), most)
    return min(most, max(0.0, base * rng(0.9, 1.1)))


def masked_url(url: str) -> str:
    """``url`` with the password of any ``user:password@`` replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
