"""Shared benchmark plumbing: reference servers, parallel curl runs, CPU accounting, tables.

Benchmarks measure bootbox and a reference (tftpd-hpa, nginx, dnsmasq) in the same run on the
same machine and report the ratio, because absolute numbers on a shared 2-core box swing by
±50 % between runs (facts/references.md). CPU seconds per server come from /proc, which is
steadier than wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 a moment ago."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU time of a server: the process, its live descendants (nginx workers, tftpd-hpa's
    per-transfer children) and the descendants it has already reaped."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat(current)
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        todo.extend(children.get(current, []))
    return total / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    """A server process started by a benchmark and stopped by it (by PID)."""

    name: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def start_bootbox(workdir: Path, *, tftp_root: Path, http_port: int, tftp_port: int, extra_toml: str = "") -> Server:
    """``bootbox serve`` as a separate process (so its CPU is measured alone), loopback only."""
    config = workdir / "bootbox.toml"
    config.write_text(
        f'state_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
        f'[demo]\nenabled = false\n[dhcp]\nenabled = false\n'
        f'[http]\nbind_address = "127.0.0.1"\nport = {http_port}\n'
        f'[tftp]\nbind_address = "127.0.0.1"\nport = {tftp_port}\nroot = "{tftp_root}"\n' + extra_toml
    )
    env = {**os.environ, "BOOTBOX_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], env=env, stderr=subprocess.DEVNULL)
    server = Server("bootbox", proc)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/api/v1/status"), what="bootbox")
    except BaseException:
        server.stop()
        raise
    return server


def start_tftpd_hpa(root: Path, port: int) -> Server:
    binary = shutil.which("in.tftpd")
    if not binary:
        raise RuntimeError("in.tftpd not found: apt-get install tftpd-hpa")
    proc = subprocess.Popen([binary, "-L", "-a", f"127.0.0.1:{port}", "-s", str(root)], stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    if proc.poll() is not None:
        raise RuntimeError("in.tftpd exited at start")
    return Server("tftpd-hpa", proc)


def start_nginx(workdir: Path, root: Path, port: int) -> Server:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx not found: apt-get install nginx-light")
    prefix = workdir / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        "daemon off;\nworker_processes 1;\npid nginx.pid;\nerror_log logs/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n  sendfile on;\n  default_type application/octet-stream;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n"
    )
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.DEVNULL)
    server = Server("nginx", proc)
    try:
        wait_until(lambda: _tcp_open(port), what="nginx")
    except BaseException:
        server.stop()
        raise
    return server


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def parallel_curl(urls: Sequence[str], extra: Sequence[str], outdir: Path, expected_size: int) -> float:
    """Run one curl per URL at once; return wall seconds; fail unless every file is complete."""
    outdir.mkdir(parents=True, exist_ok=True)
    outs = [outdir / f"out{i}" for i in range(len(urls))]
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", *extra, "-o", str(out), url]) for url, out in zip(urls, outs)]
    codes = [p.wait(timeout=600) for p in procs]
    elapsed = time.perf_counter() - start
    for code, out in zip(codes, outs):
        if code != 0 or out.stat().st_size != expected_size:
            raise RuntimeError(f"a transfer failed (curl exit {code}, {out.stat().st_size if out.exists() else 0} bytes)")
        out.unlink()
    return elapsed


@dataclass
class Row:
    """One line of a benchmark table: a figure for bootbox, the reference, and their ratio."""

    figure: str
    unit: str
    ours: float
    reference: float
    reference_name: str
    higher_is_better: bool = True
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.reference == 0:
            return float("inf")
        return self.ours / self.reference

    def to_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "unit": self.unit, "bootbox": self.ours, "reference": self.reference,
                "reference_name": self.reference_name, "ratio": self.ratio, "target": self.target, **self.extra}


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    header = f"{'figure':<38} {'bootbox':>10} {'reference':>18} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        ref = f"{row.reference:.1f} {row.reference_name}"
        print(f"{row.figure + ' (' + row.unit + ')':<38} {row.ours:>10.1f} {ref:>18} {row.ratio:>6.2f}x  {row.target}")


def write_json(path: Path | None, name: str, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    if path is None:
        return
    path.write_text(json.dumps({"benchmark": name, "meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2))


def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
