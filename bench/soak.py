"""Soak: thousands of simulated boots against one bootbox; file descriptors, threads and memory
must stay flat.

    python -m bench.soak [--boots 10000] [--hosts 40] [--workers 6] [--quick] [--json DIR]

A boot appliance runs for months. Any per-boot leak (a socket, a thread, a timer, an event kept
forever) shows up as growth over thousands of boots, so this boots a small fleet over and over,
over loopback, through every server: proxyDHCP (DISCOVER → OFFER, REQUEST → ACK on the boot
port), TFTP (the loader, EDK2-style with windowsize 4 for UEFI hosts), HTTP (entry script,
per-host script, kernel, initrd) and the report-in. ``--workers`` boots run at once, and each
host reboots at most every ``REBOOT_INTERVAL`` seconds: three DHCP packets a boot then stay
under bootbox's per-MAC rate limit (2 per second), as a real machine's boots do.

bootbox's open descriptors, threads and resident memory are sampled every ``boots / 20`` boots.
Memory legitimately grows until the event journal's in-memory rings are full (1,000 events per
host, 10,000 overall), so growth is measured from the end of a warm-up (the first half; the
default fleet fills its rings after about 45 % of the boots) to the end. :func:`soak` returns the samples; ``tests/test_bench_smoke.py`` runs a short soak and
asserts the growth stays within generous bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import queue
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    positive_int,
    Row,
    Server,
    Table,
    cpu_seconds,
    free_port,
    launch_bootbox,
    open_fds,
    percentile,
    rss_mib,
    scratch_dir,
    thread_count,
)
from bench.pxeclient import (
    BootFailure,
    PxeClient,
    Reply,
    callback_url,
    discover,
    http_getter,
    ipxe_settings,
    offer_boot_file,
    open_reply_socket,
    post,
    recv_timestamped,
    request_4011,
    tftp_fetch,
    tftp_probe_tsize,
    walk_ipxe,
)
from bootbox.net.dhcp.packet import MessageType

WARM_UP = 0.5
REBOOT_INTERVAL = 1.6
LOADER_BYTES = 64 * 1024
KERNEL_BYTES, INITRD_BYTES = 96 * 1024, 160 * 1024


@dataclass(frozen=True)
class Sample:
    """bootbox's resources after ``boots`` boots."""

    boots: int
    fds: int
    threads: int
    rss_mib: float


@dataclass
class SoakResult:
    boots: int
    failures: list[str]
    seconds: float
    boot_seconds: list[float]
    samples: list[Sample]
    cpu_seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def warm(self) -> Sample:
        """The first sample after the warm-up."""
        return next(s for s in self.samples if s.boots >= WARM_UP * self.boots)

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    def growth(self) -> dict[str, float]:
        """End minus the *highest* of the warm-up sample and anything before the end: a flat
        line may wobble, a leak keeps climbing to the last sample."""
        after = [s for s in self.samples if s.boots >= self.warm.boots]
        return {
            "fds": self.end.fds - min(s.fds for s in after),
            "threads": self.end.threads - min(s.threads for s in after),
            "rss_mib": self.end.rss_mib - min(s.rss_mib for s in after),
        }


