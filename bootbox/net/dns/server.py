"""The DNS server: the lab zone on udp/53 and tcp/53, every other name forwarded upstream.

The sockets and threads only: what to answer is :func:`bootbox.net.dns.answer.respond`'s
decision (pure, with the behaviour and its RFCs listed there), forwarding is
:mod:`bootbox.net.dns.upstream`. dnslib supplies the wire format only; its ``DNSServer`` is not
used: it starts a thread per UDP packet with no limit, needs two instances for UDP and TCP, and
answers NXDOMAIN for a dead upstream (facts/libraries.md §4).

Design: one thread runs one ``selectors`` loop (epoll on Linux, so no ``select()`` descriptor
limit) over the UDP socket, the TCP listener, every TCP connection and a wake-up socket.
Authoritative answers come from ``lookup(qname, qtype)``, an in-memory call, and are sent
inline. Forwarding waits on the network for up to ``timeout`` per upstream, so it runs on a
small thread pool; results come back through a queue and the wake-up socket, so only the loop
thread touches client sockets and counters. ``lookup`` is the only thing the server asks about
names: pass a function over the current zone and answers follow it from the next query on.

TCP (RFC 7766): each message has a two-byte length prefix (RFC 1035 §4.2.2); several queries
may arrive on one connection, pipelined, and are answered as they complete (§6.2.1.1);
connections idle for ``tcp_idle_timeout`` are closed (§6.2.3), and at most ``max_connections``
are open at once (§6.2.2).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from bootbox.net.dns.answer import (
    CLASSIC_UDP,
    DEFAULT_MAX_UDP,
    MAX_MESSAGE,
    Drop,
    Forward,
    Lookup,
    Reply,
    forwarded_reply,
    respond,
)
from bootbox.net.dns.upstream import ask_upstreams, parse_upstream

__all__ = ["DnsServer", "bind_advice"]

log = logging.getLogger("bootbox.dns")

_UDP_DRAIN = 64  # datagrams per readiness event, so a flood cannot starve TCP clients
_MAX_TCP_BACKLOG = 1 << 20  # unsent bytes per connection before we give up on a non-reader
_SWEEP_SECONDS = 0.25
_JOIN_SECONDS = 1.0
_STAT_KEYS = ("queries", "answered", "nxdomain", "forwarded", "servfail", "refused", "notimp", "formerr",
              "badvers", "truncated", "malformed", "errors")  # fmt: skip


# --------------------------------------------------------------------------- the server
@dataclass(eq=False)
class _Conn:
    """One TCP client: bytes in, bytes out, forwards in flight, when it goes idle."""

    sock: socket.socket
    peer: tuple[str, int]
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    pending: int = 0
    closed: bool = False


_Target = tuple[str, tuple[Any, ...]] | _Conn  # ("udp", address as recvfrom gave it) or a TCP connection


class DnsServer:
    """UDP and TCP on one thread; :mod:`bootbox.net.dns.answer` says what it answers.

    :param lookup: ``(qname, qtype) -> ZoneAnswer | None``; ``qname`` is absolute with a
        trailing dot and ``\\DDD`` escapes, ``qtype`` a mnemonic. Called on the server
        thread for every query, so it must be quick (an in-memory zone).
    :param upstreams: resolvers to forward other names to, tried in order
        (:func:`parse_upstream` syntax). None: such names are REFUSED.
    :param timeout: seconds to wait for each upstream (per UDP attempt and TCP retry).
    :param max_udp_size: the largest UDP answer we send, whatever the client offers.
    :param tcp_idle_timeout: seconds before an idle TCP connection is closed.
    :param max_connections: concurrent TCP connections; more are closed on accept.
    :param max_pending_forwards: forwarded queries in flight; beyond it, SERVFAIL at once.
    """

    def __init__(
        self,
        *,
        lookup: Lookup,
        upstreams: Sequence[str] = (),
        bind_address: str = "0.0.0.0",
        port: int = 53,
        timeout: float = 2.0,
        logger: logging.Logger | None = None,
        max_udp_size: int = DEFAULT_MAX_UDP,
        tcp_idle_timeout: float = 10.0,
        max_connections: int = 128,
        max_pending_forwards: int = 256,
    ) -> None:
        if timeout <= 0 or tcp_idle_timeout <= 0 or max_connections < 1 or max_pending_forwards < 1:
            raise ValueError("timeout and tcp_idle_timeout must be > 0; max_connections and "
                             "max_pending_forwards at least 1")  # fmt: skip
        if not CLASSIC_UDP <= max_udp_size <= MAX_MESSAGE:
            raise ValueError(f"max_udp_size must be {CLASSIC_UDP}..{MAX_MESSAGE} (RFC 6891 §6.2.5)")
        self._family = socket.AF_INET6 if ipaddress.ip_address(bind_address).version == 6 else socket.AF_INET
        self._lookup = lookup
        self._upstreams = tuple(parse_upstream(text) for text in upstreams)
        self._bind_address = bind_address
        self._port = port
        self._timeout = timeout
        self._log = logger or log
        self._max_udp_size = max_udp_size
        self._idle = tcp_idle_timeout
        self._max_connections = max_connections
        self._max_pending = max_pending_forwards
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._conns: set[_Conn] = set()
        self._results: queue.SimpleQueue[tuple[_Target, Reply]] = queue.SimpleQueue()
        self._pending = 0
        self._selector: selectors.BaseSelector | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---------------------------------------------------------------- public surface
    @property
    def port(self) -> int:
        """The bound port once started (useful with ``port=0``), else the configured one."""
        return self._port

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start (a copy). ``queries`` counts every message received;
        ``answered`` the authoritative answers, of which ``nxdomain`` were NXDOMAIN;
        ``forwarded`` answers relayed from an upstream; ``servfail``, ``refused``, ``notimp``,
        ``formerr``, ``badvers`` the error answers sent; ``truncated`` UDP answers cut to a
        TC header; ``malformed`` messages dropped (or TCP connections closed) unanswered;
        ``errors`` bugs caught by the loop (logged)."""
        return dict(self._stats)

    def start(self) -> None:
        """Bind udp and tcp on the port and start the server thread.

        :raises OSError: a port cannot be bound; the message names it and says what to do.
        """
        if self._thread is not None:
            raise RuntimeError("DnsServer.start() called twice")
        self._udp, self._tcp = self._bind_both()
        self._port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a wake-up must never block a forwarding thread
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
        self._selector.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self._upstreams:
            workers = min(32, self._max_pending)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootbox-dns-fwd")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bootbox-dns", daemon=True)
        self._thread.start()
        upstreams = ", ".join(f"{h} port {p}" for h, p in self._upstreams) or "none (other names are refused)"
        self._log.info("DNS listening on %s udp/%d and tcp/%d; upstreams: %s",
                       self._bind_address, self._port, self._port, upstreams)  # fmt: skip

    def stop(self) -> None:
        """Stop the thread (it wakes at once), close every socket. Safe to call twice.

        Forwarding threads still waiting on an upstream are abandoned, not awaited: each ends
        within ``timeout`` and its result is discarded.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake()
            thread.join(timeout=_JOIN_SECONDS)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for conn in list(self._conns):
            self._close(conn)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake_r = self._wake_w = None

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- sockets
    def _bind_both(self) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one port number. With port 0, the ephemeral UDP port may be taken
        for TCP, so a few fresh pairs are tried."""
        attempts = 0
        while True:
            attempts += 1
            udp = self._open(socket.SOCK_DGRAM, self._port)
            try:
                return udp, self._open(socket.SOCK_STREAM, udp.getsockname()[1])
            except OSError:
                udp.close()
                if self._port != 0 or attempts >= 16:
                    raise

    def _open(self, kind: int, port: int) -> socket.socket:
        sock = socket.socket(self._family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT
            sock.bind((self._bind_address, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
        except OSError as exc:
            sock.close()
            proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
            raise OSError(exc.errno, bind_advice(exc, proto, self._bind_address, port)) from exc
        sock.setblocking(False)
        return sock

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:  # the buffer is full of wake-ups already, or we are closing
                pass

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        assert self._selector is not None
        while not self._stopping.is_set():
            for key, mask in self._selector.select(timeout=_SWEEP_SECONDS):
                if self._stopping.is_set():
                    break
                try:
                    if isinstance(key.data, _Conn):
                        self._on_conn(key.data, mask)
                    else:
                        key.data(key.fileobj, mask)
                except Exception:  # the loop must survive anything one event can cause
                    self._stats["errors"] += 1
                    self._log.exception("dns: unexpected error handling an event")
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            self._deliver_forwarded()
            self._close_idle()

    def _on_wake(self, sock: socket.socket, mask: int) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_udp(self, sock: socket.socket, mask: int) -> None:
        for _ in range(_UDP_DRAIN):
            try:
                data, peer = sock.recvfrom(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket; it stays usable
                self._log.debug("dns: udp recv: %s", exc)
                return
            self._dispatch(data, ("udp", peer))

    def _on_accept(self, sock: socket.socket, mask: int) -> None:
        while True:
            try:
                client, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest in the backlog for later
                self._log.warning("dns: tcp accept: %s", exc)
                return
            if len(self._conns) >= self._max_connections:
                self._log.debug("dns: tcp connection from %s refused: %d already open", peer[0], len(self._conns))
                client.close()
                continue
            client.setblocking(False)
            conn = _Conn(client, peer[:2], time.monotonic() + self._idle)
            self._conns.add(conn)
            assert self._selector is not None
            self._selector.register(client, selectors.EVENT_READ, conn)

    def _on_conn(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and not conn.closed:
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(MAX_MESSAGE + 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        conn.inbox += chunk
        conn.deadline = time.monotonic() + self._idle
        while len(conn.inbox) >= 2 and not conn.closed:
            size = int.from_bytes(conn.inbox[:2], "big")
            if len(conn.inbox) < 2 + size:
                return
            message = bytes(conn.inbox[2 : 2 + size])
            del conn.inbox[: 2 + size]
            self._dispatch(message, conn)

    # ---------------------------------------------------------------- queries
    def _dispatch(self, data: bytes, target: _Target) -> None:
        self._stats["queries"] += 1
        tcp = isinstance(target, _Conn)
        outcome = respond(data, self._lookup, forwarding=bool(self._upstreams), tcp=tcp,
                          max_udp_size=self._max_udp_size, logger=self._log)  # fmt: skip
        if isinstance(outcome, Drop):
            self._stats["malformed"] += 1
            self._log.debug("dns: dropped a message from %s: %s", _peer(target), outcome.reason)
            if isinstance(target, _Conn):
                self._close(target)
        elif isinstance(outcome, Reply):
            self._send(target, outcome)
        else:
            self._forward(outcome, target)

    def _forward(self, forward: Forward, target: _Target) -> None:
        if self._pending >= self._max_pending:
            self._log.warning("dns: %d forwarded queries in flight; answering SERVFAIL", self._pending)
            self._send(target, forwarded_reply(forward, None))
            return
        assert self._pool is not None  # Forward only happens with upstreams, which start the pool
        self._pending += 1
        if isinstance(target, _Conn):
            target.pending += 1
        self._pool.submit(self._forward_job, forward, target)

    def _forward_job(self, forward: Forward, target: _Target) -> None:
        """Runs on a pool thread: ask the upstreams, hand the reply to the loop."""
        try:
            raw = ask_upstreams(forward.data, forward.query.q, self._upstreams, self._timeout, self._log)
            reply = forwarded_reply(forward, raw)
        except Exception:  # a bug must still produce an answer and release the slot
            self._log.exception("dns: forwarding failed")
            reply = forwarded_reply(forward, None)
        self._results.put((target, reply))
        self._wake()

    def _deliver_forwarded(self) -> None:
        while True:
            try:
                target, reply = self._results.get_nowait()
            except queue.Empty:
                return
            self._pending -= 1
            if isinstance(target, _Conn):
                target.pending -= 1
                if target.closed:
                    continue
            self._send(target, reply)

    def _send(self, target: _Target, reply: Reply) -> None:
        for counter in reply.counters:
            self._stats[counter] += 1
        if isinstance(target, _Conn):
            self._queue_tcp(target, reply.data)
            return
        try:
            assert self._udp is not None
            self._udp.sendto(reply.data, target[1])
        except OSError as exc:  # a full buffer or an unreachable client: UDP may lose it
            self._log.debug("dns: udp send to %s: %s", target[1][0], exc)

    # ---------------------------------------------------------------- tcp output
    def _queue_tcp(self, conn: _Conn, data: bytes) -> None:
        conn.outbox += len(data).to_bytes(2, "big") + data
        conn.deadline = time.monotonic() + self._idle
        if len(conn.outbox) > _MAX_TCP_BACKLOG:
            self._log.debug("dns: tcp client %s does not read its answers; closing", conn.peer[0])
            self._close(conn)
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
        assert self._selector is not None
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events, conn)

    def _close_idle(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if not c.pending and not c.outbox and c.deadline <= now]:
            self._log.debug("dns: tcp client %s idle; closing", conn.peer[0])
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if self._selector is not None:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()


def _peer(target: _Target) -> str:
    return target.peer[0] if isinstance(target, _Conn) else target[1][0]


def bind_advice(exc: OSError, proto: str, address: str, port: int) -> str:
    """What failed and what to do about it, for the OSError ``start()`` raises."""
    where = f"cannot bind {proto}/{port} on {address}: {exc.strerror}."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where} Ports below 1024 need privileges: run bootbox as root or grant it "
                "CAP_NET_BIND_SERVICE, or set dns.port to a port above 1023")  # fmt: skip
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} Another DNS server owns the port (systemd-resolved's stub listener, "
                "dnsmasq, bind9): stop it or disable its listener, set dns.bind_address to one "
                "address, or set dns.port to another port")  # fmt: skip
    return f"{where} Check dns.bind_address, or set dns.port to another port"
