"""The in-process HTTP server (waitress) over real sockets: large files arrive whole (sent by
the kernel with sendfile), Range works, and a response read into memory is read in bounded
pieces (bootbox.web.server)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, send_file

from bootbox.web import server as web_server
from bootbox.web.server import SEND_PIECE, BoundedSendChannel, HttpServer

SIZE = 12 * 2**20 + 12345  # several pieces, and not a multiple of one


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HttpServer, bytes, list[object]]]:
    """A server with one route that sends a file and notes the connection it came over."""
    content = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    path.with_suffix(".gz").write_bytes(gzip.compress(content, compresslevel=1))
    app = Flask("test-http-server")
    channels: list[object] = []

    @app.get("/big.bin")
    def big() -> object:
        return send_file(path, conditional=True, mimetype="application/octet-stream")

    @app.get("/gzip.bin")
    def gzipped() -> object:  # its descriptor holds compressed bytes: must not be sendfile'd
        return send_file(gzip.open(path.with_suffix(".gz")), mimetype="application/octet-stream")

    @app.get("/memory.bin")
    def memory() -> object:  # not a file on disk: waitress reads it, in bounded pieces
        return send_file(io.BytesIO(content), mimetype="application/octet-stream")

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


def _get(port: int, headers: dict[str, str] | None = None, path: str = "/big.bin") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
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


@pytest.fixture
def sendfile_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each os.sendfile call of the server sent (the real call still runs)."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(web_server.os, "sendfile", counting)
    return calls


def test_a_file_on_disk_is_sent_by_the_kernel(served: tuple[HttpServer, bytes, list[object]],
                                              sendfile_bytes: list[int]) -> None:  # fmt: skip
    server, content, _ = served
    status, body = _get(server.port)
    assert status == 200 and body == content
    assert sum(sendfile_bytes) == SIZE  # every byte went through sendfile, none through read()


def test_a_response_from_memory_is_read_in_bounded_pieces(served: tuple[HttpServer, bytes, list[object]],
                                                          sendfile_bytes: list[int]) -> None:  # fmt: skip
    server, content, channels = served
    status, body = _get(server.port, path="/memory.bin")
    assert status == 200 and body == content
    assert sendfile_bytes == []
    assert all(0 < channel.sendbuf_len <= SEND_PIECE for channel in channels)  # type: ignore[attr-defined]


def test_a_compressed_file_object_is_read_not_spliced(served: tuple[HttpServer, bytes, list[object]],
                                                     sendfile_bytes: list[int]) -> None:  # fmt: skip
    server, content, _ = served
    status, body = _get(server.port, path="/gzip.bin")
    assert status == 200 and body == content and sendfile_bytes == []


def test_where_the_kernel_cannot_splice_the_file_is_copied(served: tuple[HttpServer, bytes, list[object]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    refused: list[int] = []

    def no_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        refused.append(count)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(web_server.os, "sendfile", no_sendfile)
    server, content, _ = served
    status, body = _get(server.port)
    assert status == 200 and body == content and refused


def test_a_range_is_not_sent_with_sendfile_and_is_exact(served: tuple[HttpServer, bytes, list[object]],
                                                        sendfile_bytes: list[int]) -> None:  # fmt: skip
    server, content, _ = served
    status, body = _get(server.port, {"Range": "bytes=100-199"})
    assert status == 206 and body == content[100:200] and sendfile_bytes == []


def test_a_file_that_shrinks_mid_response_closes_the_connection(tmp_path: Path) -> None:
    """Content-Length promised more than the file now has: the client sees the connection end
    early (an incomplete read) instead of waiting for the 60 s channel timeout."""
    path = tmp_path / "shrinking.bin"
    path.write_bytes(os.urandom(SIZE))
    app = Flask("test-http-shrink")

    @app.get("/shrinking.bin")
    def shrinking() -> object:
        return send_file(path, mimetype="application/octet-stream")

    server = HttpServer(app, host="127.0.0.1", port=0, threads=2)
    server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/shrinking.bin")
        response = connection.getresponse()
        assert response.status == 200 and int(response.headers["Content-Length"]) == SIZE
        first = response.read(65536)
        os.truncate(path, len(first))  # whatever is not yet in the socket buffers is gone
        # The server ends the connection: a hang would end in socket.timeout after 30 s instead.
        with pytest.raises(http.client.IncompleteRead) as raised:
            response.read()
        assert len(first) + len(raised.value.partial) < SIZE
        connection.close()
    finally:
        server.stop()
