"""TFTP windowsize (RFC 7440): what sending several blocks per ACK gains, with a client that asks.

    python -m bench.tftp_windowsize [--size-mib 16] [--runs 3] [--quick] [--json DIR]

curl, the usual benchmark client (bench/boot_path.py), speaks blksize but not windowsize, and
neither tftpd-hpa nor dnsmasq implements it (facts/references.md §2, facts/pxe-dhcp.md §8),
so its gain is measured here with bench.pxeclient's TFTP client, which does. One file is fetched
over loopback at blksize 1468 from bootbox with windowsize 1 (lock-step, as every other client)
and with larger windows, and from tftpd-hpa with blksize only; all downloads are compared
byte for byte.

Loopback has a round trip of tens of microseconds, so lock-step costs little there. A real
segment's 0.2-0.5 ms is what windowsize saves (one wait per window instead of per block); this
host has no netem to add delay, so a second series holds each ACK back by ``--rtt-ms`` in the
client, which is what a longer round trip does to a sender.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import (
    positive_int,
    PeakMemory,
    Row,
    Server,
    Table,
    cpu_seconds,
    free_port,
    scratch_dir,
    start_bootbox,
    start_tftpd_hpa,
)
from bench.pxeclient import tftp_fetch

FILE_NAME = "payload.bin"
BLKSIZE = 1468


def _rate(fetch: Callable[[], bytes], size: int, expected: bytes, runs: int) -> float:
    """Median MB/s over ``runs`` downloads; fails on any byte that differs."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        data = fetch()
        elapsed = time.perf_counter() - start
        if data != expected:
            raise RuntimeError(f"download differs from the file ({len(data)} of {size} bytes)")
        rates.append(size / elapsed / 1e6)
    return statistics.median(rates)


def measure(size_mib: float, runs: int, windows: tuple[int, ...], rtt_ms: float) -> list[Table]:
    size = int(size_mib * 2**20)
    expected = os.urandom(size)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(scratch_dir("bootbox-bench-ws-"))
        root = work / "root"
        root.mkdir()
        (root / FILE_NAME).write_bytes(expected)
        ports = {"bb_http": free_port(), "bb_tftp": free_port(), "hpa": free_port()}
        servers: list[Server] = []
        stack.callback(lambda: [s.stop() for s in servers])
        servers.append(start_bootbox(work, tftp_root=root, http_port=ports["bb_http"], tftp_port=ports["bb_tftp"]))
        servers.append(start_tftpd_hpa(root, ports["hpa"]))
        cpu = {s.name: cpu_seconds(s.pid) for s in servers}
        memory = stack.enter_context(PeakMemory(servers))

        def fetcher(port: int, windowsize: int | None, delay: float) -> Callable[[], bytes]:
            return lambda: tftp_fetch(("127.0.0.1", port), FILE_NAME, blksize=BLKSIZE, windowsize=windowsize,
                                      bind="127.0.0.1", ack_delay=delay).data  # fmt: skip

        tables = []
        for delay_ms in (0.0, rtt_ms):
            delay = delay_ms / 1000
            where = "loopback" if not delay_ms else f"loopback + {delay_ms:g} ms emulated RTT"
            lockstep = _rate(fetcher(ports["bb_tftp"], None, delay), size, expected, runs)
            hpa_rate = _rate(fetcher(ports["hpa"], None, delay), size, expected, runs)
            rows = [Row(f"blksize {BLKSIZE}, no windowsize", "MB/s", lockstep, hpa_rate, "tftpd-hpa",
                        target=">= 1.0x")]  # fmt: skip
            for window in windows:
                rate = _rate(fetcher(ports["bb_tftp"], window, delay), size, expected, runs)
                rows.append(Row(f"windowsize {window}", "MB/s", rate, lockstep, "bootbox ws=1",
                                target="gain" if window > 1 else ""))  # fmt: skip
            tables.append(Table(
                "tftp_windowsize" + ("" if not delay_ms else "_rtt"),
                f"TFTP RFC 7440 windowsize, {size_mib:g} MiB at blksize {BLKSIZE}, {where}, median of {runs}",
                rows,
                meta={"size_mib": size_mib, "runs": runs, "blksize": BLKSIZE, "ack_delay_ms": delay_ms},
                notes=["ratio of a windowsize row = its gain over bootbox in lock-step (ws=1); tftpd-hpa has no "
                       "windowsize, so it is compared in lock-step only"],
            ))  # fmt: skip
        spent = {s.name: round(cpu_seconds(s.pid) - cpu[s.name], 2) for s in servers}
        memory.stop()
        for table in tables:
            table.meta["cpu_seconds_whole_run"] = spent
            table.meta["peak_pss_mib"] = {name: round(peak, 1) for name, peak in memory.peaks.items()}
        tables[-1].notes.append("CPU seconds over both series: " + ", ".join(f"{k} {v}" for k, v in spent.items()))
        tables[-1].notes.append("Peak memory (PSS of each process tree): " + memory.summary())
        return tables


def requirements() -> str | None:
    if not shutil.which("in.tftpd"):
        return "needs in.tftpd (apt-get install tftpd-hpa)"
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    if quick:
        return measure(1, runs or 1, (1, 8), 0.2)
    return measure(16, runs or 3, (1, 4, 8, 16, 64), 0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=float, default=16)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--windows", default="1,4,8,16,64", help="comma-separated window sizes")
    parser.add_argument("--rtt-ms", type=float, default=0.3, help="emulated round trip for the second series")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if problem := requirements():
        parser.error(problem)
    if args.quick:
        result = tables(quick=True)
    else:
        result = measure(args.size_mib, args.runs, tuple(int(w) for w in args.windows.split(",")), args.rtt_ms)
    for table in result:
        table.show()
        table.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
