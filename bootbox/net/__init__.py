"""The protocol servers: bytes in, one callable asked, bytes out.

proxyDHCP and full DHCP (:mod:`~bootbox.net.dhcp`), DHCPv6 (:mod:`~bootbox.net.dhcp6`), TFTP with
its optional C block engine (:mod:`~bootbox.net.tftp`) and DNS (:mod:`~bootbox.net.dns`), each on
the socket loop of :mod:`~bootbox.net.loop`. A server is handed the service's bound methods
(``decide``, ``open_tftp`` …) by the appliance and sees nothing else: ``net`` never imports the
service, the store, the hooks, the web app, Flask, pluggy or TinyDB (an import-linter contract).
It may import the pure core (codecs of the DNS zone) and the bottom layers.
"""
