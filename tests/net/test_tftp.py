"""The TFTP server over real sockets: curl as the real client, a small raw client for the rest.

Every defect measured in tftpy 0.8.7 (facts/libraries.md §1) has a test here that fails on a
server that has it. The raw client below builds and parses packets by hand, independently of
the server's codecs.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pytest

from bootbox.errors import Forbidden, NotFound
from bootbox.net.tftp import transfer as tt
from bootbox.net.tftp.server import TftpServer, TransferRecord, open_under
from bootbox.net.tftp.engine import AVAILABLE as ENGINE_AVAILABLE
from tests.support.lab_fixtures import lab_unavailable

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

# ---------------------------------------------------------------------- raw client

Packet = tuple  # ("DATA", block, payload) | ("OACK", {..}) | ("ERROR", code, msg) | ("ACK", block)


def rrq(name: bytes | str, mode: bytes = b"octet", opcode: int = 1, **options: object) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    packet = struct.pack("!H", opcode) + raw + b"\x00" + mode + b"\x00"
    for key, value in options.items():
        packet += key.encode() + b"\x00" + str(value).encode() + b"\x00"
    return packet


def parse(data: bytes) -> Packet:
    opcode, second = struct.unpack("!HH", data[:4]) if len(data) >= 4 else (struct.unpack("!H", data[:2])[0], None)
    if opcode == 3:
        return ("DATA", second, data[4:])
    if opcode == 4:
        return ("ACK", second)
    if opcode == 5:
        return ("ERROR", second, data[4:].split(b"\x00")[0].decode())
    if opcode == 6:
        fields = data[2:].split(b"\x00")[:-1]
        return ("OACK", {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)})
    raise AssertionError(f"unexpected packet {data[:20]!r}")


class RawClient:
    """A TFTP client that does only what a test tells it to."""

    def __init__(self, port: int, host: str = "127.0.0.1", bind: str = "127.0.0.1", timeout: float = 3.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.settimeout(timeout)
        self.server = (host, port)
        self.peer: tuple[str, int] | None = None

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(data, to or self.peer or self.server)

    def recv(self, timeout: float | None = None) -> Packet:
        if timeout is not None:
            self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(70000)
        if self.peer is None:
            self.peer = addr
        assert addr == self.peer, f"reply from {addr}, transfer is with {self.peer}"
        return parse(data)

    def silent(self, timeout: float = 0.3) -> bool:
        """True when nothing arrives within ``timeout``."""
        try:
            self.recv(timeout)
        except socket.timeout:
            return True
        return False

    def ack(self, block: int) -> None:
        self.send(struct.pack("!HH", 4, block & 0xFFFF))

    def error(self, code: int, message: str = "") -> None:
        self.send(struct.pack("!HH", 5, code) + message.encode() + b"\x00")

    def download(self, name: str, progress: Callable[[int], None] | None = None,
                 **options: object) -> tuple[bytes, dict[str, str], list[int]]:
        """Fetch ``name`` (windowed when asked), return (content, OACK options, wire block numbers);
        ``progress`` is told the number of each block received."""
        self.send(rrq(name, b"octet", 1, **options))
        blksize, window, oack = 512, 1, {}
        first = self.recv()
        if first[0] == "OACK":
            oack = first[1]
            blksize, window = int(oack.get("blksize", 512)), int(oack.get("windowsize", 1))
            self.ack(0)
            first = self.recv()
        chunks: list[bytes] = []
        wire: list[int] = []
        packet, expected, in_window = first, 1, 0
        while True:
            assert packet[0] == "DATA", packet
            if packet[1] == expected & 0xFFFF:
                chunks.append(packet[2])
                wire.append(packet[1])
                if progress is not None:
                    progress(expected)
                in_window += 1
                last = len(packet[2]) < blksize
                if last or in_window == window:
                    self.ack(expected)
                    in_window = 0
                if last:
                    return b"".join(chunks), oack, wire
                expected += 1
            packet = self.recv()


# ---------------------------------------------------------------------- fixtures

@pytest.fixture
def root(tmp_path: Path) -> Path:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET outside the root\n")
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / "small.txt").write_bytes(b"hello\nworld\r\n")
    (root / "exact1024.bin").write_bytes(os.urandom(1024))
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "nested.bin").write_bytes(os.urandom(5000))
    os.symlink("../outside/secret.txt", root / "escape")
    return root


class Servers:
    """Starts servers for a test and stops every one of them afterwards, with the compiled
    engine serving blocks (bootbox.net.tftp.engine) or with every block served by the loop."""

    def __init__(self, root: Path, engine: bool) -> None:
        self.root = root
        self.engine = engine
        self.started: list[TftpServer] = []

    def start(self, **kwargs: object) -> tuple[TftpServer, list[TransferRecord]]:
        records: list[TransferRecord] = []
        kwargs.setdefault("open_file", open_under(self.root))
        kwargs.setdefault("on_transfer", records.append)
        kwargs.setdefault("bind_address", "127.0.0.1")
        kwargs.setdefault("port", 0)
        kwargs.setdefault("engine", self.engine)
        server = TftpServer(**kwargs)  # type: ignore[arg-type]
        server.start()
        self.started.append(server)
        return server, records


@pytest.fixture(params=[True, False], ids=["engine", "loop"])
def servers(root: Path, request: pytest.FixtureRequest) -> Iterator[Servers]:
    """Every test that starts servers runs twice: blocks served by the engine, and by the loop."""
    if request.param and not ENGINE_AVAILABLE:
        lab_unavailable("bootbox.net.tftp._tftpengine is not built (needs gcc, libc6-dev, python3-dev at install)")
    pool = Servers(root, engine=request.param)
    yield pool
    for server in pool.started:
        server.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curl(port: int, path: str, out: Path, *args: str) -> int:
    assert CURL is not None
    return subprocess.run([CURL, "-s", "--max-time", "60", *args, "-o", str(out), f"tftp://127.0.0.1:{port}/{path}"],
                          check=False).returncode


# ---------------------------------------------------------------------- curl downloads

@needs_curl
@pytest.mark.parametrize("args", [(), ("--tftp-blksize", "512"), ("--tftp-blksize", "1468"), ("--tftp-no-options",)])
@pytest.mark.parametrize("name", ["data.bin", "exact1024.bin", "sub/nested.bin"])
def test_curl_download_is_byte_identical(servers: Servers, root: Path, tmp_path: Path, args: tuple[str, ...],
                                         name: str) -> None:
    server, records = servers.start()
    out = tmp_path / "out"
    assert curl(server.port, name, out, *args) == 0
    assert sha(out.read_bytes()) == sha((root / name).read_bytes())
    wait_for(lambda: len(records) == 1)
    assert records[0].ok and records[0].bytes_sent == (root / name).stat().st_size
    assert records[0].blksize == (int(args[1]) if args and args[0] == "--tftp-blksize" else 512)


@needs_curl
def test_curl_download_of_an_empty_file(servers: Servers, tmp_path: Path) -> None:
    """Without options: curl 7.88 rejects an OACK with tsize 0 (tftpd-hpa sends the same)."""
    server, records = servers.start()
    out = tmp_path / "out"
    assert curl(server.port, "empty.bin", out, "--tftp-no-options") == 0
    assert out.read_bytes() == b""
    wait_for(lambda: len(records) == 1)
    assert records[0].ok


@needs_curl
def test_twenty_parallel_curls(servers: Servers, root: Path, tmp_path: Path) -> None:
    server, records = servers.start()
    expected = sha((root / "data.bin").read_bytes())

    def fetch(i: int) -> str:
        out = tmp_path / f"out{i}"
        assert curl(server.port, "data.bin", out, "--tftp-blksize", "1468" if i % 2 else "512") == 0
        return sha(out.read_bytes())

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(fetch, range(20))) == [expected] * 20
    wait_for(lambda: len(records) == 20)
    assert all(r.ok for r in records)
    assert server.stats["completed"] == 20 and server.stats["active"] == 0


@needs_curl
def test_block_numbers_wrap_with_curl(servers: Servers, root: Path, tmp_path: Path) -> None:
    """530 KiB at blksize 8 is 67,840 blocks: the block number passes 65535 and wraps to 0."""
    (root / "wrap.bin").write_bytes(os.urandom(530 * 1024))
    server, records = servers.start()
    out = tmp_path / "out"
    assert curl(server.port, "wrap.bin", out, "--tftp-blksize", "8") == 0
    assert out.read_bytes() == (root / "wrap.bin").read_bytes()


# ---------------------------------------------------------------------- traversal

@needs_curl
@pytest.mark.parametrize(
    ("path", "curl_rc", "args"),
    [
        ("../outside/secret.txt", 69, ("--path-as-is",)),
        ("sub/../../outside/secret.txt", 69, ("--path-as-is",)),
        ("..%5Coutside%5Csecret.txt", 69, ()),  # curl decodes %5C to a backslash
        ("escape", 69, ()),  # a symlink inside the root pointing outside
        ("/etc/passwd", 68, ("--path-as-is",)),  # URL //etc/passwd: root-relative, not found
        ("/../outside/secret.txt", 69, ("--path-as-is",)),
    ],
)
def test_traversal_with_curl_is_refused(servers: Servers, tmp_path: Path, path: str, curl_rc: int,
                                        args: tuple[str, ...]) -> None:
    server, records = servers.start()
    out = tmp_path / "out"
    assert curl(server.port, path, out, *args) == curl_rc
    assert not out.exists() or b"SECRET" not in out.read_bytes() and b"root:" not in out.read_bytes()
    wait_for(lambda: len(records) == 1)
    assert not records[0].ok and records[0].bytes_sent == 0
    assert server.stats["failed"] == 1 and server.stats["completed"] == 0


@pytest.mark.parametrize(
    "packet",
    [
        rrq(b"../outside/secret.txt\x00.bin"),  # NUL inside the name region
        rrq(b"escape\x00\x00"),
        b"\x00\x01../outside/secret.txt\x00octet\x00\x00",
        rrq("a" * 2000),  # curl refuses to send a name this long, so it goes raw
        rrq("sub/" + "b" * 300),
        rrq(b"/" + str(Path("/etc/passwd")).encode()),
    ],
)
def test_hostile_names_sent_raw_never_get_data(servers: Servers, packet: bytes) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(packet)
        reply = client.recv()
        assert reply[0] == "ERROR" and reply[1] in (1, 2, 4, 8), reply
    with RawClient(server.port) as client:
        assert client.download("small.txt")[0] == b"hello\nworld\r\n"


# ---------------------------------------------------------------------- tftpy's defects

@pytest.mark.parametrize(
    ("packet", "answer"),
    [
        (rrq(b"f\xe9.bin"), 4),  # non-ASCII name: killed tftpy's listener
        (rrq("small.txt", blksize="abc"), 8),  # non-numeric blksize: killed tftpy's listener
        (rrq("small.txt", windowsize="4x"), 8),
        (rrq("small.txt", timeout="-1"), 8),
        (rrq("small.txt", tsize="\xff"), 4),  # non-ASCII option value
        (b"\x00\x01small.txt\x00octet\x00blksize\x00", 4),  # option without a value
        (b"\x00\x01small.txt", 4),  # no NUL at all
        (b"\x00\x01", 4),
        (rrq("small.txt", mode=b"mail"), 4),
        (b"", None),
        (b"\x00", None),
        (b"\x00\x04\x00\x01", None),  # an ACK to port 69
        (b"\x00\x03\x00", None),  # truncated DATA
        (b"\x00\x09hello", None),  # unknown opcode
        (b"\x00\x05\x00\x00oops\x00", None),
    ],
)
def test_malformed_packets_are_counted_and_the_server_keeps_serving(servers: Servers, packet: bytes,
                                                                    answer: int | None) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(packet)
        if answer is None:
            assert client.silent()
        else:
            reply = client.recv()
            assert reply[:2] == ("ERROR", answer)
    wait_for(lambda: server.stats["malformed"] == 1)
    with RawClient(server.port) as client:
        assert client.download("small.txt")[0] == b"hello\nworld\r\n"
    wait_for(lambda: server.stats["completed"] == 1)
    assert server.stats["requests"] == 1 and server.stats["malformed"] == 1


@needs_curl
def test_write_requests_are_refused_and_create_nothing(servers: Servers, root: Path, tmp_path: Path) -> None:
    server, records = servers.start()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 3000)
    assert CURL is not None
    result = subprocess.run([CURL, "-s", "-T", str(upload), f"tftp://127.0.0.1:{server.port}/new.bin"], check=False)
    assert result.returncode == 69  # curl: TFTP permission problem
    with RawClient(server.port) as client:
        client.send(rrq("small.txt", opcode=2))  # overwrite an existing file
        assert client.recv()[:2] == ("ERROR", 2)
        client.send(struct.pack("!HH", 3, 1) + b"overwritten")
    assert not (root / "new.bin").exists()
    assert (root / "small.txt").read_bytes() == b"hello\nworld\r\n"
    assert server.stats["refused_writes"] == 2 and records == []


@needs_curl
def test_serves_when_the_process_has_more_than_1100_fds(servers: Servers, root: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            lab_unavailable("RLIMIT_NOFILE hard limit below 1400")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1100)]
    try:
        probe = socket.socket()
        assert probe.fileno() > 1024  # so the server's own sockets are above select()'s limit
        probe.close()
        server, records = servers.start()
        out = tmp_path / "out"
        assert curl(server.port, "data.bin", out, "--tftp-blksize", "1468") == 0
        assert out.read_bytes() == (root / "data.bin").read_bytes()
        wait_for(lambda: len(records) == 1)
        assert records[0].ok
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@needs_curl
def test_bytesio_from_open_file_is_served_completely(servers: Servers, tmp_path: Path) -> None:
    content = os.urandom(123_457)
    streams: list[io.BytesIO] = []

    def open_file(name: str, client: tuple[str, int]) -> BinaryIO:
        streams.append(io.BytesIO(content))
        return streams[-1]

    server, records = servers.start(open_file=open_file)
    out = tmp_path / "out"
    assert curl(server.port, "generated.ipxe", out) == 0
    assert out.read_bytes() == content
    with RawClient(server.port) as client:
        data, oack, _ = client.download("generated.ipxe", tsize=0, blksize=1468, windowsize=8)
    assert data == content and oack["tsize"] == str(len(content))
    wait_for(lambda: len(records) == 2)
    assert all(r.ok and r.bytes_sent == len(content) for r in records)
    assert all(s.closed for s in streams)


# ---------------------------------------------------------------------- windowsize (RFC 7440)

def test_windowsize_sends_a_window_then_waits(servers: Servers, root: Path) -> None:
    server, records = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("data.bin", blksize=512, windowsize=4, timeout=10))
        assert client.recv() == ("OACK", {"blksize": "512", "timeout": "10", "windowsize": "4"})
        client.ack(0)
        assert [client.recv()[1] for _ in range(4)] == [1, 2, 3, 4]
        assert client.silent()  # the fifth block waits for an ACK
        client.ack(4)
        assert [client.recv()[1] for _ in range(4)] == [5, 6, 7, 8]
        client.ack(6)  # blocks 7 and 8 "lost": the server rewinds to 7
        assert [client.recv()[1] for _ in range(4)] == [7, 8, 9, 10]
        client.ack(10)
        assert [client.recv()[1] for _ in range(4)] == [11, 12, 13, 14]
        client.error(0, "enough")
    with RawClient(server.port) as client:
        data, oack, _ = client.download("data.bin", blksize=1468, windowsize=16)
    assert data == (root / "data.bin").read_bytes() and oack["windowsize"] == "16"
    wait_for(lambda: len(records) == 2)
    assert records[0].bytes_sent == 10 * 512 and records[0].error == "client error 0: enough"
    assert records[1].ok and records[1].windowsize == 16


def test_windowsize_is_capped(servers: Servers) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("data.bin", windowsize=1000))
        assert client.recv() == ("OACK", {"windowsize": str(tt.MAX_WINDOWSIZE)})


def test_block_numbers_wrap_in_windowed_mode(servers: Servers, root: Path) -> None:
    content = os.urandom(600 * 1024)
    (root / "wrap.bin").write_bytes(content)
    server, records = servers.start()
    with RawClient(server.port) as client:
        data, _, wire = client.download("wrap.bin", blksize=8, windowsize=64)
    assert data == content
    assert len(wire) == len(content) // 8 + 1
    assert wire[65534:65537] == [65535, 0, 1]


# ---------------------------------------------------------------------- protocol details

def test_size_multiple_of_blksize_ends_with_an_empty_block(servers: Servers, root: Path) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("exact1024.bin"))
        sizes = []
        for block in (1, 2, 3):
            packet = client.recv()
            assert packet[:2] == ("DATA", block)
            sizes.append(len(packet[2]))
            client.ack(block)
        assert sizes == [512, 512, 0]
        assert client.silent()
    with RawClient(server.port) as client:
        client.send(rrq("empty.bin"))
        assert client.recv() == ("DATA", 1, b"")


def test_edk2_tsize_probe_abort_then_retry(servers: Servers, root: Path) -> None:
    """EDK2: RRQ tsize=0 blksize=1468 windowsize=4, ERROR 8 after the OACK, RRQ without tsize
    from the same port (and, on other firmware, from a new one)."""
    server, records = servers.start()
    content = (root / "data.bin").read_bytes()
    with RawClient(server.port) as client:
        client.send(rrq("data.bin", tsize=0, blksize=1468, windowsize=4))
        assert client.recv() == ("OACK", {"tsize": str(len(content)), "blksize": "1468", "windowsize": "4"})
        client.error(8, "tsize probe")
        client.peer = None
        data, oack, _ = client.download("data.bin", blksize=1468, windowsize=4)
        assert data == content and "tsize" not in oack
    with RawClient(server.port) as client:
        client.send(rrq("data.bin", tsize=0, blksize=1468, windowsize=4))
        assert client.recv()[0] == "OACK"
        client.error(8)
    with RawClient(server.port) as client:
        assert client.download("data.bin", blksize=1468, windowsize=4)[0] == content
    wait_for(lambda: len(records) == 4)
    assert [(r.ok, r.error) for r in records] == [
        (False, tt.CLIENT_ABORTED_OPTIONS), (True, ""), (False, tt.CLIENT_ABORTED_OPTIONS), (True, "")]
    assert server.stats["aborted"] == 2 and server.stats["failed"] == 0 and server.stats["completed"] == 2


def test_duplicate_rrq_starts_one_transfer(servers: Servers, root: Path) -> None:
    server, records = servers.start()
    with RawClient(server.port) as client:
        request = rrq("small.txt", blksize=512, timeout=10)
        client.send(request)
        client.send(request)
        assert client.recv()[0] == "OACK"
        assert client.silent()  # no second OACK, from this port or another
        client.ack(0)
        assert client.recv() == ("DATA", 1, b"hello\nworld\r\n")
        client.ack(1)
    wait_for(lambda: len(records) == 1)
    assert records[0].ok and server.stats["requests"] == 2 and server.stats["completed"] == 1


def test_a_wrong_tid_is_refused_by_the_kernel_and_the_transfer_goes_on(servers: Servers, root: Path) -> None:
    """The transfer's socket is connected to the client (as tftpd-hpa's is): another port's
    packet never reaches the transfer, and its sender learns so from ICMP port unreachable
    instead of TFTP error 5 (RFC 1350 §4's "should")."""
    server, records = servers.start()
    with RawClient(server.port) as client, RawClient(server.port) as stranger:
        client.send(rrq("sub/nested.bin"))
        first = client.recv()
        assert first[:2] == ("DATA", 1)
        assert client.peer is not None
        stranger.sock.connect(client.peer)  # so that the kernel reports the ICMP error to it
        stranger.sock.send(struct.pack("!HH", 4, 1))
        with pytest.raises(ConnectionRefusedError):
            stranger.sock.recv(100)
        chunks = [first[2]]
        client.ack(1)
        for block in range(2, 11):  # 5000 bytes: nine full blocks and a short tenth
            packet = client.recv()
            assert packet[:2] == ("DATA", block)
            chunks.append(packet[2])
            client.ack(block)
    assert b"".join(chunks) == (root / "sub" / "nested.bin").read_bytes()
    wait_for(lambda: len(records) == 1)
    assert records[0].ok and records[0].bytes_sent == 5000


def test_duplicate_ack_in_lock_step_is_not_answered(servers: Servers) -> None:
    """RFC 1123 §4.2.3.1: answering a duplicate ACK doubles every later block."""
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("data.bin", timeout=10))
        assert client.recv()[0] == "OACK"
        client.ack(0)
        assert client.recv()[:2] == ("DATA", 1)
        client.ack(1)
        assert client.recv()[:2] == ("DATA", 2)
        client.ack(1)
        assert client.silent()


