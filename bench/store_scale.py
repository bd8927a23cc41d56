"""The store at scale: bootbox with 100,000 known hosts, compared with itself at 1,000.

    python -m bench.store_scale [--backend tinydb|postgresql] [--dsn DSN] [--hosts 100000] [--small 1000]
                                [--events-per-host 8] [--quick]

A site that has network-booted a large fleet has every machine in the host log and every
boot step in the event journal. This builds such a state directory with bootbox's own store and
journal classes (hosts with realistic attributes, associations and a profile; ``--events-per-
host`` events each, written and rotated by the journal itself), starts ``bootbox serve`` on it
(loopback, proxyDHCP on high ports) and measures:

* start-up: from ``exec`` to the first answered ``/api/v1/status``;
* memory: resident set after start-up and peak during the run;
* recording events: the latency of the report-in (``POST /api/v1/hosts/MAC/booted``, which
  records an event and changes the host) for random known hosts at 50 per second, while a
  proxyDHCP client asks for OFFERs (each also recorded) at 100 per second and times them;
  both are open-loop (timed from when each request was due), so stalls are fully counted;
* an operator write through the API (adding a profile), which rewrites the store file;
* bootbox's CPU seconds over the recording phase.

There is no reference server for this, so the reference column is the same bootbox at
``--small`` hosts: the ratio shows how each figure scales.

``--backend postgresql`` measures the same with the PostgreSQL store (documents, hosts and
events in the database, docs/postgresql.md): the state directory is built as above and moved
with ``bootbox store migrate --to postgresql`` (so the migration is exercised at scale too), into
a fresh schema of ``--dsn``, or of a PostgreSQL this benchmark starts in a temporary directory
(Debian's ``postgresql`` package, run as the ``postgres`` user: root needed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    positive_int,
    Row,
    Table,
    cpu_seconds,
    free_port,
    launch_bootbox,
    peak_rss_mib,
    percentile,
    rss_mib,
    scratch_dir,
)
from bench.pxeclient import PxeClient, discover, open_reply_socket, recv_timestamped
from bootbox.store.hostlog import HostLog
from bootbox.service.hostindex import HOST_LOG
from bootbox.store.journal import Journal
from bootbox.model import BootEvent, EventKind, Host, HostState
from bootbox.store.tinydb import TinyDBStore
from bootbox.service.answers.tokens import BootTokens
from bootbox.store.secretbox import KEY_FILE, SecretBox

VENDORS = ("Dell Inc.", "HPE", "Supermicro", "Lenovo", "QEMU")
EVENT_KINDS = (EventKind.DHCP_OFFER, EventKind.DHCP_ACK, EventKind.TFTP_SENT, EventKind.HTTP_SCRIPT,
               EventKind.HTTP_FILE, EventKind.HTTP_FILE, EventKind.BOOTED, EventKind.RULES)  # fmt: skip
DHCP_RATE = 100.0
REPORT_RATE = 50.0


def _mac(n: int) -> str:
    return ":".join(f"{b:02x}" for b in (bytes.fromhex("02bc") + n.to_bytes(4, "big")))


def build_state(state: Path, hosts: int, events_per_host: int, kernel: Path) -> dict[str, float]:
    """Write ``hosts`` hosts and their events as bootbox would have; returns sizes in MB."""
    rng = random.Random(hosts)
    now = time.time()
    docs = {}
    for n in range(hosts):
        mac = _mac(n)
        vendor = rng.choice(VENDORS)
        host = Host(
            mac=mac,
            attrs={"mac": mac, "ipv4": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", "vendor": vendor,
                   "model": f"{vendor.split()[0]} model {rng.randrange(40)}", "serial": f"SN{n:010d}",
                   "uuid": f"{n:08x}-1d6f-7a4b-9e2c-1d5f0a3b7c64", "platform": rng.choice(("efi", "pcbios")),
                   "buildarch": "x86_64", "hostname": f"node{n:06d}", "firmware": "uefi"},
            state=HostState.CONFIGURED,
            associations={"image": "fleet", "group": f"rack-{n // 40:04d}"},
            profile="fleet",
            boot_id=f"boot-{n}",
            boot_nonce=f"bench-{n}",  # its current boot, whose up token the report-ins present
            boot_started=now,
            first_seen=now - 86400,
            last_seen=now - rng.randrange(86400),
        )  # fmt: skip
        docs[mac.replace(":", "")] = host.to_dict()
    store = TinyDBStore(state)
    try:
        store.put("profiles", "fleet", {"name": "fleet", "kind": "linux", "description": "",
                                        "spec": {"kernel": str(kernel), "initrd": [], "cmdline": ""}})  # fmt: skip
    finally:
        store.close()
    HostLog(state / HOST_LOG).compact(docs)  # hosts live in the append-only host log
    journal = Journal(state / "events.jsonl")
    journal.start()
    for n in range(hosts):
        for kind in EVENT_KINDS[:events_per_host]:
            journal.append(BootEvent(mac=_mac(n), kind=str(kind), message=f"{kind} for node{n:06d}",
                                     data={"file": "snponly.efi", "ip": "10.0.0.1"}, time=now - 3600))  # fmt: skip
    journal.close(timeout=600)
    return {
        "store_mb": ((state / "bootbox.json").stat().st_size + (state / HOST_LOG).stat().st_size) / 1e6,
        "journal_mb": sum(p.stat().st_size for p in state.glob("events.jsonl*")) / 1e6,
    }


@contextmanager
def own_postgres() -> Iterator[str]:
    """A PostgreSQL in a temporary directory, on a unix socket only, stopped by its PID after;
    yields the base DSN of its ``bootbox`` database."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or os.geteuid() != 0:
        raise SystemExit("--backend postgresql without --dsn needs root and Debian's postgresql package")
    bin_dir, user = Path(found[-1]).parent, pwd.getpwnam("postgres")
    as_pg: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                             "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}
    top = Path(tempfile.mkdtemp(prefix="bootbox-bench-pg-"))
    os.chmod(top, 0o755)
    (top / "run").mkdir()
    for path in (top, top / "run"):
        os.chown(path, user.pw_uid, user.pw_gid)
    subprocess.run([str(bin_dir / "initdb"), "-D", str(top / "data"), "-U", "bootbox", "-A", "trust", "-E", "UTF8",
                    "--locale=C.UTF-8"], check=True, capture_output=True, cwd=top, **as_pg)
    with open(top / "server.log", "wb") as log:
        server = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(top / "data"), "-k", str(top / "run"),
                                   "-c", "listen_addresses="], stdout=log, stderr=subprocess.STDOUT, cwd=top, **as_pg)
    base = f"host={top / 'run'} dbname=bootbox user=bootbox"
    try:
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", str(top / "run")], capture_output=True).returncode:
            if server.poll() is not None:
                raise SystemExit(f"PostgreSQL did not start: {(top / 'server.log').read_text()[-1000:]}")
            time.sleep(0.1)
        subprocess.run([str(bin_dir / "psql"), "-X", "-q", "-d", f"host={top / 'run'} dbname=postgres user=bootbox",
                        "-c", "CREATE DATABASE bootbox"], check=True, capture_output=True)
        yield base
    finally:
        os.kill(server.pid, signal.SIGINT)
        server.wait(60)
        shutil.rmtree(top, ignore_errors=True)


