"""bootbox doctor: the /proc parsers, each check on fixed inputs, and the CLI."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from bootbox.doctor import machine
from bootbox.config import Settings
from bootbox.doctor.checks import (
    Status,
    check_addresses,
    check_capabilities,
    check_dhcp_servers,
    check_loaders,
    check_ports,
    check_secure_boot,
    check_store,
    check_tftp_engine,
    run_checks,
)
from bootbox.net.dhcp.probe import HeardServer
from tests.conftest import test_settings

UDP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  2: 0100007F:0FAB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
"""
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5252 1 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6161 1 0
"""
LOCKS = """1: FLOCK  ADVISORY  WRITE 4321 00:2e:123456 0 EOF
2: POSIX  ADVISORY  WRITE 99 08:01:777 0 EOF
3: -> FLOCK  ADVISORY  WRITE 5555 00:2e:123456 0 EOF
"""
IP_ADDR = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "198.18.0.1", "prefixlen": 24},
                                     {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
    {"ifname": "eth2", "addr_info": []},
])  # fmt: skip


def test_proc_net_parsers() -> None:
    udp = machine.parse_proc_net(UDP, "udp")
    assert [(l.address, l.port, l.inode) for l in udp] == [("0.0.0.0", 67, 4242), ("127.0.0.1", 4011, 4343)]
    tcp = machine.parse_proc_net(TCP, "tcp")
    assert [(l.address, l.port) for l in tcp] == [("0.0.0.0", 8080)]  # the ESTABLISHED row is not a listener
    assert [(l.address, l.port) for l in machine.parse_proc_net(TCP6, "tcp")] == [("::1", 53)]


def test_locks_and_addresses_parsers() -> None:
    assert machine.parse_flocks(LOCKS) == [(4321, 0, 0x2E, 123456)]
    parsed = machine.parse_ip_addr(IP_ADDR)
    assert parsed == {"lo": [IPv4Interface("127.0.0.1/8")], "eth1": [IPv4Interface("198.18.0.1/24")], "eth2": []}


def test_real_readers_see_this_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        found = [l for l in machine.listeners() if l.proto == "udp" and l.port == port]
        assert len(found) == 1
        assert machine.socket_owners({found[0].inode}) == {found[0].inode: os.getpid()}
    assert "python" in machine.process_name(os.getpid()) or "pytest" in machine.process_name(os.getpid())
    assert machine.capabilities() is not None


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return test_settings(tmp_path, **overrides)


def test_ports_free_ours_and_taken(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, http={"port": 8080}, dhcp={"port": 67})
    found = [machine.Listener("udp", "0.0.0.0", 67, 1), machine.Listener("tcp", "0.0.0.0", 8080, 2)]
    ok = check_ports(settings, ours=100, found=found, owners={1: 100, 2: 100})
    assert ok.status is Status.OK and "udp/67 (dhcp): bootbox (pid 100)" in ok.details
    bad = check_ports(settings, ours=None, found=found, owners={1: os.getpid()})
    assert bad.status is Status.FAIL
    assert f"udp/67 is held by" in bad.summary and f"(pid {os.getpid()})" in bad.summary
    assert "tcp/8080 is held by another process" in bad.summary
    assert "dhcp.port" in bad.fix and "http.port" in bad.fix
    assert check_ports(settings, ours=None, found=[], owners={}).status is Status.OK


def test_capabilities(tmp_path: Path) -> None:
    low = settings_for(tmp_path, dhcp={"port": 67, "interface": "eth1"})
    everything = (1 << machine.CAP_NET_BIND_SERVICE) | (1 << machine.CAP_NET_RAW)
    assert check_capabilities(low, None, mask=everything).status is Status.OK
    shell = check_capabilities(low, None, mask=1 << machine.CAP_NET_RAW)
    assert shell.status is Status.WARN and "CAP_NET_BIND_SERVICE" in shell.summary and "this shell" in shell.summary
    running = check_capabilities(low, 42, mask=0)
    assert running.status is Status.FAIL and "pid 42" in running.summary and "CAP_NET_RAW" in running.summary
    high = settings_for(tmp_path)  # test ports are all above 1023, no interface
    assert check_capabilities(high, None, mask=0).status is Status.OK


def test_loaders(tmp_path: Path) -> None:
    signed = tmp_path / "signed"  # every [dhcp.loader_files] default, present
    signed.mkdir()
    names = ("shimx64.efi", "grubx64.efi", "grubnetx64.efi", "shimaa64.efi", "grubaa64.efi", "grubnetaa64.efi")
    for name in names:
        (signed / name).write_bytes(b"signed")
    settings = settings_for(tmp_path, dhcp={"loader_files": {name: str(signed / name) for name in names}})
    assert check_loaders(settings).status is Status.OK
    (Path(settings.tftp.root) / "snponly.efi").unlink()
    missing = check_loaders(settings)
    assert missing.status is Status.FAIL and "snponly.efi" in missing.summary and "apt-get install ipxe" in missing.fix


def test_loaders_names_the_missing_arm64_loaders_and_how_to_fetch_them(tmp_path: Path) -> None:
    """The defaults expect Debian's signed ARM64 shim and GRUB under state_dir/loaders/arm64."""
    x64 = tmp_path / "grubx64.efi"
    x64.write_bytes(b"signed")
    settings = settings_for(tmp_path, dhcp={"loader_files": {"shimx64.efi": str(x64), "grubx64.efi": str(x64),
                                                             "grubnetx64.efi": str(x64)}})
    check = check_loaders(settings)
    where = settings.state_path / "loaders" / "arm64"
    assert check.status is Status.WARN and "shimaa64.efi" in check.summary and "grubnetaa64.efi" in check.summary
    assert f"dpkg --add-architecture arm64 && apt-get update && {sys.executable} -m bootbox.signedloaders arm64 {where}" in check.fix
    assert "needs the network" in check.fix and "apt-get download shim-signed:arm64 grub-efi-arm64-signed:arm64" in check.fix
    where.mkdir(parents=True)
    for name in ("shimaa64.efi.signed", "grubnetaa64.efi.signed"):
        (where / name).write_bytes(b"signed")
    assert check_loaders(settings).status is Status.OK


