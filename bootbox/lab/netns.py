"""An isolated layer-2 lab segment built from network namespaces with iproute2 only.

Network boot needs broadcast DHCP, a firmware that trusts whatever answers first, and root-only
ports, so it can only be tested on a private wire. This module builds that wire on one machine:

* a *switch* namespace holding a Linux bridge with no address;
* any number of *member* namespaces (boot server, site DHCP, load generator), each joined to the
  bridge by a veth pair and given one address from 198.18.0.0/15 (RFC 2544's benchmarking block,
  which collides with no real network);
* tap devices in the switch namespace for QEMU guests.

Every interface is created *inside* one of the segment's own namespaces (the veth peer is born in
its target namespace), so the machine's real interfaces are never touched and nothing named here
can collide with another segment. Names carry the creating PID and a random suffix so parallel test
runs coexist, and :meth:`Segment.close` removes exactly what the instance made, even after a
failure half-way through construction.

Processes started here get ``PR_SET_PDEATHSIG`` (through util-linux ``setpriv``), so a lab
process killed with SIGKILL does not leave QEMU or dnsmasq running on a shared CI machine.
"""

from __future__ import annotations

import abc

import ctypes
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from bootbox.errors import BootboxError

__all__ = [
    "LAB_NETWORK",
    "LabError",
    "Member",
    "Segment",
    "check_lab_address",
    "enter_netns",
    "netns_argv",
    "remove_stale_segments",
    "run_in_netns",
    "spawn_in_netns",
    "stop_process",
]

log = logging.getLogger("bootbox.lab")

LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
"""The only IPv4 range the lab may use (RFC 2544 benchmarking); anything else is refused."""

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add`` keeps its bind mounts; the lab opens these files to call setns()."""

NAME_PREFIX = "bbx"
"""Prefix of every namespace the lab creates, followed by ``<pid>-<random>``."""

_CLONE_NEWNET = 0x40000000
_ROLE_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_STALE_RE = re.compile(rf"^{NAME_PREFIX}(\d+)-[0-9a-f]+-[a-z0-9]+$")

T = TypeVar("T")


class LabError(BootboxError):
    """The lab could not be built or driven (missing tool, bad address, failed command)."""


def check_lab_address(address: str) -> ipaddress.IPv4Interface:
    """Parse ``198.18.x.y/len`` and refuse anything outside 198.18.0.0/15.

    The lab must never emit traffic for a real network, so the check is on every address it
    assigns rather than trusted to callers.
    """
    try:
        iface = ipaddress.IPv4Interface(address)
    except ValueError as exc:
        raise LabError(f"not an IPv4 address with prefix length: {address!r}") from exc
    if iface.ip not in LAB_NETWORK or not iface.network.subnet_of(LAB_NETWORK):
        raise LabError(f"{address} is outside {LAB_NETWORK}; the lab only uses that range")
    return iface


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` with ``ip netns exec NAME`` (unchanged when ``netns`` is None).

    ``ip netns exec`` execs the command directly, so the child's PID is the command's PID and can
    be signalled by PID alone.
    """
    if netns is None:
        return list(argv)
    return ["ip", "netns", "exec", netns, *argv]


