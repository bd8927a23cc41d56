"""The compiled TFTP engine (bootbox/net/_tftpengine.c) against the Python reference.

Why this file exists: the engine re-implements, in C and outside the interpreter lock, the part
of a transfer that repeats per block (Transfer.on_ack and Transfer.pump), and hands everything
else back to the loop in bootbox/net/tftp.py. Two implementations of one protocol drift
apart silently, so:

* a property test runs random transfers and random client packets through a Python
  :class:`~bootbox.net.tftp.transfer.Transfer` and, over real loopback sockets, through the C
  ``run`` on a second identical Transfer, and requires the same DATA packets, the same state
  and the same ending;
* a transfer of more than 65,536 blocks checks the 16-bit block number wrap through a real
  server;
* server-level scenarios check each way the engine hands a transfer back (timeout, packet,
  recall on stop or on a new request, a file read coming up short, ICMP port unreachable,
  the cap on stray packets) and compare with ``engine=False`` where the outcome must be the same;
* bugs found this way stay here as strict xfails until fixed (remove the marker with the fix).

Blocks and windows are counted as in tftp_transfer: block 1 is the first DATA, the last block is
``size // blksize + 1``. The raw client helpers come from tests/test_tftp.py.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootbox.net.tftp import engine as tftp_engine
from bootbox.net.tftp import transfer as tt
from bootbox.net.tftp.server import TftpServer, TransferRecord, open_under
from bootbox.net.tftp.transfer import Ending, MalformedPacket, Transfer
from tests.support.lab_fixtures import lab_unavailable
from tests.net.test_tftp import Packet, RawClient, parse, rrq

ENGINE_THREAD = "bootbox-tftp-engine"
SENTINEL = b"\x00\x63end of batch"
"""Opcode 99: not an ACK, so the engine hands it back as "packet"; the property test queues it
after each batch of client packets to know the engine has read everything before it."""
MAX_CLIENT_PACKET = 1500
"""What both the loop (tftp._MAX_CLIENT_PACKET) and the engine read of a client datagram."""


# ---------------------------------------------------------------------- shared helpers

@pytest.fixture
def engine_run() -> Callable[..., tuple[Any, ...]]:
    """``bootbox.net.tftp._tftpengine.run``; skips (fails in CI) when it was not built."""
    if not tftp_engine.AVAILABLE:
        lab_unavailable("bootbox.net.tftp._tftpengine is not built (needs gcc, libc6-dev, python3-dev at install)")
    from bootbox.net.tftp import _tftpengine  # type: ignore[attr-defined]

    return _tftpengine.run


def wait_for(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.005)


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def pending_error(sock: socket.socket) -> bool:
    """Whether the socket holds an error (ICMP) for its next recv; poll leaves it there."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


def ack(block: int) -> bytes:
    return struct.pack("!HH", tt.OP_ACK, block & 0xFFFF)


def is_ack(packet: bytes) -> bool:
    """What the engine treats as an ACK (everything else it hands back as "packet")."""
    return len(packet) >= 4 and packet[:2] == b"\x00\x04"


def state(transfer: Transfer) -> dict[str, object]:
    """The per-block state the engine takes and returns."""
    return {"base": transfer.base, "next_block": transfer.next_block, "window_end": transfer.window_end,
            "retries_left": transfer._retries_left, "resent_on_duplicate": bool(transfer._resent_on_duplicate),
            "want_write": transfer.want_write}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- 1. equivalence with Transfer

