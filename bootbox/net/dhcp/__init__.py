"""DHCPv4: the packet codec, the proxyDHCP responder, and the opt-in full-DHCP server.

:mod:`~bootbox.net.dhcp.packet` is the pure DHCP/BOOTP codec with the PXE options;
:mod:`~bootbox.net.dhcp.proxy` answers PXE clients on udp/67 and udp/4011 without handing out
addresses; :mod:`~bootbox.net.dhcp.server`, :mod:`~bootbox.net.dhcp.answer` and
:mod:`~bootbox.net.dhcp.leases` are full-DHCP mode for an isolated network;
:mod:`~bootbox.net.dhcp.probe` asks whether another DHCP server answers. Part of ``net``: the
service is reached only through the callables the appliance passes in.
"""
