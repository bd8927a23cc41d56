"""A real HTTP server on loopback that plays the vCloud Director endpoint the vcd plugin pushes to.

It records every request (path, JSON body, Authorization header) and answers from a script:
an int is an HTTP status, ``"timeout"`` holds the request longer than the client waits. When the
script runs out it answers 200. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    authorization: str
    answered: int | str


@dataclass
class FakeVcd:
    server: ThreadingHTTPServer
    script: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: float = 3.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/agent"

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else 200

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.received]


def _handler(vcd: FakeVcd) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            answer = vcd.next_answer()
            with vcd.lock:
                vcd.received.append(Received(self.path, body, self.headers.get("Authorization", ""), answer))
            if answer == "timeout":
                vcd.released.wait(vcd.hold)
                answer = 200
            payload = json.dumps({"ok": answer == 200}).encode()
            try:
                self.send_response(int(answer))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up waiting (the timeout case)
                pass

    return Handler


@pytest.fixture
def fake_vcd() -> Iterator[FakeVcd]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    vcd = FakeVcd(server)
    server.RequestHandlerClass = _handler(vcd)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-vcd", daemon=True)
    thread.start()
    try:
        yield vcd
    finally:
        vcd.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
