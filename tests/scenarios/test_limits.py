"""Per-client limits against a real ``bootbox serve`` over real sockets (issue 17, items 3-5).

A bridge joins the appliance (198.18.0.1), a flooding client (198.18.0.2) and a host that boots
(198.18.0.3): the lab of ``bench/flood.py``, whose flood runs as a process of its own in the
flooder's namespace. Each test is bounded in time and count, and each failed before the limits
existed: waitress buffered request bodies up to 1 GiB, one address could hold every HTTP
connection, and 800 unanswered TFTP requests filled every transfer slot.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.flood import LOADER, TFTP_PORT, FloodLab, rrq
from bench.pxeclient import http_getter, tftp_fetch
from bootbox.lab.netns import run_in_netns
from tests.support.lab_fixtures import lab_unavailable

pytestmark = pytest.mark.netns

PER_ADDRESS_TRANSFERS = 32  # the default of tftp.per_address_transfers
RETRIES = 5  # the default of tftp.retries


def _lab(tmp_path: Path, **extra: str) -> FloodLab:
    if os.geteuid() != 0:
        lab_unavailable("the limits tests need root (network namespaces on a bridge)")
    return FloodLab(tmp_path, extra_toml=extra, kernel_mib=2, initrd_mib=4)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FloodLab]:
    with _lab(tmp_path) as running:
        yield running


def _buffered_bytes(pid: int) -> int:
    """Bytes in the regular files the process holds open that are not its own state: the temporary
    files waitress spills request bodies to (already unlinked, so invisible to ``du``)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith("(deleted)") or target.startswith(("/tmp", "/var/tmp")):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return total


def test_request_bodies_over_the_limit_are_refused_before_they_are_buffered(lab: FloodLab) -> None:
    """Four 300 MB POSTs to the GET-only /boot.ipxe and one chunked body, in parallel: each is
    answered 413 and the server never holds more than a few MiB of them (it held 1.06 GB)."""
    answers: list[str] = []
    peak = 0
    done = threading.Event()

    def post(chunked: bool) -> None:
        with socket.create_connection((lab.server.ip, 8080), timeout=10) as sock:
            head = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {300 * 10**6}"
            sock.sendall(f"POST /boot.ipxe HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode())
            piece = b"10000\r\n" + bytes(0x10000) + b"\r\n" if chunked else bytes(0x10000)
            sent = 0
            try:
                while sent < 64 * 2**20:  # bounded: 64 MiB each, which the old server buffered whole
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:  # refused and closed: the rest of the body is not wanted
                pass
            try:
                answers.append(sock.recv(64).split(b" ")[1].decode())
            except (OSError, IndexError):
                answers.append("no answer")

    threads = [threading.Thread(target=run_in_netns, args=(lab.flooder.netns, post, chunked))
               for chunked in (False, False, False, False, True)]
    for thread in threads:
        thread.start()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _buffered_bytes(lab.pid))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.join(60)
    done.set()
    watcher.join()
    assert answers == ["413"] * 5
    assert peak <= 8 * 2**20, f"the server buffered {peak} bytes of refused bodies"
    assert lab.status()["http"]["refused_body_too_large"] == 5


def test_slowloris_from_one_address_leaves_another_address_served(tmp_path: Path) -> None:
    """1,010 connections trickling header bytes from one address (they made every request time
    out): another address's requests are answered at once, the flooder holds no more than its
    share, and its slow connections are closed after request_timeout."""
    with _lab(tmp_path, **{"http.request_timeout": "3"}) as lab, \
            lab.flood(slowloris=1010, bodies=0, silent_rrqs=0) as report:
        time.sleep(1.5)
        fetch = http_getter(lab.host.ip, timeout=5)
        for _ in range(10):
            size, body = run_in_netns(lab.host.netns, fetch, f"{lab.base}/boot.ipxe")
            assert body is not None and body.startswith(b"#!ipxe")
        http = lab.status()["http"]
        assert http["connections"] <= 64 + 2  # the flooder's share, the status request, a spare
        assert http["refused_per_address"] > 0
        time.sleep(5)  # request_timeout 3 s, swept every second
        http = lab.status()["http"]
    assert http["closed_slow"] >= 64
    assert report.http_connections > 1010