class RecordingSocket:
    """The reference Transfer's socket: keeps every DATA packet it is given."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes | memoryview) -> int:
        self.sent.append(bytes(data))
        return len(data)


class Collector:
    """Reads every datagram arriving at ``sock`` on a thread, so a long run of windows never
    overflows the socket's receive buffer while the engine holds the test's thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stop = threading.Event()
        self.packets: list[bytes] = []
        self._thread = threading.Thread(target=self._read, name="test-collector", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            if readable(self._sock, 0.02):
                self.packets.append(self._sock.recv(70000))

    def finish(self, count: int) -> list[bytes]:
        """Every packet, once ``count`` arrived: loopback delivers a datagram before its send()
        returns, so anything sent beyond ``count`` is queued by then and read here too."""
        wait_for(lambda: len(self.packets) >= count, 5.0, f"{count} DATA packets at the client")
        self.close()
        while readable(self._sock, 0):
            self.packets.append(self._sock.recv(70000))
        return self.packets

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Shape:
    blksize: int
    windowsize: int
    retries: int
    start: int  # first block of the window handed over (near 65536 or 131072: the wire number wraps)
    size: int
    read_ahead: int


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    if draw(st.integers(0, 3)) == 0:  # start next to a 16-bit wrap; a sparse file keeps it small
        blksize = draw(st.integers(8, 32))
        start = draw(st.sampled_from([65536, 131072])) - draw(st.integers(0, 10))
    else:
        blksize = draw(st.one_of(st.sampled_from([8, 9, 512, 1468]), st.integers(8, 1468)))
        start = 1
    whole_blocks = draw(st.one_of(st.integers(0, 6), st.integers(0, 40)))  # small files reach their end often
    tail = draw(st.one_of(st.just(0), st.integers(1, blksize - 1)))  # 0: a multiple of blksize
    return Shape(blksize=blksize, windowsize=draw(st.integers(1, 8)), retries=draw(st.integers(0, 3)), start=start,
                 size=(start - 1 + whole_blocks) * blksize + tail,
                 read_ahead=draw(st.sampled_from([1, 100, 4096, tt.READ_AHEAD])))


Event = tuple[str, Any]
EVENTS = st.lists(st.one_of(
    st.tuples(st.just("ack"), st.integers(-3, 10)),  # relative to the last acknowledged block
    st.tuples(st.just("sent"), st.integers(0, 2)),  # the last block sent, or one or two before it
    st.tuples(st.just("sent"), st.just(0)),  # (twice: what a well-behaved client sends)
    st.tuples(st.just("wire"), st.integers(0, 0xFFFF)),  # any 16-bit number: far out, wrapped
    st.tuples(st.just("long"), st.integers(-1, 6)),  # an ACK with 1600 bytes of junk: read as 1500
    st.tuples(st.just("junk"), st.integers(1490, 1600)),  # not an ACK, handed back cut at 1500 bytes
    st.tuples(st.just("short"), st.integers(0, 3)),  # "", "\0", an opcode, a 3-byte ACK
    st.tuples(st.just("error"), st.integers(0, 8)),
    st.tuples(st.just("bytes"), st.binary(max_size=24)),
    st.tuples(st.just("timeout"), st.just(0)),  # the loop's retransmission timer fires
), max_size=40)  # fmt: skip
"""Client packets, made against the reference's state when their turn comes."""


def client_packet(event: Event, reference: Transfer) -> bytes:
    kind, value = event
    if kind == "ack":
        return ack(reference.base - 1 + value)
    if kind == "sent":
        return ack(reference.next_block - 1 - value)
    if kind == "wire":
        return ack(value)
    if kind == "long":
        return ack(reference.base - 1 + value) + b"j" * 1600
    if kind == "short":
        return b"\x00\x04\x00"[:value]
    if kind == "junk":
        return b"\xff\xff" + b"j" * (value - 2)
    if kind == "error":
        return struct.pack("!HH", tt.OP_ERROR, value) + b"bye\x00"
    assert kind == "bytes"
    return value


def make_transfer(sock: Any, path: Path, shape: Shape, client: tuple[str, int]) -> Transfer:
    negotiated = tt.Negotiated(blksize=shape.blksize, windowsize=shape.windowsize, timeout=60.0)  # no deadline passes
    transfer = Transfer(sock=sock, client=client, filename="f", request=b"", source=tt.BlockSource(path.open("rb")),
                        negotiated=negotiated, retries=shape.retries, now=time.monotonic())
    transfer._rewind(shape.start)  # as if blocks before `start` had been acknowledged
    transfer.pump(time.monotonic())
    return transfer


def write_shape(path: Path, shape: Shape) -> None:
    prefix = (shape.start - 1) * shape.blksize  # never sent: left sparse
    with path.open("wb") as out:
        out.truncate(prefix)
        out.seek(prefix)
        out.write(os.urandom(shape.size - prefix))


@dataclass
class EngineSide:
    """The second Transfer, its ACKs queued on a real socket and served by the C ``run``."""

    transfer: Transfer
    client: socket.socket
    run: Callable[..., tuple[Any, ...]]
    read_ahead: int
    recall: int = field(default_factory=lambda: os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
    outcomes: list[str] = field(default_factory=list)
    returned: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        os.eventfd_write(self.recall, 1)  # signalled from the start: run returns once the socket is empty

    def serve(self, packets: list[bytes]) -> tuple[Ending | None, int]:
        """Queue ``packets`` and the sentinel, act on what ``run`` returns as the loop does; return
        the ending (None: going on) and how many packets were left unread before the sentinel."""
        address = self.transfer.sock.getsockname()
        for packet in [*packets, SENTINEL]:
            self.client.sendto(packet, address)
        while True:
            outcome, packet, error = self.transfer.run_steady(self.run, self.recall, read_ahead=self.read_ahead,
                                                              spin=0.0, slow_ack_limit=8)
            self.outcomes.append(outcome)
            if outcome == "complete":
                return tt.COMPLETE, self._unread()
            if outcome == "recalled":  # the socket ran empty before the batch was all there, or
                # 63 packets in a row were read (drive()'s RECALL_CHECK): read on, nothing is lost
                assert readable(self.transfer.sock, 5.0), "the sentinel never arrived: a packet was lost"
                continue
            assert outcome == "packet", (outcome, error)
            assert packet is not None
            if packet == SENTINEL:
                return None, 0
            self.returned.append(packet)
            try:
                ending = self.transfer.receive(packet, time.monotonic())
            except MalformedPacket:
                continue
            if ending is not None:
                return ending, self._unread()

    def _unread(self) -> int:
        count = 0
        while True:
            assert readable(self.transfer.sock, 5.0), "the sentinel never arrived"
            if self.transfer.sock.recv(MAX_CLIENT_PACKET) == SENTINEL:
                return count
            count += 1

    def close(self) -> None:
        os.close(self.recall)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=shapes(), events=EVENTS)
def test_the_engine_serves_acks_exactly_as_transfer_receive(engine_run: Callable[..., tuple[Any, ...]], tmp_path: Path,
                                                             shape: Shape, events: list[Event]) -> None:
    path = tmp_path / "file.bin"
    write_shape(path, shape)

    # (a) the reference: every packet through Transfer.receive, the timer through on_timeout
    recording = RecordingSocket()
    reference = make_transfer(recording, path, shape, ("127.0.0.1", 9))
    steps: list[bytes | None] = []  # the packets as sent (None: a timeout)
    handed_back: list[bytes] = []  # what the engine must return as "packet", exactly
    ending: Ending | None = None
    for index, event in enumerate(events):
        if event[0] == "timeout":
            steps.append(None)
            ending = reference.on_timeout(time.monotonic())
        else:
            packet = client_packet(event, reference)
            steps.append(packet)
            delivered = packet[:MAX_CLIENT_PACKET]
            if not is_ack(delivered):
                handed_back.append(delivered)
            try:
                ending = reference.receive(delivered, time.monotonic())
            except MalformedPacket:
                pass
        if ending is not None:
            break
    trailing: list[bytes] = []  # sent after the ending packet: the engine must leave them unread
    if ending is not None and steps[-1] is not None:
        trailing = [client_packet(event, reference) for event in events[index + 1:] if event[0] != "timeout"]
    reference.source.close()

    # (b) the engine, fed the same packets through a loopback socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        collector = Collector(client)
        engine = EngineSide(make_transfer(tt.open_transfer_socket(["127.0.0.1"], client.getsockname()), path, shape,
                                          client.getsockname()), client, engine_run, shape.read_ahead)
        try:
            engine_ending: Ending | None = None
            unread = 0
            batch: list[bytes] = []
            for step in steps:
                if step is not None:
                    batch.append(step)
                    continue
                engine_ending, unread = engine.serve(batch)
                batch = []
                if engine_ending is not None:
                    break
                engine_ending = engine.transfer.on_timeout(time.monotonic())
            if engine_ending is None and (batch or trailing):
                engine_ending, unread = engine.serve(batch + trailing)
            data = collector.finish(len(recording.sent))
        finally:
            collector.close()
            engine.close()
            engine.transfer.sock.close()
            engine.transfer.source.close()

    assert engine_ending == ending
    assert ("complete" in engine.outcomes) == (ending is tt.COMPLETE)
    assert unread == len(trailing), "the engine read past the packet that ended the transfer"
    assert engine.returned == handed_back
    assert state(engine.transfer) == state(reference)
    assert [parse(packet)[:2] for packet in data] == [parse(packet)[:2] for packet in recording.sent]
    assert data == recording.sent


def test_a_recall_check_during_a_flood_loses_no_packet(engine_run: Callable[..., tuple[Any, ...]],
                                                       tmp_path: Path) -> None:
    """A socket that never runs dry still lets a recall through: drive() looks at the recall
    descriptor every RECALL_CHECK (64) packets. It must look before taking the next packet off
    the socket, not after: here the 64th in a row, a client's ERROR behind 63 ignored duplicate
    ACKs, must stay queued for the loop (TftpServer._settle_existing reads what is still queued
    after a recall) rather than be read and dropped with the "recalled" return."""
    path = tmp_path / "file.bin"
    shape = Shape(blksize=8, windowsize=1, retries=3, start=1, size=800, read_ahead=tt.READ_AHEAD)
    write_shape(path, shape)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        engine = EngineSide(make_transfer(tt.open_transfer_socket(["127.0.0.1"], client.getsockname()), path, shape,
                                          client.getsockname()), client, engine_run, shape.read_ahead)
        try:
            error = struct.pack("!HH", tt.OP_ERROR, 0) + b"bye\x00"
            ending, _unread = engine.serve([ack(0)] * 63 + [error])  # lock-step duplicates of ACK 0: ignored
        finally:
            engine.close()
            engine.transfer.sock.close()
            engine.transfer.source.close()
    assert engine.returned == [error]
    assert ending == Ending(ok=False, error="client error 0: bye")


def icmp_unreachable(code: int, sender: tuple[str, int], receiver: tuple[str, int]) -> bytes:
    """ICMP destination unreachable ``code`` about a UDP datagram from ``sender`` to ``receiver``."""
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, socket.IPPROTO_UDP, 0,
                        socket.inet_aton(sender[0]), socket.inet_aton(receiver[0]))
    inner += struct.pack("!HHHH", sender[1], receiver[1], 8, 0)
    body = struct.pack("!BBHI", 3, code, 0, 0) + inner
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:]


