"""The in-process HTTP server (waitress) over real sockets: large files arrive whole, Range
works, and every connection reads a response in bounded pieces (bootbox.web.server)."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, send_file

from bootbox.web.server import SEND_PIECE, BoundedSendChannel, HttpServer

SIZE = 12 * 2**20 + 12345  # several pieces, and not a multiple of one


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HttpServer, bytes, list[object]]]:
    """A server with one route that sends a file and notes the connection it came over."""
    content = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    app = Flask("test-http-server")
    channels: list[object] = []

    @app.get("/big.bin")
    def big() -> object:
        return send_file(path, conditional=True, mimetype="application/octet-stream")

    server = HttpServer(app, host="127.0.0.1", port=0, threads=4)
    server.start()
    original = BoundedSendChannel.__init__

    def note(self: BoundedSendChannel, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        channels.append(self)

    BoundedSendChannel.__init__ = note  # type: ignore[method-assign]
    try:
        yield server, content, channels
    finally:
        BoundedSendChannel.__init__ = original  # type: ignore[method-assign]
        server.stop()


def _get(port: int, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/big.bin", headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_parallel_downloads_arrive_whole_over_bounded_pieces(served: tuple[HttpServer, bytes, list[object]]) -> None:
    server, content, channels = served
    results: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(_get(server.port))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4
    digest = hashlib.sha256(content).hexdigest()
    for status, body in results:
        assert status == 200 and len(body) == SIZE and hashlib.sha256(body).hexdigest() == digest
    # Every connection was a BoundedSendChannel, reading at most SEND_PIECE bytes at once (the
    # kernel reports 4 MiB send buffers on loopback, which waitress would have read in one go).
    assert len(channels) == 4
    assert all(isinstance(channel, BoundedSendChannel) for channel in channels)
    assert all(0 < channel.sendbuf_len <= SEND_PIECE for channel in channels)  # type: ignore[attr-defined]


def test_a_range_across_pieces_is_exact(served: tuple[HttpServer, bytes, list[object]]) -> None:
    server, content, _ = served
    start, end = SEND_PIECE - 7, 3 * SEND_PIECE + 11
    status, body = _get(server.port, {"Range": f"bytes={start}-{end}"})
    assert status == 206 and body == content[start : end + 1]
