"""Per-client limits of the HTTP server: connections per address, slow and idle connections.

waitress alone has one global ``connection_limit``, and closes a connection only after
``channel_timeout`` seconds without a byte: 1,010 idle connections from one address, or a few
hundred that each send a header byte every minute, made every other client's request wait
(issue 17). :class:`ConnectionGuard` adds what a single appliance on a shared boot network needs:

* at most ``per_address`` connections from one client address; the next is closed at once,
  with a short 503, so one address can never take the global limit;
* a connection must deliver each request (request line, headers, body) within
  ``request_timeout`` seconds of its first byte, and its first request within that time of being
  accepted: slow senders are closed however steadily they trickle;
* a connection idle between requests for ``idle_timeout`` seconds is closed. A response still
  being produced (a streamed body) is never idle: its request is in progress.

Request bodies larger than ``max_body`` are refused by waitress itself
(``max_request_body_size``) at the headers when there is a Content-Length, so nothing of the body
is buffered; a chunked body is buffered to at most that size, then refused.

Each refusal is counted (``stats``, hence ``bootbox status``) and logged once per interval per
reason (:class:`bootbox.runtime.refusals.Refusals`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from bootbox.config import HttpSettings
from bootbox.runtime.refusals import Refusals

log = logging.getLogger("bootbox.http")

REASONS = {
    "refused_body_too_large": "request body larger than http.max_body refused before it was read",
    "refused_per_address": "connection refused: http.per_address_connections reached for this address",
    "closed_slow": "connection closed: a request took longer than http.request_timeout to arrive",
    "closed_idle": "connection closed: idle for longer than http.idle_timeout",
}
"""Every reason counted, and the words of its log line."""

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Retry-After: 5\r\nContent-Length: 37\r\n\r\ntoo many connections from one address\n")


@dataclass(frozen=True)
class HttpLimits:
    """The limits, as ``[http]`` configures them (bootbox.config.HttpSettings)."""

    max_body: int = 4 * 2**20
    per_address_connections: int = 64
    request_timeout: float = 20.0
    idle_timeout: float = 60.0

    @classmethod
    def of(cls, http: HttpSettings) -> "HttpLimits":
        """The limits ``[http]`` sets."""
        return cls(max_body=http.max_body, per_address_connections=http.per_address_connections,
                   request_timeout=http.request_timeout, idle_timeout=http.idle_timeout)


class ConnectionGuard:
    """Connections per client address, and the slow/idle sweep, for one HTTP server (all its
    listeners). Admission and release run on waitress's loop thread; ``counts`` from anywhere."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.refusals = Refusals(log, REASONS, describe=REASONS.__getitem__)
        self._lock = threading.Lock()
        self._per_address: dict[str, int] = {}

    def admit(self, address: str, sock: Any) -> bool:
        """Count a new connection from ``address``; False (after a best-effort 503 on ``sock``)
        when that address already holds its share."""
        with self._lock:
            held = self._per_address.get(address, 0)
            if held < self.limits.per_address_connections:
                self._per_address[address] = held + 1
                return True
        self.refusals.count("refused_per_address", address)
        try:
            sock.send(_BUSY)  # non-blocking: it fits any socket buffer, or the client gets a bare close
        except OSError:
            pass
        return False

    def release(self, address: str) -> None:
        """Forget one closed connection of ``address``."""
        with self._lock:
            held = self._per_address.get(address, 0) - 1
            if held > 0:
                self._per_address[address] = held
            else:
                self._per_address.pop(address, None)

    def sweep(self, channels: Iterable[Any], now: float) -> None:
        """Mark slow and idle connections for closing (waitress's ``maintenance``, which this
        replaces: it knew only the idle rule). A channel with a request being served is left
        alone; one still reading a request is held to ``request_timeout``."""
        limits = self.limits
        for channel in channels:
            if channel.requests or channel.will_close:
                continue
            reading_since = getattr(channel, "reading_since", None)
            if reading_since is not None and now - reading_since > limits.request_timeout:
                channel.will_close = True
                self.refusals.count("closed_slow", _address_of(channel))
            elif channel.last_activity < now - limits.idle_timeout:
                channel.will_close = True
                self.refusals.count("closed_idle", _address_of(channel))

    def counts(self) -> dict[str, int]:
        return self.refusals.counts()


def _address_of(channel: Any) -> str:
    addr = getattr(channel, "addr", None)
    return str(addr[0]) if isinstance(addr, tuple) and addr else "?"
