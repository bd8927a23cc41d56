"""What the kernel says about one local network interface: its IPv4 address and prefix.

Asked by full-DHCP mode (it serves the subnet of ``dhcp.interface``) and by ``bootbox doctor
--client`` (it sends from that address), so it lives here, below both, rather than in either.
One ``ioctl`` on a throwaway socket, which sees the calling process's network namespace.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

__all__ = ["interface_ipv4"]

_SIOCGIFADDR, _SIOCGIFNETMASK = 0x8915, 0x891B


def interface_ipv4(interface: str) -> ipaddress.IPv4Interface | None:
    """The (primary) IPv4 address and prefix of ``interface``, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            address = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
            netmask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
        except OSError:
            return None
    return ipaddress.IPv4Interface(f"{socket.inet_ntoa(address)}/{socket.inet_ntoa(netmask)}")
