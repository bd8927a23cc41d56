"""dnsmasq on the lab segment: the site's own address DHCP, and the reference proxyDHCP + TFTP.

A real LAN already has a DHCP server that hands out addresses and knows nothing about network
boot; bootbox answers beside it as a proxy. The lab reproduces that split with dnsmasq in its own
namespace (:func:`site_dhcp`), configured as ``facts/references.md`` §5 describes: no DNS
(``port=0``), no ping before offering (each ping costs ~3 s), an empty router and DNS option, and
no boot options at all, so every boot decision visibly comes from the server under test.

:func:`reference_proxy` is the other half of that recipe: dnsmasq as proxyDHCP + TFTP, the
yardstick bootbox is compared with in tests and benchmarks.

Each dnsmasq runs in the foreground under the lab's control, is stopped by its PID, and writes
its log (``log-dhcp``) to a file the tests can read.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootbox.lab.netns import (
    StartStop,
    LabError,
    Member,
    Segment,
    check_lab_address,
    spawn_in_netns,
    stop_process,
)

__all__ = ["Dnsmasq", "Lease", "reference_proxy", "site_dhcp"]

IPXE_DIR = Path("/usr/lib/ipxe")
"""Debian's ``ipxe`` package: ``undionly.kpxe`` (BIOS PXE) and ``snponly.efi`` (UEFI)."""


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    expires: int
    mac: str
    ip: str
    hostname: str
    client_id: str


class Dnsmasq(StartStop):
    """One dnsmasq process in a namespace, configured by a list of config-file lines.

    The lines given are written to ``<workdir>/<name>.conf``; the lease file, log file and
    ``user=root`` are added here (root, because the lab's files live in 0700 temp dirs that
    dnsmasq's default ``nobody`` could not read).
    """

    def __init__(self, netns: str, lines: Sequence[str], workdir: Path, *, name: str) -> None:
        self.netns = netns
        self.name = name
        self.workdir = Path(workdir)
        self.conf_path = self.workdir / f"{name}.conf"
        self.log_path = self.workdir / f"{name}.log"
        self.lease_path = self.workdir / f"{name}.leases"
        self.lines = [
            *lines,
            f"dhcp-leasefile={self.lease_path}",
            f"log-facility={self.log_path}",
            "user=root",
            "group=root",
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running dnsmasq (``ip netns exec`` execs it, so this is dnsmasq itself)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start dnsmasq, and wait until it logs that it is serving.

        dnsmasq logs ``started`` only after binding its sockets, so once this returns a DHCP
        packet cannot arrive before anyone listens.
        """
        if self.running:
            raise LabError(f"{self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text("".join(line + "\n" for line in self.lines))
        self.lease_path.touch()
        self.log_path.write_text("")
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={self.conf_path}",
            f"--pid-file={self.workdir / (self.name + '.pid')}",
        ]
        stderr_path = self.workdir / f"{self.name}.stderr"
        with stderr_path.open("wb") as stderr:
            self._proc = spawn_in_netns(self.netns, argv, stderr=stderr)
        deadline = time.monotonic() + timeout
        while "started, version" not in self.log_text():
            if self._proc.poll() is not None:
                raise LabError(
                    f"{self.name} exited with {self._proc.returncode}: "
                    f"{stderr_path.read_text(errors='replace').strip()} {self.log_text().strip()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"{self.name} did not start within {timeout} s")
            time.sleep(0.02)

    def stop(self) -> int | None:
        """Stop dnsmasq by PID; returns its exit status (None if it was not running)."""
        if self._proc is None:
            return None
        status = stop_process(self._proc)
        self._proc = None
        return status

    def log_text(self) -> str:
        """The log so far (dnsmasq's own log, one-second timestamps)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def leases(self) -> list[Lease]:
        """Current leases, parsed from the lease file (empty for a proxy)."""
        out: list[Lease] = []
        try:
            text = self.lease_path.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 5:
                out.append(Lease(int(parts[0]), parts[1].lower(), parts[2], parts[3], parts[4]))
        return out


def _dhcp_range_default(member: Member) -> tuple[str, str]:
    """Hosts .100–.199 of the member's /24 (or the same offsets in a larger subnet)."""
    network = member.address.network
    if network.num_addresses < 256:
        raise LabError(f"{network} is too small for a site DHCP range; use a /24 or larger")
    return str(network.network_address + 100), str(network.network_address + 199)


def site_dhcp(
    segment: Segment,
    member: Member,
    workdir: Path,
    *,
    first: str | None = None,
    last: str | None = None,
    lease_time: str = "1h",
    next_server: str | None = None,
) -> Dnsmasq:
    """A started address-only DHCP server in ``member``'s namespace; the segment stops it.

    :param first: first address handed out (default host .100 of the member's subnet).
    :param last: last address (default host .199).
    :param lease_time: dnsmasq lease-time syntax (``1h``, ``10m``).
    :param next_server: when set, the site names this address as next-server (``dhcp-boot=,,ADDRESS``),
        the site-DHCP setup GRUB needs to find grub.cfg beside a proxy.
    """
    default_first, default_last = _dhcp_range_default(member)
    first = first or default_first
    last = last or default_last
    for address in (first, last):
        check_lab_address(f"{address}/32")
        if ipaddress.IPv4Address(address) not in member.address.network:
            raise LabError(f"{address} is not in {member.address.network}")
    lines = [
        "port=0",
        f"interface={member.ifname}",
        "bind-interfaces",
        f"dhcp-range={first},{last},{lease_time}",
        "no-ping",
        "dhcp-option=3",
        "dhcp-option=6",
        "log-dhcp",
    ]
    if next_server is not None:
        check_lab_address(f"{next_server}/32")
        lines.append(f"dhcp-boot=,,{next_server}")
    server = Dnsmasq(member.netns, lines, workdir, name="site-dhcp")
    server.start()
    segment.defer(server.stop)
    return server


def reference_proxy(
    segment: Segment,
    member: Member,
    workdir: Path,
    *,
    script_url: str,
    tftp_root: Path = IPXE_DIR,
    bios_loader: str = "undionly.kpxe",
    efi_loader: str = "snponly.efi",
) -> Dnsmasq:
    """A started dnsmasq proxyDHCP + TFTP in ``member``'s namespace (references.md §5).

    Firmware PXE (no ``iPXE`` user class) is sent the iPXE loader over TFTP; iPXE itself is sent
    ``script_url``. Both EFI names are listed because dnsmasq's table numbers them after the
    original RFC (``BC_EFI`` = 7 is what x64 firmware sends), facts/pxe-dhcp.md §8.
    """
    subnet = member.address.network.network_address
    services = [
        ("x86PC", bios_loader, "script"),
        ("BC_EFI", efi_loader, "script"),
        ("X86-64_EFI", efi_loader, "script"),
    ]
    lines = [
        "port=0",
        f"interface={member.ifname}",
        "bind-interfaces",
        f"dhcp-range={subnet},proxy",
        "enable-tftp",
        f"tftp-root={tftp_root}",
        "log-dhcp",
        "dhcp-userclass=set:ipxe,iPXE",
    ]
    for csa, loader, _ in services:
        lines.append(f'pxe-service=tag:!ipxe,{csa},"iPXE",{loader}')
    for csa, _, label in services:
        lines.append(f'pxe-service=tag:ipxe,{csa},"{label}",{script_url}')
    server = Dnsmasq(member.netns, lines, workdir, name="reference-proxy")
    server.start()
    segment.defer(server.stop)
    return server