def test_a_silent_tftp_flood_from_one_address_leaves_another_served(tmp_path: Path) -> None:
    """800 read requests never acknowledged, from one address, again every 2 s (they made every
    transfer slot busy): another client downloads at once, the flooder holds its 32 transfers,
    and is sent no more than their bounded retransmissions."""
    with _lab(tmp_path) as lab, lab.flood(slowloris=0, bodies=0, silent_rrqs=800, rrq_every=2.0) as report:
        time.sleep(1.0)
        for _ in range(3):
            got = run_in_netns(lab.host.netns, tftp_fetch, (lab.server.ip, TFTP_PORT), LOADER, blksize=1432,
                               bind=lab.host.ip, retries=0, timeout=5)
            assert got.data == lab.loader
        time.sleep(2.5)
        tftp = lab.status()["tftp"]
    assert tftp["active"] <= PER_ADDRESS_TRANSFERS + 1
    assert tftp["refused_per_address"] >= 800 - PER_ADDRESS_TRANSFERS
    # Each of the flooder's transfers sends at most 1 + retries packets of one 512-byte block; the
    # test ends long before a slot is given back (those resends alone take about 23 s).
    assert 0 < report.tftp_bytes_received <= PER_ADDRESS_TRANSFERS * (1 + RETRIES) * 516
    assert report.tftp_requests >= 1600


def test_an_unanswered_transfer_stops_after_its_retries_with_backoff(tmp_path: Path) -> None:
    """A client that never answers gets 1 + retries packets, each resend after twice the wait of
    the one before, then nothing; so does one that stops answering mid-file (served by the
    engine until then). Each is counted as gave_up."""

    def silent(ack_blocks: int) -> list[tuple[float, int]]:
        """RRQ, ACK the OACK and the first ``ack_blocks`` blocks, then listen for 9 s."""
        arrivals: list[tuple[float, int]] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((lab.flooder.ip, 0))
            sock.settimeout(0.2)
            sock.sendto(rrq(LOADER, blksize=1432), (lab.server.ip, TFTP_PORT))
            deadline = time.monotonic() + 9
            acked = -1 if ack_blocks else None
            while time.monotonic() < deadline:
                try:
                    data, peer = sock.recvfrom(65536)
                except socket.timeout:
                    continue
                opcode, block = struct.unpack("!HH", data[:4])
                block = 0 if opcode == 6 else block
                if acked is not None and block == acked + 1 and block <= ack_blocks:
                    sock.sendto(struct.pack("!HH", 4, block), peer)
                    acked = block
                    continue
                arrivals.append((time.monotonic(), block))
        return arrivals

    with _lab(tmp_path, **{"tftp.retries": "2"}) as lab:
        results: dict[int, list[tuple[float, int]]] = {}
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, run_in_netns(lab.flooder.netns, silent, n)))
                   for n in (0, 20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        tftp = lab.status()["tftp"]
    for acked, arrivals in results.items():
        assert [block for _, block in arrivals] == [acked + 1 if acked else 0] * 3, (acked, arrivals)
        first, second = (b[0] - a[0] for a, b in zip(arrivals, arrivals[1:]))
        assert second > first * 1.5, f"no backoff: resends {first:.2f} s and {second:.2f} s apart"
    assert tftp["gave_up"] == 2


def test_a_host_boots_while_another_address_floods_http_and_tftp(tmp_path: Path) -> None:
    """Everything at once from one address (slowloris, 300 MB bodies, silent TFTP requests):
    another host's loader, scripts, kernel and initrd still arrive, with no request asked twice
    and no answer slower than 5 s; every refusal is counted."""
    with _lab(tmp_path) as lab:
        lab.boot()
        with lab.flood() as report:
            time.sleep(2.0)
            for _ in range(3):
                lab.boot(timeout=5)
            counters = lab.status()
    assert counters["http"]["refused_per_address"] > 0
    assert counters["tftp"]["refused_per_address"] > 0
    assert report.http_bodies > 0 and report.tftp_requests >= 800