def test_addresses(tmp_path: Path) -> None:
    addresses = machine.parse_ip_addr(IP_ADDR)
    assert check_addresses(settings_for(tmp_path, dhcp={"bind_address": "0.0.0.0"}, tftp={"bind_address": "0.0.0.0"},
                                        http={"bind_address": "0.0.0.0"}), addresses).status is Status.OK  # fmt: skip
    wrong = check_addresses(settings_for(tmp_path, server_address="10.1.1.1", dhcp={"interface": "eth2"}), addresses)
    assert wrong.status is Status.FAIL
    assert "'eth2' has no IPv4 address" in wrong.summary and "server_address 10.1.1.1" in wrong.summary
    full = settings_for(tmp_path, dhcp={"mode": "full", "interface": "eth1", "range_start": "198.18.1.10",
                                        "range_end": "198.18.1.20"})  # fmt: skip
    assert "outside eth1's subnet" in check_addresses(full, addresses).summary


SITE = HeardServer("198.18.0.2", "198.18.0.2", "198.18.0.150", "0.0.0.0", "", "02:00:00:00:00:02")
OWN = HeardServer("198.18.0.1", "198.18.0.1", "198.18.0.120", "198.18.0.1", "", "02:00:00:00:00:01")


def test_dhcp_servers_by_mode(tmp_path: Path) -> None:
    proxy = settings_for(tmp_path)
    assert check_dhcp_servers(proxy, [SITE], "eth1", None, {"198.18.0.1"}).status is Status.OK
    alone = check_dhcp_servers(proxy, [], "eth1", None, set())
    assert alone.status is Status.WARN and "full" in alone.fix
    full = settings_for(tmp_path, dhcp={"mode": "full", "interface": "eth1", "range_start": "198.18.0.100",
                                        "range_end": "198.18.0.199"})  # fmt: skip
    assert check_dhcp_servers(full, [OWN], "eth1", 77, {"198.18.0.1"}).status is Status.OK  # only ourselves
    clash = check_dhcp_servers(full, [OWN, SITE], "eth1", 77, {"198.18.0.1"})
    assert clash.status is Status.FAIL and "198.18.0.2" in clash.summary and "198.18.0.1 (" not in clash.summary


