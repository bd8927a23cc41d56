"""Fuzz targets: one function per input surface, shared by the bounded CI runs and the long run.

Each target takes the raw bytes an attacker controls and raises ``AssertionError`` (or lets an
unexpected exception escape) when a property breaks; returning means the input was handled.

* ``tests/test_fuzz_*.py`` drive them with hypothesis for a few seconds each in CI, with
  strategies that reach deep (mutated captures, structured packets, near-valid JSON);
* ``scripts/fuzz-long.sh`` runs them for a million inputs each: with atheris (coverage-guided
  libFuzzer, seeded with the captured packets) when it is installed, else through the same
  hypothesis tests with ``BOOTBOX_FUZZ_EXAMPLES`` raised::

      python -m tests.support.fuzz_targets dhcp -atheris_runs=1000000

Targets that need a live server (TFTP, DNS, the API) keep one per process, created on first
use, so a million inputs do not mean a million server starts. Any input that ever failed
belongs in the fixed-input list of its test module (``REGRESSIONS`` or ``KNOWN_HARD``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import struct
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, settings

from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import (
    MalformedPacket,
    build,
    client_arch,
    client_uuid,
    is_ipxe,
    message_type,
    parse,
    pxe_suboptions,
    user_classes,
    vendor_class,
)
from bootbox.net.dhcp.proxy import Failed, Reply, Role, respond

DATA = Path(__file__).resolve().parents[1] / "data" / "dhcp"
SERVER_IP = "198.18.0.1"


def fuzz_settings(default_examples: int) -> settings:
    """Bounded in CI (``default_examples``), a million with ``BOOTBOX_FUZZ_EXAMPLES=1000000``;
    no example database is written (CI runs with ``-p no:cacheprovider`` on a clean tree)."""
    examples = int(os.environ.get("BOOTBOX_FUZZ_EXAMPLES") or default_examples)
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])  # fmt: skip


def dhcp_seeds() -> list[bytes]:
    """Every captured client and server packet: real option sets to mutate."""
    return [path.read_bytes() for path in sorted(DATA.glob("*.bin"))]


# --------------------------------------------------------------------------- DHCP
class ErrorLog(logging.Handler):
    """Collects log records at ERROR and above: a server logging a traceback for client input
    has mishandled it, even if it kept running."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


def _decide(machine: Machine) -> BootSpec:
    assert len(machine.mac) == 17, machine.mac
    if machine.is_ipxe:
        return BootSpec("http://198.18.0.1:8080/boot.ipxe", SERVER_IP, "PXEClient", "ipxe")
    return BootSpec("undionly.kpxe" if machine.arch in (0, None) else "snponly.efi", SERVER_IP)


def dhcp_target(data: bytes) -> None:
    """The codec and the responder on one datagram.

    parse raises nothing but MalformedPacket; every helper copes with what parse accepted;
    what parse accepted re-encodes to the same options; the responder never fails on client
    input, and every reply it makes is a well-formed proxy answer to exactly that client.
    """
    try:
        pkt = parse(data)
    except MalformedPacket:
        return
    for helper in (message_type, vendor_class, user_classes, is_ipxe, client_arch, client_uuid):
        helper(pkt)
    try:
        pxe_suboptions(pkt)
    except MalformedPacket:
        pass
    assert parse(build(pkt)).options == pkt.options
    for role, port in ((Role.SERVER, 67), (Role.BOOT_SERVER, 4011)):
        outcome = respond(pkt, role=role, source=("198.18.0.50", 68), server_ip=SERVER_IP, local_port=port,
                          decide=_decide)  # fmt: skip
        assert not isinstance(outcome, Failed), f"client input made the responder fail: {outcome}"
        if isinstance(outcome, Reply):
            reply = parse(outcome.data)
            assert (reply.op, reply.xid, reply.chaddr, reply.yiaddr) == (2, pkt.xid, pkt.chaddr, "0.0.0.0")
            assert reply.options[53] == (b"\x02" if role is Role.SERVER else b"\x05")
            assert reply.options[54] == socket.inet_aton(SERVER_IP)
            assert reply.options[60] in (b"PXEClient", b"HTTPClient")
            assert len(outcome.data) <= 65507


