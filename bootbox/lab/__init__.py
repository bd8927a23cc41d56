"""The lab: a private Ethernet segment on one machine where real firmware network-boots.

Used by the end-to-end tests, ``bootbox lab`` and the benchmarks. It needs root, iproute2,
util-linux ``setpriv`` and ``/dev/net/tun``; QEMU, OVMF, iPXE and dnsmasq for the parts that use
them. Every address it assigns is in 198.18.0.0/15, and everything it creates lives in its own
network namespaces, so the machine's real network is never touched.

* :mod:`bootbox.lab.netns` builds the segment (bridge, member namespaces, taps) and runs
  commands or Python code inside it;
* :mod:`bootbox.lab.sitedhcp` runs dnsmasq there: the site's address-only DHCP and the
  reference proxyDHCP + TFTP;
* :mod:`bootbox.lab.ra` sends the IPv6 router advertisement that spares iPXE its ~16 s wait;
* :mod:`bootbox.lab.qemu` boots BIOS or UEFI guests on the segment and watches their consoles.

Importing this package starts nothing; submodules are imported here only for their names.
"""

from __future__ import annotations

from bootbox.lab.netns import (
    LAB_NETWORK,
    LabError,
    Member,
    Segment,
    check_lab_address,
    remove_stale_segments,
    run_in_netns,
    spawn_in_netns,
    stop_process,
)
from bootbox.lab.qemu import FIRMWARES, Firmware, QemuClient, random_mac
from bootbox.lab.ra import RouterAdvertiser
from bootbox.lab.sitedhcp import Dnsmasq, Lease, reference_proxy, site_dhcp

__all__ = [
    "FIRMWARES",
    "LAB_NETWORK",
    "Dnsmasq",
    "Firmware",
    "LabError",
    "Lease",
    "Member",
    "QemuClient",
    "RouterAdvertiser",
    "Segment",
    "check_lab_address",
    "random_mac",
    "reference_proxy",
    "remove_stale_segments",
    "run_in_netns",
    "site_dhcp",
    "spawn_in_netns",
    "stop_process",
]