@pytest.mark.parametrize("code", [2, 8], ids=["protocol-unreachable", "host-isolated"])
def test_other_icmp_errors_leave_the_transfer_to_its_timer(engine_run: Callable[..., tuple[Any, ...]],
                                                           tmp_path: Path, code: int) -> None:
    """Port unreachable ends a transfer ("refused"), but the kernel reports other ICMP errors to a
    connected socket too (protocol unreachable: ENOPROTOOPT, host isolated: ENONET); the loop
    ignores those on receive and lets the timer resend, and so must the engine, rather than end
    the transfer with "internal error". The ICMP is forged on loopback with a raw socket (root)."""
    if os.geteuid() != 0:
        lab_unavailable("forging an ICMP error needs a raw socket (root)")
    path = tmp_path / "file.bin"
    shape = Shape(blksize=512, windowsize=1, retries=3, start=1, size=5000, read_ahead=tt.READ_AHEAD)
    write_shape(path, shape)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client, \
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        client.bind(("127.0.0.1", 0))
        engine = EngineSide(make_transfer(tt.open_transfer_socket(["127.0.0.1"], client.getsockname()), path, shape,
                                          client.getsockname()), client, engine_run, shape.read_ahead)
        try:
            raw.sendto(icmp_unreachable(code, engine.transfer.sock.getsockname(), client.getsockname()), ("127.0.0.1", 0))
            wait_for(lambda: pending_error(engine.transfer.sock), what="the ICMP error on the transfer's socket")
            ending, _unread = engine.serve([ack(1)])  # raises if the engine returned anything but the sentinel
        finally:
            engine.close()
            engine.transfer.sock.close()
            engine.transfer.source.close()
    assert ending is None and engine.transfer.base == 2  # ACK 1 still counted after the error
    assert engine.returned == [] and engine.outcomes[-1] == "packet"  # the sentinel, nothing else