# --------------------------------------------------------------------------- TFTP
@dataclass
class TftpRig:
    """A TFTP server on loopback serving a small root, a secret file beside the root (which
    must never leak), and an error log to watch."""

    server: Any
    root: Path
    secret: bytes
    errors: ErrorLog
    files: dict[str, bytes]

    @classmethod
    def start(cls, base: Path) -> "TftpRig":
        from bootbox.net.tftp.server import TftpServer, open_under

        root = base / "root"
        (root / "sub").mkdir(parents=True)
        secret = secrets.token_hex(16).encode()
        (base / "secret.txt").write_bytes(secret)
        (root / "link").symlink_to(base / "secret.txt")
        files = {"small.bin": os.urandom(700), "sub/big.bin": os.urandom(9000), "empty.bin": b""}
        for name, body in files.items():
            (root / name).write_bytes(body)
        errors = ErrorLog()
        logging.getLogger("bootbox.tftp").addHandler(errors)
        server = TftpServer(open_file=open_under(root), bind_address="127.0.0.1", port=0, timeout=0.3, retries=1)
        server.start()
        return cls(server, root, secret, errors, files)

    def stop(self) -> None:
        self.server.stop()
        logging.getLogger("bootbox.tftp").removeHandler(self.errors)

    def alive(self) -> bool:
        thread = self.server._thread  # the loop thread; a dead loop serves nothing
        return thread is not None and thread.is_alive()

    def exchange(self, packet: bytes, wait: float = 0.05) -> list[bytes]:
        """Send one datagram to port 69; return the answer (at most one is expected: an error,
        the first DATA or the OACK) if it comes within ``wait`` s, plus anything already queued
        behind it."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(wait)
            sock.sendto(packet, ("127.0.0.1", self.server.port))
            replies = []
            try:
                replies.append(sock.recvfrom(65536)[0])
                sock.setblocking(False)
                while len(replies) < 4:
                    replies.append(sock.recvfrom(65536)[0])
            except (TimeoutError, BlockingIOError):
                pass
            return replies

    def download(self, name: str, *, blksize: int = 512, windowsize: int = 1, timeout: float = 3.0,
                 meddle: Callable[[socket.socket, tuple[str, int]], None] | None = None) -> bytes:  # fmt: skip
        """A correct client; ``meddle(sock, server_tid)`` may inject packets after the first
        DATA. Raises AssertionError if the server answers with an error or goes silent."""
        request = b"\x00\x01" + name.encode() + b"\x00octet\x00blksize\x00%d\x00windowsize\x00%d\x00" % (
            blksize, windowsize)  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(timeout)
            sock.sendto(request, ("127.0.0.1", self.server.port))
            body, expected, size, meddled = bytearray(), 1, 512, False
            while True:
                data, tid = sock.recvfrom(65536)
                opcode = struct.unpack("!H", data[:2])[0]
                assert opcode != 5, f"server error for {name}: {data[4:60]!r}"
                if opcode == 6:
                    fields = data[2:].split(b"\0")
                    size = int(dict(zip(fields[::2], fields[1::2])).get(b"blksize", b"512"))
                    sock.sendto(b"\x00\x04\x00\x00", tid)
                    continue
                block = struct.unpack("!H", data[2:4])[0]
                if block == expected & 0xFFFF:
                    body += data[4:]
                    expected += 1
                if meddle is not None and not meddled:
                    meddle(sock, tid)
                    meddled = True
                sock.sendto(b"\x00\x04" + struct.pack("!H", (expected - 1) & 0xFFFF), tid)
                if block == (expected - 1) & 0xFFFF and len(data) - 4 < size:
                    return bytes(body)


_TFTP: TftpRig | None = None
_LOCK = threading.Lock()


def tftp_rig() -> TftpRig:
    """The process's TFTP rig (the long run feeds a million inputs to one server)."""
    global _TFTP
    with _LOCK:
        if _TFTP is None:
            _TFTP = TftpRig.start(Path(tempfile.mkdtemp(prefix="bootbox-fuzz-tftp-")))
        return _TFTP


