"""DHCPv6 for network boot: boot-file URLs for UEFI PXE over IPv6 and for iPXE.

:mod:`~bootbox.net.dhcp6.packet` is the message codec and client identity (RFC 8415, RFC 5970);
:mod:`~bootbox.net.dhcp6.server` answers on udp/547. Part of ``net``: the boot decision comes
from a callable the appliance passes in, never from the service or the store directly.
"""
