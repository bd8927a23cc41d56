"""Boot-path throughput: bootbox's TFTP vs tftpd-hpa and its HTTP vs nginx, across a bridge.

    python -m bench.boot_path [--size-mib 16] [--runs 3] [--json out.json]

The servers run in their own namespaces on a Linux bridge (``bench.lan``: bootbox at
198.18.0.1, tftpd-hpa and nginx at 198.18.0.4) and the clients are curl, run in a client
namespace on the same bridge, each curl from its own host address (``--interface``), so every
packet crosses veth pairs and the bridge as on a LAN. TFTP: one file fetched at blksize 512 and
1468, by 1 client and by 20 at once. HTTP: the same file fetched by 8 clients at once from
bootbox's loader route (``send_file``, the same code path as kernels and initrds) and from nginx
with sendfile. bootbox logs at ``info`` as the appliance does; tftpd-hpa and nginx at their
defaults (no verbose flags; nginx's access log off). Each figure is the median of ``--runs``
runs (bootbox and the reference alternating) with min–max, in MB/s (10^6 bytes), with the CPU
seconds each server spent and the peak memory of each server's process tree
(:class:`bench.common.PeakMemory`). Targets (issue 15): 20 clients at least 0.9x tftpd-hpa at
both block sizes, at least 0.7x nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path
from collections.abc import Callable

from bench.common import (
    PeakMemory,
    Row,
    Server,
    counts_exited_children,
    cpu_seconds,
    launch_bootbox,
    parallel_curl,
    positive_int,
    print_table,
    scratch_dir,
    start_nginx,
    start_tftpd_hpa,
    write_json,
)
from bench.lan import Lan

FILE_NAME = "payload.bin"
HTTP_PORT = 8080
TFTP_CLIENTS, HTTP_CLIENTS = 20, 8


def _throughput(size: int, clients: int, seconds: float) -> float:
    return size * clients / seconds / 1e6


def measure(size_mib: int, runs: int) -> tuple[list[Row], dict[str, float], dict[str, float]]:
    """Every figure ``runs`` times, bootbox and its reference alternating, across the bridge."""
    size = size_mib * 2**20
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(scratch_dir("bootbox-bench-"))
        root = work / "root"
        root.mkdir()
        (root / FILE_NAME).write_bytes(os.urandom(size))
        for path in (work, root, root / FILE_NAME):  # nginx's workers and tftpd-hpa run unprivileged
            path.chmod(0o755)
        lan = stack.enter_context(Lan(TFTP_CLIENTS))
        client = lan.clients[0]
        sources = [host.ifname for host in lan.hosts]  # curl --interface: its address, its MAC
        servers: list[Server] = []
        stack.callback(lambda: [s.stop() for s in reversed(servers)])
        bb_ip, ref_ip = lan.server.ip, lan.ref.ip
        (work / "bootbox").mkdir()
        servers.append(launch_bootbox(work / "bootbox", bootbox_config(work / "bootbox", bb_ip, root), netns=lan.server.netns,
                                      status_url=f"http://{bb_ip}:{HTTP_PORT}/api/v1/status"))  # fmt: skip
        servers.append(start_tftpd_hpa(root, 69, address=ref_ip, netns=lan.ref.netns))
        servers.append(start_nginx(work, root, HTTP_PORT, address=ref_ip, netns=lan.ref.netns))
        bootbox, hpa, nginx = servers
        cpu_before = {s.name: cpu_seconds(s.pid) for s in servers}
        memory = stack.enter_context(PeakMemory(servers))
        out = work / "out"

        def timed(urls: list[str], extra: list[str], clients: int) -> float:
            seconds = lan.segment.call(client, parallel_curl, urls, extra, out, size, sources[:clients])
            return _throughput(size, clients, seconds)

        def alternate(ours: Callable[[], float], ref: Callable[[], float]) -> tuple[list[float], list[float]]:
            mine: list[float] = []
            theirs: list[float] = []
            for run in range(runs):
                for which in ((ours, mine), (ref, theirs)) if run % 2 == 0 else ((ref, theirs), (ours, mine)):
                    which[1].append(which[0]())
            return mine, theirs

        rows: list[Row] = []
        for blksize in (512, 1468):
            for clients in (1, TFTP_CLIENTS):
                extra = ["--tftp-blksize", str(blksize)]
                mine, theirs = alternate(
                    lambda: timed([f"tftp://{bb_ip}/{FILE_NAME}"] * clients, extra, clients),
                    lambda: timed([f"tftp://{ref_ip}/{FILE_NAME}"] * clients, extra, clients))  # fmt: skip
                target = ">= 0.9x" if clients > 1 else ">= 1.0x"
                rows.append(Row.of_runs(f"TFTP blksize {blksize}, {clients} client{'s' * (clients > 1)}", "MB/s",
                                        mine, theirs, "tftpd-hpa", target=target))  # fmt: skip
        cpu_after_tftp = {s.name: cpu_seconds(s.pid) for s in servers}
        hpa_name = "tftpd-hpa" if counts_exited_children(hpa.pid) else "tftpd-hpa, forks uncounted (no cgroup)"
        rows.append(Row("TFTP: server CPU for the rows above", "s", cpu_after_tftp["bootbox"] - cpu_before["bootbox"],
                        cpu_after_tftp["tftpd-hpa"] - cpu_before["tftpd-hpa"], hpa_name, higher_is_better=False))
        mine, theirs = alternate(
            lambda: timed([f"http://{bb_ip}:{HTTP_PORT}/boot/loaders/{FILE_NAME}"] * HTTP_CLIENTS, [], HTTP_CLIENTS),
            lambda: timed([f"http://{ref_ip}:{HTTP_PORT}/{FILE_NAME}"] * HTTP_CLIENTS, [], HTTP_CLIENTS))  # fmt: skip
        rows.append(Row.of_runs(f"HTTP, {HTTP_CLIENTS} parallel clients", "MB/s", mine, theirs, "nginx", target=">= 0.7x"))
        cpu_after_http = {s.name: cpu_seconds(s.pid) for s in servers}
        rows.append(Row("HTTP: server CPU for the row above", "s", cpu_after_http["bootbox"] - cpu_after_tftp["bootbox"],
                        cpu_after_http["nginx"] - cpu_after_tftp["nginx"], "nginx", higher_is_better=False))
        cpu = {s.name: round(cpu_seconds(s.pid) - cpu_before[s.name], 2) for s in servers}
        memory.stop()
        return rows, cpu, {name: round(peak, 1) for name, peak in memory.peaks.items()}


def bootbox_config(work: Path, ip: str, root: Path) -> str:
    """bootbox serving TFTP and HTTP on the segment, at the appliance's log level (info)."""
    return (
        f'state_dir = "{work / "state"}"\nlog_level = "info"\n[demo]\nenabled = false\n[dhcp]\nenabled = false\n'
        f'[http]\nbind_address = "{ip}"\nport = {HTTP_PORT}\n'
        f'[tftp]\nbind_address = "{ip}"\nroot = "{root}"\n'
    )


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
    print_table(f"boot path, {args.size_mib} MiB file, median of {args.runs} runs (bridge, curl)", rows)
    print("\nCPU seconds over the whole run: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    print("Peak memory (PSS of the process tree): " + ", ".join(f"{k} {v} MiB" for k, v in peak.items()))
    write_json(args.json, "boot_path", rows, {"size_mib": args.size_mib, "runs": args.runs, "cpu_seconds": cpu,
                                              "peak_pss_mib": peak})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