def tftp_target(data: bytes, rig: TftpRig | None = None) -> None:
    """One datagram to port 69: whatever it is, the loop survives, logs no traceback, and
    nothing it sends back carries a byte of the secret outside the root."""
    rig = rig or tftp_rig()
    for reply in rig.exchange(data, wait=0.005):
        assert rig.secret not in reply, f"secret leaked for {data[:60]!r}"
        assert reply[:2] in (b"\x00\x03", b"\x00\x05", b"\x00\x06"), reply[:20]
    assert rig.alive(), f"TFTP loop died on {data[:60]!r}"
    assert not rig.errors.records, rig.errors.messages()


# --------------------------------------------------------------------------- DNS
def dns_lookup() -> Callable[[str, str], Any]:
    from bootbox.core.dnszone import build_zone

    zone = build_zone("lab.example", [("esx01", "198.18.0.11", "2001:db8::11"), ("esx02", "198.18.0.12", None)],
                      ["nas A 198.18.0.9", "www CNAME nas", "txt TXT hello"])  # fmt: skip
    return zone.answer


def dns_target(data: bytes) -> None:
    """The DNS responder on one message: never raises, and whatever it answers parses back as
    a response to that query ID."""
    from dnslib import DNSRecord

    from bootbox.net.dns.answer import Drop, Forward, respond
    from bootbox.net.dns.answer import Reply as DnsReply

    lookup = dns_lookup() if not hasattr(dns_target, "lookup") else dns_target.lookup  # type: ignore[attr-defined]
    dns_target.lookup = lookup  # type: ignore[attr-defined]
    for forwarding in (False, True):
        for tcp in (False, True):
            outcome = respond(data, lookup, forwarding=forwarding, tcp=tcp)
            assert isinstance(outcome, (DnsReply, Drop, Forward))
            if isinstance(outcome, DnsReply):
                answer = DNSRecord.parse(outcome.data)
                assert answer.header.qr == 1 and answer.header.id == int.from_bytes(data[:2], "big")
                if not tcp:
                    assert len(outcome.data) <= 1232


# --------------------------------------------------------------------------- the API
_VALUES = {"mac": "52:54:00:00:00:01", "kind": "ks", "which": "working"}


def api_writes(app: Any, *, methods: set[str] | None = None, prefixes: tuple[str, ...] = ("/api/v1",)
               ) -> list[tuple[str, str]]:
    """Every POST/PUT/PATCH route under /api/v1 (or ``methods`` under ``prefixes``), from the app
    itself (so new endpoints are fuzzed without a change here), with its variables filled in:
    names of the profile and rule that exist, the known host's MAC."""
    wanted = methods or {"POST", "PUT", "PATCH"}
    writes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(prefixes):
            continue
        path = rule.rule
        for arg in rule.arguments:
            value = _VALUES.get(arg) or ("p1" if "/profiles/" in path else "r1" if "/rules/" in path else "x")
            path = path.replace(f"<{arg}>", value).replace(f"<path:{arg}>", value)
        for method in sorted((rule.methods or set()) & wanted):
            writes.append((method, path))
    return writes


