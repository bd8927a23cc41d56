#!/usr/bin/env python3
"""Capture real PXE/DHCP client packets for the codec's golden tests (see README.md here).

Builds an isolated Ethernet segment out of network namespaces (addresses in 198.18.0.0/15,
RFC 2544), runs dnsmasq as the reference proxyDHCP + TFTP server and a second dnsmasq as the
"site" address server, boots real firmware under QEMU (TCG) on a tap, records the bridge with
tcpdump and cuts the UDP payloads of the interesting packets into ``.bin`` files.

Needs root, /dev/net/tun, iproute2, tcpdump, dnsmasq, qemu-system-x86, ovmf, ipxe, ipxe-qemu
and busybox-static. Everything it creates (namespaces, processes, temp files) is removed in a
``finally`` block; processes are stopped by their PID only.

Usage: ``python tests/data/dhcp/capture.py [--out DIR] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "bbdhcpcap"
NS_SW, NS_SRV, NS_ORG, NS_CLI = (f"{PREFIX}-{n}" for n in ("sw", "srv", "org", "cli"))
SERVER_IP, ORG_IP = "198.18.0.1", "198.18.0.2"
VM_UUID = "8c3e4a52-6f1d-4b7a-9e2c-1d5f0a3b7c64"
IPXE_DIR = Path("/usr/lib/ipxe")


# --------------------------------------------------------------------------- pcap + DHCP scan
@dataclass(frozen=True)
class Frame:
    """One captured IPv4/UDP datagram: enough to pick packets and to record their addressing."""

    src_mac: str
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    payload: bytes


def read_pcap(path: Path) -> Iterator[Frame]:
    """Yield the IPv4/UDP frames of a classic little-endian pcap (what tcpdump -w writes)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    off = 24
    while off + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from("<IIII", data, off)
        pkt = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if len(pkt) < 42 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        if pkt[23] != 17:
            continue
        udp = 14 + ihl
        sport, dport, ulen = struct.unpack_from("!HHH", pkt, udp)
        yield Frame(
            src_mac=pkt[6:12].hex(":"),
            src_ip=".".join(map(str, pkt[26:30])),
            dst_ip=".".join(map(str, pkt[30:34])),
            sport=sport,
            dport=dport,
            payload=pkt[udp + 8 : udp + ulen],
        )


def scan_options(payload: bytes) -> dict[int, bytes]:
    """A deliberately tiny, independent option walker used only to *select* packets."""
    opts: dict[int, bytes] = {}
    i = 240
    while i < len(payload):
        code = payload[i]
        if code == 0:
            i += 1
            continue
        if code == 255 or i + 1 >= len(payload):
            break
        ln = payload[i + 1]
        opts[code] = opts.get(code, b"") + payload[i + 2 : i + 2 + ln]
        i += 2 + ln
    return opts


def msg_type(f: Frame) -> int:
    return scan_options(f.payload).get(53, b"\0")[0]


def has_user_class_ipxe(f: Frame) -> bool:
    return b"iPXE" in scan_options(f.payload).get(77, b"")


def has_boot_item(f: Frame) -> bool:
    """True when option 43 carries PXE sub-option 71 (boot item)."""
    return 71 in scan_options(b"\0" * 240 + scan_options(f.payload).get(43, b""))


# --------------------------------------------------------------------------- shell helpers
def sh(*args: str, check: bool = True) -> None:
    subprocess.run(args, check=check, stdout=subprocess.DEVNULL)