def test_unacknowledged_data_is_resent_then_the_transfer_times_out(servers: Servers) -> None:
    server, records = servers.start(timeout=0.2, retries=2)
    with RawClient(server.port) as client:
        client.send(rrq("small.txt"))
        packets = [client.recv(), client.recv(), client.recv()]
        assert packets == [("DATA", 1, b"hello\nworld\r\n")] * 3
        wait_for(lambda: len(records) == 1)
    assert records[0].ok is False and records[0].error == "timed out after 2 retransmissions"
    assert server.stats["failed"] == 1 and server.stats["active"] == 0


def test_client_error_mid_transfer_ends_it(servers: Servers) -> None:
    server, records = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("data.bin"))
        assert client.recv()[:2] == ("DATA", 1)
        client.error(0, "user cancelled")
    wait_for(lambda: len(records) == 1)
    assert records[0].error == "client error 0: user cancelled" and server.stats["failed"] == 1


@pytest.mark.parametrize(
    ("options", "oack"),
    [
        ({"blksize": 65535}, {"blksize": "65464"}),  # lo's MTU is 65536: the RFC 2348 cap applies
        ({"BlkSize": 1024}, {"blksize": "1024"}),  # option names are case-insensitive
        ({"blksize": 4, "tsize": 0}, {"tsize": "13"}),  # below 8: left out, 512 applies
        ({"timeout": 0, "tsize": 0}, {"tsize": "13"}),
        ({"timeout": 255}, {"timeout": "255"}),
        ({"rollover": 0, "utimeout": 500, "tsize": 0}, {"tsize": "13"}),  # unknown options ignored
    ],
)
def test_option_negotiation(servers: Servers, options: dict[str, object], oack: dict[str, str]) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        data, answered, _ = client.download("small.txt", **options)
    assert data == b"hello\nworld\r\n" and answered == oack


