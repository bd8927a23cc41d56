"""The in-process HTTP server (waitress) over real sockets: large files arrive whole (sent by
the kernel with sendfile), Range works, a response read into memory is read in bounded
pieces (bootbox.web.server), and the per-client limits hold (bootbox.web.limits)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, send_file

from bootbox.web import server as web_server
from bootbox.errors import ConfigError
from bootbox.web.limits import HttpLimits
from bootbox.web.server import SEND_PIECE, BoundedSendChannel, HttpServer, tls_context
from tests.support.lab_fixtures import lab_unavailable

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


# --------------------------------------------------------------------------- per-client limits
@pytest.fixture
def limited() -> Iterator[HttpServer]:
    """A server with small limits (bootbox.web.limits) and one GET and one POST route."""
    app = Flask("test-http-limits")

    @app.get("/hello")
    def hello() -> object:
        return "hello\n"

    @app.post("/echo")
    def echo() -> object:
        from flask import request

        return str(len(request.get_data()))

    server = HttpServer(app, host="0.0.0.0", port=0, threads=4,
                        limits=HttpLimits(max_body=64 * 1024, per_address_connections=4, request_timeout=1,
                                          idle_timeout=2))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def _answer(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection (or 5 s passed)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_body_over_max_body_is_refused_at_its_headers(limited: HttpServer) -> None:
    with _connect(limited.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 413 ")
    with _connect(limited.port) as sock:  # chunked: read up to the limit, then refused
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4):
                sock.sendall(b"8000\r\n" + bytes(0x8000) + b"\r\n")
        except OSError:
            pass
        assert _answer(sock).startswith(b"HTTP/1.1 413 ")
    with _connect(limited.port) as sock:  # a body within the limit is served
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + bytes(1000))
        assert _answer(sock).endswith(b"\r\n\r\n1000")
    assert limited.stats["refused_body_too_large"] == 2


def test_one_address_gets_its_share_of_connections_and_another_is_served(limited: HttpServer) -> None:
    held = [_connect(limited.port) for _ in range(4)]
    try:
        with _connect(limited.port) as fifth:
            assert _answer(fifth).startswith(b"HTTP/1.1 503 ")
        with _connect(limited.port, source="127.0.0.2") as other:
            other.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _answer(other).endswith(b"hello\n")
        assert limited.stats["refused_per_address"] == 1
    finally:
        for sock in held:
            sock.close()
    _wait_for(lambda: limited.stats["connections"] == 0)
    with _connect(limited.port) as again:  # the address's places came back as its connections closed
        again.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(again).endswith(b"hello\n")


def test_slow_and_idle_connections_are_closed(limited: HttpServer) -> None:
    with _connect(limited.port) as silent, _connect(limited.port) as trickle, _connect(limited.port) as idle:
        idle.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # served, then kept alive and idle
        got = b""
        while not got.endswith(b"hello\n"):
            got += idle.recv(1000)
        trickle.sendall(b"GET /hello HTTP/1.1\r\n")
        for _ in range(3):  # a byte every 0.5 s keeps it active, not within request_timeout (1 s)
            time.sleep(0.5)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        assert _answer(silent) == b"" and _answer(trickle) == b""
        assert _answer(idle) == b""  # idle_timeout, 2 s
    stats = limited.stats
    assert stats["closed_slow"] == 2 and stats["closed_idle"] == 1


# --------------------------------------------------------------------------- HTTPS (issue 16)
def _make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM): (ca, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bootbox test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bootbox")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        lab_unavailable("the HTTPS tests need curl")
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=30)


def test_https_serves_whole_files_to_a_client_that_trusts_the_ca(tmp_path: Path) -> None:
    ca, cert, key = _make_pki(tmp_path)
    content = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(content)
    app = Flask("test-https")

    @app.get("/big.bin")
    def big() -> object:  # a file on disk: over TLS it must be encrypted, never sendfile'd
        return send_file(tmp_path / "big.bin", mimetype="application/octet-stream")

    @app.get("/scheme")
    def scheme() -> object:
        from flask import request

        return request.scheme

    server = HttpServer(app, host="127.0.0.1", port=0, threads=4, tls=tls_context(str(cert), str(key)))
    server.start()
    try:
        base = f"https://127.0.0.1:{server.port}"
        assert _curl("--cacert", str(ca), f"{base}/scheme").stdout == b"https"
        done = _curl("--cacert", str(ca), "-o", str(tmp_path / "got.bin"), f"{base}/big.bin")
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256((tmp_path / "got.bin").read_bytes()).digest() == hashlib.sha256(content).digest()
        refused = _curl(f"{base}/scheme")  # the system store does not know the test CA
        assert refused.returncode == 60, refused
        plain = _curl(f"http://127.0.0.1:{server.port}/scheme")  # plain HTTP to the TLS port: closed
        assert plain.returncode != 0 and plain.stdout == b""
    finally:
        server.stop()


def test_bad_certificate_files_are_a_config_error_naming_the_key(tmp_path: Path) -> None:
    ca, cert, key = _make_pki(tmp_path)
    with pytest.raises(ConfigError) as missing:
        tls_context(str(tmp_path / "nope.pem"), str(key))
    assert missing.value.field == "http.tls_cert"
    with pytest.raises(ConfigError) as wrong:
        tls_context(str(cert), str(ca))  # a certificate where the key should be
    assert wrong.value.field == "http.tls_cert" and "private key" in str(wrong.value)


def test_the_appliance_serves_its_api_over_https_and_the_cli_verifies_it(tmp_path: Path) -> None:
    """``[http] tls_cert``/``tls_key``: the API answers on tls_port over HTTPS, the boot endpoints
    stay on the plain port, and the CLI trusts the appliance only with --ca or BOOTBOX_CA."""
    from bootbox.appliance import Appliance
    from tests.conftest import ROOT, free_port, test_settings

    ca, cert, key = _make_pki(tmp_path)
    settings = test_settings(tmp_path, http={"tls_cert": str(cert), "tls_key": str(key), "tls_port": free_port()})
    appliance = Appliance(settings, load_entrypoints=False)
    appliance.start()
    try:
        base = f"https://127.0.0.1:{settings.http.tls_port}"
        assert b'"version"' in _curl("--cacert", str(ca), f"{base}/api/v1/status").stdout
        assert _curl(f"http://127.0.0.1:{settings.http.port}/boot.ipxe").stdout.startswith(b"#!ipxe")
        token = (Path(settings.state_dir) / "api-token").read_text().strip()
        env = {**os.environ, "BOOTBOX_TOKEN": token, "BOOTBOX_CONFIG": str(tmp_path / "empty-config.toml")}
        env.pop("BOOTBOX_CA", None)

        def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "bootbox", "--url", base, *args, "status", "--json"],
                                  capture_output=True, text=True, timeout=60, cwd=ROOT, env={**env, **extra})

        with_ca = cli("--ca", str(ca))
        assert with_ca.returncode == 0 and '"https"' in with_ca.stdout, with_ca.stderr
        assert cli(BOOTBOX_CA=str(ca)).returncode == 0
        untrusted = cli()
        assert untrusted.returncode == 1 and "not trusted" in untrusted.stderr and "--ca" in untrusted.stderr
    finally:
        appliance.stop()
    broken = test_settings(tmp_path / "broken", http={"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(key),
                                                      "tls_port": free_port()})
    with pytest.raises(ConfigError, match="not a readable file") as bad:
        Appliance(broken, load_entrypoints=False).start()
    assert bad.value.field == "http.tls_cert"
