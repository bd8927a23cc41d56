"""Serving the Flask app in-process with waitress, and stopping it cleanly.

waitress is a real multi-threaded WSGI server; ``asyncore_use_poll=True`` matters because its
default ``select()`` loop dies once any descriptor in the process passes 1024
(facts/libraries.md). Stopping closes every dispatcher from inside the loop thread (through
waitress's trigger), so the loop ends on its own and no socket is left open.

Connections are :class:`BoundedSendChannel`: waitress reads a file response in pieces the size
of the socket's send buffer, which Linux reports as 4 MiB on loopback and fast links. Pieces
that large pushed glibc's malloc into keeping them in per-thread arenas: resident memory grew
by ~60 MiB with every 8 parallel 16 MiB downloads (53 → 173 MiB after six rounds); with 256 KiB
pieces it stays at ~60 MiB (``python -m bench.boot_path`` reports the peak).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

log = logging.getLogger("bootbox.http")

SEND_PIECE = 256 * 1024
"""Most bytes of a response read and sent in one go (see the module docstring)."""


class BoundedSendChannel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """waitress's connection, reading at most :data:`SEND_PIECE` bytes of a response at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sendbuf_len = min(self.sendbuf_len, SEND_PIECE)


class HttpServer:
    """waitress running ``app`` on one address, in one background thread."""

    def __init__(self, app: Flask, *, host: str, port: int, threads: int = 16, connection_limit: int = 1000) -> None:
        self._app = app
        self._options: dict[str, Any] = dict(
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            asyncore_use_poll=True,
            ident="bootbox",
            channel_timeout=60,
            clear_untrusted_proxy_headers=True,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server = waitress.create_server(self._app, **self._options)
        except OSError as exc:
            port = self._options["port"]
            raise OSError(
                exc.errno,
                f"cannot listen for HTTP on {self._options['host']}:{port}: {exc.strerror}. "
                f"Stop what uses port {port}, or choose another with --http-port / http.port",
            ) from exc
        # One listening dispatcher per address ("localhost" may give two): each makes the channels.
        listeners = getattr(self._server, "map", None) or self._server._map
        for dispatcher in list(listeners.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = BoundedSendChannel
        self._thread = threading.Thread(target=self._server.run, name="bootbox-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.effective_port) if self._server else 0

    @property
    def stats(self) -> dict[str, Any]:
        if not self._server:
            return {}
        return {"port": self.port, "connections": max(0, len(self._server._map) - 2)}

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None

        def close_all() -> None:
            for dispatcher in list(server._map.values()):
                try:
                    dispatcher.close()
                except OSError:
                    pass

        try:
            server.trigger.pull_trigger(close_all)
        except OSError:
            close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("the HTTP server thread did not stop within 5 s")
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