def to_postgresql(state: Path, base_dsn: str, hosts: int) -> tuple[str, dict[str, float]]:
    """Move the state directory's documents, hosts and events into a fresh schema of ``base_dsn``
    (``bootbox store migrate``); return the schema's DSN and its sizes in MB."""
    import psycopg

    from bootbox.store.migrate import migrate

    schema = f"scale{hosts}_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{base_dsn} options='-c search_path={schema}'"
    migrate(to="postgresql", state_dir=state, dsn=dsn)
    for moved in [state / HOST_LOG, *state.glob("events.jsonl*")]:
        moved.unlink()  # the appliance must serve them from the database
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (pg_total_relation_size('bootbox_documents') + pg_total_relation_size('bootbox_hosts'))"
                           " / 1e6, pg_total_relation_size('bootbox_events') / 1e6").fetchone()
    return dsn, {"store_mb": float(row[0]), "journal_mb": float(row[1])} if row else {}


@dataclass
class ScaleResult:
    hosts: int
    startup_s: float
    rss_after_start_mib: float
    peak_rss_mib: float
    callback_ms: list[float]
    offer_ms: list[float]
    offers_sent: int
    api_write_ms: list[float]
    cpu_seconds: float
    store_mb: float
    journal_mb: float


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        return response.status


def _dhcp_load(port: int, client: socket.socket, hosts: int, stop: threading.Event) -> tuple[int, list[float]]:
    """DISCOVERs from known hosts at DHCP_RATE/s until ``stop``; OFFER latencies in ms."""
    rng = random.Random(1)
    sent: dict[int, int] = {}
    latencies: list[float] = []
    xid = 1
    next_send = time.perf_counter()
    while not stop.is_set():
        n = rng.randrange(hosts)
        pxe = PxeClient(bytes.fromhex(_mac(n).replace(":", "")), bytes(16), "uefi")
        sent[xid] = time.time_ns()
        client.sendto(discover(pxe, xid, broadcast=False, ciaddr="127.0.0.1"), ("127.0.0.1", port))
        xid += 1
        next_send += 1 / DHCP_RATE
        while (left := next_send - time.perf_counter()) > 0:
            reply = recv_timestamped(client, left)
            if reply is not None and reply.packet.xid in sent:
                latencies.append((reply.received_ns - sent.pop(reply.packet.xid)) / 1e6)
    for reply in iter(lambda: recv_timestamped(client, 1.0), None):
        if reply.packet.xid in sent:
            latencies.append((reply.received_ns - sent.pop(reply.packet.xid)) / 1e6)
    return xid - 1, latencies