def nsx(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate one process we started, by its PID, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------- the segment
def build_segment() -> None:
    for ns in (NS_SW, NS_SRV, NS_ORG, NS_CLI):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(*nsx(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"))
    sh("ip", "-n", NS_SW, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", NS_SW, "link", "set", "br0", "type", "bridge", "forward_delay", "0")
    sh("ip", "-n", NS_SW, "link", "set", "br0", "up")
    for ns, name, addr in ((NS_SRV, "srv0", SERVER_IP), (NS_ORG, "org0", ORG_IP), (NS_CLI, "cli0", None)):
        sh("ip", "link", "add", name, "netns", ns, "type", "veth", "peer", "name", f"p-{name}", "netns", NS_SW)
        sh("ip", "-n", NS_SW, "link", "set", f"p-{name}", "master", "br0", "up")
        if addr:
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", name)
        sh("ip", "-n", ns, "link", "set", name, "up")
    sh("ip", "-n", NS_SW, "tuntap", "add", "tap0", "mode", "tap")
    sh("ip", "-n", NS_SW, "link", "set", "tap0", "master", "br0", "up")


def remove_segment() -> None:
    for ns in (NS_SW, NS_SRV, NS_ORG, NS_CLI):
        sh("ip", "netns", "del", ns, check=False)


def start_dnsmasqs(work: Path) -> list[subprocess.Popen[bytes]]:
    """The site address server (own namespace) and the reference proxy + TFTP (server ns)."""
    common = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
              "--user=root", "--group=root", "--pid-file", "--log-dhcp"]
    org = subprocess.Popen(
        nsx(NS_ORG, *common, "--interface=org0", "--dhcp-range=198.18.0.100,198.18.0.199,1h", "--no-ping",
            "--dhcp-option=3", "--dhcp-option=6", f"--dhcp-leasefile={work}/org.leases"),
        stdout=(work / "org.log").open("wb"), stderr=subprocess.STDOUT)
    proxy = subprocess.Popen(
        nsx(NS_SRV, *common, "--interface=srv0", "--dhcp-range=198.18.0.0,proxy", "--enable-tftp",
            f"--tftp-root={IPXE_DIR}", f"--dhcp-leasefile={work}/srv.leases", "--dhcp-userclass=set:ipxe,iPXE",
            "--pxe-prompt=bootbox capture,1",
            "--pxe-service=tag:!ipxe,x86PC,iPXE,undionly.kpxe",
            "--pxe-service=tag:!ipxe,BC_EFI,iPXE,snponly.efi",
            "--pxe-service=tag:!ipxe,X86-64_EFI,iPXE,snponly.efi",
            f"--pxe-service=tag:ipxe,x86PC,script,http://{SERVER_IP}:8080/boot.ipxe",
            f"--pxe-service=tag:ipxe,BC_EFI,script,http://{SERVER_IP}:8080/boot.ipxe",
            f"--pxe-service=tag:ipxe,X86-64_EFI,script,http://{SERVER_IP}:8080/boot.ipxe"),
        stdout=(work / "srv.log").open("wb"), stderr=subprocess.STDOUT)
    time.sleep(1)
    return [org, proxy]


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    """One client run: how to start it, when it has shown enough, and what to keep."""

    name: str
    mac: str
    command: Callable[[Path, str], list[str]]
    done: Callable[[list[Frame]], bool]
    keep: Callable[[list[Frame], str], dict[str, Frame]]
    timeout: float = 240.0


def qemu_common(work: Path, mac: str, nic: str) -> list[str]:
    return ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "512", "-nographic", "-no-reboot",
            "-uuid", VM_UUID, "-serial", f"file:{work}/serial-{mac[-2:]}.log", "-monitor", "none",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"{nic},netdev=n0,mac={mac},bootindex=1"]


def ovmf_drives(work: Path) -> list[str]:
    vars_copy = work / "OVMF_VARS_4M.fd"
    shutil.copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars_copy)
    return ["-machine", "q35", "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]


def from_client(frames: list[Frame], mac: str) -> list[Frame]:
    return [f for f in frames if f.src_mac == mac and f.sport in (68, 4011)]


def first(frames: list[Frame], pred: Callable[[Frame], bool]) -> Frame | None:
    return next((f for f in frames if pred(f)), None)


def from_server(sport: int, kind: int) -> Callable[[Frame], bool]:
    """Select the reference proxy's answers of one message type from one port."""
    return lambda f: f.src_ip == SERVER_IP and f.sport == sport and msg_type(f) == kind


def keep_seabios(frames: list[Frame], mac: str) -> dict[str, Frame]:
    c = from_client(frames, mac)
    picks = {
        "seabios-ipxe-discover": first(c, lambda f: msg_type(f) == 1),
        "seabios-ipxe-request-67": first(c, lambda f: msg_type(f) == 3 and f.dport == 67),
        "seabios-ipxe-request-4011-bootitem": first(c, lambda f: f.dport == 4011 and has_boot_item(f)),
        "dnsmasq-offer-bios-menu": first(frames, from_server(67, 2)),
        "dnsmasq-ack-4011-bios": first(frames, from_server(4011, 5)),
    }
    return {k: v for k, v in picks.items() if v is not None}


def keep_ovmf(frames: list[Frame], mac: str) -> dict[str, Frame]:
    c = from_client(frames, mac)
    edk2 = [f for f in c if not has_user_class_ipxe(f)]
    ipxe = [f for f in c if has_user_class_ipxe(f)]
    picks = {
        "ovmf-edk2-discover": first(edk2, lambda f: msg_type(f) == 1),
        "ovmf-edk2-request-4011": first(edk2, lambda f: f.dport == 4011),
        "ovmf-snponly-ipxe-discover": first(ipxe, lambda f: msg_type(f) == 1),
        "ovmf-snponly-ipxe-request-4011": first(ipxe, lambda f: f.dport == 4011),
        "dnsmasq-offer-edk2": first(frames, from_server(67, 2)),
        "dnsmasq-ack-4011-edk2": first(frames, lambda f: from_server(4011, 5)(f) and f.dport == 4011),
    }
    return {k: v for k, v in picks.items() if v is not None}


def keep_http(frames: list[Frame], mac: str) -> dict[str, Frame]:
    def http_discover(f: Frame) -> bool:
        return msg_type(f) == 1 and scan_options(f.payload).get(60, b"").startswith(b"HTTPClient")

    d = first(from_client(frames, mac), http_discover)
    return {"ovmf-httpclient-discover": d} if d else {}


def keep_udhcpc(frames: list[Frame], mac: str) -> dict[str, Frame]:
    c = from_client(frames, mac)
    picks = {"udhcpc-discover": first(c, lambda f: msg_type(f) == 1),
             "udhcpc-request": first(c, lambda f: msg_type(f) == 3)}
    return {k: v for k, v in picks.items() if v is not None}


def cli_mac() -> str:
    out = subprocess.run(["ip", "-n", NS_CLI, "-br", "link", "show", "cli0"], capture_output=True, text=True).stdout
    return out.split()[2]


SCENARIOS = [
    Scenario(
        "seabios-ipxe", "52:54:00:bb:00:01",
        lambda w, m: nsx(NS_SW, *qemu_common(w, m, "e1000"), "-machine", "pc", "-device", "sga"),
        lambda fr: any(f.dport == 4011 and has_boot_item(f) for f in from_client(fr, "52:54:00:bb:00:01")),
        keep_seabios),
    Scenario(
        "ovmf-pxe", "52:54:00:bb:00:02",
        lambda w, m: nsx(NS_SW, *qemu_common(w, m, "virtio-net-pci,romfile="), *ovmf_drives(w)),
        lambda fr: any(f.dport == 4011 and has_user_class_ipxe(f) for f in from_client(fr, "52:54:00:bb:00:02")),
        keep_ovmf),
    Scenario(
        "ovmf-http", "52:54:00:bb:00:03",
        lambda w, m: nsx(NS_SW, *qemu_common(w, m, "virtio-net-pci,romfile="), *ovmf_drives(w),
                         "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
                         "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"),
        lambda fr: bool(keep_http(fr, "52:54:00:bb:00:03")),
        keep_http),
    Scenario(
        "udhcpc", "",
        lambda w, m: nsx(NS_CLI, "busybox", "udhcpc", "-i", "cli0", "-f", "-q", "-n", "-t", "3", "-s", "/bin/true"),
        lambda fr: False,  # udhcpc exits by itself once it holds a lease
        keep_udhcpc, timeout=30.0),
]


def run_scenario(sc: Scenario, work: Path, out: Path) -> dict[str, Frame]:
    mac = sc.mac or cli_mac()
    pcap = out / "pcap" / f"{sc.name}.pcap"
    pcap.parent.mkdir(parents=True, exist_ok=True)
    dump = subprocess.Popen(nsx(NS_SW, "tcpdump", "-Z", "root", "-i", "br0", "-U", "-s", "0", "-w", str(pcap),
                                "udp and (port 67 or port 68 or port 4011)"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    client = subprocess.Popen(sc.command(work, mac), stdin=subprocess.DEVNULL,
                              stdout=(work / f"{sc.name}.out").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + sc.timeout
    try:
        while time.monotonic() < deadline and client.poll() is None:
            time.sleep(1)
            if sc.done(list(read_pcap(pcap))):
                time.sleep(2)  # let the server's answer to the last packet land in the capture
                break
    finally:
        stop(client)
        time.sleep(0.5)
        stop(dump)
    picks = sc.keep(list(read_pcap(pcap)), mac)
    print(f"{sc.name}: {sorted(picks)}", file=sys.stderr)
    return picks


def write_picks(picks: dict[str, Frame], out: Path) -> None:
    """Write each payload as NAME.bin and its addressing as a line of captures.tsv."""
    index = out / "captures.tsv"
    rows = dict(line.split("\t", 1) for line in index.read_text().splitlines() if line) if index.exists() else {}
    for name, f in picks.items():
        (out / f"{name}.bin").write_bytes(f.payload)
        rows[name] = f"{f.src_mac}\t{f.src_ip}\t{f.sport}\t{f.dst_ip}\t{f.dport}"
    index.write_text("".join(f"{k}\t{v}\n" for k, v in sorted(rows.items())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        build_segment()
        procs = start_dnsmasqs(work)
        for sc in SCENARIOS:
            if args.only is None or sc.name in args.only:
                write_picks(run_scenario(sc, work, args.out), args.out)
    finally:
        for p in procs:
            stop(p)
        remove_segment()
        if os.environ.get("KEEP_WORK"):
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
