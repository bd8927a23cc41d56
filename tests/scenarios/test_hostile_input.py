"""Hostile input over the wire, against the whole appliance on loopback.

Everything a boot network can send without credentials: TFTP names that try to leave the
root, HTTP paths and headers that try the same (through every GET route under ``/boot``,
enumerated from the app so new routes are covered), malformed and oversized DHCP packets, and
one MAC flooding the proxy. After each attack the server must still answer a normal request
correctly, and no byte of a file outside the served directories may come back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import struct
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootbox.appliance import Appliance
from bootbox.config import Settings
from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import DhcpPacket, build, parse
from bootbox.net.dhcp.proxy import (
    RATE_BURST,
    RATE_PER_SECOND,
    Admission,
    ClientRateLimiter,
    ProxyDhcpServer,
)
from tests.conftest import test_settings

MAC = "52:54:00:ba:dd:01"


# --------------------------------------------------------------------------- the appliance
class Site:
    """A running appliance with a profile and a rule, a host that has its script, and a secret
    file next to (not inside) every served directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.secret = secrets.token_hex(16).encode()
        (tmp_path / "secret.txt").write_bytes(self.secret + b"\n")
        self.settings: Settings = test_settings(tmp_path)
        root = Path(self.settings.tftp.root)
        (root / "evil.kpxe").symlink_to(tmp_path / "secret.txt")  # a link out of the root
        (root / "sub").mkdir()
        self.kernel = tmp_path / "kernel.bin"
        self.kernel.write_bytes(os.urandom(8192))
        self.appliance = Appliance(self.settings)
        self.appliance.start()
        self.http = self.settings.http.port
        token = (Path(self.settings.state_dir) / "api-token").read_text().strip()
        self.api("POST", "/api/v1/profiles", {"name": "p", "kind": "linux", "spec": {"kernel": str(self.kernel)}}, token)
        self.api("POST", "/api/v1/rules", {"name": "all", "all_hosts": True, "items": {"image": "p"}}, token)
        status, body = self.get(f"/boot/hosts/{MAC}/script.ipxe")
        assert status == 200 and b"kernel" in body, body

    def api(self, method: str, path: str, body: object, token: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=json.dumps(body).encode(),
                                         method=method, headers={"Authorization": f"Bearer {token}",
                                                                 "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 201)

    def raw_http(self, request: bytes, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
        """Send bytes as they are (no client normalises the path); return status, head, body."""
        with socket.create_connection(("127.0.0.1", self.http), timeout=timeout) as sock:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):  # refused mid-body (http.max_body): read the answer
                pass
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        data = b"".join(chunks)
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(match.group(1)) if match else 0), head, body

    def get(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        status, _, body = self.raw_http(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return status, body

    def still_serves(self) -> None:
        """A normal boot request still works: the entry script and a loader, byte-exact."""
        status, body = self.get("/boot.ipxe")
        assert status == 200 and body.startswith(b"#!ipxe")
        status, body = self.get("/boot/loaders/undionly.kpxe")
        assert status == 200 and body == (Path(self.settings.tftp.root) / "undionly.kpxe").read_bytes()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("hostile"))
    try:
        yield s
    finally:
        s.appliance.stop()


# --------------------------------------------------------------------------- TFTP
def _rrq(name: bytes, mode: bytes = b"octet", **options: str) -> bytes:
    extra = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    return b"\x00\x01" + name + b"\0" + mode + b"\0" + extra


def _tftp(site: Site, packet: bytes) -> bytes:
    """Send one request to the TFTP port; return the first answer (from whatever port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sock.sendto(packet, ("127.0.0.1", site.settings.tftp.port))
        data, _ = sock.recvfrom(65536)
        return data


@pytest.mark.parametrize(
    "name",
    [
        b"../secret.txt",
        b"../../../../../../etc/passwd",
        b"/../secret.txt",
        b"sub/../../secret.txt",
        b"..\\secret.txt",
        b"evil.kpxe",  # a symlink inside the root pointing out of it
        b"/etc/passwd",  # absolute: relative to the root, so simply not there
        b"sub",  # a directory
        b"a" * 3000,  # longer than any path
        b"sub/" + b"b" * 300,  # one component longer than NAME_MAX
        b"undionly.kpxe\xff\xfe",  # not text
        b"%2e%2e/secret.txt",
    ],
)
def test_tftp_names_that_leave_the_root_get_an_error_and_no_data(site: Site, name: bytes) -> None:
    answer = _tftp(site, _rrq(name))
    opcode, code = struct.unpack("!HH", answer[:4])
    assert opcode == 5 and code in (1, 2, 4), answer[:80]
    assert site.secret not in answer
    site.still_serves()


def test_tftp_name_with_an_embedded_nul_is_not_a_way_around_the_checks(site: Site) -> None:
    # On the wire a NUL ends the name, so "undionly.kpxe\0../secret.txt" is a name and a mode
    # ("../secret.txt") that no server accepts.
    answer = _tftp(site, b"\x00\x01undionly.kpxe\x00../secret.txt\x00")
    assert struct.unpack("!HH", answer[:4]) == (5, 4)
    answer = _tftp(site, _rrq(b"under\x00dionly.kpxe"))
    assert answer[:2] == b"\x00\x05" and site.secret not in answer


def test_tftp_upload_attempts_are_refused_and_write_nothing(site: Site) -> None:
    before = sorted(p.name for p in Path(site.settings.tftp.root).iterdir())
    answer = _tftp(site, b"\x00\x02planted.bin\x00octet\x00")
    assert struct.unpack("!HH", answer[:4]) == (5, 2)
    assert sorted(p.name for p in Path(site.settings.tftp.root).iterdir()) == before


def test_tftp_options_with_absurd_values_are_refused_or_clamped(site: Site) -> None:
    for options in ({"blksize": "99999999999"}, {"blksize": "-1"}, {"windowsize": "65536"}, {"timeout": "0"},
                    {"tsize": "x" * 500}, {"blksize": "1" * 5000}):  # fmt: skip
        answer = _tftp(site, _rrq(b"undionly.kpxe", **options))
        opcode = struct.unpack("!H", answer[:2])[0]
        assert opcode in (3, 5, 6), answer[:40]  # DATA, ERROR or OACK: never silence or a crash
        if opcode == 6:
            fields = answer[2:].split(b"\0")
            accepted = dict(zip(fields[::2], fields[1::2]))
            assert int(accepted.get(b"blksize", b"512")) <= 65464
            assert int(accepted.get(b"windowsize", b"1")) <= 64
    site.still_serves()


# --------------------------------------------------------------------------- HTTP
TRAVERSALS = [
    "..%2F..%2F..%2Fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "..%5C..%5Csecret.txt",
    "....%2F%2F....%2F%2Fsecret.txt",
    "%00",
    "evil.kpxe",
    "..",
    "%2Fetc%2Fpasswd",
    "x" * 5000,
    "%C0%AE%C0%AE%2Fsecret.txt",  # overlong UTF-8 dots
]


def _boot_routes(site: Site) -> list[tuple[str, list[str]]]:
    """Every GET route under /boot, with its variable names, from the app itself."""
    routes = []
    for http_server in [site.appliance.servers["http"]]:
        app = http_server._app  # type: ignore[attr-defined]
        for rule in app.url_map.iter_rules():
            if rule.rule.startswith("/boot") and "GET" in (rule.methods or ()):
                routes.append((rule.rule, sorted(rule.arguments)))
    return routes


def test_every_boot_route_refuses_traversal(site: Site) -> None:
    routes = _boot_routes(site)
    assert any("<name>" in r for r, _ in routes) and any("<mac>" in r for r, _ in routes)
    for rule, arguments in routes:
        for payload in TRAVERSALS:
            for target_arg in arguments:
                path = rule
                for arg in arguments:
                    value = payload if arg == target_arg else (MAC if arg == "mac" else "kernel")
                    path = re.sub(rf"<(?:[a-z]+:)?{arg}>", value, path)
                status, body = site.get(path)
                assert 400 <= status < 500, (path, status, body[:200])
                assert site.secret not in body, path
    site.still_serves()


def test_raw_dot_segments_in_the_request_line_do_not_escape(site: Site) -> None:
    for target in ("/boot/loaders/../../../../secret.txt", "/boot/loaders/..%2f..%2fsecret.txt",
                   "/boot//loaders//..//..//secret.txt", f"/boot/hosts/{MAC}/assets/../../../../secret.txt",
                   "/boot/loaders/%2e%2e/%2e%2e/secret.txt", "//../../secret.txt"):  # fmt: skip
        status, body = site.get(target)
        assert status in (400, 403, 404), (target, status)
        assert site.secret not in body
    site.still_serves()


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=999999999-",
        "bytes=5-1",
        "bytes=-0",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)),
        "bits=0-10",
        "bytes=0-1,0-1,0-1",
        "bytes=18446744073709551616-",
        "bytes=\x00-1",
    ],
)
def test_bad_range_headers_are_answered_not_crashed(site: Site, header: str) -> None:
    loader = (Path(site.settings.tftp.root) / "undionly.kpxe").read_bytes()
    status, body = site.get("/boot/loaders/undionly.kpxe", {"Range": header})
    assert status in (200, 206, 400, 416), (header[:40], status)
    if status == 200:
        assert body == loader
    if status == 206 and b"multipart" not in body[:200]:
        assert body and body in loader
    site.still_serves()


def test_huge_and_numerous_headers_are_refused_and_the_server_lives(site: Site) -> None:
    big = "GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 2_000_000 + "\r\n\r\n"
    status, _, _ = site.raw_http(big.encode(), timeout=30)
    assert status in (0, 400, 413, 431)
    many = "GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + "".join(f"X-{i}: y\r\n" for i in range(20000)) + "\r\n"
    status, _, _ = site.raw_http(many.encode(), timeout=30)
    assert status in (0, 200, 400, 413, 431)
    status, _, _ = site.raw_http(b"GARBAGE\x00\xff\r\n\r\n")
    assert status in (0, 400, 405, 501)
    status, _, _ = site.raw_http(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 timeout=30)
    assert status in (0, 400, 404, 413, 414, 431)
    site.still_serves()


def test_oversized_report_in_body_is_refused(site: Site) -> None:
    body = b"ip=" + b"1" * (5 * 2**20)
    head = (f"POST /api/v1/hosts/{MAC}/booted HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    status, _, _ = site.raw_http(head + body, timeout=30)
    assert status in (0, 400, 413)
    site.still_serves()


def test_query_values_cannot_inject_script_lines_or_headers(site: Site) -> None:
    other = "52:54:00:ba:dd:02"  # matched by the all-hosts rule as well
    query = urllib.parse.urlencode({"hostname": "x\r\nX-Evil: 1\r\n\r\nchain http://evil/", "serial": "${evil}\nshell"})
    status, head, body = site.raw_http(f"GET /boot/hosts/{other}/script.ipxe?{query} HTTP/1.1\r\nHost: x\r\n"
                                       "Connection: close\r\n\r\n".encode())  # fmt: skip
    assert status == 200
    assert b"X-Evil" not in head
    assert not any(line.strip().startswith((b"chain http://evil", b"shell")) for line in body.splitlines())


# --------------------------------------------------------------------------- DHCP
def _discover(mac: bytes, xid: int, **options: bytes) -> bytes:
    opts = {53: b"\x01", 60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00", **{int(k[1:]): v for k, v in options.items()}}
    return build(DhcpPacket(op=1, xid=xid, chaddr=mac, ciaddr="127.0.0.1", options=opts))


def _dhcp_client(site: Site) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", site.settings.dhcp.client_port))
    sock.settimeout(5)
    return sock


def _overrunning(valid: bytes) -> list[bytes]:
    """Packets whose options lie about their lengths, or that are too big for any DHCP."""
    header = valid[:240]
    return [
        header + b"\x35\x01\x01\x3c\xff" + b"PXEClient",  # option 60 claims 255 bytes, has 9
        header + b"\x35",  # a code with no length byte
        header + b"\x34\x01\x03" + b"\x35\x01\x01\xff",  # overload into file/sname full of zeros
        header + b"\x34\x02\x03\x03\x35\x01\x01\xff",  # overload value of the wrong size
        header[:236] + b"\x00\x00\x00\x00" + b"\x35\x01\x01",  # no magic cookie
        valid[:2] + b"\xff" + valid[3:],  # hlen 255
        header + bytes(65507 - 240),  # the largest UDP datagram IPv4 carries, no options at all
        header + b"\x35\x01\x01" + (b"\x2b\xff" + b"A" * 255) * 240,  # 43 repeated far past any real size
        header + b"\x35\x01\x01\x3c\x09PXEClient\x2b\x05\x47\x09\x80\x03\x00\xff",  # 43.71 overruns 43
        b"\x01" * 239,  # one byte short of a header
    ]


def _answer_for(sock: socket.socket, xid: int) -> DhcpPacket:
    """Read replies until the one for ``xid``: garbage must never be answered, but a packet
    that is still a valid request (e.g. overloaded options) may be."""
    while True:
        reply = parse(sock.recvfrom(4096)[0])
        if reply.xid == xid:
            return reply


def test_malformed_and_oversized_dhcp_packets_are_dropped_and_the_proxy_keeps_answering(site: Site) -> None:
    server = site.appliance.servers["dhcp"]
    port = site.settings.dhcp.port
    valid = _discover(bytes.fromhex("5254009a0001"), 0x100)
    before = dict(server.stats)  # type: ignore[attr-defined]
    with _dhcp_client(site) as sock:
        for i, packet in enumerate(_overrunning(valid)):
            sock.sendto(packet, ("127.0.0.1", port))
            sock.sendto(_discover(bytes.fromhex("5254009b") + i.to_bytes(2, "big"), 0x200 + i), ("127.0.0.1", port))
            assert _answer_for(sock, 0x200 + i).options[53] == b"\x02"
    after = server.stats  # type: ignore[attr-defined]
    assert after["errors"] == before["errors"]
    assert after["malformed"] - before["malformed"] >= 6  # cookie, hlen, short, and the three overruns


def test_boot_server_port_survives_garbage_too(site: Site) -> None:
    server = site.appliance.servers["dhcp"]
    port = site.settings.dhcp.boot_server_port
    before = dict(server.stats)  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        for packet in _overrunning(_discover(bytes.fromhex("5254009c0001"), 0x300, o53=b"\x03")):
            sock.sendto(packet.replace(b"\x35\x01\x01", b"\x35\x01\x03", 1), ("127.0.0.1", port))
        sock.sendto(_discover(bytes.fromhex("5254009c0002"), 0x301, o53=b"\x03"), ("127.0.0.1", port))
        reply = _answer_for(sock, 0x301)
    assert reply.options[53] == b"\x05"
    assert server.stats["errors"] == before["errors"]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- rate limiting
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_a_burst_then_the_refill_rate() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(rate=2.0, burst=5, clock=clock)
    verdicts = [limiter.admit(b"a") for _ in range(8)]
    assert verdicts[:5] == [Admission.ALLOW] * 5
    assert verdicts[5:] == [Admission.DROP_FIRST, Admission.DROP, Admission.DROP]
    clock.now += 0.5  # one token back
    assert limiter.admit(b"a") is Admission.ALLOW
    assert limiter.admit(b"a") is Admission.DROP_FIRST  # a new episode is reported again
    clock.now += 100  # refills to the burst, not beyond
    assert [limiter.admit(b"a") for _ in range(6)].count(Admission.ALLOW) == 5


def test_limiter_keeps_clients_apart() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(rate=1.0, burst=3, clock=clock)
    for _ in range(50):
        limiter.admit(b"flood")
    assert all(limiter.admit(bytes([n])) is Admission.ALLOW for n in range(100))


def test_limiter_memory_is_bounded_and_forgets_the_idle_first() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(rate=1.0, burst=2, max_clients=100, clock=clock)
    limiter.admit(b"busy")
    limiter.admit(b"busy")
    for n in range(1000):
        clock.now += 0.001
        limiter.admit(n.to_bytes(4, "big"))
        assert len(limiter) <= 100
    assert limiter.admit(b"busy") is Admission.ALLOW  # it was forgotten, so it starts full again
    clock.now += 10  # every bucket has refilled: the next overflow clears them all
    for n in range(101):
        limiter.admit(b"x" + n.to_bytes(4, "big"))
    assert len(limiter) <= 100


def test_limiter_off_allows_everything() -> None:
    limiter = ClientRateLimiter(rate=0, burst=0)
    assert all(limiter.admit(b"a") is Admission.ALLOW for _ in range(1000)) and len(limiter) == 0
    with pytest.raises(ValueError):
        ClientRateLimiter(rate=-1)


def test_a_flood_from_one_mac_is_limited_without_hurting_other_clients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bootbox.dhcp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
        answered: list[str] = []

        def decide(machine: Machine) -> BootSpec:
            return BootSpec("undionly.kpxe", "127.0.0.1")

        server = ProxyDhcpServer(decide=decide, on_answer=lambda m, s, p: answered.append(m.mac),
                                 bind_address="127.0.0.1", server_port=0, boot_server_port=0,
                                 client_port=client.getsockname()[1])  # fmt: skip
        server.start()
        try:
            flooder = bytes.fromhex("0242deadbeef")
            others = [bytes.fromhex("0242c0ffee") + bytes([n]) for n in range(40)]
            started = time.monotonic()
            for i in range(2000):
                client.sendto(_discover(flooder, 10_000 + i), ("127.0.0.1", server.port))
                if i % 50 == 0:
                    other = others[i // 50]
                    client.sendto(_discover(other, 20_000 + i // 50), ("127.0.0.1", server.port))
            elapsed = time.monotonic() - started
            replies = []
            with_timeout = time.monotonic() + 10
            while len([r for r in replies if r >= 20_000]) < len(others) and time.monotonic() < with_timeout:
                try:
                    replies.append(parse(client.recvfrom(4096)[0]).xid)
                except TimeoutError:
                    break
        finally:
            server.stop()
    assert sorted(x for x in replies if x >= 20_000) == list(range(20_000, 20_000 + len(others)))
    flooder_answers = answered.count("02:42:de:ad:be:ef")
    assert flooder_answers <= RATE_BURST + RATE_PER_SECOND * (elapsed + 1) + 1
    assert server.rate_limited >= 2000 - flooder_answers - 50  # the socket buffer may drop a few itself
    warnings = [r for r in caplog.records if "dropping this client's packets" in r.getMessage()]
    assert len(warnings) == 1 and "02:42:de:ad:be:ef" in warnings[0].getMessage()
    assert server.stats["errors"] == 0


def test_proxy_still_answers_a_flooded_client_once_it_slows_down() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(rate=RATE_PER_SECOND, burst=RATE_BURST, clock=clock)
    for _ in range(10 * RATE_BURST):
        limiter.admit(b"mac")
    clock.now += 1 / RATE_PER_SECOND
    assert limiter.admit(b"mac") is Admission.ALLOW