def test_secure_boot_caveat(tmp_path: Path) -> None:
    ipxe = settings_for(tmp_path)
    assert check_secure_boot(ipxe, [SITE], "198.18.0.1").status is Status.SKIP
    grub = settings_for(tmp_path, dhcp={"loaders": {"7": "shimx64.efi"}})
    warned = check_secure_boot(grub, [SITE], "198.18.0.1")
    assert warned.status is Status.WARN and "next-server to 198.18.0.1" in warned.fix
    pointed = HeardServer("198.18.0.2", "198.18.0.2", "198.18.0.150", "198.18.0.1", "", "")
    assert check_secure_boot(grub, [pointed], "198.18.0.1").status is Status.OK


def test_store_states(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert "does not exist yet" in check_store(settings, None).summary
    state = settings.state_path
    state.mkdir(parents=True)
    (state / "bootbox.json").write_text("{}")
    (state / "bootbox.lock").write_text("999999\n")
    assert check_store(settings, None).status is Status.OK
    assert "pid 999999, has exited" in check_store(settings, None).summary
    (state / "bootbox.json").write_text("{not json")
    broken = check_store(settings, None)
    assert broken.status is Status.FAIL and ".bak" in broken.fix


def test_tftp_engine_states(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert check_tftp_engine(settings, available=True).status is Status.OK
    missing = check_tftp_engine(settings, available=False)
    assert missing.status is Status.WARN and "python3-dev" in missing.fix
    from bootbox.net.tftp.engine import AVAILABLE
    assert check_tftp_engine(settings).status is (Status.OK if AVAILABLE else Status.WARN)
    off = test_settings(tmp_path, tftp={"enabled": False})
    assert check_tftp_engine(off, available=False).status is Status.SKIP


def test_store_locked_by_a_dead_process_through_an_inherited_descriptor(tmp_path: Path) -> None:
    """The lock outlives its taker when a child inherited the descriptor: doctor names the child."""
    settings = settings_for(tmp_path)
    state = settings.state_path
    state.mkdir(parents=True)
    lock = state / "bootbox.lock"
    code = ("import fcntl, os, subprocess, sys\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "child = subprocess.Popen(['sleep', '60'], pass_fds=[fd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(child.pid, flush=True)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = int(out.stdout.strip())
    try:
        check = check_store(settings, None)
        assert check.status is Status.FAIL and "has exited" in check.summary and f"(pid {child})" in check.summary
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # the lock really is held
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        os.kill(child, 9)  # the sleep this test started (its parent has exited)


def test_run_checks_without_network_on_a_running_appliance(tmp_path: Path) -> None:
    from bootbox.appliance import Appliance

    settings = settings_for(tmp_path)
    appliance = Appliance(settings, load_entrypoints=False)
    appliance.start()
    try:
        checks = {c.name: c for c in run_checks(settings, network=False)}
    finally:
        appliance.stop()
    assert checks["ports"].status is Status.OK
    assert any(f"bootbox (pid {os.getpid()})" in d for d in checks["ports"].details)
    assert checks["store"].summary.endswith(f"running bootbox (pid {os.getpid()})")
    assert checks["dhcp servers"].status is Status.SKIP