def test_netascii_is_served_as_octet(servers: Servers) -> None:
    server, _ = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("small.txt", mode=b"NetASCII"))
        assert client.recv() == ("DATA", 1, b"hello\nworld\r\n")
        client.ack(1)


def test_open_file_errors_map_to_tftp_errors(servers: Servers) -> None:
    def open_file(name: str, client: tuple[str, int]) -> BinaryIO:
        if name == "missing":
            raise NotFound("missing")
        if name == "secret":
            raise Forbidden("secret")
        if name == "broken":
            raise RuntimeError("plugin bug")
        return io.BytesIO(b"fine")

    server, records = servers.start(open_file=open_file)
    for name, code in (("missing", 1), ("secret", 2), ("broken", 0)):
        with RawClient(server.port) as client:
            client.send(rrq(name))
            reply = client.recv()
            assert reply[:2] == ("ERROR", code)
            assert "plugin bug" not in reply[2]
    with RawClient(server.port) as client:
        assert client.download("ok")[0] == b"fine"
    wait_for(lambda: len(records) == 4)
    assert [r.ok for r in records] == [False, False, False, True]
    assert records[2].error == "internal error: plugin bug"


def test_on_transfer_exceptions_are_logged_not_raised(servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[TransferRecord] = []

    def explode(record: TransferRecord) -> None:
        calls.append(record)
        raise ValueError("callback bug")

    server, _ = servers.start(on_transfer=explode)
    with caplog.at_level(logging.ERROR, logger="bootbox.tftp"):
        for _ in range(2):
            with RawClient(server.port) as client:
                assert client.download("small.txt")[0] == b"hello\nworld\r\n"
        wait_for(lambda: len(calls) == 2)
        wait_for(lambda: sum("on_transfer callback failed" in r.getMessage() for r in caplog.records) == 2)


def test_max_transfers_drops_requests_beyond_it_so_the_client_retries(servers: Servers) -> None:
    """Beyond max_transfers a request is recorded and counted but gets no packet (error 0 would
    end a UEFI boot); once a slot is free, the client's retry is served."""
    server, records = servers.start(max_transfers=1)
    with RawClient(server.port) as first, RawClient(server.port) as second:
        first.send(rrq("data.bin", timeout=10))
        assert first.recv()[0] == "OACK"
        second.send(rrq("small.txt"))
        second.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            second.sock.recv(2048)
        wait_for(lambda: len(records) == 1)
        assert records[0].error.startswith("busy") and not records[0].ok
        assert server.stats["refused_busy"] == 1
        first.send(b"\x00\x05\x00\x00abandoned\x00")  # the first client gives up: its slot frees
        wait_for(lambda: server.stats["active"] == 0)
        second.sock.settimeout(5)
        assert second.download("small.txt")[0] == b"hello\nworld\r\n"


def test_per_address_transfers_drops_requests_beyond_it_unanswered(servers: Servers) -> None:
    """One address holds at most its share: the next request gets no answer at all (no packet for
    a flood to multiply), another address is served, and the slot returns when a transfer ends."""
    server, records = servers.start(per_address_transfers=2)
    with RawClient(server.port) as a, RawClient(server.port) as b, RawClient(server.port) as c, \
            RawClient(server.port, bind="127.0.0.2") as other:
        for client in (a, b):
            client.send(rrq("data.bin", timeout=10))
            assert client.recv()[0] == "OACK"
        c.send(rrq("small.txt"))
        c.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.sock.recvfrom(1000)
        other.send(rrq("small.txt"))
        assert other.recv()[:2] == ("DATA", 1)
        other.ack(1)
        assert server.stats["refused_per_address"] == 1
        a.send(tt.encode_error(0, "enough"), to=a.peer)
        wait_for(lambda: server.stats["active"] == 1)
        c.sock.settimeout(5)
        c.send(rrq("small.txt"))
        assert c.recv()[:2] == ("DATA", 1)
        c.ack(1)
    assert server.stats["refused_per_address"] == 1


def test_per_address_refusals_are_logged_once_per_interval(servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    server, _ = servers.start(per_address_transfers=1)
    with RawClient(server.port) as holder:
        holder.send(rrq("data.bin", timeout=10))
        assert holder.recv()[0] == "OACK"
        for _ in range(20):
            with RawClient(server.port) as extra:
                extra.send(rrq("small.txt"))
        wait_for(lambda: server.stats["refused_per_address"] == 20)
    assert sum("per_address_transfers" in r.getMessage() for r in caplog.records) == 1


def test_reply_comes_from_the_address_the_request_was_sent_to(servers: Servers) -> None:
    """127.0.0.2 is local but not the source the kernel would pick to reach 127.0.0.1."""
    server, _ = servers.start(bind_address="0.0.0.0")
    with RawClient(server.port, host="127.0.0.2") as client:
        client.send(rrq("small.txt"))
        assert client.recv()[:2] == ("DATA", 1)
        assert client.peer is not None and client.peer[0] == "127.0.0.2"
        client.ack(1)
        client.send(rrq("missing.bin"), to=client.server)
        data, addr = client.sock.recvfrom(1000)
        assert parse(data)[:2] == ("ERROR", 1) and addr[0] == "127.0.0.2"


def test_stop_ends_transfers_and_releases_everything(root: Path) -> None:
    records: list[TransferRecord] = []
    server = TftpServer(open_file=open_under(root), on_transfer=records.append, bind_address="127.0.0.1", port=0)
    server.start()
    try:
        port = server.port
        with RawClient(port) as client:
            client.send(rrq("data.bin", timeout=10))
            assert client.recv()[0] == "OACK"
            server.stop()
            assert client.recv() == ("ERROR", 0, "server shutting down")
    finally:
        server.stop()
    assert records[0].error == "server stopped"
    assert not any(t.name == f"bootbox-tftp:{port}" for t in threading.enumerate())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))