def _up_tokens(state: Path, macs: list[str]) -> dict[str, str]:
    """Each host's up token for the boot build_state gave it (report-ins need it, issue 16)."""
    tokens = BootTokens(SecretBox(state / KEY_FILE).derive, answer_ttl=1, up_ttl=1)
    return {mac: tokens.up_token(Host(mac=mac, boot_nonce=f"bench-{int(mac.replace(':', ''), 16) & 0xFFFFFFFF}"))
            for mac in macs}


def _report_ins(http: int, hosts: int, samples: int, state: Path, rate: float = REPORT_RATE) -> list[float]:
    """``samples`` report-ins for random known hosts at ``rate`` per second from a thread pool;
    latency (ms) is counted from when each was *due*, so a stalled server is charged for every
    request that waited, not just the one in flight (no coordinated omission)."""
    rng = random.Random(2)
    macs = [_mac(rng.randrange(hosts)) for _ in range(samples)]
    tokens = _up_tokens(state, macs)
    start = time.perf_counter()

    def one(i: int) -> float:
        due = start + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        status = _post(f"http://127.0.0.1:{http}/api/v1/hosts/{macs[i]}/booted?token={tokens[macs[i]]}",
                       f"ip=10.9.0.1&boot_id=b{i}".encode(),
                       {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        if status != 200:
            raise RuntimeError(f"report-in answered {status}")
        return (time.perf_counter() - due) * 1000

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(samples)))


def measure_one(hosts: int, events_per_host: int, samples: int, writes: int, base_dsn: str = "") -> ScaleResult:
    """One run; ``base_dsn``: on the PostgreSQL backend, in a new schema of that database."""
    with scratch_dir("bootbox-bench-scale-") as work:
        kernel = work / "vmlinuz"
        kernel.write_bytes(b"\0" * 4096)
        sizes = build_state(work / "state", hosts, events_per_host, kernel)
        store = ""
        if base_dsn:
            dsn, sizes = to_postgresql(work / "state", base_dsn, hosts)
            store = f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
        http, dhcp, boot, client_port = free_port(), free_port(), free_port(), free_port()
        config = (
            f'state_dir = "{work / "state"}"\nlog_level = "warning"\n{store}[demo]\nenabled = false\n'
            f'[dhcp]\nenabled = true\nbind_address = "127.0.0.1"\nport = {dhcp}\nboot_server_port = {boot}\n'
            f"client_port = {client_port}\n[tftp]\nenabled = false\n"
            f'[http]\nbind_address = "127.0.0.1"\nport = {http}\n'
        )
        started = time.perf_counter()
        server = launch_bootbox(work, config, status_url=f"http://127.0.0.1:{http}/api/v1/status", timeout=600)
        try:
            startup = time.perf_counter() - started
            rss_start = rss_mib(server.pid)
            cpu = cpu_seconds(server.pid)
            stop = threading.Event()
            dhcp_result: list[tuple[int, list[float]]] = []
            with open_reply_socket(client_port, address="127.0.0.1", rcvbuf=4 * 2**20) as client:
                loader = threading.Thread(target=lambda: dhcp_result.append(_dhcp_load(dhcp, client, hosts, stop)))
                loader.start()
                try:
                    callbacks = _report_ins(http, hosts, samples, work / "state")
                finally:
                    stop.set()
                    loader.join()
            cpu = cpu_seconds(server.pid) - cpu
            token = (work / "state" / "api-token").read_text().strip()
            api_writes = []
            for i in range(writes):
                body = json.dumps({"name": f"bench-{i}", "kind": "linux", "spec": {"kernel": str(kernel)}}).encode()
                t0 = time.perf_counter()
                _post(f"http://127.0.0.1:{http}/api/v1/profiles", body,
                      {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})  # fmt: skip
                api_writes.append((time.perf_counter() - t0) * 1000)
            sent, offers = dhcp_result[0]
            return ScaleResult(hosts, startup, rss_start, peak_rss_mib(server.pid), callbacks, offers, sent,
                               api_writes, cpu, sizes["store_mb"], sizes["journal_mb"])  # fmt: skip
        finally:
            server.stop()


