"""Shared benchmark plumbing: reference servers, parallel curl runs, CPU accounting, tables.

Benchmarks measure bootbox and a reference (tftpd-hpa, nginx, dnsmasq) in the same run on the
same machine and report the ratio, because absolute numbers on a shared 2-core box swing by
±50 % between runs (facts/references.md). CPU seconds per server come from /proc, which is
steadier than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bootbox.testing import free_port  # noqa: F401  (re-exported: the benchmarks take ports from here)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: a whole number of at least 1, or a clear error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (nginx workers, tftpd-hpa's per-transfer children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


_CGROUPS: dict[int, Path] = {}
"""Server PID → the cgroup v2 directory :class:`Server` put it in (see :func:`cpu_seconds`)."""


def _own_cgroup() -> Path | None:
    """This process's cgroup v2 directory (mounted at /sys/fs/cgroup, Debian 12's default, or
    /sys/fs/cgroup/unified on a hybrid host), or None. Servers' groups go under it, so whatever
    ends this benchmark's group (a CI job's timeout) ends them too."""
    try:
        line = next(line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (mount / "cgroup.controllers").exists():
            group = mount / line[3:].lstrip("/")
            return group if (group / "cgroup.procs").exists() else None
    return None


def _enter_cgroup(pid: int, name: str) -> None:
    """Move a just-started server into a cgroup of its own, so :func:`cpu_seconds` counts the
    children it forks later even after they exit without being waited for (tftpd-hpa's
    per-transfer processes: /proc loses their CPU time with them). Without cgroup v2 or the
    right to create one, nothing happens and /proc accounting is used."""
    root = _own_cgroup()
    if root is None:
        return
    for stale in root.glob("bootbox-bench-*"):  # from a run that was killed: empty ones go
        with contextlib.suppress(OSError):
            stale.rmdir()
    group = root / f"bootbox-bench-{name}-{pid}"
    try:
        group.mkdir()
        (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return
    _CGROUPS[pid] = group
    _adopt(pid, group)


def _adopt(pid: int, group: Path) -> None:
    """Move descendants forked before their parent entered ``group`` (nginx's workers can be)."""
    inside = set((group / "cgroup.procs").read_text().split())
    for member in process_tree(pid):
        if str(member) not in inside:
            with contextlib.suppress(OSError):  # it ended meanwhile
                (group / "cgroup.procs").write_text(str(member))


def _leave_cgroup(pid: int) -> None:
    """Remove a stopped server's cgroup; processes still in it go back to the parent group."""
    group = _CGROUPS.pop(pid, None)
    if group is None:
        return
    with contextlib.suppress(OSError):
        for left in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (group.parent / "cgroup.procs").write_text(left)
        group.rmdir()


def counts_exited_children(pid: int) -> bool:
    """True when :func:`cpu_seconds` of this server includes children that ended unwaited for
    (it has a cgroup); else their CPU time is lost with them (tftpd-hpa's transfers)."""
    return pid in _CGROUPS


def cpu_seconds(pid: int) -> float:
    """CPU time of a server: its whole cgroup (every process it ever forked) when
    :class:`Server` gave it one, else the process, its live descendants and the descendants it
    has already reaped."""
    group = _CGROUPS.get(pid)
    if group is not None:
        with contextlib.suppress(OSError, StopIteration, ValueError):
            _adopt(pid, group)
            text = (group / "cpu.stat").read_text()
            return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("usage_usec ")) / 1e6
    total = 0
    for current in process_tree(pid):
        try:
            fields = _stat(current)
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def pss_mib(pid: int) -> float:
    """Memory of a server's whole process tree now: the sum of each process's proportional set
    size (shared pages split between the processes sharing them, so nginx's workers and
    tftpd-hpa's forks are not counted once per process), MiB."""
    total = 0
    for current in process_tree(pid):
        try:
            text = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue  # ended meanwhile
        total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
    return total / 1024


class PeakMemory:
    """The peak of :func:`pss_mib` for each server while the block runs, sampled every 0.25 s
    by a thread (each sample reads /proc, so not more often on a 2-core machine): tftpd-hpa's per-transfer processes are gone by the end of a run, so reading
    VmHWM afterwards would miss them. ``peaks`` maps server names to MiB."""

    def __init__(self, servers: Sequence["Server | Process"], interval: float = 0.25) -> None:
        self._servers = list(servers)
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-peak-memory", daemon=True)
        self.peaks: dict[str, float] = {server.name: 0.0 for server in self._servers}

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End sampling (again: harmless); ``peaks`` then holds the final figures."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while True:
            for server in self._servers:
                self.peaks[server.name] = max(self.peaks[server.name], pss_mib(server.pid))
            if self._done.wait(self._interval):
                return

    def summary(self) -> str:
        return ", ".join(f"{name} {peak:.1f} MiB" for name, peak in self.peaks.items())


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), MiB."""
    return _status_kib(pid, "VmHWM:") / 1024


def rss_mib(pid: int) -> float:
    """The process's resident set now (VmRSS), MiB."""
    return _status_kib(pid, "VmRSS:") / 1024


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (sockets, files, pipes)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 → p99); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Process:
    """A process measured but not started through :class:`Server` (dnsmasq, started by
    ``bootbox.lab.sitedhcp``): a name and a PID for :class:`PeakMemory`."""

    name: str
    pid: int