def test_bind_failure_names_the_port_and_the_fix(root: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = TftpServer(open_file=open_under(root), bind_address="127.0.0.1", port=port)
        with pytest.raises(OSError) as failure:
            server.start()
    message = str(failure.value)
    assert failure.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}" in message and "another port" in message
    server.stop()  # never started: a no-op


# ---------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize(("mtu", "expected"), [(1500, 1468), (9000, 8968), (65536, 65464), (None, 65464), (20, 8)])
def test_max_blksize_for_mtu(mtu: int | None, expected: int) -> None:
    assert tt.max_blksize_for_mtu(mtu) == expected


def test_parse_options_rejects_sloppy_numbers() -> None:
    for value in (" 8", "1_000", "٣", "+8", "", "12345678901"):
        with pytest.raises(tt.OptionError):
            tt.parse_options({"blksize": value})
    assert tt.parse_options({"TSIZE": "0", "x": "y"}) == tt.RequestedOptions(tsize=True)


def test_blksize_is_capped_at_the_receiving_interface_mtu(servers: Servers) -> None:
    """A request to a non-loopback address gets at most that interface's MTU minus 32."""
    ip = shutil.which("ip")
    if ip is None:
        lab_unavailable("iproute2 is not installed")
    links = json.loads(subprocess.run([ip, "-j", "-4", "addr", "show"], capture_output=True, check=True).stdout)
    found = [(link["mtu"], info["local"]) for link in links if link["ifname"] != "lo"
             for info in link.get("addr_info", []) if link["mtu"] < 65000]
    if not found:
        lab_unavailable("no non-loopback IPv4 address with an ordinary MTU")
    mtu, address = found[0]
    server, _ = servers.start(bind_address="0.0.0.0")
    with RawClient(server.port, host=address, bind=address) as client:
        client.send(rrq("data.bin", blksize=65464, timeout=10))
        assert client.recv() == ("OACK", {"blksize": str(mtu - 32), "timeout": "10"})
        client.error(0, "done")


