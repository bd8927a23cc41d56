"""The DNS server: the lab zone on udp/53 and tcp/53, every other name forwarded upstream.

Three modules, each with one job, each importing only the ones before it:

* :mod:`~bootbox.net.dns.answer`: what to do with one received message, a pure function
  (``respond``: reply, drop, or forward) over ``lookup(qname, qtype)``, the zone the service
  builds (a :mod:`bootbox.core.dnszone` value, swapped in whole); the RFC behaviour is listed
  there. The fuzz tests drive it without a socket.
* :mod:`~bootbox.net.dns.upstream`: the forwarding client, asking each upstream resolver in
  turn over UDP, then TCP for a truncated answer; blocking, bounded by a timeout.
* :mod:`~bootbox.net.dns.server`: ``DnsServer``, the sockets and threads: one selectors loop
  for UDP, TCP and its connections, forwarding on a small thread pool.

Part of ``net``: the zone arrives through a callable, never from the store or the service.
"""