@dataclass
class Server:
    """A server process started by a benchmark and stopped by it (by PID), in a cgroup of its
    own where the machine allows (:func:`cpu_seconds`)."""

    name: str
    proc: subprocess.Popen[bytes]

    def __post_init__(self) -> None:
        _enter_cgroup(self.proc.pid, self.name)

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
        _leave_cgroup(self.proc.pid)


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


def http_call(url: str, method: str = "GET", body: Any = None, token: str = "", timeout: float = 60) -> tuple[int, bytes]:
    """One HTTP request (a JSON body if given, the API token as a bearer): status and body, an
    HTTP error status included (not raised), so a benchmark can count refusals."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_bootbox(workdir: Path, *, tftp_root: Path, http_port: int, tftp_port: int, extra_toml: str = "") -> Server:
    """``bootbox serve`` as a separate process (so its CPU is measured alone), loopback only."""
    config = (
        f'state_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
        f'[demo]\nenabled = false\n[dhcp]\nenabled = false\n'
        f'[http]\nbind_address = "127.0.0.1"\nport = {http_port}\n'
        f'[tftp]\nbind_address = "127.0.0.1"\nport = {tftp_port}\nroot = "{tftp_root}"\n' + extra_toml
    )
    return launch_bootbox(workdir, config, status_url=f"http://127.0.0.1:{http_port}/api/v1/status")


def launch_bootbox(
    workdir: Path,
    config: str,
    *,
    status_url: str,
    netns: str | None = None,
    log_name: str = "bootbox.log",
    timeout: float = 60.0,
) -> Server:
    """``bootbox serve`` with the TOML ``config``, optionally inside network namespace ``netns``,
    returned once ``status_url`` answers 200; its log goes to ``workdir/log_name``.

    Inside a namespace the readiness probe runs from a thread in that namespace, and the
    process gets a parent-death signal (``bootbox.lab``), so a killed benchmark leaves no
    server behind on a shared machine.
    """
    from bootbox.lab.netns import run_in_netns, spawn_in_netns

    path = workdir / "bootbox.toml"
    path.write_text(config)
    env = {**os.environ, "BOOTBOX_CONFIG": str(path)}
    with (workdir / log_name).open("ab") as log:
        if netns is None:
            proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], env=env, stderr=log)
        else:
            proc = spawn_in_netns(netns, [sys.executable, "-m", "bootbox", "serve"], env=env, stderr=log)
    server = Server("bootbox", proc)

    def up() -> bool:
        if proc.poll() is not None:
            tail = (workdir / log_name).read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"bootbox exited with {proc.returncode}: " + " | ".join(tail))
        return http_ok(status_url) if netns is None else run_in_netns(netns, http_ok, status_url)

    try:
        wait_until(up, timeout=timeout, what="bootbox")
    except BaseException:
        server.stop()
        raise
    return server


def start_tftpd_hpa(root: Path, port: int, *, address: str = "127.0.0.1", netns: str | None = None) -> Server:
    """tftpd-hpa in the foreground (``-L``) on ``address:port``, in ``netns`` if given, as
    references.md §5 runs it: its defaults, no verbose logging."""
    binary = shutil.which("in.tftpd")
    if not binary:
        raise RuntimeError("in.tftpd not found: apt-get install tftpd-hpa")
    argv = [binary, "-L", "-a", f"{address}:{port}", "-s", str(root)]
    if netns is None:
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    else:
        from bootbox.lab.netns import spawn_in_netns

        proc = spawn_in_netns(netns, argv)
    time.sleep(0.3)
    if proc.poll() is not None:
        raise RuntimeError("in.tftpd exited at start")
    return Server("tftpd-hpa", proc)


def start_nginx(workdir: Path, root: Path, port: int, *, address: str = "127.0.0.1", netns: str | None = None,
                locations: str = "") -> Server:  # fmt: skip
    """nginx with sendfile serving ``root`` on ``address:port`` (in ``netns`` if given), as
    references.md §5 configures it; ``locations`` adds ``location`` blocks (e.g. the callback)."""
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
        f"  server {{\n    listen {address}:{port};\n    root {root};\n{locations}  }}\n}}\n"
    )
    argv = [binary, "-e", str(prefix / "logs" / "error.log"), "-p", str(prefix), "-c", str(conf)]
    if netns is None:
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    else:
        from bootbox.lab.netns import spawn_in_netns

        proc = spawn_in_netns(netns, argv)
    server = Server("nginx", proc)
    try:
        if netns is None:
            wait_until(lambda: _tcp_open(port, address), what="nginx")
        else:
            from bootbox.lab.netns import run_in_netns

            wait_until(lambda: run_in_netns(netns, _tcp_open, port, address), what="nginx")
    except BaseException:
        server.stop()
        raise
    return server


def _tcp_open(port: int, address: str = "127.0.0.1") -> bool:
    with socket.create_connection((address, port), timeout=1):
        return True


def parallel_curl(urls: Sequence[str], extra: Sequence[str], outdir: Path, expected_size: int,
                  sources: Sequence[str] = ()) -> float:  # fmt: skip
    """Run one curl per URL at once; return wall seconds; fail unless every file is complete.

    ``sources`` gives each curl its own interface or address (``--interface``), one simulated host
    each; called from a thread inside a namespace (``run_in_netns``), the curls run there."""
    outdir.mkdir(parents=True, exist_ok=True)
    outs = [outdir / f"out{i}" for i in range(len(urls))]
    bind = [["--interface", sources[i % len(sources)]] if sources else [] for i in range(len(urls))]
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", *extra, *b, "-o", str(out), url]) for url, out, b in zip(urls, outs, bind)]
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
    ours_runs: list[float] = field(default_factory=list)
    """Each run's figure for bootbox (``ours`` is their median); empty for a single figure."""
    ref_runs: list[float] = field(default_factory=list)

    @classmethod
    def of_runs(cls, figure: str, unit: str, ours: Sequence[float], reference: Sequence[float], reference_name: str,
                **kwargs: Any) -> "Row":
        """A row whose figures are the medians of per-run values (NaN runs left out), keeping
        the runs so the table can show min–max beside each median."""
        clean_ours = [v for v in ours if not math.isnan(v)]
        clean_ref = [v for v in reference if not math.isnan(v)]
        return cls(figure, unit, statistics.median(clean_ours) if clean_ours else float("nan"),
                   statistics.median(clean_ref) if clean_ref else float("nan"), reference_name,
                   ours_runs=clean_ours, ref_runs=clean_ref, **kwargs)  # fmt: skip

    def spread(self, runs: Sequence[float]) -> str:
        """``min–max`` of the runs when there were several, else empty."""
        return f"{_number(min(runs))}–{_number(max(runs))}" if len(runs) > 1 else ""

    @property
    def ratio(self) -> float:
        """ours / reference; NaN when there is no reference figure (or neither side has one)."""
        if math.isnan(self.reference) or math.isnan(self.ours):
            return float("nan")
        if self.reference == 0:
            return float("nan") if self.ours == 0 else float("inf")
        return self.ours / self.reference

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a missing figure (NaN) becomes null, as strict JSON has no NaN."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) or math.isinf(value) else value

        return {"figure": self.figure, "unit": self.unit, "bootbox": clean(self.ours), "reference": clean(self.reference),
                "reference_name": self.reference_name, "ratio": clean(self.ratio), "target": self.target,
                **({"bootbox_runs": self.ours_runs, "reference_runs": self.ref_runs} if self.ours_runs else {}),
                **self.extra}  # fmt: skip


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Figure, bootbox, reference, ratio, target; medians with the runs' min–max in brackets."""
    print(f"\n{title}")
    header = f"{'figure':<44} {'bootbox':>22} {'reference':>34} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        ours = _number(row.ours) + (f" ({row.spread(row.ours_runs)})" if row.spread(row.ours_runs) else "")
        ref = "-" if math.isnan(row.reference) else (
            f"{_number(row.reference)}" + (f" ({row.spread(row.ref_runs)})" if row.spread(row.ref_runs) else "")
            + f" {row.reference_name}")  # fmt: skip
        ratio = "     -" if math.isnan(row.ratio) else f"{row.ratio:>6.2f}x"
        print(f"{row.figure + ' (' + row.unit + ')':<44} {ours:>22} {ref:>34} {ratio}  {row.target}")


def _number(value: float) -> str:
    """Enough digits for sub-millisecond latencies and megabyte rates alike."""
    if math.isnan(value):
        return "-"
    if value != 0 and abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"


@dataclass
class Table:
    """One benchmark's result: what ``python -m bench`` prints as one table and writes as one
    JSON file (``<name>.json``)."""

    name: str
    title: str
    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def show(self) -> None:
        print_table(self.title, self.rows)
        for note in self.notes:
            print(f"  {note}")

    def write(self, directory: Path | None) -> None:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / f"{self.name}.json", self.name, self.rows, {**self.meta, "notes": self.notes})


def write_json(path: Path | None, name: str, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    if path is None:
        return
    path.write_text(json.dumps({"benchmark": name, "meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2))


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