# ---------------------------------------------------------------------- Transfer, without sockets

class FakeSocket:
    """Records what a Transfer sends on its connected socket; raises EAGAIN once ``room``
    packets are queued, or ECONNREFUSED once ``refused`` is set."""

    def __init__(self, room: int | None = None) -> None:
        self.sent: list[Packet] = []
        self.room = room
        self.refused = False

    def send(self, data: bytes | memoryview) -> int:
        if self.refused:
            raise ConnectionRefusedError
        if self.room is not None and len(self.sent) >= self.room:
            raise BlockingIOError
        self.sent.append(parse(bytes(data)))  # a copy: the transfer reuses its buffer
        return len(data)

    def take(self) -> list[object]:
        """Block numbers (or "OACK") sent since the last call."""
        taken = ["OACK" if p[0] == "OACK" else p[1] for p in self.sent]
        self.sent.clear()
        return taken


def make_transfer(sock: FakeSocket, size: int = 100, windowsize: int = 4, retries: int = 2) -> tt.Transfer:
    negotiated = tt.Negotiated(blksize=8, windowsize=windowsize, timeout=1.0, oack={"windowsize": str(windowsize)})
    return tt.Transfer(sock=sock, client=("192.0.2.9", 1234), filename="f", request=b"",  # type: ignore[arg-type]
                       source=tt.BlockSource(io.BytesIO(bytes(size))), negotiated=negotiated, retries=retries, now=0.0)


