"""A full boot storm through a stock nginx cache: the appliance sends each image once.

    python -m bench.cache_storm [--hosts 200] [--runs 1] [--kernel-mib 8] [--initrd-mib 16] [--quick]

The LAN and the simulated hosts are the full boot storm's (bench.full_boot_storm, bench.lan):
every host does DHCP, TFTP, its scripts, its kernel and initrd over HTTP and its report-in on
the wire. Here all hosts are in one group whose ``cache_urls`` names an nginx in the ``ref``
namespace (198.18.0.4:8081) running the shipped ``appliance/nginx-cache.conf`` unchanged but
for its three marked values; their scripts send the kernel and initrd fetches there, and nginx
fetches each 1 MiB slice from bootbox once. The same storm without the group (every host
fetching from bootbox) is the comparison. What is measured is bootbox's own counters
(``/metrics``): ``bootbox_http_response_bytes_total{route="boot"}`` and
``bootbox_http_blob_bytes_total`` (the content-addressed files it sent), before and after each
storm, plus nginx's log (HIT/MISS per request) and each boot's time.

Needs root, iproute2, setpriv, nginx (nginx-light: with the slice module) and Debian's iPXE
loaders, like the full boot storm.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Row, Server, Table, launch_bootbox, percentile, positive_int, wait_until
from bench.full_boot_storm import HTTP_PORT, NOT_BOOTED, BootLab, BootOutcome, _Api, requirements as storm_requirements
from bench.full_boot_storm import run_storm
from bench.lan import Lan

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "appliance" / "nginx-cache.conf"
CACHE_PORT = 8081
GROUP = "storm"

# The three marked values of the shipped file, and its log path: what a test or a bench changes.
_CACHE_PATH = "proxy_cache_path /var/cache/nginx/bootbox "
_UPSTREAM = "    server 198.18.0.1:8080;"
_LISTEN = "    listen 8081;"
_LOG = "access_log /var/log/nginx/bootbox-cache.log bootbox_cache;"


def cache_config(upstream: str, listen: str, cache_dir: Path, log: Path) -> str:
    """``appliance/nginx-cache.conf`` with its marked values set: ``upstream`` (host:port of
    bootbox), ``listen`` (address:port), the cache directory and the access log. Fails if the
    shipped file no longer has them, so what is tested is what is shipped."""
    text = SHIPPED.read_text()
    for marker in (_CACHE_PATH, _UPSTREAM, _LISTEN, _LOG):
        if text.count(marker) != 1:
            raise RuntimeError(f"{SHIPPED} changed: {marker.strip()!r} is not there once")
    return (text.replace(_CACHE_PATH, f"proxy_cache_path {cache_dir} ")
            .replace(_UPSTREAM, f"    server {upstream};")
            .replace(_LISTEN, f"    listen {listen};")
            .replace(_LOG, f"access_log {log} bootbox_cache;"))


def start_cache(workdir: Path, upstream: str, address: str, port: int, *, netns: str | None = None) -> Server:
    """nginx in the foreground with the shipped cache configuration in front of ``upstream``,
    on ``address:port`` (in ``netns`` if given); its access log is ``workdir/cache.log``."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx not found: apt-get install nginx-light")
    prefix = workdir / "nginx-cache"
    for sub in ("logs", "cache", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "bootbox-cache.conf").write_text(
        cache_config(upstream, f"{address}:{port}", prefix / "cache", workdir / "cache.log"))
    conf = prefix / "nginx.conf"
    conf.write_text(  # the main context a distribution's nginx.conf gives; workers as root write the test's dirs
        "daemon off;\nuser root;\nworker_processes 1;\npid nginx.pid;\nerror_log logs/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  sendfile on;\n  default_type application/octet-stream;\n  proxy_temp_path {prefix / 'temp'};\n"
        f"  client_body_temp_path {prefix / 'temp'};\n  include {prefix / 'bootbox-cache.conf'};\n}}\n")
    argv = [binary, "-e", str(prefix / "logs" / "error.log"), "-p", str(prefix), "-c", str(conf)]
    if netns is None:
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    else:
        from bootbox.lab.netns import spawn_in_netns

        proc = spawn_in_netns(netns, argv)
    server = Server("nginx-cache", proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("nginx exited: " + (prefix / "logs" / "error.log").read_text(errors="replace")[-500:])
        url = f"http://{address}:{port}/boot/esxi/health-not-cached"  # the catch-all's 404 proves it listens
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 404
        return False

    try:
        if netns is None:
            wait_until(up, what="nginx cache")
        else:
            from bootbox.lab.netns import run_in_netns

            wait_until(lambda: run_in_netns(netns, up), what="nginx cache")
    except BaseException:
        server.stop()
        raise
    return server


def cache_statuses(log: Path) -> dict[str, int]:
    """HIT/MISS/... counts over the cache's access log (the last field of each line)."""
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        status = line.rsplit(" ", 1)[-1]
        counts[status] = counts.get(status, 0) + 1
    return counts


_METRIC = re.compile(r'^(bootbox_http_response_bytes_total\{route="boot"\}|bootbox_http_blob_bytes_total) (\S+)$', re.M)


def appliance_bytes(metrics_text: str) -> tuple[int, int]:
    """(bytes of every /boot/ response, bytes of content-addressed blobs) from ``/metrics``."""
    found = {name: int(float(value)) for name, value in _METRIC.findall(metrics_text)}
    return found.get('bootbox_http_response_bytes_total{route="boot"}', 0), found.get("bootbox_http_blob_bytes_total", 0)


@dataclass
class CacheRun:
    through_cache: bool
    outcomes: list[BootOutcome]
    boot_bytes: int
    blob_bytes: int
    statuses: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    rebooted: list[BootOutcome] = field(default_factory=list)
    """The second wave: every host boots again (a warm cache)."""
    rebooted_blob_bytes: int = 0
    rebooted_boot_bytes: int = 0

    @property
    def failures(self) -> int:
        return len({o.mac for o in self.outcomes + self.rebooted if o.error} | set(self.problems))

    def times(self, rebooted: bool = False) -> list[float]:
        return [o.seconds for o in (self.rebooted if rebooted else self.outcomes) if not o.error]

    @property
    def total_seconds(self) -> float:
        if self.failures or not self.outcomes:
            return float("nan")
        return max(o.finished for o in self.outcomes) - min(o.started for o in self.outcomes)


class CacheLab(BootLab):
    """The full storm's LAN, files and hosts; bootbox with all hosts in one cached group or none."""

    def run(self, through_cache: bool) -> CacheRun:
        self._runs += 1
        work = self.workdir / f"cache-{self._runs}"
        work.mkdir()
        ip, cache_ip = self.server.ip, self.ref.ip
        config = (
            f'state_dir = "{work / "state"}"\nlog_level = "warning"\n[demo]\nenabled = false\n'
            f'[dhcp]\nenabled = true\ninterface = "{self.server.ifname}"\n'
            f'[tftp]\nbind_address = "{ip}"\nroot = "{self.tftp_root}"\n'
            f'[http]\nbind_address = "{ip}"\nport = {HTTP_PORT}\n'
            f'[groups.{GROUP}]\ncache_urls = ["http://{cache_ip}:{CACHE_PORT}"]\n'
        )
        servers: list[Server] = [launch_bootbox(work, config, netns=self.server.netns,
                                                status_url=f"http://{ip}:{HTTP_PORT}/api/v1/status")]
        try:
            api = _Api(self.segment, self.server, f"http://{ip}:{HTTP_PORT}/api/v1",
                       (work / "state" / "api-token").read_text().strip())
            items = {"image": "storm", **({"group": GROUP} if through_cache else {})}
            api.calls([("POST", "/profiles", {"name": "storm", "kind": "linux", "spec": {
                "kernel": str(self.files / "vmlinuz"), "initrd": [str(self.files / "initrd.img")],
                "cmdline": "console=ttyS0 bootbox.mac={mac} bootbox.callback={callback}"}}),
                ("POST", "/rules", {"name": "everyone", "all_hosts": True, "items": items})])
            if through_cache:
                servers.append(start_cache(work, f"{ip}:{HTTP_PORT}", cache_ip, CACHE_PORT, netns=self.ref.netns))
            metrics = f"http://{ip}:{HTTP_PORT}/metrics"
            before = appliance_bytes(self.segment.call(self.server, _get_text, metrics))
            self.lan.forget_neighbours()
            outcomes = run_storm(self.lan, self.hosts, ip, self.loaders, salt=self._runs * 2 + int(through_cache),
                                 stagger=self.stagger)
            after = appliance_bytes(self.segment.call(self.server, _get_text, metrics))
            self.lan.forget_neighbours()
            rebooted = run_storm(self.lan, self.hosts, ip, self.loaders, salt=self._runs * 2 + int(through_cache) + 64,
                                 stagger=self.stagger)
            again = appliance_bytes(self.segment.call(self.server, _get_text, metrics))
            run = CacheRun(through_cache, outcomes, after[0] - before[0], after[1] - before[1],
                           cache_statuses(work / "cache.log"), rebooted=rebooted,
                           rebooted_blob_bytes=again[1] - after[1], rebooted_boot_bytes=again[0] - after[0])
            want = f"http://{cache_ip}:{CACHE_PORT}/boot/blobs/" if through_cache else f"http://{ip}:{HTTP_PORT}/boot/hosts/"
            hosts = {h["mac"]: h for h in api.call("GET", "/hosts")}
            for outcome in outcomes + rebooted:
                host = hosts.get(outcome.mac, {})
                if not outcome.error and not outcome.kernel_url.startswith(want):
                    run.problems[outcome.mac] = f"kernel from {outcome.kernel_url}, not {want}…"
                elif host.get("state") in NOT_BOOTED or host.get("profile") != "storm":
                    run.problems[outcome.mac] = f"state {host.get('state')}, profile {host.get('profile')}"
            return run
        finally:
            for server in reversed(servers):
                server.stop()


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def measure(hosts: int, runs: int, kernel_mib: float, initrd_mib: float, *, stagger: float = 0.0) -> list[Table]:
    cached: list[CacheRun] = []
    direct: list[CacheRun] = []
    with tempfile.TemporaryDirectory(prefix="bootbox-cachestorm-") as tmp, Lan(hosts) as lan:
        lab = CacheLab(lan, Path(tmp), kernel_mib, initrd_mib, stagger=stagger)
        image = lab.bytes_per_boot
        for n in range(runs):
            for through in ((True, False) if n % 2 == 0 else (False, True)):
                (cached if through else direct).append(lab.run(through))
    mib = 2**20

    def row(figure: str, unit: str, get: Callable[[CacheRun], float], higher: bool = False, target: str = "") -> Row:
        return Row.of_runs(figure, unit, [get(r) for r in cached], [get(r) for r in direct], "no cache",
                           higher_is_better=higher, target=target)

    rows = [
        row("appliance: image bytes sent", "MiB", lambda r: (r.blob_bytes if r.through_cache else r.boot_bytes) / mib,
            target=f"one copy: {image / mib:.0f} MiB"),
        row("appliance: image copies sent", "copies",
            lambda r: (r.blob_bytes if r.through_cache else r.boot_bytes) / image, target="1 through the cache"),
        row("appliance: all /boot/ bytes", "MiB", lambda r: r.boot_bytes / mib),
        row("boot p50", "s", lambda r: percentile(r.times(), 0.5) if r.times() else float("nan")),
        row("boot p99", "s", lambda r: percentile(r.times(), 0.99) if r.times() else float("nan")),
        row("storm total", "s", lambda r: r.total_seconds),
        row("reboot wave: image bytes sent", "MiB",
            lambda r: (r.rebooted_blob_bytes if r.through_cache else r.rebooted_boot_bytes) / mib, target="0 (all HITs)"),
        row("reboot wave: boot p50", "s", lambda r: percentile(r.times(True), 0.5) if r.times(True) else float("nan")),
        row("reboot wave: boot p99", "s", lambda r: percentile(r.times(True), 0.99) if r.times(True) else float("nan")),
        row("failed boots", "hosts", lambda r: float(r.failures), target="0"),
    ]
    errors = [f"{'cache' if r.through_cache else 'direct'}: {o.mac}: {o.error}" for r in cached + direct
              for o in r.outcomes if o.error]
    errors += [f"{'cache' if r.through_cache else 'direct'}: {mac}: {p}" for r in cached + direct
               for mac, p in r.problems.items()]
    notes = [
        f"each host: PXE DHCP, a loader over TFTP, iPXE DHCP, 2 scripts from bootbox, {image / mib:.0f} MiB of "
        "kernel + initrd over HTTP (through nginx, or from bootbox), a report-in to bootbox",
        "bytes are bootbox's own /metrics counters; 'image bytes' is bootbox_http_blob_bytes_total through the "
        "cache, and every /boot/ byte (scripts included) without it",
        "then every host boots again (the reboot wave): the cache is warm; in the first wave hosts that ask "
        "while a slice is on its way wait for it (nginx's proxy_cache_lock looks again every 0.5 s)",
        "nginx log (cache runs): " + ", ".join(f"{k} {v}" for r in cached for k, v in sorted(r.statuses.items())),
        *errors[:10],
    ]
    return [Table("cache_storm", f"Boot storm through an nginx cache: {hosts} hosts, "
                  + (f"{stagger:g} s apart" if stagger else "within 1 s") + f", median of {runs} run(s)", rows,
                  meta={"hosts": hosts, "runs": runs, "kernel_mib": kernel_mib, "initrd_mib": initrd_mib,
                        "image_bytes": image, "errors": errors,
                        "bootbox_failures": sum(r.failures for r in cached + direct),
                        "cache_runs": [{"boot_bytes": r.boot_bytes, "blob_bytes": r.blob_bytes,
                                        "statuses": r.statuses} for r in cached]},
                  notes=notes)]


def requirements() -> str | None:
    return storm_requirements()


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """200 hosts, 24 MiB each; ``--quick``: 6 hosts, 3 MiB, 0.2 s apart."""
    if quick:
        return measure(6, runs or 1, 1, 2, stagger=0.2)
    return measure(200, runs or 1, 8, 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=positive_int, default=200)
    parser.add_argument("--runs", type=positive_int, default=1)
    parser.add_argument("--kernel-mib", type=float, default=8)
    parser.add_argument("--initrd-mib", type=float, default=16)
    parser.add_argument("--quick", action="store_true", help="6 hosts, 1 run, small files")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if problem := requirements():
        parser.error(problem)
    result = tables(quick=True) if args.quick else measure(args.hosts, args.runs, args.kernel_mib, args.initrd_mib)
    for table in result:
        table.show()
        table.write(args.json)
    return 1 if any(t.meta["bootbox_failures"] for t in result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
