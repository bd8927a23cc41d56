"""What ``bootbox doctor`` reads about the appliance's own machine (formerly ``hostinfo.py``):
listening sockets and their owners, process capabilities, flock holders, interface addresses,
the default route.

"Machine" here is the computer bootbox runs on, never a booting host: those are ``Host`` and
``Machine`` records in :mod:`bootbox.model`, and nothing here reads or writes them.

Everything comes from Linux's ``/proc`` and iproute2's JSON output (``ip -j``), through small
parsers that take text and return values, so the parsing is tested on fixed samples and the
I/O stays in a few thin readers. All readers see the network namespace of the calling process,
which is what the doctor should judge: the one bootbox runs (or would run) in.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "Listener",
    "capabilities",
    "default_route_interface",
    "flock_holders",
    "interface_addresses",
    "listeners",
    "opened_by",
    "parse_flocks",
    "parse_ip_addr",
    "parse_proc_net",
    "process_name",
    "socket_owners",
]

CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A bound UDP socket or listening TCP socket: ``proto`` is ``udp`` or ``tcp``."""

    proto: str
    address: str
    port: int
    inode: int


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four host-order words
    return str(ipaddress.IPv6Address(words))


def parse_proc_net(text: str, proto: str) -> list[Listener]:
    """Rows of ``/proc/net/{udp,udp6,tcp,tcp6}``: UDP sockets bound to a port, TCP in LISTEN."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        address, _, port = fields[1].rpartition(":")
        if proto == "tcp" and fields[3] != _TCP_LISTEN:
            continue
        try:
            out.append(Listener(proto, _hex_address(address), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def listeners(proc: Path = Path("/proc")) -> list[Listener]:
    """Every UDP socket and listening TCP socket of this network namespace."""
    found: list[Listener] = []
    for proto in ("udp", "tcp"):
        for suffix in ("", "6"):
            try:
                found += parse_proc_net((proc / "net" / f"{proto}{suffix}").read_text(), proto)
            except OSError:
                continue
    return found


def socket_owners(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """Socket inode → PID of a process holding it (the first found). Without root, only our
    own processes can be inspected; unknown owners are simply absent."""
    owners: dict[int, int] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                inode = wanted.get(os.readlink(fd))
                if inode is not None and inode not in owners:
                    owners[inode] = int(entry.name)
        except OSError:
            continue
    return owners


def opened_by(path: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of processes with ``path`` open (what ``fuser`` reports), as far as we may look."""
    target = str(path.resolve())
    pids: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def process_name(pid: int, proc: Path = Path("/proc")) -> str:
    """The command line of ``pid`` (shortened), or ``""`` when it is gone or hidden."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    return " ".join(a.decode(errors="replace") for a in argv if a)[:160]


def capabilities(pid: int | str = "self", proc: Path = Path("/proc")) -> int | None:
    """The effective capability mask of a process (``CapEff``), or None when unreadable."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


def parse_flocks(text: str) -> list[tuple[int, int, int, int]]:
    """``/proc/locks`` FLOCK rows as ``(pid, major, minor, inode)``."""
    rows: list[tuple[int, int, int, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            rows.append((int(fields[4]), int(major, 16), int(minor, 16), int(inode)))
        except ValueError:
            continue
    return rows


def flock_holders(path: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs recorded as holding an flock on ``path`` (the process that took it)."""
    try:
        st = path.stat()
        text = (proc / "locks").read_text()
    except OSError:
        return []
    return [pid for pid, major, minor, inode in parse_flocks(text)
            if inode == st.st_ino and (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev))]  # fmt: skip


def parse_ip_addr(text: str) -> dict[str, list[ipaddress.IPv4Interface]]:
    """``ip -j -4 addr show`` → interface name → its IPv4 addresses with prefix."""
    out: dict[str, list[ipaddress.IPv4Interface]] = {}
    for link in json.loads(text or "[]"):
        addresses = out.setdefault(str(link.get("ifname", "")), [])
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                addresses.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    return out


def _ip_json(*args: str) -> str:
    try:
        done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "[]"
    return done.stdout if done.returncode == 0 else "[]"


def interface_addresses() -> dict[str, list[ipaddress.IPv4Interface]]:
    """Every interface of this namespace with its IPv4 addresses (iproute2)."""
    return parse_ip_addr(_ip_json("-4", "addr", "show"))


def default_route_interface() -> str | None:
    """The interface of the IPv4 default route, if there is one."""
    for route in json.loads(_ip_json("-4", "route", "show", "default") or "[]"):
        if route.get("dev"):
            return str(route["dev"])
    return None