def test_transfer_duplicate_ack_resends_a_window_once() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock)
    transfer.pump(0.0)
    assert sock.take() == ["OACK"]
    transfer.on_ack(0, 0.1)
    assert sock.take() == [1, 2, 3, 4]
    transfer.on_ack(0, 0.2)  # block 1 lost: the client repeats its last ACK
    assert sock.take() == [1, 2, 3, 4]
    transfer.on_ack(0, 0.3)
    assert sock.take() == []  # only once; the timer does the rest
    transfer.on_ack(4, 0.4)
    assert sock.take() == [5, 6, 7, 8]
    transfer.on_ack(2, 0.5)  # delayed ACK from an older window: ignored
    assert sock.take() == []


def test_transfer_waits_for_a_full_socket_buffer_to_drain() -> None:
    sock = FakeSocket(room=3)
    transfer = make_transfer(sock)
    transfer.pump(0.0)
    transfer.on_ack(0, 0.1)
    assert sock.take() == ["OACK", 1, 2] and transfer.want_write
    sock.room = None
    transfer.pump(0.2)  # what the server does when the socket is writable again
    assert sock.take() == [3, 4] and not transfer.want_write


def test_transfer_reads_ahead_in_windows_and_rewinds_across_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks come from a read-ahead window of whole blocks (24 bytes: three of 8 here); a
    resend from before the window reads that part again, and every block carries its bytes."""
    monkeypatch.setattr(tt, "READ_AHEAD", 24)
    content = os.urandom(100)
    sock = FakeSocket()
    negotiated = tt.Negotiated(blksize=8, windowsize=4, timeout=1.0, oack={"windowsize": "4"})
    transfer = tt.Transfer(sock=sock, client=("192.0.2.9", 1234), filename="f", request=b"",  # type: ignore[arg-type]
                           source=tt.BlockSource(io.BytesIO(content)), negotiated=negotiated, retries=2, now=0.0)
    transfer.pump(0.0)
    transfer.on_ack(0, 0.0)
    transfer.on_ack(4, 0.0)  # blocks 1-4 arrived; 5-8 are sent
    assert transfer.on_timeout(1.0) is None  # 5-8 again, after the window moved on to 7-9
    transfer.on_ack(2, 1.0)  # a delayed ACK from before: ignored (only ACKs 4..8 count)
    sent = [p for p in sock.sent if p[0] == "DATA"]
    assert [p[1] for p in sent] == [1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8]
    for _, block, payload in sent:
        assert payload == content[(block - 1) * 8 : block * 8]


def test_transfer_ends_when_the_client_port_is_closed() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock)
    transfer.pump(0.0)
    sock.refused = True  # the kernel got ICMP port unreachable for what we sent before
    with pytest.raises(tt.ClientGone):
        transfer.on_ack(0, 0.1)


def test_a_client_that_closed_its_port_ends_its_transfer_at_the_first_resend(servers: Servers) -> None:
    """Connected transfer sockets learn of a closed client port from ICMP: the transfer ends at
    the first retransmission instead of after every retry."""
    server, records = servers.start(timeout=0.3, retries=5)
    with RawClient(server.port) as client:
        client.send(rrq("sub/nested.bin"))
        assert client.recv()[:2] == ("DATA", 1)
    wait_for(lambda: len(records) == 1, timeout=5.0)
    assert not records[0].ok and records[0].error == tt.CLIENT_GONE.error
    assert records[0].duration < 0.3 * 5, records[0]
    assert server.stats["failed"] == 1 and server.stats["active"] == 0


def test_transfer_notices_a_file_that_shrank_when_it_reads_ahead(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tt, "READ_AHEAD", 16)  # two blocks of 8 per read
    path = tmp_path / "shrinks.bin"
    path.write_bytes(os.urandom(100))
    sock = FakeSocket()
    negotiated = tt.Negotiated(blksize=8, windowsize=1, timeout=1.0)
    with path.open("rb") as stream:
        transfer = tt.Transfer(sock=sock, client=("192.0.2.9", 1234), filename="f", request=b"",  # type: ignore[arg-type]
                               source=tt.BlockSource(stream), negotiated=negotiated, retries=2, now=0.0)
        transfer.pump(0.0)
        transfer.on_ack(1, 0.0)  # block 2 comes from the same read
        with path.open("r+b") as writer:
            writer.truncate(20)  # blocks 3 and 4 would start the next read, which now comes up short
        with pytest.raises(tt.SourceChanged):
            transfer.on_ack(2, 0.0)
    assert sock.take() == [1, 2]


def test_a_last_ack_queued_behind_port_unreachable_still_completes(root: Path) -> None:
    """The kernel reports ICMP port unreachable before datagrams already queued: a client's last
    ACK that crossed our resend, then its closed port, must end the transfer as complete."""
    records: list[TransferRecord] = []
    server = TftpServer(open_file=open_under(root), on_transfer=records.append, bind_address="127.0.0.1", port=0)
    server._epoll = select.epoll()  # the loop is not started: this test plays its part, step by step
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    source = tt.BlockSource((root / "small.txt").open("rb"))  # one block
    negotiated = tt.Negotiated()
    transfer = tt.Transfer(sock=tt.open_transfer_socket(["127.0.0.1"], client.getsockname()),
                           client=client.getsockname(), filename="small.txt", request=b"", source=source,
                           negotiated=negotiated, retries=3, now=time.monotonic())  # fmt: skip
    try:
        server._begin(transfer, negotiated)
        assert parse(client.recv(1000))[:2] == ("DATA", 1)
        client.sendto(struct.pack("!HH", 4, 1), transfer.sock.getsockname())  # the last ACK...
        client.close()  # ...and the client is gone
        transfer.on_timeout(time.monotonic())  # our resend crosses it: ICMP port unreachable
        time.sleep(0.05)
        server._read_one(transfer)
        assert len(records) == 1 and records[0].ok, records
        assert server.stats["completed"] == 1 and server.stats["failed"] == 0
    finally:
        server._finish(transfer, tt.CLIENT_GONE)  # no-op once finished
        server._epoll.close()


def test_a_last_ack_queued_behind_a_resent_window_cut_short_still_completes(root: Path) -> None:
    """Seen in a 1,000-host boot storm under load: the server's timer resent a window before it
    read the client's last ACK; the client had closed its port, so a send in the middle of the
    window failed with port unreachable, and the transfer ended as "the client gave up" though
    the client had the whole file. The queued ACK must still be read, and counted even though
    the resend had rewound the window below the block it acknowledges."""
    records: list[TransferRecord] = []
    server = TftpServer(open_file=open_under(root), on_transfer=records.append, bind_address="127.0.0.1", port=0)
    server._epoll = select.epoll()  # the loop is not started: this test plays its part, step by step
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(3)
    source = tt.BlockSource((root / "sub" / "nested.bin").open("rb"))  # 5000 bytes: blocks 1-3 of 2048
    negotiated = tt.Negotiated(blksize=2048, windowsize=4, timeout=1.0, oack={"blksize": "2048", "windowsize": "4"})
    transfer = tt.Transfer(sock=tt.open_transfer_socket(["127.0.0.1"], client.getsockname()),
                           client=client.getsockname(), filename="sub/nested.bin", request=b"", source=source,
                           negotiated=negotiated, retries=3, now=time.monotonic())  # fmt: skip
    try:
        server._begin(transfer, negotiated)
        assert parse(client.recv(4000))[0] == "OACK"
        client.sendto(struct.pack("!HH", 4, 0), transfer.sock.getsockname())
        time.sleep(0.05)
        server._read_one(transfer)  # ACK 0: the whole window goes out
        assert [parse(client.recv(4000))[1] for _ in range(3)] == [1, 2, 3]
        client.sendto(struct.pack("!HH", 4, 3), transfer.sock.getsockname())  # the last ACK...
        client.close()  # ...and the client is gone, before the server read it
        time.sleep(0.05)
        server._step(transfer, transfer.on_timeout, time.monotonic())  # the timer fires first
        assert len(records) == 1 and records[0].ok, records
        assert records[0].bytes_sent == 5000 and server.stats["completed"] == 1 and server.stats["failed"] == 0
    finally:
        server._finish(transfer, tt.CLIENT_GONE)  # no-op once finished
        server._epoll.close()


def test_an_ack_of_a_block_sent_before_a_resend_rewound_the_window_counts() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock, size=100, windowsize=4, retries=3)
    transfer.pump(0.0)
    transfer.on_ack(0, 0.0)  # blocks 1-4 go out
    sock.take()
    sock.room = len(sock.sent) + 1  # the resend after a timeout gets one block out before the buffer is full
    assert transfer.on_timeout(1.0) is None and sock.take() == [1] and transfer.want_write
    sock.room = None
    transfer.on_ack(3, 1.1)  # the client had blocks 1-3 from the first window: the window moves to 4
    assert transfer.base == 4 and sock.take() == [4, 5, 6, 7]


def test_transfer_ends_after_its_retries_and_counts_only_acknowledged_bytes() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock, size=100, windowsize=4, retries=2)
    transfer.pump(0.0)
    transfer.on_ack(0, 0.0)
    transfer.on_ack(4, 0.0)
    sock.take()
    assert transfer.on_timeout(1.0) is None and sock.take() == [5, 6, 7, 8]
    assert transfer.on_timeout(2.0) is None and sock.take() == [5, 6, 7, 8]
    ending = transfer.on_timeout(3.0)
    assert ending is not None and not ending.ok and ending.error == "timed out after 2 retransmissions"
    assert transfer.bytes_acked == 32


def test_resends_in_a_row_wait_twice_as_long_each_time_and_an_ack_starts_over() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock, size=100, windowsize=4, retries=6)
    transfer.pump(0.0)
    assert transfer.deadline == 1.0 and sock.take() == ["OACK"]
    waits = []
    for _ in range(5):
        now = transfer.deadline
        assert transfer.on_timeout(now) is None and sock.take() == ["OACK"]
        waits.append(transfer.deadline - now)
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]  # at most tt.MAX_BACKOFF timeouts
    transfer.on_ack(0, 50.0)
    assert transfer.deadline == 51.0


def test_an_unanswered_transfer_ends_as_given_up() -> None:
    transfer = make_transfer(FakeSocket(), retries=1)
    transfer.pump(0.0)
    assert transfer.on_timeout(1.0) is None
    ending = transfer.on_timeout(3.0)
    assert ending is not None and ending.gave_up and not ending.ok


def test_transfer_completes_on_the_last_block_and_not_before() -> None:
    sock = FakeSocket()
    transfer = make_transfer(sock, size=24, windowsize=4)  # 3 full blocks and an empty 4th
    transfer.pump(0.0)
    transfer.on_ack(0, 0.0)
    assert [p[2] for p in sock.sent[1:]] == [bytes(8)] * 3 + [b""]
    assert not transfer.on_ack(3, 0.0)
    assert transfer.on_ack(4, 0.0) and transfer.bytes_acked == 24


def test_transfer_ignores_an_ack_for_a_block_not_yet_sent() -> None:
    sock = FakeSocket(room=3)
    transfer = make_transfer(sock)
    transfer.pump(0.0)
    transfer.on_ack(0, 0.0)
    assert sock.take() == ["OACK", 1, 2]
    transfer.on_ack(4, 0.0)  # blocks 3 and 4 are still waiting for buffer space
    assert transfer.base == 1 and transfer.bytes_acked == 0


def test_a_lone_lock_step_transfer_to_a_slow_client_completes(servers: Servers, root: Path) -> None:
    """A lone lock-step transfer polls for its next ACK; a client slower than the poll window
    switches that off for the transfer, which still completes block for block."""
    server, records = servers.start()
    with RawClient(server.port) as client:
        client.send(rrq("sub/nested.bin"))  # no options: no OACK, DATA 1 comes first
        blocks, expected = [], 1
        while True:
            kind, number, payload = client.recv()
            assert (kind, number) == ("DATA", expected)
            blocks.append(payload)
            time.sleep(0.003)  # far slower than the server polls for
            client.ack(number)
            if len(payload) < 512:
                break
            expected += 1
    assert b"".join(blocks) == (root / "sub" / "nested.bin").read_bytes()
    wait_for(lambda: len(records) == 1)
    assert records[0].ok


def test_new_requests_are_served_while_a_lone_transfer_runs(servers: Servers, root: Path) -> None:
    """The poll for a lone transfer's ACKs is bounded: a request arriving meanwhile is answered.

    The short request starts once the long transfer is known to be under way (its client has
    received block 16, not a sample of the server's counters that a fast transfer can slip
    between), and must finish while the long one is still running: a server that kept polling
    for the lone transfer's ACKs would answer it only after the last block of 4 MiB."""
    (root / "lone.bin").write_bytes(os.urandom(4 << 20))
    server, records = servers.start()
    results: dict[str, bytes] = {}
    under_way = threading.Event()

    def long_download() -> None:
        with RawClient(server.port) as client:
            results["long"] = client.download(
                "lone.bin", blksize=512, progress=lambda block: block == 16 and under_way.set())[0]

    thread = threading.Thread(target=long_download)
    thread.start()
    assert under_way.wait(30), "the long transfer never started"
    with RawClient(server.port) as client:
        results["short"] = client.download("small.txt")[0]
    long_was_running = "long" not in results
    thread.join(60)
    assert results["short"] == (root / "small.txt").read_bytes()
    assert results["long"] == (root / "lone.bin").read_bytes()
    assert long_was_running, "the short request was answered only after the lone transfer ended"
    wait_for(lambda: len(records) == 2)
    assert all(record.ok for record in records)