@dataclass
class ApiRig:
    """The Flask app over a TinyDB store in a temp dir, with the linux plugin, as served."""

    app: Any
    client: Any
    service: Any
    journal: Any
    store: Any
    state: Path
    token: str
    kernel: Path
    writes: list[tuple[str, str]]
    reads: list[str]

    @classmethod
    def start(cls, base: Path) -> "ApiRig":
        import bootbox_linux

        from bootbox.store.journal import Journal
        from bootbox.hooks.manager import make_plugin_manager
        from bootbox.service.bootservice import BootService
        from bootbox.store.tinydb import TinyDBStore
        from bootbox.web import create_app
        from tests.conftest import test_settings

        settings = test_settings(base)
        store = TinyDBStore(settings.state_path)
        journal = Journal(settings.state_path / "events.jsonl")
        journal.start()
        service = BootService(settings, store, journal,
                              make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux]))  # fmt: skip
        service.start()
        token = secrets.token_urlsafe(16)
        app = create_app(service, token=token)
        kernel = base / "vmlinuz"
        kernel.write_bytes(b"\0" * 64)
        rig = cls(app, app.test_client(), service, journal, store, settings.state_path, token, kernel, api_writes(app),
                  api_reads(app))
        rig.call("POST", "/api/v1/profiles", {"name": "p1", "kind": "linux", "spec": {"kernel": str(kernel)}})
        rig.call("POST", "/api/v1/rules", {"name": "r1", "all_hosts": True, "items": {"image": "p1"}})
        rig.client.get("/boot/hosts/52:54:00:00:00:01/script.ipxe")
        return rig

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if raw is not None:
            return self.client.open(path, method=method, data=raw, headers=headers, content_type="application/json")
        return self.client.open(path, method=method, json=body, headers=headers)

    def stop(self) -> None:
        self.service.close()
        self.journal.close()
        self.store.close()


_API: ApiRig | None = None


def api_rig() -> ApiRig:
    global _API
    with _LOCK:
        if _API is None:
            _API = ApiRig.start(Path(tempfile.mkdtemp(prefix="bootbox-fuzz-api-")))
        return _API


def api_target(data: bytes, rig: ApiRig | None = None) -> None:
    """Raw bytes as the JSON body of every write endpoint: always a 2xx or a 4xx with the one
    error shape, never a 500; the first byte picks the endpoint when run alone (atheris)."""
    rig = rig or api_rig()
    method, path = rig.writes[data[0] % len(rig.writes)] if data else rig.writes[0]
    check_api_answer(rig, method, path, rig.call(method, path, raw=data[1:]))


def check_api_answer(rig: ApiRig, method: str, path: str, response: Any) -> None:
    assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.get_data()[:300]!r}"
    if response.status_code >= 400:
        doc = response.get_json(silent=True)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), response.get_data()[:200]
        assert isinstance(doc["error"].get("message"), str)


def api_json_target(value: Any, rig: ApiRig | None = None, which: int = 0) -> None:
    """A JSON value (any shape) as the body of one write endpoint."""
    rig = rig or api_rig()
    method, path = rig.writes[which % len(rig.writes)]
    check_api_answer(rig, method, path, rig.call(method, path, raw=json.dumps(value).encode()))


QUERY_NAMES = ("limit", "version", "set", "profile", "via", "token", "uuid", "hostname", "ip", "manufacturer")
"""Query arguments some GET route reads; the fuzz also sends names no route knows."""


def api_reads(app: Any) -> list[str]:
    """Every GET route under /api/v1 and /boot, with its variables filled in as for the writes."""
    return [path for method, path in api_writes(app, methods={"GET"}, prefixes=("/api/v1", "/boot"))]


def query_from(data: bytes) -> str:
    """A query string from bytes: ``name=value`` pairs split on ``&``, names often real ones, values
    anything (non-ASCII digits such as ``²``, huge numbers, control characters), percent-encoded."""
    text = data.decode("utf-8", "replace")
    pairs = []
    for i, part in enumerate(text.split("&")[:6]):
        name, _, value = part.partition("=")
        if not name or (i % 2 == 0 and len(name) < 3):
            name = QUERY_NAMES[(len(part) + i) % len(QUERY_NAMES)]
        pairs.append(f"{urllib.parse.quote(name, safe='')}={urllib.parse.quote(value, safe='')}")
    return "&".join(pairs)


