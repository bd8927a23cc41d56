"""Tests for the lab machinery (bootbox.lab) and the reference end-to-end network boot.

The reference boot uses only Debian's dnsmasq (proxyDHCP + TFTP) and nginx as the boot server,
so it proves the lab and the demo payload independently of bootbox itself; the bootbox
end-to-end tests repeat it with bootbox in dnsmasq's place.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import (
    NETNS_DIR,
    LabError,
    Segment,
    check_lab_address,
    remove_stale_segments,
    stop_process,
)
from bootbox.lab.qemu import OVMF_CODE, Firmware, QemuClient, random_mac
from bootbox.lab.ra import RouterAdvertiser, build_router_advertisement, parse_router_advertisement
from bootbox.lab.sitedhcp import Dnsmasq, reference_proxy
from tests.support.lab_fixtures import (  # noqa: F401 - pytest fixtures are used by name
    BOOT_TIMEOUT,
    CallbackReceiver,
    LabSegment,
    StaticServer,
    demo_assets_fixture,
    demo_cache_fixture,
    require_qemu,
    require_tools,
    segment_fixture,
)

# ---------------------------------------------------------------------------------------------
# pure parts (no root needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["198.18.0.1/24", "198.19.255.254/16", "198.18.7.9/32", "198.18.0.1"]
)
def test_check_lab_address_accepts_benchmark_range(address: str) -> None:
    assert check_lab_address(address) == ipaddress.IPv4Interface(address)


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1/24", "192.168.1.1/24", "198.20.0.1/24", "198.17.255.1/24", "198.18.0.1/8",
     "127.0.0.1/8", "not-an-address"],
)  # fmt: skip
def test_check_lab_address_refuses_everything_else(address: str) -> None:
    with pytest.raises(LabError):
        check_lab_address(address)


def test_router_advertisement_has_no_prefix_and_no_flags() -> None:
    message = build_router_advertisement("02:00:00:aa:bb:cc")
    parsed = parse_router_advertisement(message)
    assert parsed.managed is False
    assert parsed.other is False
    assert parsed.router_lifetime == 0
    assert parsed.hop_limit == 64
    assert parsed.options == (1,)  # only the source link-layer address, no prefix (3)
    assert message[-6:] == bytes.fromhex("020000aabbcc")
    assert len(message) == 24


def test_router_advertisement_rejects_bad_mac() -> None:
    with pytest.raises(ValueError):
        build_router_advertisement("02:00:00:aa:bb")


def test_qemu_bios_command_line(tmp_path: Path) -> None:
    vm = QemuClient(
        tap="tap7", netns="ns1", mac="02:00:00:00:00:01", firmware="bios", workdir=tmp_path
    )
    argv = vm.argv()
    joined = " ".join(argv)
    assert argv[argv.index("-machine") + 1] == "pc"
    assert "-device sga" in joined
    assert "e1000,netdev=n0,mac=02:00:00:00:00:01,bootindex=1" in argv
    assert "romfile" not in joined  # keep QEMU's iPXE ROM
    assert "ifname=tap7,script=no" in joined
    assert "pflash" not in joined
    for flag in ("-nographic", "-no-reboot"):
        assert flag in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-serial") + 1] == f"file:{tmp_path / 'serial.log'}"


def test_qemu_uefi_command_line_uses_native_pxe(tmp_path: Path) -> None:
    vm = QemuClient(
        tap="tap0", netns=None, mac="02:00:00:00:00:02", firmware="uefi", workdir=tmp_path
    )
    argv = vm.argv()
    assert argv[argv.index("-machine") + 1] == "q35"
    assert "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:02,bootindex=1,romfile=" in argv
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'OVMF_VARS.fd'}" in argv
    assert "sga" not in argv


def test_qemu_uefi_with_e1000_keeps_the_ipxe_rom(tmp_path: Path) -> None:
    vm = QemuClient(
        tap="tap0", netns=None, mac="02:00:00:00:00:03", firmware="uefi", workdir=tmp_path,
        nic="e1000",
    )  # fmt: skip
    assert "e1000,netdev=n0,mac=02:00:00:00:00:03,bootindex=1" in vm.argv()


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "02-00-00-00-00-01", "02:00:00:00:00:0G"])
def test_qemu_rejects_malformed_mac(tmp_path: Path, mac: str) -> None:
    with pytest.raises(LabError):
        QemuClient(tap="t", netns=None, mac=mac, firmware="bios", workdir=tmp_path)


def test_qemu_rejects_unknown_firmware(tmp_path: Path) -> None:
    with pytest.raises(LabError):
        QemuClient(
            tap="t", netns=None, mac="02:00:00:00:00:01", firmware="coreboot",  # type: ignore[arg-type]
            workdir=tmp_path,
        )  # fmt: skip


def test_random_mac_is_local_unicast_and_varies() -> None:
    macs = {random_mac() for _ in range(20)}
    assert len(macs) == 20
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01


# ---------------------------------------------------------------------------------------------
# namespaces
# ---------------------------------------------------------------------------------------------


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


@pytest.mark.netns
def test_segment_connects_members_and_leaves_no_trace() -> None:
    require_tools("ip", "setpriv", "busybox")
    before = _host_links()
    with Segment() as net:
        server = net.add_namespace("server", "198.18.0.1/24")
        client = net.add_namespace("client", "198.18.0.3/24")
        tap = net.add_tap()
        names = net.namespaces
        assert all((NETNS_DIR / name).exists() for name in names)
        assert len(set(names)) == 3
        ping = net.run(client, ["busybox", "ping", "-c", "1", "-W", "5", server.ip])
        assert "1 packets received" in ping.stdout
        links = net.run("switch", ["ip", "-o", "link", "show", "master", net.bridge]).stdout
        assert server.port in links and client.port in links and tap in links
        # Nothing was created in the host's namespace, not even for a moment.
        assert _host_links() == before
    assert not any((NETNS_DIR / name).exists() for name in names)
    assert _host_links() == before


@pytest.mark.netns
def test_parallel_segments_reuse_addresses_without_colliding() -> None:
    require_tools("ip", "setpriv", "busybox")
    with Segment() as one, Segment() as two:
        for net in (one, two):
            net.add_namespace("server", "198.18.0.1/24")
            net.add_namespace("client", "198.18.0.3/24")
        assert not set(one.namespaces) & set(two.namespaces)
        # Same addresses on both wires; each client reaches its own server only.
        one_mac = one["server"].mac
        for net in (one, two):
            net.run("client", ["busybox", "ping", "-c", "1", "-W", "5", "198.18.0.1"])
        neighbours = one.run("client", ["ip", "neigh", "show", "198.18.0.1"]).stdout
        assert one_mac in neighbours
        assert two["server"].mac not in neighbours


@pytest.mark.netns
def test_ipv6_is_off_unless_asked() -> None:
    require_tools("ip", "setpriv")

    def disabled() -> str:
        return Path("/proc/sys/net/ipv6/conf/eth0/disable_ipv6").read_text().strip()

    with Segment() as net:
        net.add_namespace("server", "198.18.0.1/24", ipv6=True)
        net.add_namespace("client", "198.18.0.3/24")
        assert net.call("server", disabled) == "0"
        assert net.call("client", disabled) == "1"
        assert "inet6" not in net.run("client", ["ip", "addr", "show", "eth0"]).stdout
        assert "inet6 fe80::" in net.run("server", ["ip", "addr", "show", "eth0"]).stdout


@pytest.mark.netns
def test_call_runs_python_inside_the_namespace() -> None:
    require_tools("ip", "setpriv")

    def bind(address: str) -> socket.socket:
        sock = socket.socket()
        sock.bind((address, 0))
        return sock

    with Segment() as net:
        net.add_namespace("server", "198.18.0.1/24")
        sock = net.call("server", bind, "198.18.0.1")
        sock.close()
        # The calling thread never moved: the lab address does not exist out here.
        with pytest.raises(OSError) as info:
            bind("198.18.0.1")
        assert info.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(ZeroDivisionError):
            net.call("server", lambda: 1 // 0)


@pytest.mark.netns
def test_add_namespace_refuses_bad_input_and_close_still_cleans_up() -> None:
    require_tools("ip", "setpriv")
    net = Segment()
    try:
        net.add_namespace("server", "198.18.0.1/24")
        with pytest.raises(LabError):
            net.add_namespace("server", "198.18.0.9/24")
        with pytest.raises(LabError):
            net.add_namespace("outside", "10.1.2.3/24")
        with pytest.raises(LabError):
            net.add_namespace("Bad-Role", "198.18.0.4/24")
        names = net.namespaces
    finally:
        net.close()
    assert not any((NETNS_DIR / name).exists() for name in names)
    net.close()  # a second close is harmless
    with pytest.raises(LabError):
        net.add_tap()


@pytest.mark.netns
def test_close_stops_spawned_processes_and_deferred_callbacks() -> None:
    require_tools("ip", "setpriv", "sleep")
    calls: list[str] = []
    with Segment() as net:
        net.add_namespace("client", "198.18.0.3/24")
        proc = net.spawn("client", ["sleep", "300"])
        net.defer(lambda: calls.append("first"))
        net.defer(lambda: calls.append("second"))
        net.defer(lambda: 1 // 0)  # a failing callback must not stop the teardown
    assert proc.poll() is not None
    assert calls == ["second", "first"]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for init to reap it counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.netns
def test_killed_lab_process_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGKILL the process that built a segment: its children die, the sweeper removes the rest."""
    require_tools("ip", "setpriv", "sleep")
    script = tmp_path / "orphan.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from bootbox.lab.netns import Segment
            net = Segment()
            net.add_namespace("client", "198.18.0.3/24")
            proc = net.spawn("client", ["sleep", "300"])
            # The death signal is armed by setpriv before it execs; wait until `sleep` runs.
            comm = f"/proc/{proc.pid}/comm"
            while open(comm).read().strip() != "sleep":
                time.sleep(0.01)
            print(proc.pid, *net.namespaces, flush=True)
            time.sleep(300)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert owner.stdout is not None
        sleeper_pid, *names = owner.stdout.readline().split()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(int(sleeper_pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(int(sleeper_pid)), "parent-death signal did not fire"
        assert all((NETNS_DIR / name).exists() for name in names)
        removed = remove_stale_segments()
        assert set(names) <= set(removed)
        assert not any((NETNS_DIR / name).exists() for name in names)
    finally:
        stop_process(owner)


@pytest.mark.netns
def test_remove_stale_segments_spares_live_segments() -> None:
    require_tools("ip", "setpriv")
    with Segment() as net:
        net.add_namespace("client", "198.18.0.3/24")
        removed = remove_stale_segments()
        assert not set(net.namespaces) & set(removed)
        assert all((NETNS_DIR / name).exists() for name in net.namespaces)


@pytest.mark.netns
def test_capture_records_frames_on_a_port(tmp_path: Path) -> None:
    require_tools("ip", "setpriv", "busybox", "tcpdump")
    with Segment() as net:
        server = net.add_namespace("server", "198.18.0.1/24")
        net.add_namespace("client", "198.18.0.3/24")
        pcap = tmp_path / "server.pcap"
        capture = net.capture(pcap, server.port, "icmp")
        net.run("client", ["busybox", "ping", "-c", "2", "-W", "5", server.ip])
        stop_process(capture)
    decoded = subprocess.run(
        ["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, check=True
    )
    assert decoded.stdout.count("ICMP echo request") == 2
    assert decoded.stdout.count("ICMP echo reply") == 2


# ---------------------------------------------------------------------------------------------
# site DHCP and router advertisements
# ---------------------------------------------------------------------------------------------


@pytest.mark.netns
def test_site_dhcp_hands_out_addresses_and_nothing_else(segment: LabSegment) -> None:
    require_tools("dnsmasq", "busybox")
    site = segment.start_site_dhcp()
    assert site.running and site.pid is not None
    hook = segment.workdir / "udhcpc-hook"
    hook.write_text(
        "#!/bin/sh\n"
        '[ "$1" = bound ] && echo "ip=$ip router=$router dns=$dns boot_file=$boot_file"\n'
        "exit 0\n"
    )
    hook.chmod(0o755)
    argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-i", "eth0", "-s", str(hook)]
    out = segment.net.run("client", argv).stdout
    line = next(line for line in out.splitlines() if line.startswith("ip="))
    fields = dict(part.split("=", 1) for part in line.split())
    assert (
        100
        <= int(ipaddress.IPv4Address(fields["ip"])) - int(ipaddress.IPv4Address("198.18.0.0"))
        <= 199
    )
    assert fields["router"] == fields["dns"] == fields["boot_file"] == ""
    leases = site.leases()
    assert [(lease.mac, lease.ip) for lease in leases] == [(segment.client.mac, fields["ip"])]
    assert "DHCPACK(eth0)" in site.log_text()
    pid = site.pid
    assert site.stop() is not None
    assert not _alive(pid)
    assert not site.running


@pytest.mark.netns
def test_site_dhcp_can_name_a_next_server(segment: LabSegment) -> None:
    """The GRUB-beside-a-proxy setup: the site's offer carries bootbox as next-server (siaddr)."""
    require_tools("dnsmasq", "busybox")
    segment.start_site_dhcp(next_server="198.18.0.1")
    hook = segment.workdir / "udhcpc-hook"
    hook.write_text('#!/bin/sh\n[ "$1" = bound ] && echo "siaddr=$siaddr"\nexit 0\n')
    hook.chmod(0o755)
    argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-i", "eth0", "-s", str(hook)]
    out = segment.net.run("client", argv).stdout
    assert "siaddr=198.18.0.1" in out.splitlines()
    with pytest.raises(LabError):
        segment.start_site_dhcp(next_server="10.0.0.1")


@pytest.mark.netns
def test_site_dhcp_refuses_a_range_outside_its_subnet(segment: LabSegment) -> None:
    require_tools("dnsmasq")
    with pytest.raises(LabError):
        segment.start_site_dhcp(first="198.18.1.10", last="198.18.1.20")
    with pytest.raises(LabError):
        segment.start_site_dhcp(first="10.0.0.10", last="10.0.0.20")


@pytest.mark.netns
@pytest.mark.parametrize("use_nginx", [True, False], ids=["nginx", "python"])
def test_static_server_serves_files_and_logs_requests(
    segment: LabSegment, tmp_path: Path, use_nginx: bool
) -> None:
    require_tools("busybox", *(["nginx"] if use_nginx else []))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(100_000))
    http = segment.serve_static({"blob.bin": blob, "boot.ipxe": "#!ipxe\n"}, use_nginx=use_nginx)
    out = segment.net.run("client", ["busybox", "wget", "-q", "-O", "-", f"{http.url}/boot.ipxe"])
    assert out.stdout == "#!ipxe\n"
    fetched = tmp_path / "fetched.bin"
    segment.net.run("client", ["busybox", "wget", "-q", "-O", str(fetched), f"{http.url}/blob.bin"])
    assert fetched.read_bytes() == blob.read_bytes()
    missing = segment.net.run("client", ["busybox", "wget", "-q", f"{http.url}/nope"], check=False)
    assert missing.returncode != 0
    deadline = time.monotonic() + 5  # nginx writes its access log after the response
    while len(seen := http.requests()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.client_ip, r.method, r.path, r.status) for r in seen] == [
        (segment.client.ip, "GET", "/boot.ipxe", 200),
        (segment.client.ip, "GET", "/blob.bin", 200),
        (segment.client.ip, "GET", "/nope", 404),
    ]


@pytest.mark.netns
def test_router_advertiser_answers_a_solicitation(segment: LabSegment) -> None:
    # A client namespace with IPv6, so it can solicit like iPXE does.
    probe = segment.net.add_namespace("probe", "198.18.0.4/24", ipv6=True)
    advertiser = segment.start_ra()

    def open_probe() -> tuple[socket.socket, int]:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.settimeout(5)
        return sock, socket.if_nametoindex("eth0")

    # Opened after the advertiser's first unsolicited advert, so what arrives is the answer.
    sock, index = segment.net.call(probe, open_probe)
    with sock:
        sock.sendto(struct.pack("!BBHI", 133, 0, 0, 0), ("ff02::2", 0, 0, index))
        while True:
            data, ancillary, _, sender = sock.recvmsg(1500, socket.CMSG_SPACE(4))
            if data[0] == 134:
                break
    parsed = parse_router_advertisement(data)
    assert parsed.managed is False and parsed.other is False
    assert 3 not in parsed.options  # no prefix information
    assert sender[0].startswith("fe80::")
    hop_limits = [
        struct.unpack("@i", d)[0] for lvl, kind, d in ancillary if kind == socket.IPV6_HOPLIMIT
    ]
    assert hop_limits == [255]
    assert advertiser.solicitations >= 1


@pytest.mark.netns
def test_router_advertiser_refuses_a_missing_interface(segment: LabSegment) -> None:
    advertiser = RouterAdvertiser("nosuch0", netns=segment.server.netns)
    with pytest.raises(LabError):
        advertiser.start()


# ---------------------------------------------------------------------------------------------
# the reference end-to-end boot: dnsmasq proxyDHCP + TFTP, nginx, the demo payload
# ---------------------------------------------------------------------------------------------


@dataclass
class ReferenceServer:
    """The pieces of the reference boot server, for assertions after the boot."""

    script_url: str
    site: Dnsmasq
    proxy: Dnsmasq
    receiver: CallbackReceiver
    http: StaticServer


def start_reference_server(lab: LabSegment, assets: DemoAssets) -> ReferenceServer:
    """Site DHCP, RA, callback receiver, nginx with the demo assets, dnsmasq as the proxy."""
    site = lab.start_site_dhcp()
    lab.start_ra()
    receiver = lab.callback_receiver()
    base = f"http://{lab.server.ip}:8080"
    http = lab.serve_static(
        {
            assets.kernel.name: assets.kernel,
            assets.initrd.name: assets.initrd,
            "boot.ipxe": assets.ipxe_script(base, receiver.url),
        }
    )
    script_url = f"{http.url}/boot.ipxe"
    proxy = reference_proxy(lab.net, lab.server, lab.workdir, script_url=script_url)
    return ReferenceServer(script_url, site, proxy, receiver, http)


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.parametrize("firmware", ("bios", "uefi"))  # what the dnsmasq reference serves
def test_reference_pxe_boot_reports_in(
    segment: LabSegment,
    demo_assets: DemoAssets,
    firmware: Firmware,
    record_property: Callable[[str, object], None],
) -> None:
    """A real firmware PXE-boots the demo payload from dnsmasq + nginx and calls back."""
    require_qemu()
    server = start_reference_server(segment, demo_assets)
    vm = segment.boot(firmware)
    try:
        callback = server.receiver.wait_for(vm.mac, BOOT_TIMEOUT)
        vm.wait_for(MARKER_OK, 60)
        assert vm.wait_exit(60) == 0  # the payload powered the machine off
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nworkdir: {segment.workdir}")
    assert vm.started_at is not None
    seconds = callback.received_at - vm.started_at
    record_property(f"boot_seconds_{firmware}", round(seconds, 1))
    print(f"{firmware}: VM start -> callback {seconds:.1f} s")

    fields = callback.fields
    assert callback.method == "POST" and callback.path == "/booted"
    assert fields["mac"] == vm.mac
    assert fields["ip"] == callback.client_ip
    assert fields["kernel"] == demo_assets.kernel_version
    assert len(fields["boot_id"]) == 36
    assert {lease.mac: lease.ip for lease in server.site.leases()}.get(vm.mac) == fields["ip"]

    log = server.proxy.log_text()
    assert f"PXE(eth0) {vm.mac} proxy" in log
    assert f"bootfile name: {server.script_url}" in log
    if firmware == "uefi":
        # Native EDK2 PXE: the proxy named snponly.efi and served it over TFTP.
        assert "bootfile name: snponly.efi" in log
        assert f"sent /usr/lib/ipxe/snponly.efi to {fields['ip']}" in log
    fetched = {
        (r.method, r.path, r.status) for r in server.http.requests() if r.client_ip == fields["ip"]
    }
    for name in ("boot.ipxe", demo_assets.kernel.name, demo_assets.initrd.name):
        assert ("GET", f"/{name}", 200) in fetched
