"""``GET /api/v1/events/stream``: boot events as Server-Sent Events, live and resumable.

Filters: ``host=MAC`` (repeatable) and ``kind=KIND`` (repeatable or comma-separated). Each event
goes out as ``id:`` (its feed ID, :mod:`bootbox.service.eventfeed`, stable across restarts),
``event:`` (its kind) and ``data:`` (the event's JSON). A client that reconnects with
``Last-Event-ID`` (browsers' EventSource do it themselves) first gets what it missed; without
one, the stream starts with the next event (``?since=0`` replays the feed's ring). An idle
stream gets a comment line every ``[http] event_heartbeat`` seconds.

A stream holds one waitress thread for as long as it is open. The appliance gives the HTTP
server ``[http] event_streams`` threads on top of ``[http] threads`` and :class:`StreamSlots`
admits at most that many streams (one more gets 503 with ``Retry-After``), so streams can never
take the threads that serve boot files. The response says ``X-Accel-Buffering: no``, which makes
the server send each event at once (``bootbox.web.server``) rather than gather a buffer's worth.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, request

from bootbox.errors import ValidationError
from bootbox.model import normalize_mac
from bootbox.service.eventfeed import matcher
from bootbox.web.deps import get_service, int_arg
from bootbox.web.errors import error_response

blueprint = Blueprint("events", __name__, url_prefix="/api/v1")
SLOTS = "bootbox.event_streams"
WAIT_SLICE = 1.0
"""Seconds between two checks that the client is still there while a stream is idle."""


class StreamSlots:
    """At most ``size`` streams at once (``[http] event_streams``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size) if size > 0 else None

    def take(self) -> bool:
        return self._free is not None and self._free.acquire(blocking=False)

    def give_back(self) -> None:
        if self._free is not None:
            self._free.release()


def install(app: Any, streams: int) -> None:
    """Serve the stream on ``app`` with ``streams`` slots."""
    app.extensions[SLOTS] = StreamSlots(streams)
    app.register_blueprint(blueprint)


@blueprint.get("/events/stream")
def stream() -> Response:
    service = get_service()
    feed = service.event_feed()
    macs = [normalize_mac(value, "host") for value in request.args.getlist("host")]
    kinds = [kind.strip() for value in request.args.getlist("kind") for kind in value.split(",") if kind.strip()]
    accept = matcher(macs, kinds)
    since = int_arg("since", minimum=0, maximum=2**62)
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        if not header.isdigit() or len(header) > 19:
            raise ValidationError("Last-Event-ID", "expected an event ID this stream sent (a whole number)")
        since = int(header)
    start = feed.last_id if since is None else since
    slots: StreamSlots = current_app.extensions[SLOTS]
    if not slots.take():
        busy = error_response(503, "StreamsBusy", f"{slots.size} event streams are open already "
                                                  "([http] event_streams); retry later")
        busy.headers["Retry-After"] = "5"
        return busy
    heartbeat = service.settings.http.event_heartbeat
    gone = request.environ.get("waitress.client_disconnected", lambda: False)

    def events() -> Iterator[str]:
        last = start
        try:
            yield f"retry: 3000\n: bootbox event stream from {last}\n\n"
            while not feed.closed:
                batch, last = feed.after(last, accept=accept)
                for event_id, event in batch:
                    yield f"id: {event_id}\nevent: {event.kind}\ndata: {_json(event_id, event.to_dict())}\n\n"
                if batch:
                    continue
                waited = 0.0
                while waited < heartbeat and not feed.closed and not gone():
                    if feed.wait(last, min(WAIT_SLICE, heartbeat - waited)):
                        break
                    waited += WAIT_SLICE
                else:
                    if gone() or feed.closed:
                        return
                    yield ": heartbeat\n\n"
        finally:
            slots.give_back()

    response = Response(events(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _json(event_id: int, doc: dict[str, Any]) -> str:
    return json.dumps({"id": event_id, **doc}, separators=(",", ":"), default=str)