# ---------------------------------------------------------------------- 2 and 3. through a real server

def engine_threads(port: int) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"{ENGINE_THREAD}:{port}"]


def loop_alive(port: int) -> bool:
    return any(thread.name == f"bootbox-tftp:{port}" for thread in threading.enumerate())


@dataclass
class Served:
    server: TftpServer
    records: list[TransferRecord]
    engine: bool

    @property
    def port(self) -> int:
        return self.server.port

    def record(self, count: int = 1, timeout: float = 10.0) -> list[TransferRecord]:
        wait_for(lambda: len(self.records) >= count, timeout, f"{count} transfer record(s)")
        return list(self.records)

    def stats(self, *keys: str) -> dict[str, int]:
        stats = self.server.stats
        return {key: stats[key] for key in keys} if keys else stats


class Rig:
    """Starts servers on a root of test files and stops them all; records what every engine
    run returned (Transfer.run_steady, called on the worker threads, whose name carries the
    server's port) as (port, file name, outcome)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.started: list[TftpServer] = []
        self.runs: list[tuple[int, str, str]] = []
        original = Transfer.run_steady

        def spy(transfer: Transfer, *args: Any, **kwargs: Any) -> tuple[str, bytes | None, int]:
            result = original(transfer, *args, **kwargs)
            port = int(threading.current_thread().name.rpartition(":")[2])
            self.runs.append((port, transfer.filename, result[0]))
            return result

        monkeypatch.setattr(Transfer, "run_steady", spy)

    def start(self, *, engine: bool = True, **kwargs: Any) -> Served:
        records: list[TransferRecord] = []
        server = TftpServer(open_file=open_under(self.root), on_transfer=records.append, bind_address="127.0.0.1",
                            port=0, engine=engine, **kwargs)
        server.start()
        self.started.append(server)
        return Served(server, records, engine)

    def outcomes(self, filename: str) -> list[str]:
        return [outcome for _port, name, outcome in self.runs if name == filename]

    def stop(self, served: Served) -> None:
        """Stop a server and check it left no thread behind (and, with ``engine=False``, that the
        engine never ran: a comparison with the loop compares nothing otherwise)."""
        served.server.stop()
        assert not loop_alive(served.port), "the loop thread did not end within stop()'s 2 s join"
        assert not engine_threads(served.port)
        if not served.engine:
            assert not [run for run in self.runs if run[0] == served.port]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "data.bin").write_bytes(os.urandom(100_000))  # 196 blocks of 512
    (root / "small.txt").write_bytes(b"hello\n")
    (root / "sub" / "nested.bin").write_bytes(os.urandom(5000))  # 10 blocks: handed over at the first
    return root


@pytest.fixture
def rig(root: Path, monkeypatch: pytest.MonkeyPatch, engine_run: object) -> Iterator[Rig]:
    rig = Rig(root, monkeypatch)
    yield rig
    for server in rig.started:
        server.stop()


def normalized(records: list[TransferRecord]) -> list[tuple[object, ...]]:
    """A record without what differs from run to run (the client's port, the duration)."""
    return [(r.client_ip, r.filename, r.bytes_sent, r.blksize, r.windowsize, r.ok, r.error) for r in records]


def start_transfer(client: RawClient, name: str, acks: int, **options: object) -> list[bytes]:
    """Request ``name`` and ACK blocks 1..``acks`` in lock-step; return the blocks received
    (``acks + 1`` of them: the last one is not acknowledged yet). Resends are skipped."""
    client.send(rrq(name, **options))
    packet = client.recv()
    if packet[0] == "OACK":
        client.ack(0)
        packet = client.recv()
    chunks: list[bytes] = []
    while True:
        assert packet[0] == "DATA" and packet[1] <= len(chunks) + 1, packet
        if packet[1] == len(chunks) + 1:
            chunks.append(packet[2])
            if len(chunks) > acks:
                return chunks
            client.ack(len(chunks))
        packet = client.recv()


def ack_through(client: RawClient, chunks: list[bytes], blksize: int = 512) -> Packet | None:
    """Go on from :func:`start_transfer` in lock-step until the last block (None) or an ERROR
    (returned). Resends are skipped; ``chunks`` grows."""
    while len(chunks[-1]) == blksize:
        client.ack(len(chunks))
        packet = client.recv()
        while packet[0] == "DATA" and packet[1] != (len(chunks) + 1) & 0xFFFF:
            packet = client.recv()
        if packet[0] == "ERROR":
            return packet
        chunks.append(packet[2])
    client.ack(len(chunks))
    return None


def test_block_numbers_wrap_past_65535_through_the_engine(rig: Rig, root: Path) -> None:
    """65,601 blocks of 8 bytes, every one acknowledged: block 65536 goes out as 0."""
    content = os.urandom(65_600 * 8 + 3)
    (root / "wrap.bin").write_bytes(content)
    served = rig.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(5.0)
        client.sendto(rrq("wrap.bin", blksize=8), ("127.0.0.1", served.port))
        oack, peer = client.recvfrom(100)
        assert parse(oack) == ("OACK", {"blksize": "8"})
        client.connect(peer)
        client.send(ack(0))
        chunks: list[bytes] = []
        wire: list[int] = []
        recv, send = client.recv, client.send  # a tight loop: 65,601 round trips
        while True:
            packet = recv(100)
            block = (packet[2] << 8) | packet[3]
            if block != (len(chunks) + 1) & 0xFFFF:
                continue  # a resend
            chunks.append(packet[4:])
            wire.append(block)
            send(b"\x00\x04" + packet[2:4])
            if len(packet) < 4 + 8:
                break
    assert b"".join(chunks) == content
    assert wire[65534:65538] == [65535, 0, 1, 2]
    [record] = served.record()
    assert record.ok and record.bytes_sent == len(content) and record.blksize == 8
    assert rig.outcomes("wrap.bin"), "the engine never served the transfer"
    assert served.stats("completed", "failed", "active") == {"completed": 1, "failed": 0, "active": 0}
    rig.stop(served)


def test_a_silent_client_times_out_through_the_engine(rig: Rig) -> None:
    """The engine returns "timeout"; the loop resends, hands the transfer back, and gives up
    after the retries."""
    served = rig.start(timeout=0.5, retries=1)
    with RawClient(served.port) as client:
        chunks = start_transfer(client, "data.bin", acks=3)  # then silence: DATA 4 is never acknowledged
        assert client.recv(timeout=5.0) == ("DATA", 4, chunks[3])  # the resend
        [record] = served.record()
    assert (record.ok, record.error, record.bytes_sent) == (False, "timed out after 1 retransmissions", 3 * 512)
    outcomes = rig.outcomes("data.bin")
    assert outcomes[-2:] == ["timeout", "timeout"] and set(outcomes) == {"timeout"}, outcomes
    assert served.stats("completed", "failed", "active") == {"completed": 0, "failed": 1, "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


def test_a_client_error_ends_a_transfer_out_on_the_engine(rig: Rig) -> None:
    served = rig.start()
    with RawClient(served.port) as client:
        start_transfer(client, "data.bin", acks=4)
        client.error(0, "user abort")
        [record] = served.record()
        assert client.silent(0.1)  # a client's error is not answered
    assert (record.ok, record.error, record.bytes_sent) == (False, "client error 0: user abort", 4 * 512)
    assert rig.outcomes("data.bin") == ["packet"]
    assert served.stats("completed", "failed", "malformed", "active") == {"completed": 0, "failed": 1, "malformed": 0,
                                                                          "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


GARBAGE = {
    "one byte": b"\x01",
    "empty": b"",
    "short ACK": b"\x00\x04\x00",
    "short ERROR": b"\x00\x05\x00",
    "unknown opcode": b"\xff\xff",
    "RRQ": rrq("data.bin"),
    "WRQ": rrq("x", opcode=2),
    "DATA": b"\x00\x03\x00\x05data",
    "OACK": b"\x00\x06blksize\x00512\x00",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_mid_transfer_is_handled_as_the_loop_handles_it(rig: Rig, root: Path, garbage: bytes) -> None:
    """Whatever Transfer.receive decides (drop and count, or end with error 4), the engine path
    decides the same: same client view, same record, same counters."""
    seen: dict[bool, tuple[object, ...]] = {}
    for engine in (True, False):
        served = rig.start(engine=engine)
        with RawClient(served.port) as client:
            chunks = start_transfer(client, "data.bin", acks=4)
            client.send(garbage)  # while the engine waits for ACK 5
            error = ack_through(client, chunks)
            received = b"".join(chunks) if error is None else error
            records = served.record()
        seen[engine] = (received, normalized(records), served.stats())
        rig.stop(served)
    assert seen[True] == seen[False]
    received, records, stats = seen[True]
    assert received == (root / "data.bin").read_bytes() or received == ("ERROR", 4, "expected ACK")
    assert "packet" in rig.outcomes("data.bin")


def test_a_worker_that_cannot_be_started_leaves_its_transfer_to_the_loop(rig: Rig, root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers are started by the engine's starter thread, so the loop never waits for a thread
    to come up. When none can be had (the process's thread limit), the transfer comes back
    ("resume") and the loop serves it to the end, as it serves one the engine never took."""
    real_start = threading.Thread.start

    def no_workers(thread: threading.Thread) -> None:
        if thread.name.startswith(ENGINE_THREAD + ":"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_workers)
    served = rig.start(timeout=30)
    with RawClient(served.port) as client:
        content, _oack, _wire = client.download("data.bin")
        [record] = served.record()
    assert content == (root / "data.bin").read_bytes() and record.ok
    assert rig.outcomes("data.bin") == []  # the engine never ran it
    rig.stop(served)


def test_stop_recalls_a_transfer_out_on_the_engine(rig: Rig) -> None:
    served = rig.start()
    with RawClient(served.port) as client:
        chunks = start_transfer(client, "data.bin", acks=0, timeout=30)  # the OACK path; no resend meanwhile
        assert len(chunks) == 1
        wait_for(lambda: engine_threads(served.port), what="the transfer handed to the engine")
        rig.stop(served)  # the loop ended within stop()'s 2 s join, and no worker is left
        assert client.recv(timeout=2.0) == ("ERROR", 0, "server shutting down")
    [record] = served.records
    assert (record.ok, record.error) == (False, "server stopped")
    assert rig.outcomes("data.bin") == ["recalled"]
    assert served.stats("failed", "active") == {"failed": 1, "active": 0}


def test_a_new_request_from_the_same_port_supersedes_a_transfer_on_the_engine(rig: Rig, root: Path) -> None:
    served = rig.start(timeout=30)  # no resend interferes
    with RawClient(served.port) as client:
        start_transfer(client, "data.bin", acks=1)
        wait_for(lambda: engine_threads(served.port), what="the transfer handed to the engine")
        client.peer = None  # the new transfer answers from a new port
        content, _oack, _wire = client.download("sub/nested.bin")
        records = served.record(2)
    assert content == (root / "sub" / "nested.bin").read_bytes()
    assert [(r.filename, r.ok, r.error) for r in records] == [
        ("data.bin", False, "superseded by a new request from the same port"), ("sub/nested.bin", True, "")]
    assert records[0].client_port == records[1].client_port
    assert rig.outcomes("data.bin") == ["recalled"]
    assert rig.outcomes("sub/nested.bin") == ["complete"]
    assert served.stats("requests", "completed", "failed", "active") == {"requests": 2, "completed": 1, "failed": 1,
                                                                         "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


def test_a_file_that_shrinks_under_the_engine_fails_that_transfer_only(rig: Rig, root: Path) -> None:
    """The engine's read comes up short ("resume"); the loop's pump reads again, notices and
    ends the transfer with error 0, as it does without the engine (where its read-ahead
    notices later)."""
    for engine in (True, False):
        (root / "shrinks.bin").write_bytes(os.urandom(100_000))
        served = rig.start(engine=engine)
        with RawClient(served.port) as client:
            client.send(rrq("shrinks.bin"))
            first = client.recv()
            assert first[:2] == ("DATA", 1)
            os.truncate(root / "shrinks.bin", 1000)  # block 2 is now 488 bytes short
            error = ack_through(client, [first[2]])
            assert error == ("ERROR", 0, "internal error")
            assert client.peer is not None
            client.peer = None
            content, _oack, _wire = client.download("data.bin")  # the server still serves
        assert content == (root / "data.bin").read_bytes()
        shrunk, fine = served.record(2)
        assert shrunk.filename == "shrinks.bin" and not shrunk.ok, shrunk
        assert shrunk.error.startswith("internal error: file shrank while being sent (block "), shrunk
        assert fine.ok and fine.filename == "data.bin"
        assert served.stats("completed", "failed", "active") == {"completed": 1, "failed": 1, "active": 0}
        if engine:
            assert rig.outcomes("shrinks.bin") == ["resume"]
            assert shrunk.error.endswith("(block 2)")
        rig.stop(served)


def test_windowsize_4_with_a_lost_ack_and_mid_window_acks_completes(rig: Rig, root: Path) -> None:
    """An RFC 7440 client that acknowledges in the middle of some windows (the server goes on
    from there), loses the ACK of others (the timer resends) and answers what it did not expect
    with the last block it has, once. Its socket stays open until the record: closing it at
    once can end the transfer as "client gone" (see the ICMP test after this one)."""
    content = os.urandom(200 * 512 + 77)
    (root / "window.bin").write_bytes(content)
    served = rig.start(timeout=0.3, retries=5)
    with RawClient(served.port) as client:
        client.send(rrq("window.bin", windowsize=4))
        assert client.recv() == ("OACK", {"windowsize": "4"})
        client.ack(0)
        chunks: list[bytes] = []
        windows = in_window = silences = 0
        answered = -1  # the last block an unexpected packet was answered with
        while True:
            try:
                packet = client.recv(timeout=2.0)
            except socket.timeout:  # the server's timer should have resent by now
                silences += 1
                assert silences < 3, "the server stopped sending"
                client.ack(len(chunks))
                continue
            if packet[0] != "DATA" or packet[1] != (len(chunks) + 1) & 0xFFFF:
                assert packet[0] == "DATA", packet
                if answered != len(chunks):  # a resend or a block after a gap: "I have up to here"
                    client.ack(len(chunks))
                    answered, in_window = len(chunks), 0
                continue
            chunks.append(packet[2])
            in_window += 1
            if len(packet[2]) < 512:
                client.ack(len(chunks))
                break
            if windows % 5 == 2 and in_window == 2:  # acknowledge mid-window
                client.ack(len(chunks))
                windows, in_window = windows + 1, 0
            elif in_window == 4:
                if windows % 7 != 3:  # else: the ACK is lost
                    client.ack(len(chunks))
                windows, in_window = windows + 1, 0
        assert b"".join(chunks) == content
        [record] = served.record()
    assert record.ok and record.windowsize == 4 and record.bytes_sent == len(content)
    assert rig.outcomes("window.bin"), "the engine never served the transfer"
    assert served.stats("completed", "failed", "active") == {"completed": 1, "failed": 0, "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


def test_a_closed_client_port_ends_the_transfer_as_in_the_loop(rig: Rig) -> None:
    """ICMP port unreachable: the client closes its socket holding DATA 5; the resend is
    refused, and the transfer ends as "client gone", with or without the engine. (Closing right
    after an ACK would race the engine's next DATA, which often arrives before the close.)"""
    seen: dict[bool, tuple[object, ...]] = {}
    for engine in (True, False):
        served = rig.start(engine=engine, timeout=0.5, retries=5)  # ICMP ends it at the first resend
        with RawClient(served.port) as client:
            start_transfer(client, "data.bin", acks=4)
        records = served.record()
        seen[engine] = (normalized(records), served.stats())
        rig.stop(served)
    assert seen[True] == seen[False]
    [record] = seen[True][0]
    assert (record[2], *record[-2:]) == (4 * 512, False, tt.CLIENT_GONE.error)  # bytes_sent, ok, error
    assert rig.outcomes("data.bin") == ["timeout", "refused"]


def test_a_last_ack_queued_behind_a_mid_window_ack_and_port_unreachable_completes(tmp_path: Path) -> None:
    """The engine's "refused" goes to TftpServer._client_gone, which reads what is queued before
    ending the transfer, "so a last ACK that crossed a resend" still completes it. With a window,
    a queued ACK from mid-window rewinds and resends to the closed port: that send, or the next
    recv, reports port unreachable again, and the drain stops short of the last ACK behind it.
    (Seen through the engine as a windowsize 4 client that sent its last ACK and closed at once:
    record "client gone" after 200 of 201 blocks.) The loop plays its part step by step here, as
    in tests/test_tftp.py's test_a_last_ack_queued_behind_port_unreachable_still_completes."""
    (tmp_path / "three.bin").write_bytes(os.urandom(2 * 512 + 10))  # blocks 1, 2, 3: one window of 4
    records: list[TransferRecord] = []
    server = TftpServer(open_file=open_under(tmp_path), on_transfer=records.append, bind_address="127.0.0.1", port=0)
    server._epoll = select.epoll()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    negotiated = tt.Negotiated(windowsize=4)
    transfer = Transfer(sock=tt.open_transfer_socket(["127.0.0.1"], client.getsockname()), client=client.getsockname(),
                        filename="three.bin", request=b"", source=tt.BlockSource((tmp_path / "three.bin").open("rb")),
                        negotiated=negotiated, retries=3, now=time.monotonic())
    try:
        server._begin(transfer, negotiated)
        assert [parse(client.recv(600))[:2] for _ in range(3)] == [("DATA", 1), ("DATA", 2), ("DATA", 3)]
        client.sendto(ack(1), transfer.sock.getsockname())  # block 2 seemed lost: go on from there...
        client.sendto(ack(3), transfer.sock.getsockname())  # ...then it arrived after all: the last ACK
        client.close()
        transfer.sock.send(b"\x00\x03\x00\x03")  # a resend crosses them: port unreachable, reported first
        wait_for(lambda: pending_error(transfer.sock), what="ICMP port unreachable")
        server._read_one(transfer)
        assert [(r.ok, r.error) for r in records] == [(True, "")]
        assert server.stats["completed"] == 1 and server.stats["failed"] == 0
    finally:
        server._finish(transfer, tt.CLIENT_GONE)  # no-op once finished
        server._epoll.close()


def test_thirty_concurrent_transfers_on_engine_threads(rig: Rig, root: Path) -> None:
    files = {f"f{i}.bin": os.urandom(20_000 + 997 * i) for i in range(30)}
    for name, content in files.items():
        (root / name).write_bytes(content)
    served = rig.start()

    def fetch(name: str) -> str:
        with RawClient(served.port, timeout=10.0) as client:
            options = {"windowsize": 4} if int(name[1:-4]) % 3 == 0 else {}
            content, _oack, _wire = client.download(name, **options)
            return sha(content)

    with ThreadPoolExecutor(max_workers=30) as pool:
        digests = dict(zip(files, pool.map(fetch, files)))
    assert digests == {name: sha(content) for name, content in files.items()}
    records = served.record(30)
    assert all(record.ok for record in records) and len(records) == 30
    assert {name for _port, name, _outcome in rig.runs} == set(files)  # each went out on the engine
    assert served.stats("completed", "failed", "active") == {"completed": 30, "failed": 0, "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


def test_handovers_stop_after_max_strays_and_the_transfer_completes(rig: Rig, root: Path) -> None:
    """Each non-ACK packet sends the transfer back to the loop; after MAX_STRAYS of them the loop
    keeps it instead of starting yet another thread per packet."""
    garbage_count = tftp_engine.MAX_STRAYS + 14
    served = rig.start()
    with RawClient(served.port) as client:
        client.send(rrq("data.bin"))
        chunks: list[bytes] = []
        while True:
            packet = client.recv()
            assert packet[0] == "DATA"
            if packet[1] != len(chunks) + 1:
                continue  # a resend
            chunks.append(packet[2])
            if len(chunks) <= garbage_count:
                client.send(b"\x01")  # counted as malformed, dropped
            client.ack(len(chunks))
            if len(packet[2]) < 512:
                break
    assert b"".join(chunks) == (root / "data.bin").read_bytes()
    [record] = served.record()
    assert record.ok
    assert rig.outcomes("data.bin") == ["packet"] * tftp_engine.MAX_STRAYS
    assert served.stats("completed", "malformed", "active") == {"completed": 1, "malformed": garbage_count, "active": 0}
    assert not engine_threads(served.port)
    rig.stop(served)


# ---------------------------------------------------------------------- 4. CI builds the engine

def test_the_engine_is_built_where_the_lab_is_required() -> None:
    """Without a C compiler at install time the engine is silently absent (AVAILABLE False) and
    every engine test above skips; CI (BOOTBOX_LAB_REQUIRED=1) must not pass that way."""
    if not tftp_engine.AVAILABLE:
        lab_unavailable("bootbox.net.tftp._tftpengine is not built (needs gcc, libc6-dev, python3-dev at install)")
    from bootbox.net.tftp import _tftpengine  # type: ignore[attr-defined]

    assert callable(_tftpengine.run)


def test_a_last_ack_behind_a_resend_that_met_the_closed_port_still_completes(engine_run: Callable[..., tuple[Any, ...]],
                                                                            tmp_path: Path) -> None:
    """Seen in a 1,000-host boot storm: a client had the whole file, sent a repeated ACK (a late
    copy of an earlier window had reached it), then its last ACK, and closed its port. The
    engine resent the window for the repeat, met the closed port ("gone") and the transfer was
    recorded as failed: the last ACK, still queued, acknowledges a block beyond the rewound
    window and was taken for a stale packet. The highest block ever sent is what bounds an ACK."""
    path = tmp_path / "file.bin"
    shape = Shape(blksize=512, windowsize=4, retries=3, start=1, size=6 * 512 + 100, read_ahead=tt.READ_AHEAD)
    write_shape(path, shape)  # blocks 1-7
    recall = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    os.eventfd_write(recall, 1)  # run returns once the socket is empty
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    transfer = make_transfer(tt.open_transfer_socket(["127.0.0.1"], client.getsockname()), path, shape,
                             client.getsockname())  # blocks 1-4 are out
    try:
        assert [struct.unpack("!HH", client.recv(2000)[:4])[1] for _ in range(4)] == [1, 2, 3, 4]
        client.sendto(ack(4), transfer.sock.getsockname())
        assert readable(transfer.sock, 5.0)
        outcome, _packet, _error = transfer.run_steady(engine_run, recall, read_ahead=shape.read_ahead, spin=0.0,
                                                        slow_ack_limit=8)  # fmt: skip
        assert outcome == "recalled" and transfer.sent_up_to == 7
        assert [struct.unpack("!HH", client.recv(2000)[:4])[1] for _ in range(3)] == [5, 6, 7]
        client.sendto(ack(4), transfer.sock.getsockname())  # the repeat...
        client.sendto(ack(7), transfer.sock.getsockname())  # ...the last ACK...
        client.close()  # ...and the client is gone
        wait_for(lambda: readable(transfer.sock, 0), what="the ACKs queued")
        outcome, _packet, _error = transfer.run_steady(engine_run, recall, read_ahead=shape.read_ahead, spin=0.0,
                                                        slow_ack_limit=8)  # fmt: skip
        assert outcome in ("gone", "refused"), outcome  # the resend met the closed port
        ending = None
        for _ in range(8):  # what TftpServer._client_gone does: act on what is still queued
            try:
                data = transfer.sock.recv(MAX_CLIENT_PACKET)
            except ConnectionRefusedError:
                continue
            except BlockingIOError:
                break
            ending = transfer.receive(data, time.monotonic(), False)
            if ending is not None:
                break
        assert ending is not None and ending.ok, ending
    finally:
        os.close(recall)
        transfer.sock.close()
        transfer.source.close()
