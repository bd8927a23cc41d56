"""Full-DHCP mode on a lab segment with real clients: busybox udhcpc and ISC dhclient.

The server runs in the lab's ``server`` namespace (198.18.0.1/24, interface eth0), the
clients in ``client``; a site dnsmasq in ``site`` plays the other DHCP server full mode must
refuse to compete with. Nothing leaves the namespaces.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bootbox.store.leases import LEASES_KEY, LEASES_TABLE, lease_callables
from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import DhcpPacket, build, parse
from bootbox.net.dhcp.server import DhcpServer, OtherDhcpServer
from bootbox.net.interface import interface_ipv4
from bootbox.net.dhcp.leases import Lease, LeaseState
from bootbox.store.memory import MemoryStore
from tests.support.lab_fixtures import LabSegment, require_tools, segment_fixture  # noqa: F401

pytestmark = pytest.mark.netns

RANGE = ("198.18.0.100", "198.18.0.199")


def no_boot(machine: Machine) -> BootSpec | None:
    return None


def start_server(lab: LabSegment, store: MemoryStore, events: list[tuple[str, ...]] | None = None,
                 **kwargs: Any) -> DhcpServer:  # fmt: skip
    load, save = lease_callables(store)
    server = DhcpServer(
        decide=no_boot,
        interface="eth0",
        range_start=RANGE[0],
        range_end=RANGE[1],
        load_leases=load,
        save_leases=save,
        on_event=(lambda mac, kind, message, data: events.append((mac, kind, message))) if events is not None else None,
        router="198.18.0.1",
        dns_servers=("198.18.0.53",),
        domain="lab.example",
        lease_seconds=120,
        probe_seconds=1.0,
        **kwargs,
    )
    # Sockets made in the server namespace; the loop thread inherits it from the starting thread.
    lab.net.call(lab.server, server.start)
    lab.net.defer(server.stop)
    return server


def wait(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def lease_of(server: DhcpServer, mac: str) -> Lease | None:
    return next((lease for lease in server.leases() if lease.mac == mac), None)


def hook(path: Path, log: Path, configure: str) -> Path:
    path.write_text(f"#!/bin/sh\n{{ echo \"$1 $reason\"; env | sort; echo {_END}; echo; }} >> {log}\n{configure}\nexit 0\n")
    path.chmod(0o755)
    return path


_END = "--end-of-call--"


def records(log: Path) -> list[dict[str, str]]:
    """The hook's calls: one dict of environment variables per call, with 'event'. A call the
    hook is still writing (no end marker yet) is left out: the log is read while udhcpc runs."""
    if not log.exists():
        return []
    out = []
    for block in log.read_text().split("\n\n"):
        lines = [line for line in block.splitlines() if line]
        if lines and lines[-1] == _END:
            lines.pop()
            env = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
            env["event"] = lines[0].strip()
            out.append(env)
    return out


@pytest.fixture
def lab(segment: LabSegment) -> Iterator[LabSegment]:
    require_tools("busybox")
    yield segment


def test_interface_address_is_read_inside_the_namespace(lab: LabSegment) -> None:
    found = lab.net.call(lab.server, interface_ipv4, "eth0")
    assert str(found) == "198.18.0.1/24"
    assert lab.net.call(lab.server, interface_ipv4, "nosuch0") is None


def test_udhcpc_gets_renews_and_releases_a_lease(lab: LabSegment) -> None:
    store, events = MemoryStore(), []
    server = start_server(lab, store, events)
    log = lab.workdir / "udhcpc.log"
    script = hook(lab.workdir / "udhcpc-hook", log,
                  'case "$1" in bound|renew) ip addr replace "$ip/$mask" dev "$interface";; esac')
    client = lab.net.spawn(lab.client, ["busybox", "udhcpc", "-f", "-i", "eth0", "-s", str(script),
                                        "-x", "hostname:pxe-one", "-t", "10", "-T", "1"])  # fmt: skip
    bound = wait(lambda: next((r for r in records(log) if r["event"] == "bound"), None), "udhcpc to bind")
    assert RANGE[0] <= bound["ip"] <= RANGE[1] and len(bound["ip"]) == len(RANGE[0])
    assert (bound["mask"], bound["router"], bound["dns"], bound["domain"]) == ("24", "198.18.0.1", "198.18.0.53", "lab.example")
    assert (bound["serverid"], bound["lease"]) == ("198.18.0.1", "120")
    mac = lab.client.mac
    lease = lease_of(server, mac)
    assert lease is not None and (lease.ip, lease.state, lease.hostname) == (bound["ip"], LeaseState.BOUND, "pxe-one")
    assert store.get(LEASES_TABLE, LEASES_KEY)["leases"][0]["ip"] == bound["ip"]  # persisted on ACK

    os.kill(client.pid, signal.SIGUSR1)  # RENEWING: a unicast REQUEST with ciaddr set
    renewed = wait(lambda: next((r for r in records(log) if r["event"] == "renew"), None), "the renewal")
    assert renewed["ip"] == bound["ip"]
    assert wait(lambda: server.stats["acks"] >= 2, "the second ACK")
    later = lease_of(server, mac)
    assert later is not None and later.expires > lease.expires

    os.kill(client.pid, signal.SIGUSR2)  # RELEASE
    wait(lambda: (l := lease_of(server, mac)) is not None and l.state is LeaseState.RELEASED, "the release")
    assert store.get(LEASES_TABLE, LEASES_KEY)["leases"][0]["state"] == "released"
    kinds = [kind for m, kind, _ in events if m == mac]
    # udhcpc may repeat its renewal (unicast, then broadcast); every one is acknowledged.
    assert kinds[-1] == "dhcp.release" and set(kinds[:-1]) == {"dhcp.lease"} and len(kinds) >= 3


def test_dhclient_binds_reboots_into_the_same_address_and_releases(lab: LabSegment) -> None:
    require_tools("dhclient")
    store = MemoryStore()
    server = start_server(lab, store)
    work = lab.workdir
    log = work / "dhclient.log"
    script = hook(work / "dhclient-hook", log,
                  'case "$reason" in BOUND|REBOOT|RENEW) ip addr replace "$new_ip_address/24" dev "$interface";; esac')
    (work / "dhclient.conf").write_text('send host-name "pxe-two";\n')
    argv = ["dhclient", "-d", "-v", "-cf", str(work / "dhclient.conf"), "-sf", str(script),
            "-lf", str(work / "dhclient.leases"), "-pf", str(work / "dhclient.pid"), "eth0"]  # fmt: skip
    mac = lab.client.mac
    with (work / "dhclient.stderr").open("wb") as err:
        first = lab.net.spawn(lab.client, argv, stderr=err)
    bound = wait(lambda: next((r for r in records(log) if r.get("reason") == "BOUND"), None), "dhclient to bind")
    ip = bound["new_ip_address"]
    assert RANGE[0] <= ip <= RANGE[1]
    assert bound["new_dhcp_server_identifier"] == "198.18.0.1"
    assert bound["new_domain_name_servers"] == "198.18.0.53" and bound["new_domain_name"] == "lab.example"
    assert bound["new_dhcp_lease_time"] == "120" and bound["new_subnet_mask"] == "255.255.255.0"
    lease = lease_of(server, mac)
    assert lease is not None and lease.state is LeaseState.BOUND and lease.hostname == "pxe-two"

    # -r: send DHCPRELEASE and stop the running client (found through the PID file).
    lab.net.run(lab.client, [*argv[:1], "-r", *argv[2:]], timeout=30)
    first.wait(timeout=10)
    wait(lambda: (l := lease_of(server, mac)) is not None and l.state is LeaseState.RELEASED, "the release")

    # A restart asks for its remembered address without a server id (INIT-REBOOT) and gets it.
    with (work / "dhclient.stderr").open("ab") as err:
        lab.net.spawn(lab.client, argv, stderr=err)
    rebooted = wait(lambda: next((r for r in records(log) if r.get("reason") in ("REBOOT", "BOUND")
                                  and r is not bound), None), "the second lease")  # fmt: skip
    assert rebooted["new_ip_address"] == ip
    assert wait(lambda: (l := lease_of(server, mac)) is not None and l.state is LeaseState.BOUND, "the rebind")


def test_leases_survive_a_restart(lab: LabSegment) -> None:
    store = MemoryStore()
    server = start_server(lab, store)
    log = lab.workdir / "udhcpc.log"
    script = hook(lab.workdir / "hook", log, "")
    lab.net.run(lab.client, ["busybox", "udhcpc", "-q", "-f", "-n", "-i", "eth0", "-s", str(script), "-t", "10", "-T", "1"])
    ip = next(r["ip"] for r in records(log) if r["event"] == "bound")
    server.stop()
    again = start_server(lab, store)
    lease = lease_of(again, lab.client.mac)
    assert lease is not None and lease.ip == ip and lease.state is LeaseState.BOUND


def test_refuses_to_start_beside_another_dhcp_server(lab: LabSegment) -> None:
    require_tools("dnsmasq")
    lab.start_site_dhcp()
    with pytest.raises(OtherDhcpServer) as info:
        start_server(lab, MemoryStore())
    message = str(info.value)
    assert "198.18.0.2" in message and "ignore_other_servers" in message and "eth0" in message
    # Told to ignore it, it serves (an operator's explicit choice).
    server = start_server(lab, MemoryStore(), ignore_other_servers=True)
    assert server.heard == [] and server.port == 67


def test_full_mode_rate_limits_a_flooding_mac_without_hurting_others(lab: LabSegment) -> None:
    """The per-MAC flood limit guards full mode as it does the proxy: a client stuck sending
    DISCOVERs gets its burst answered and is then dropped (counted, warned once); another
    client on the same segment still gets its OFFER."""
    server = start_server(lab, MemoryStore(), rate_limit=1.0, rate_burst=4)
    flooder, other = bytes.fromhex("02bb00f10000"), bytes.fromhex("02bb00f10001")

    def storm() -> list[int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # The client has no address yet: the broadcast leaves by the device, not a route.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            sock.bind(("0.0.0.0", 68))
            sock.settimeout(2)
            for xid in range(1, 101):
                sock.sendto(discover_from(flooder, xid), ("255.255.255.255", 67))
            sock.sendto(discover_from(other, 0xAAAA), ("255.255.255.255", 67))
            xids = []
            while True:
                try:
                    xids.append(parse(sock.recv(4096)).xid)
                except TimeoutError:
                    return xids

    answered = lab.net.call(lab.client, storm)
    assert 0xAAAA in answered
    assert len([x for x in answered if x != 0xAAAA]) <= 4 + 2  # the burst, plus what refilled meanwhile
    assert server.stats["rate_limited"] >= 100 - 6
    assert server.stats["errors"] == 0


def discover_from(mac: bytes, xid: int) -> bytes:
    """A plain DHCPDISCOVER from ``mac`` with the broadcast flag (answers come to 255.255.255.255)."""
    return build(DhcpPacket(op=1, xid=xid, chaddr=mac, flags=0x8000, options={53: b"\x01"}))