class DhcpMux:
    """One udp socket for the whole fleet (over loopback every OFFER goes to bootbox's
    configured client port), with replies handed to whichever worker waits for that xid."""

    def __init__(self, port: int) -> None:
        self.sock = open_reply_socket(port, address="127.0.0.1", rcvbuf=4 * 2**20)
        self._waiting: dict[int, queue.SimpleQueue[Reply]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-dhcp-mux", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            reply = recv_timestamped(self.sock, 0.2)
            if reply is None:
                continue
            with self._lock:
                box = self._waiting.get(reply.packet.xid)
            if box is not None:
                box.put(reply)

    def exchange(self, data: bytes, port: int, xid: int, kind: int, timeout: float = 3.0) -> Reply:
        box: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        with self._lock:
            self._waiting[xid] = box
        try:
            for _ in range(3):
                self.sock.sendto(data, ("127.0.0.1", port))
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        reply = box.get(timeout=left)
                    except queue.Empty:
                        break
                    if reply.kind == kind:
                        return reply
            raise BootFailure(f"no DHCP answer (type {kind}) to xid {xid:#x}")
        finally:
            with self._lock:
                del self._waiting[xid]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def boot_once(client: PxeClient, ports: dict[str, int], mux: DhcpMux, xid: int, loaders: dict[str, bytes]) -> None:
    """One whole boot over loopback; raises BootFailure (or OSError) on any fault."""
    offer = mux.exchange(discover(client, xid, broadcast=False, ciaddr="127.0.0.1"), ports["dhcp"], xid,
                         MessageType.OFFER)  # fmt: skip
    ack = mux.exchange(request_4011(client, xid + 1, "127.0.0.1"), ports["boot"], xid + 1, MessageType.ACK)
    loader = offer_boot_file(ack.packet) or offer_boot_file(offer.packet)
    if loader not in loaders:
        raise BootFailure(f"told to load {loader!r}")
    tftp = ("127.0.0.1", ports["tftp"])
    if client.firmware == "uefi":
        tftp_probe_tsize(tftp, loader, bind="127.0.0.1")
        data = tftp_fetch(tftp, loader, blksize=1468, windowsize=4, bind="127.0.0.1").data
    else:
        data = tftp_fetch(tftp, loader, blksize=1432, bind="127.0.0.1").data
    if data != loaders[loader]:
        raise BootFailure(f"TFTP {loader}: wrong bytes")
    script = offer_boot_file(mux.exchange(discover(client, xid + 2, ipxe=True, broadcast=False, ciaddr="127.0.0.1"),
                                          ports["dhcp"], xid + 2, MessageType.OFFER).packet)  # fmt: skip
    trace = walk_ipxe(script, ipxe_settings(client, "127.0.0.1"), http_getter())
    if trace.bytes < KERNEL_BYTES + INITRD_BYTES:
        raise BootFailure(f"only {trace.bytes} bytes fetched over HTTP")
    callback = callback_url(trace.kernel_args)
    if callback is None or post(callback, {"ip": "127.0.0.1", "boot_id": f"soak-{xid}"}) != 200:
        raise BootFailure("report-in failed")


def _api(base: str, token: str, path: str, body: object) -> None:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def soak(boots: int, hosts: int, workers: int) -> SoakResult:
    """Run the soak and return what was measured (the server is always stopped)."""
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(scratch_dir("bootbox-soak-"))
        root, files = work / "tftp", work / "files"
        root.mkdir()
        files.mkdir()
        loaders = {name: os.urandom(LOADER_BYTES) for name in ("undionly.kpxe", "snponly.efi")}
        for name, data in loaders.items():
            (root / name).write_bytes(data)
        (files / "vmlinuz").write_bytes(os.urandom(KERNEL_BYTES))
        (files / "initrd.img").write_bytes(os.urandom(INITRD_BYTES))
        ports = {"http": free_port(), "tftp": free_port(), "dhcp": free_port(), "boot": free_port(),
                 "client": free_port()}  # fmt: skip
        config = (
            f'state_dir = "{work / "state"}"\nlog_level = "warning"\n[demo]\nenabled = false\n'
            f'[dhcp]\nenabled = true\nbind_address = "127.0.0.1"\nport = {ports["dhcp"]}\n'
            f'boot_server_port = {ports["boot"]}\nclient_port = {ports["client"]}\n'
            f'[tftp]\nbind_address = "127.0.0.1"\nport = {ports["tftp"]}\nroot = "{root}"\n'
            f'[http]\nbind_address = "127.0.0.1"\nport = {ports["http"]}\n'
        )
        base = f"http://127.0.0.1:{ports['http']}/api/v1"
        server: Server = launch_bootbox(work, config, status_url=base + "/status")
        stack.callback(server.stop)
        token = (work / "state" / "api-token").read_text().strip()
        _api(base, token, "/profiles", {"name": "soak", "kind": "linux", "spec": {
            "kernel": str(files / "vmlinuz"), "initrd": [str(files / "initrd.img")],
            "cmdline": "bootbox.callback={callback}"}})  # fmt: skip
        _api(base, token, "/rules", {"name": "everyone", "all_hosts": True, "items": {"image": "soak"}})
        mux = DhcpMux(ports["client"])
        stack.callback(mux.close)

        fleet = [PxeClient.numbered(0x5000 + n) for n in range(hosts)]
        every = max(1, boots // 20)
        lock = threading.Lock()
        counter = iter(range(boots))
        failures: list[str] = []
        durations: list[float] = []
        samples = [Sample(0, open_fds(server.pid), thread_count(server.pid), rss_mib(server.pid))]
        cpu = cpu_seconds(server.pid)

        ready = [(0.0, i) for i in range(hosts)]  # (earliest next boot, host): the idlest host goes next

        def worker(w: int) -> None:
            while True:
                with lock:
                    n = next(counter, None)
                    if n is None:
                        return
                    not_before, index = heapq.heappop(ready)
                client = fleet[index]
                time.sleep(max(0.0, not_before - time.perf_counter()))
                start = time.perf_counter()
                with lock:
                    heapq.heappush(ready, (start + REBOOT_INTERVAL, index))
                try:
                    boot_once(client, ports, mux, (n + 1) * 4, loaders)
                except Exception as exc:  # one failed boot is a finding, not the end of the soak
                    with lock:
                        failures.append(f"boot {n} ({client.mac_text}): {type(exc).__name__}: {exc}")
                with lock:
                    durations.append(time.perf_counter() - start)
                    done = len(durations)
                    if done % every == 0:
                        samples.append(Sample(done, open_fds(server.pid), thread_count(server.pid),
                                              rss_mib(server.pid)))  # fmt: skip

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu
        time.sleep(1.0)  # let the last write-behind and journal batch finish before the final sample
        samples.append(Sample(boots, open_fds(server.pid), thread_count(server.pid), rss_mib(server.pid)))
        return SoakResult(boots, failures, elapsed, durations, samples, cpu)


def table_for(result: SoakResult, hosts: int, workers: int) -> Table:
    warm, end = result.warm, result.end
    growth = result.growth()
    rows = [
        Row("boots completed", "%", 100.0 * (result.boots - len(result.failures)) / result.boots, float("nan"), "",
            target="100 %"),  # fmt: skip
        Row("open file descriptors, end", "fds", end.fds, warm.fds, f"after {warm.boots} boots",
            higher_is_better=False, target="flat"),  # fmt: skip
        Row("threads, end", "threads", end.threads, warm.threads, f"after {warm.boots} boots",
            higher_is_better=False, target="flat"),  # fmt: skip
        Row("resident memory, end", "MiB", end.rss_mib, warm.rss_mib, f"after {warm.boots} boots",
            higher_is_better=False, target="flat"),  # fmt: skip
        Row("boots per second", "boots/s", result.boots / result.seconds, float("nan"), ""),
        Row("time per boot p50", "ms", percentile(result.boot_seconds, 0.5) * 1000, float("nan"), ""),
        Row("time per boot p99", "ms", percentile(result.boot_seconds, 0.99) * 1000, float("nan"), ""),
        Row("bootbox CPU per boot", "ms", result.cpu_seconds / result.boots * 1000, float("nan"), ""),
    ]
    trail = ", ".join(f"{s.boots}: {s.fds} fds/{s.threads} thr/{s.rss_mib:.0f} MiB" for s in result.samples[::4])
    return Table(
        "soak",
        f"Soak: {result.boots:,} boots of {hosts} hosts, {workers} at a time, over loopback (DHCP + TFTP + HTTP)",
        rows,
        meta={"boots": result.boots, "hosts": hosts, "workers": workers, "growth_after_warm_up": growth,
              "samples": [s.__dict__ for s in result.samples], "failures": result.failures[:20]},
        notes=[f"growth after warm-up: {growth['fds']:+d} fds, {growth['threads']:+d} threads, "
               f"{growth['rss_mib']:+.1f} MiB", f"samples (boots: fds/threads/RSS): {trail}", *result.failures[:5]],
    )  # fmt: skip


def requirements() -> str | None:
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """One soak (its length is the repetition); ``runs`` is unused."""
    boots, hosts, workers = (200, 50, 4) if quick else (10_000, 40, 6)
    return [table_for(soak(boots, hosts, workers), hosts, workers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boots", type=positive_int, default=10_000)
    parser.add_argument("--hosts", type=positive_int, default=40)
    parser.add_argument("--workers", type=positive_int, default=6)
    parser.add_argument("--quick", action="store_true", help="200 boots of 50 hosts")
    parser.add_argument("--json", type=Path, help="directory for the JSON results")
    args = parser.parse_args(argv)
    if args.quick:
        result = tables(quick=True)
    else:
        result = [table_for(soak(args.boots, args.hosts, args.workers), args.hosts, args.workers)]
    for table in result:
        table.show()
        table.write(args.json)
    return 1 if any(t.meta["failures"] for t in result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
