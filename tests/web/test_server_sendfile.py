"""The send pool (bootbox.web.sendfile) behind the HTTP server, over real sockets on loopback:
large bodies handed to pool threads arrive byte for byte beside ranges and small answers, a
slow reader is handed back and forth and still gets every byte, a client gone mid-file frees
its thread and its connection, a shrinking file ends the connection, and stopping the server
while bodies are being sent ends every send and every thread."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, send_file

from bootbox.web import sendfile as pool_module
from bootbox.web.sendfile import OFFLOAD_MIN, SEND_SLICE
from bootbox.web.server import HttpServer
from tests.web.test_http_server import _get

SIZE = 9 * 2**20 + 4321  # several OFFLOAD_MINs, not a multiple of a page


def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bootbox-sendfile")]


@pytest.fixture
def content(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    return data


@pytest.fixture
def pooled(tmp_path: Path, content: bytes) -> Iterator[HttpServer]:
    """A server with a two-thread send pool, a file route and a small dynamic route."""
    app = Flask("test-send-pool")
    path = tmp_path / "big.bin"

    @app.get("/big.bin")
    def big() -> object:
        return send_file(path, conditional=True, mimetype="application/octet-stream")

    @app.get("/script")
    def script() -> object:
        return "#!ipxe\necho hello\n"

    server = HttpServer(app, host="127.0.0.1", port=0, threads=4, send_threads=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pool_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(thread name, bytes) of every os.sendfile call; the real call still runs."""
    calls: list[tuple[str, int]] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append((threading.current_thread().name, sent))
        return sent

    monkeypatch.setattr(pool_module.os, "sendfile", counting)
    return calls




def test_many_concurrent_whole_and_range_downloads_are_byte_identical(
        pooled: HttpServer, content: bytes, pool_sends: list[tuple[str, int]]) -> None:  # fmt: skip
    rng = random.Random(15)
    ranges = [(a, min(SIZE - 1, a + rng.randrange(1, 3 * 2**20))) for a in (rng.randrange(SIZE) for _ in range(8))]
    jobs: list[tuple[str, dict[str, str], bytes, int]] = [("/big.bin", {}, content, 200) for _ in range(12)]
    jobs += [("/big.bin", {"Range": f"bytes={a}-{b}"}, content[a : b + 1], 206) for a, b in ranges]
    jobs += [("/script", {}, b"#!ipxe\necho hello\n", 200) for _ in range(8)]
    results: dict[int, tuple[int, bytes]] = {}

    def fetch(i: int) -> None:
        path, headers, _, _ = jobs[i]
        results[i] = _get(pooled.port, headers, path)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == len(jobs)
    for i, (_, _, want, status) in enumerate(jobs):
        got_status, body = results[i]
        assert got_status == status and len(body) == len(want)
        assert hashlib.sha256(body).digest() == hashlib.sha256(want).digest(), f"job {i} differs"
    # The whole-file bodies went out from the pool's threads, every byte of them.
    _wait_for(lambda: sum(n for name, n in pool_sends if name.startswith("bootbox-sendfile")) >= 12 * (SIZE - OFFLOAD_MIN))
    _wait_for(lambda: pooled.stats["sending_files"] == 0)


def test_a_big_body_then_a_small_answer_on_one_kept_alive_connection(pooled: HttpServer, content: bytes) -> None:
    """The pool hands the connection back to waitress, which reads and answers the next request."""
    connection = http.client.HTTPConnection("127.0.0.1", pooled.port, timeout=30)
    try:
        for _ in range(2):
            connection.request("GET", "/big.bin")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == content
            connection.request("GET", "/script")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b"#!ipxe\necho hello\n"
    finally:
        connection.close()


def test_a_slow_reader_gets_every_byte(pooled: HttpServer, content: bytes) -> None:
    """A reader that stops for longer than a slice is handed back to the loop (SO_SNDTIMEO) and
    offered to the pool again once writable; the body still arrives whole and in order."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # keep the kernel from buffering it all
    sock.settimeout(30)
    sock.connect(("127.0.0.1", pooled.port))
    try:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = bytearray()
        pauses = 0
        while chunk := sock.recv(256 * 1024):
            received += chunk
            if pauses < 4 and len(received) > (pauses + 1) * 2**20:
                pauses += 1
                time.sleep(2 * SEND_SLICE)  # the pool's send times out meanwhile
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == content
    finally:
        sock.close()
    _wait_for(lambda: pooled.stats["sending_files"] == 0)


def test_a_client_gone_mid_file_frees_its_thread_and_connection(pooled: HttpServer, content: bytes) -> None:
    for _ in range(3):  # more than the pool's two threads: none may stay taken
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", pooled.port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, with most of the file unsent
    _wait_for(lambda: pooled.stats["sending_files"] == 0 and pooled.stats["connections"] == 0)
    status, body = _get(pooled.port)  # the pool still serves
    assert status == 200 and body == content


def test_a_file_that_shrinks_while_the_pool_sends_it_ends_the_connection(pooled: HttpServer, tmp_path: Path) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", pooled.port, timeout=30)
    try:
        connection.request("GET", "/big.bin")
        response = connection.getresponse()
        assert response.status == 200 and int(response.headers["Content-Length"]) == SIZE
        first = response.read(65536)
        os.truncate(tmp_path / "big.bin", len(first))
        with pytest.raises(http.client.IncompleteRead) as raised:  # not a 30 s socket.timeout
            response.read()
        assert len(first) + len(raised.value.partial) < SIZE
    finally:
        connection.close()


def test_stopping_while_bodies_are_sent_ends_every_send_and_thread(tmp_path: Path, content: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Readers that never read, and a slice long enough that each pool thread stays blocked in
    its send: stopping must cancel those sends (shut the sockets down), or its threads would
    still be there after stop() gave up waiting for them."""
    monkeypatch.setattr(pool_module, "SEND_SLICE", 60.0)
    app = Flask("test-send-pool-stop")

    @app.get("/big.bin")
    def big() -> object:
        return send_file(tmp_path / "big.bin", mimetype="application/octet-stream")

    before = set(_pool_threads())
    server = HttpServer(app, host="127.0.0.1", port=0, threads=4, send_threads=2)
    server.start()
    stalled = []
    try:
        for _ in range(4):  # readers that never read: their sends block in the pool
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        _wait_for(lambda: server.stats.get("sending_files", 0) == 4)  # two blocked, two queued
    finally:
        server.stop()
    assert set(_pool_threads()) <= before  # the pool's threads ended
    for sock in stalled:  # and each connection was closed: the client reads to its end
        total = 0
        try:
            while chunk := sock.recv(1 << 20):
                total += len(chunk)
        except ConnectionResetError:
            pass
        assert total < SIZE
        sock.close()