def spawn_in_netns(
    netns: str | None,
    argv: Sequence[str],
    *,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``netns`` with SIGTERM as its parent-death signal.

    The death signal is tied to the *thread* that forks, so call this from a thread that outlives
    the child (a pytest fixture or the CLI's main thread). stdin is always closed: QEMU and
    dnsmasq must never wait on the terminal.
    """
    full = ["setpriv", "--pdeathsig", "TERM", *netns_argv(netns, argv)]
    log.debug("spawn: %s", " ".join(full))
    try:
        return subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise LabError(f"cannot start {argv[0]!r}: {exc}") from exc


class StartStop(abc.ABC):
    """``with thing:`` starts it and always stops it: the lab's servers and guests share this."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> object: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """Stop one process we started: SIGTERM by PID, then SIGKILL if it lingers.

    Returns the exit status (None if it could not be reaped). Never signals anything but
    ``proc.pid``, so it cannot hit a process somebody else owns.
    """
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not die after SIGKILL", proc.pid)
            return None


def run_in_netns(netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` in a fresh thread that has joined network namespace ``netns``.

    Linux keeps the network namespace per thread, and a socket stays in the namespace it was
    created in. So a server socket made here (a callback receiver, a raw ICMPv6 socket) lives on
    the lab segment while the rest of the process, including the thread that later serves it,
    stays in the host namespace. Paths under /proc/sys/net read inside ``fn`` are the
    namespace's too. Exceptions raised by ``fn`` are re-raised in the caller.
    """
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            enter_netns(netns)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=runner, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def enter_netns(netns: str) -> None:
    """setns(2) the calling thread into ``/run/netns/<netns>`` (Python 3.11 has no os.setns).
    Threads it starts afterwards are born in that namespace too; so is everything a process
    does when its only thread calls this (a freshly forked child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({netns}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def _write_sysctls(values: Mapping[str, str]) -> None:
    """Write sysctls of the calling thread's namespace (runs inside :func:`run_in_netns`)."""
    for key, value in values.items():
        Path("/proc/sys", *key.split(".")).write_text(value)


def _ip(*args: str) -> str:
    """Run one iproute2 command and return stdout; failures become LabError with stderr."""
    try:
        done = subprocess.run(
            ["ip", *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError("iproute2 ('ip') is not installed") from exc
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def remove_stale_segments() -> list[str]:
    """Delete lab namespaces whose creating process no longer exists; return their names.

    A segment is removed by its own :meth:`Segment.close`; this only mops up after a lab process
    was killed outright (SIGKILL, a CI timeout). Only names matching the lab's own pattern with a
    dead creator PID are touched.
    """
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in sorted(NETNS_DIR.iterdir()):
        match = _STALE_RE.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        try:
            _ip("netns", "del", entry.name)
            removed.append(entry.name)
        except LabError as exc:
            log.warning("could not remove stale namespace %s: %s", entry.name, exc)
    return removed


@dataclass(frozen=True)
class Member:
    """One namespace joined to the segment's bridge.

    :ivar role: short name given by the caller ("server", "site", "client").
    :ivar netns: the namespace name, for ``ip netns exec``.
    :ivar ifname: the interface inside the namespace (always ``eth0``).
    :ivar address: its IPv4 address with prefix length, inside 198.18.0.0/15.
    :ivar mac: the interface's MAC address.
    :ivar ipv6: whether IPv6 was left enabled (needed to send router advertisements).
    :ivar port: the veth end in the switch namespace, enslaved to the bridge (for captures).
    """

    role: str
    netns: str
    ifname: str
    address: ipaddress.IPv4Interface
    mac: str
    ipv6: bool
    port: str

    @property
    def ip(self) -> str:
        """The bare IPv4 address, as a string for URLs and configs."""
        return str(self.address.ip)


class Segment:
    """A private Ethernet segment: a bridge in a switch namespace plus member namespaces and taps.

    Use it as a context manager (or call :meth:`close`): everything it created is removed, in
    reverse order, whatever failed in between. Processes started through :meth:`spawn` and
    callbacks registered with :meth:`defer` are stopped first, because a namespace with a live
    process in it outlives ``ip netns del``.
    """

    def __init__(self, *, bridge: str = "br0") -> None:
        """Create the switch namespace and its bridge.

        :param bridge: bridge name inside the switch namespace (private to it, so no clash).
        """
        self.id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.bridge = bridge
        self.switch = self._ns_name("sw")
        self.members: dict[str, Member] = {}
        self._namespaces: list[str] = []
        self._taps: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._deferred: list[Callable[[], object]] = []
        self._tap_counter = 0
        self._closed = False
        try:
            self._add_netns(self.switch, ipv6=False)
            # No STP, no forward delay: ports forward the instant they come up, as an unmanaged
            # switch does. No multicast snooping: IPv6 router solicitations and advertisements
            # must be flooded even though nobody sends MLD reports.
            _ip(
                "-n", self.switch, "link", "add", bridge, "type", "bridge",
                "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
            )  # fmt: skip
            _ip("-n", self.switch, "link", "set", bridge, "up")
        except BaseException:
            self.close()
            raise

    # -- construction -------------------------------------------------------------------------

    def _ns_name(self, role: str) -> str:
        return f"{NAME_PREFIX}{self.id}-{role}"

    def _add_netns(self, name: str, *, ipv6: bool) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        sysctls = {"net.ipv6.conf.default.accept_dad": "0", "net.ipv6.conf.all.accept_dad": "0"}
        if not ipv6:
            sysctls = {
                "net.ipv6.conf.default.disable_ipv6": "1",
                "net.ipv6.conf.all.disable_ipv6": "1",
            }
        run_in_netns(name, _write_sysctls, sysctls)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_namespace(self, role: str, address: str, *, ipv6: bool = False) -> Member:
        """Create namespace ``role``, join it to the bridge and give ``eth0`` ``address``.

        :param role: 1–12 lowercase letters/digits, unique in this segment.
        :param address: ``198.18.x.y/len``; anything outside 198.18.0.0/15 is refused.
        :param ipv6: leave IPv6 on (with DAD off, so a link-local address is usable at once).
        """
        if self._closed:
            raise LabError("segment is closed")
        if not _ROLE_RE.match(role):
            raise LabError(f"role {role!r} must be 1-12 lowercase letters or digits")
        if role in self.members or role in ("sw", "switch"):
            raise LabError(f"role {role!r} already exists in this segment")
        iface = check_lab_address(address)
        netns = self._ns_name(role)
        self._add_netns(netns, ipv6=ipv6)
        port = f"v-{role}"
        # The peer is created directly in the member namespace, so no interface ever appears in
        # the host namespace, even for a moment.
        _ip(
            "-n", self.switch, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", netns,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", str(iface), "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        info = json.loads(_ip("-n", netns, "-j", "link", "show", "eth0"))
        member = Member(role, netns, "eth0", iface, str(info[0]["address"]), ipv6, port)
        self.members[role] = member
        return member

    def add_tap(self) -> str:
        """Create a tap in the switch namespace, attached to the bridge; return its name.

        QEMU opens taps by name in its own namespace, so run it in :attr:`switch`
        (``QemuClient(netns=segment.switch, ...)``).
        """
        if self._closed:
            raise LabError("segment is closed")
        name = f"tap{self._tap_counter}"
        self._tap_counter += 1
        _ip("-n", self.switch, "tuntap", "add", "dev", name, "mode", "tap")
        self._taps.append(name)
        _ip("-n", self.switch, "link", "set", name, "master", self.bridge, "up")
        return name

    def __getitem__(self, role: str) -> Member:
        """The member created with ``role``."""
        try:
            return self.members[role]
        except KeyError:
            raise LabError(f"no member {role!r} in this segment") from None

    # -- running things -----------------------------------------------------------------------

    def _netns_of(self, where: str | Member) -> str:
        if isinstance(where, Member):
            return where.netns
        if where in (self.switch, "sw", "switch"):
            return self.switch
        return self[where].netns

    def run(
        self,
        where: str | Member,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a member (by role or Member) or ``"switch"``."""
        full = netns_argv(self._netns_of(where), argv)
        done = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and done.returncode != 0:
            raise LabError(
                f"{' '.join(full)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        return done

    def spawn(
        self,
        where: str | Member,
        argv: Sequence[str],
        *,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running command in a member or the switch; :meth:`close` stops it."""
        proc = spawn_in_netns(self._netns_of(where), argv, stdout=stdout, stderr=stderr, env=env)
        self._procs.append(proc)
        return proc

    def call(self, where: str | Member, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run Python ``fn`` with its thread inside a member's namespace (see run_in_netns)."""
        return run_in_netns(self._netns_of(where), fn, *args, **kwargs)

    def capture(self, path: Path, interface: str, bpf_filter: str = "") -> subprocess.Popen[bytes]:
        """Record one switch port with tcpdump to ``path`` (pcap) until :meth:`close`.

        ``interface`` is a tap name or a member's :attr:`Member.port`. The bridge device itself
        only sees broadcasts and frames addressed to it, not unicast forwarded between ports, so
        a port is the place to listen. The call returns once tcpdump is actually listening, so
        the first DHCP packet is not lost.
        """
        log_path = path.with_suffix(path.suffix + ".log")
        # --immediate-mode: without it frames wait in the kernel ring for up to a second and
        # are lost when tcpdump is stopped. -Z root: Debian's tcpdump otherwise drops to a user
        # that cannot write into a test's private temp directory.
        argv = ["tcpdump", "--immediate-mode", "-Z", "root", "-i", interface, "-n", "-U"]
        argv += ["-s", "0", "-w", str(path)]
        with log_path.open("wb") as log_file:
            proc = self.spawn("switch", [*argv, *bpf_filter.split()], stderr=log_file)
        _wait_until(lambda: b"listening on" in log_path.read_bytes() or proc.poll() is not None)
        if proc.poll() is not None:
            raise LabError(f"tcpdump exited: {log_path.read_text(errors='replace').strip()}")
        return proc

    def defer(self, callback: Callable[[], object]) -> None:
        """Register ``callback`` to run at :meth:`close`, before processes and namespaces go.

        Used for things that hold a tap or a socket in the segment (a QEMU guest, a server
        thread); callbacks run last-registered first, and a failing one does not stop the rest.
        """
        self._deferred.append(callback)

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this segment created, and nothing else. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while self._deferred:
            callback = self._deferred.pop()
            try:
                callback()
            except Exception:  # teardown must go on
                log.exception("lab teardown callback failed")
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()
        for tap in reversed(self._taps):
            try:
                _ip("-n", self.switch, "link", "del", tap)
            except LabError as exc:
                log.warning("could not delete %s: %s", tap, exc)
        self._taps.clear()
        for name in reversed(self._namespaces):
            try:
                _ip("netns", "del", name)
            except LabError as exc:
                log.warning("could not delete namespace %s: %s", name, exc)
        self._namespaces.clear()
        self.members.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace this segment still owns (switch first)."""
        return tuple(self._namespaces)

    @property
    def taps(self) -> tuple[str, ...]:
        """Every tap this segment still owns."""
        return tuple(self._taps)


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll ``predicate`` until true or ``timeout`` seconds passed (then raise LabError)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError("timed out waiting for a lab process to become ready")
        time.sleep(step)