def rows_for(big: ScaleResult, small: ScaleResult) -> list[Row]:
    ref = f"at {small.hosts:,} hosts"

    def row(figure: str, unit: str, get: Callable[[ScaleResult], float], target: str = "") -> Row:
        return Row(figure, unit, get(big), get(small), ref, higher_is_better=False, target=target)

    return [
        row("start-up (exec to first API answer)", "s", lambda r: r.startup_s),
        row("RSS after start-up", "MiB", lambda r: r.rss_after_start_mib),
        row("peak RSS", "MiB", lambda r: r.peak_rss_mib),
        row(f"record an event: report-in p50 ({REPORT_RATE:g}/s)", "ms", lambda r: percentile(r.callback_ms, 0.5)),
        row(f"record an event: report-in p99 ({REPORT_RATE:g}/s)", "ms", lambda r: percentile(r.callback_ms, 0.99)),
        row(f"proxy OFFER p50 (recorded, {DHCP_RATE:g}/s)", "ms", lambda r: percentile(r.offer_ms, 0.5)),
        row(f"proxy OFFER p99 (recorded, {DHCP_RATE:g}/s)", "ms", lambda r: percentile(r.offer_ms, 0.99)),
        row("OFFERs answered", "%", lambda r: 100.0 * len(r.offer_ms) / max(1, r.offers_sent), "100 %"),
        row("API write (add a profile) p50", "ms", lambda r: percentile(r.api_write_ms, 0.5)),
        row("CPU seconds while recording", "s", lambda r: r.cpu_seconds),
        row("store + host log files", "MB", lambda r: r.store_mb),
        row("event journal on disk", "MB", lambda r: r.journal_mb),
    ]


def measure(hosts: int, small: int, events_per_host: int, samples: int, writes: int, backend: str = "tinydb",
            dsn: str = "") -> list[Table]:
    if backend == "postgresql" and not dsn:
        with own_postgres() as base:
            return measure(hosts, small, events_per_host, samples, writes, backend, base)
    base_dsn = dsn if backend == "postgresql" else ""
    big_result = measure_one(hosts, events_per_host, samples, writes, base_dsn)
    small_result = measure_one(small, events_per_host, samples, writes, base_dsn)
    return [Table(
        "store_scale" if backend == "tinydb" else f"store_scale_{backend}",
        f"Store at scale ({backend}): {hosts:,} hosts with {events_per_host} events each vs {small:,} "
        f"({samples} report-ins, {writes} API writes)",
        rows_for(big_result, small_result),
        meta={"hosts": hosts, "small": small, "events_per_host": events_per_host, "samples": samples,
              "writes": writes, "backend": backend},
        notes=[f"report-ins at {REPORT_RATE:g}/s over loopback HTTP for random known hosts, while proxyDHCP answers "
               f"{DHCP_RATE:g} DISCOVERs/s from known hosts; latency counted from when each request was due"],
    )]  # fmt: skip


def requirements() -> str | None:
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """One measurement per size (a start-up is expensive at 100,000 hosts); ``runs`` is unused."""
    if quick:
        return measure(1000, 100, 2, 100, 2)
    return measure(100_000, 1000, 8, 2000, 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=positive_int, default=100_000)
    parser.add_argument("--small", type=positive_int, default=1000)
    parser.add_argument("--events-per-host", type=int, default=8, choices=range(0, len(EVENT_KINDS) + 1))
    parser.add_argument("--samples", type=positive_int, default=2000, help="report-ins to time")
    parser.add_argument("--writes", type=positive_int, default=5, help="API profile writes to time")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("tinydb", "postgresql"), default="tinydb",
                        help="the store backend to measure (postgresql: docs/postgresql.md)")
    parser.add_argument("--dsn", default="", help="with --backend postgresql: a database to use (a new schema "
                        "per run) instead of a PostgreSQL started for the run")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if args.quick and args.backend == "tinydb":
        result = tables(quick=True)
    elif args.quick:
        result = measure(1000, 100, 2, 100, 2, args.backend, args.dsn)
    else:
        result = measure(args.hosts, args.small, args.events_per_host, args.samples, args.writes, args.backend,
                         args.dsn)
    for table in result:
        table.show()
        table.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
