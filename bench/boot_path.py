"""Boot-path throughput: bootbox's TFTP vs tftpd-hpa and its HTTP vs nginx, in one run.

    python -m bench.boot_path [--size-mib 16] [--runs 3] [--json out.json]

TFTP: one file fetched by curl at blksize 512 and 1468, by 1 client and by 20 at once. HTTP: the
same file fetched by 8 clients at once from bootbox's loader route (``send_file``, the same code
path as kernels and initrds) and from nginx with sendfile. Each figure is the median of
``--runs`` runs, in MB/s (10^6 bytes), with the CPU seconds each server spent and the peak
memory of each server's process tree (:class:`bench.common.PeakMemory`). Targets (issue 2):
parity with tftpd-hpa, at least 0.7x nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable

from bench.common import (
    Row,
    PeakMemory,
    Server,
    counts_exited_children,
    cpu_seconds,
    free_port,
    median_of,
    positive_int,
    parallel_curl,
    print_table,
    scratch_dir,
    start_bootbox,
    start_nginx,
    start_tftpd_hpa,
    write_json,
)

FILE_NAME = "payload.bin"


def _throughput(size: int, clients: int, run: Callable[[], float]) -> float:
    return size * clients / run() / 1e6


def measure(size_mib: int, runs: int) -> tuple[list[Row], dict[str, float], dict[str, float]]:
    size = size_mib * 2**20
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(scratch_dir("bootbox-bench-"))
        root = work / "root"
        root.mkdir()
        (root / FILE_NAME).write_bytes(os.urandom(size))
        for path in (work, root, root / FILE_NAME):  # nginx's workers run unprivileged
            path.chmod(0o755)
        ports = {"bb_http": free_port(), "bb_tftp": free_port(), "hpa": free_port(), "nginx": free_port()}
        servers: list[Server] = []
        stack.callback(lambda: [s.stop() for s in servers])
        servers.append(start_bootbox(work, tftp_root=root, http_port=ports["bb_http"], tftp_port=ports["bb_tftp"]))
        servers.append(start_tftpd_hpa(root, ports["hpa"]))
        servers.append(start_nginx(work, root, ports["nginx"]))
        bootbox, hpa, nginx = servers
        cpu_before = {s.name: cpu_seconds(s.pid) for s in servers}
        memory = stack.enter_context(PeakMemory(servers))
        out = work / "out"
        rows: list[Row] = []
        for blksize in (512, 1468):
            for clients in (1, 20):
                def tftp(port: int) -> Callable[[], float]:
                    urls = [f"tftp://127.0.0.1:{port}/{FILE_NAME}"] * clients
                    return lambda: parallel_curl(urls, ["--tftp-blksize", str(blksize)], out, size)

                ours = median_of(runs, lambda: _throughput(size, clients, tftp(ports["bb_tftp"])))
                ref = median_of(runs, lambda: _throughput(size, clients, tftp(ports["hpa"])))
                rows.append(Row(f"TFTP blksize {blksize}, {clients} client{'s' * (clients > 1)}", "MB/s",
                                ours, ref, "tftpd-hpa", target=">= 1.0x"))
        cpu_after_tftp = {s.name: cpu_seconds(s.pid) for s in servers}
        hpa_name = "tftpd-hpa" if counts_exited_children(hpa.pid) else "tftpd-hpa, forks uncounted (no cgroup)"
        rows.append(Row("TFTP: server CPU for the rows above", "s", cpu_after_tftp["bootbox"] - cpu_before["bootbox"],
                        cpu_after_tftp["tftpd-hpa"] - cpu_before["tftpd-hpa"], hpa_name, higher_is_better=False))
        http_clients = 8

        def http(url: str) -> Callable[[], float]:
            return lambda: parallel_curl([url] * http_clients, [], out, size)

        ours = median_of(runs, lambda: _throughput(size, http_clients,
                                                   http(f"http://127.0.0.1:{ports['bb_http']}/boot/loaders/{FILE_NAME}")))
        ref = median_of(runs, lambda: _throughput(size, http_clients, http(f"http://127.0.0.1:{ports['nginx']}/{FILE_NAME}")))
        rows.append(Row(f"HTTP, {http_clients} parallel clients", "MB/s", ours, ref, "nginx", target=">= 0.7x"))
        cpu_after_http = {s.name: cpu_seconds(s.pid) for s in servers}
        rows.append(Row("HTTP: server CPU for the row above", "s", cpu_after_http["bootbox"] - cpu_after_tftp["bootbox"],
                        cpu_after_http["nginx"] - cpu_after_tftp["nginx"], "nginx", higher_is_better=False))
        cpu = {s.name: round(cpu_seconds(s.pid) - cpu_before[s.name], 2) for s in servers}
        memory.stop()
        return rows, cpu, {name: round(peak, 1) for name, peak in memory.peaks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=positive_int, default=16)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for tool in ("curl", "in.tftpd", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} is needed: apt-get install curl tftpd-hpa nginx-light")
    rows, cpu, peak = measure(args.size_mib, args.runs)
    print_table(f"boot path, {args.size_mib} MiB file, median of {args.runs} runs (loopback)", rows)
    print("\nCPU seconds over the whole run: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    print("Peak memory (PSS of the process tree): " + ", ".join(f"{k} {v} MiB" for k, v in peak.items()))
    write_json(args.json, "boot_path", rows, {"size_mib": args.size_mib, "runs": args.runs, "cpu_seconds": cpu,
                                              "peak_pss_mib": peak})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
