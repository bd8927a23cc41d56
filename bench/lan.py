"""The benchmarks' LAN: servers and simulated hosts on one Linux bridge, as a site's boot VLAN.

Every benchmark that measures what the network sees builds this segment (``bootbox.lab``): a
switch namespace with a bridge, a ``server`` namespace (198.18.0.1, bootbox) and a ``ref``
namespace (198.18.0.4, dnsmasq, tftpd-hpa and nginx), each joined by a veth pair, and a few
*client* namespaces that hold the simulated hosts. Nothing runs over 127.0.0.1: every packet
crosses two veth pairs and the bridge, with ARP, as a frame from a host on the LAN does.

Each simulated host is a macvlan interface of its client namespace's veth, with its own MAC
(:func:`host_mac`) and its own address (:func:`host_address`), so the server's neighbour table
maps each host's address to that host's MAC — which bootbox checks before it serves a host's
script or files (``bootbox.service.identity``), as on a real LAN. A host's sockets are bound to
its interface (``SO_BINDTODEVICE``; curl ``--interface``), so its frames leave with its MAC. Up
to 250 hosts share a client namespace: a bridge takes at most 1,024 ports, so not one
namespace per host.

The kernel keeps one neighbour (ARP) table for all namespaces together, capped at
``net.ipv4.neigh.default.gc_thresh3`` (1,024 on Debian). 1,000 hosts need an entry each on the
server side and one each on the hosts' side for the server, so a LAN of more than ~400 hosts
raises ``gc_thresh2``/``gc_thresh3`` for as long as it exists and puts the old values back when
it is removed (:class:`NeighbourBudget`); without that, new entries fail ("neighbour table
overflow") and packets are dropped on both sides.

:class:`Lan` is a context manager; everything it creates (namespaces, veths, macvlans, the
bridge, the processes started in them, the raised limits) is removed or restored on exit, on an
exception and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from bootbox.lab.netns import Member, Segment, run_in_netns

SERVER_ADDR, REF_ADDR = "198.18.0.1/16", "198.18.0.4/16"
HOSTS_PER_NAMESPACE = 250
"""Simulated hosts per client namespace (a few namespaces, many addresses each)."""
_FIRST_HOST = ipaddress.IPv4Address("198.18.1.10")
_NEIGH = Path("/proc/sys/net/ipv4/neigh/default")
_CLIENT_SYSCTLS = {
    # Only the interface that holds an address answers ARP for it, from that address: without
    # these every macvlan of a namespace would answer for every host with its own MAC.
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.conf.default.arp_ignore": "1",
    "net.ipv4.conf.default.arp_announce": "2",
}


def host_address(n: int) -> str:
    """Host ``n``'s address: 198.18.1.10 onwards, 200 per /24 (never .0 or .255)."""
    return str(_FIRST_HOST + (n // 200) * 256 + n % 200)


def host_mac(n: int) -> bytes:
    """Host ``n``'s MAC: locally administered ``02:bb:…`` with the number in the low bytes."""
    return bytes.fromhex("02bb") + n.to_bytes(4, "big")


class NeighbourBudget:
    """Room in the host-wide neighbour table for ``entries`` more entries: raises gc_thresh2 and
    gc_thresh3 when they are too low and puts the old values back on :meth:`restore`."""

    def __init__(self, entries: int) -> None:
        self._old: dict[str, str] = {}
        current = int((_NEIGH / "gc_thresh3").read_text())
        if entries + 256 <= current:
            return
        wanted = {"gc_thresh3": entries + 1024, "gc_thresh2": entries + 512}
        for key, value in wanted.items():
            path = _NEIGH / key
            old = path.read_text().strip()
            if int(old) < value:
                self._old[key] = old
                path.write_text(str(value))

    @property
    def raised(self) -> dict[str, str]:
        """The settings changed, with their old values."""
        return dict(self._old)

    def restore(self) -> None:
        for key in ("gc_thresh2", "gc_thresh3"):  # thresh2 first: it must stay <= thresh3
            if key in self._old:
                with contextlib.suppress(OSError):
                    (_NEIGH / key).write_text(self._old.pop(key))


@dataclass(frozen=True)
class LanHost:
    """One simulated host: the client namespace it lives in, its own interface there (a
    macvlan), its address and its MAC."""

    n: int
    member: Member
    ifname: str
    ip: str
    mac: bytes

    @property
    def netns(self) -> str:
        return self.member.netns


class Lan:
    """The segment: ``server``, ``ref`` and ``ceil(hosts / per_namespace)`` client namespaces,
    each host a macvlan with its own MAC and address."""

    def __init__(self, hosts: int, *, per_namespace: int = HOSTS_PER_NAMESPACE, macvlan: bool = True) -> None:
        """``macvlan=False`` puts the hosts' addresses on the namespace's own interface instead
        (one MAC for all at layer 3): for a DHCP storm, whose frames carry each client's MAC
        anyway and which must not pay for the kernel copying every broadcast OFFER to 1,000
        interfaces while it is timed."""
        self._old_sigterm = _exit_on_sigterm()
        self.budget = NeighbourBudget((2 if macvlan else 1) * hosts + 16)
        self.segment = Segment()
        try:
            self.server = self.segment.add_namespace("server", SERVER_ADDR)
            self.ref = self.segment.add_namespace("ref", REF_ADDR)
            self.clients: list[Member] = []
            self.hosts: list[LanHost] = []
            for k in range(max(1, -(-hosts // per_namespace))):
                first = k * per_namespace
                numbers = range(first, min(hosts, first + per_namespace))
                member = self.segment.add_namespace(f"c{k}", f"198.18.0.{10 + k}/16")
                run_in_netns(member.netns, _write_sysctls, _CLIENT_SYSCTLS)
                if macvlan:
                    self._add_hosts(member, numbers)
                else:
                    self._add_addresses(member, numbers)
                self.clients.append(member)
                self.hosts += [LanHost(n, member, f"m{n}" if macvlan else member.ifname, host_address(n), host_mac(n))
                               for n in numbers]  # fmt: skip
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _add_hosts(member: Member, numbers: range) -> None:
        """A macvlan per host on the namespace's veth, in one ``ip -batch`` (a command each
        would take seconds). The broadcast queue is long enough for a storm's ARP and OFFERs."""
        lines = []
        for n in numbers:
            lines += [f"link add link {member.ifname} name m{n} address {host_mac(n).hex(':')} type macvlan "
                      "mode bridge bcqueuelen 100000",
                      f"addr add {host_address(n)}/16 dev m{n}", f"link set m{n} up"]  # fmt: skip
        _batch(member, lines)

    @staticmethod
    def _add_addresses(member: Member, numbers: range) -> None:
        """The hosts' addresses on the namespace's own interface, in one ``ip -batch``."""
        _batch(member, [f"addr add {host_address(n)}/16 dev {member.ifname}" for n in numbers])

    def forget_neighbours(self) -> None:
        """Flush the ARP caches of every namespace, so each run starts as cold as the first and a
        previous run's entries do not crowd the host-wide neighbour table."""
        for member in self.segment.members.values():
            subprocess.run(["ip", "-n", member.netns, "neigh", "flush", "all"], capture_output=True, timeout=30,
                           check=False)  # fmt: skip

    def close(self) -> None:
        """Remove everything, restore the limits and SIGTERM's handler; safe to call twice."""
        try:
            self.segment.close()
        finally:
            self.budget.restore()
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None

    def __enter__(self) -> "Lan":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()


def _write_sysctls(values: dict[str, str]) -> None:
    """Write sysctls of the calling thread's namespace (run inside ``run_in_netns``)."""
    for key, value in values.items():
        Path("/proc/sys", *key.split(".")).write_text(value)


def _batch(member: Member, lines: list[str]) -> None:
    """iproute2 commands in ``member``'s namespace, one process for all of them."""
    if not lines:
        return
    done = subprocess.run(["ip", "-n", member.netns, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"adding the simulated hosts failed: {done.stderr.strip()[-500:]}")


def _exit_on_sigterm() -> Any:
    """Make SIGTERM (``timeout``, a CI job's end, ``kill``) unwind like Ctrl-C, so the LAN is
    removed and the neighbour limits restored; returns the old handler (None off the main
    thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, stop)