def api_query_target(data: bytes, rig: ApiRig | None = None) -> None:
    """Arbitrary query strings on every GET route (``?limit=²``, ``?version=10^20`` …): a 2xx,
    3xx or 4xx with the one error shape, never a 500; the first byte picks the route."""
    rig = rig or api_rig()
    reads = rig.reads
    path = reads[data[0] % len(reads)] if data else reads[0]
    response = rig.client.get(f"{path}?{query_from(data[1:])}", headers={"Authorization": f"Bearer {rig.token}"})
    if path.startswith("/api/"):
        check_api_answer(rig, "GET", path, response)
    else:  # boot endpoints answer iPXE and GRUB in plain text; they too never fail with a 500
        assert response.status_code < 500, f"GET {path}: {response.status_code} {response.get_data()[:300]!r}"


# --------------------------------------------------------------------------- the long run
TARGETS: dict[str, Callable[[bytes], None]] = {
    "dhcp": dhcp_target,
    "tftp": tftp_target,
    "dns": dns_target,
    "api": api_target,
    "query": api_query_target,
}


def _seeds(name: str) -> list[bytes]:
    if name == "dhcp":
        return dhcp_seeds()
    if name == "tftp":
        return [b"\x00\x01small.bin\x00octet\x00", b"\x00\x01sub/big.bin\x00octet\x00blksize\x001468\x00windowsize\x004\x00",
                b"\x00\x02x\x00octet\x00", b"\x00\x01../secret.txt\x00octet\x00tsize\x000\x00"]  # fmt: skip
    if name == "dns":
        from dnslib import DNSRecord

        return [DNSRecord.question(q, t).pack() for q, t in
                (("esx01.lab.example", "A"), ("www.lab.example", "A"), ("11.0.18.198.in-addr.arpa", "PTR"),
                 ("lab.example", "SOA"), ("example.org", "AAAA"))]  # fmt: skip
    if name == "query":
        return [bytes([i]) + q for i, q in enumerate([b"limit=\xc2\xb2", b"limit=10^20", b"version=\xc2\xb2",
                                                      b"limit=100000000000000000000", b"set=active&limit=5"])]
    return [bytes([i]) + json.dumps(body).encode() for i, body in enumerate(
        [{"name": "p2", "kind": "linux", "spec": {"kernel": "/nonexistent"}}, {"name": "p1", "kind": "linux"},
         {"name": "r2", "patterns": ["vendor=Dell"], "items": {"image": "p1"}}, {"at": 0}, {"attrs": {"mac": "x"}},
         {"rules": []}, {}, {"hosts": ["52:54:00:00:00:01"]}, {"ip": "1.2.3.4"}])]  # fmt: skip


def main(argv: list[str]) -> int:
    """``python -m tests.support.fuzz_targets NAME [libFuzzer flags]``: run one target under atheris,
    seeded with real inputs written to a corpus directory."""
    if not argv or argv[0] not in TARGETS:
        print(f"usage: python -m tests.support.fuzz_targets {{{','.join(TARGETS)}}} [-atheris_runs=N] [libFuzzer flags]")
        return 2
    name, flags = argv[0], argv[1:]
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (pip install atheris); scripts/fuzz-long.sh falls back to hypothesis")
        return 3
    corpus = Path(tempfile.mkdtemp(prefix=f"bootbox-corpus-{name}-"))
    for i, seed in enumerate(_seeds(name)):
        (corpus / f"seed{i}").write_bytes(seed)
    target = TARGETS[name]
    atheris.instrument_all()  # coverage feedback from bootbox (and the libraries it calls)
    atheris.Setup([sys.argv[0], *flags, str(corpus)], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
