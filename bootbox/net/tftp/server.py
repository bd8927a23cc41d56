"""Read-only TFTP server for first-stage boot loaders (RFC 1350, 2347, 2348, 2349, 7440).

Why not ``tftpy.TftpServer``: it dies on a non-ASCII file name, a non-numeric blksize or any
descriptor ≥ 1024 (``select()``), accepts uploads by default, crashes when handed a BytesIO
and has no windowsize (``facts/libraries.md`` §1). We keep tftpy's packet codecs and own the
rest: one thread runs one epoll loop (no descriptor limit, unlike ``select()``); every
transfer gets its own UDP socket bound to the local address the request arrived on (read with
``IP_PKTINFO``), so replies leave from the address the client talked to on a multi-homed box,
and connected to the client, so the kernel drops every other sender's packets;
retransmission deadlines sit in one heap, touched about once per timeout period per transfer
rather than once per packet. The per-transfer protocol lives in :mod:`bootbox.net.tftp.transfer`.
Between ACKs, a transfer of a real file is handed to the compiled block engine
(:mod:`bootbox.net.tftp.engine`), which serves its blocks on a thread of its own outside the
interpreter lock and hands it back the moment anything unusual happens.

Files come only from ``open_file(name, client)``; :func:`open_under` is the simplest one.
``NotFound`` becomes TFTP error 1, ``Forbidden`` error 2, anything else error 0 (logged).
Write requests are always refused with error 2.

Deliberate choices:

* netascii requests are served as octet: boot files are binary, and converting line ends
  would make the size reported by tsize wrong (tftpy and dnsmasq do the same);
* blksize is capped at what fits the receiving interface's MTU without IP fragmentation
  (1468 on Ethernet), otherwise at RFC 2348's 65464;
* one address family per server: bind ``::`` (IPv6 only, ``IPV6_V6ONLY``) for UEFI PXE over
  IPv6 beside the IPv4 one, as the appliance does when DHCPv6 is on (docs/firmware.md);
* ``open_file`` and ``on_transfer`` run on the server thread, so both must be quick;
* no client address gets more than ``per_address_transfers`` transfers at once (requests beyond
  it are dropped unanswered), and an unanswered window is resent ``retries`` times with doubling
  waits, then abandoned: a flood of silent requests holds a bounded share and is sent little
  (docs/limits.md).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from tftpy.TftpPacketFactory import TftpPacketFactory

from bootbox.errors import Forbidden, NotFound
from bootbox.net.tftp import transfer as tt
from bootbox.net.tftp.engine import AVAILABLE as ENGINE_AVAILABLE
from bootbox.net.tftp.engine import MAX_STRAYS, Engine, EngineResult
from bootbox.net.tftp.transfer import BlockSource, Ending, Negotiated, RequestedOptions, Transfer
from bootbox.runtime.refusals import Refusals
from bootbox.runtime.safepath import open_regular_under

__all__ = ["TftpServer", "TransferRecord", "open_under"]

Client = tuple[str, int]
OpenFile = Callable[[str, Client], BinaryIO]

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # the Linux value; Python 3.11 does not export it
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO6 = struct.Struct("=16sI")  # struct in6_pktinfo: address, ifindex
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_CMSG_SPACE = socket.CMSG_SPACE(max(_PKTINFO.size, _PKTINFO6.size))
_MAX_DATAGRAM = 65535
_MAX_CLIENT_PACKET = 1500  # ACKs and ERRORs; anything longer is cut short, then rejected
_DRAIN = 64  # requests read per readiness event of port 69, so a flood cannot starve transfers
_JOIN_SECONDS = 2.0
_SPIN = 0.0002  # seconds a lone lock-step transfer polls for its next ACK before sleeping
_SPIN_BLOCKS = 64  # blocks served that way before the loop looks at its other sockets again
_SLOW_ACKS = 8  # consecutive ACKs slower than _SPIN after which a transfer is no longer polled
_READABLE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
_LISTEN_RCVBUF = 4 * 2**20
"""Receive buffer of port 69. The default (~208 KiB) holds about 270 requests: a burst of 800 from
one flooding address overflowed it, and a real client's request in the same instant was dropped
by the kernel before the per-address limit could tell them apart."""
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # the Linux value
_STAT_KEYS = ("requests", "completed", "failed", "aborted", "malformed", "refused_writes", "active")
_REFUSALS = {
    "refused_per_address": "read request dropped unanswered: tftp.per_address_transfers transfers from this "
                           "address are running",
    "refused_busy": "read request dropped unanswered: tftp.max_transfers transfers are running",
    "gave_up": "transfer abandoned: the client answered none of its retransmissions (tftp.retries)",
}
"""Refusals counted in ``stats`` and logged once per interval (bootbox.runtime.refusals)."""


@dataclass(frozen=True)
class TransferRecord:
    """How one read request ended, handed to ``on_transfer``.

    ``bytes_sent`` counts file bytes the client acknowledged; ``error`` is empty on success.
    Requests refused before a transfer started (not found, forbidden, busy) are recorded too,
    with ``bytes_sent=0``.
    """

    client_ip: str
    client_port: int
    filename: str
    bytes_sent: int
    blksize: int
    windowsize: int
    duration: float
    ok: bool
    error: str


@dataclass(frozen=True)
class _Local:
    """Where a request arrived: addresses to reply from (best first) and the interface."""

    addresses: tuple[str, ...]
    ifindex: int | None = None


def open_under(root: Path) -> OpenFile:
    """An ``open_file`` that serves regular files inside ``root`` (:func:`open_regular_under`)."""
    root = Path(root)

    def open_file(name: str, client: Client) -> BinaryIO:
        return open_regular_under(root, name)

    return open_file


class TftpServer:
    """A read-only TFTP server: one loop thread, plus engine threads for transfers in their steady
    state; see the module docstring for the design.

    :param open_file: ``(name, (ip, port)) -> binary file``: the only way to files.
    :param on_transfer: called with a :class:`TransferRecord` when each request ends; its
        exceptions are logged and swallowed.
    :param timeout: seconds before an unacknowledged window is resent, unless the client asks
        for another value with the RFC 2349 timeout option.
    :param retries: resends of one window before the transfer is abandoned.
    :param max_transfers: concurrent transfers; requests beyond it are recorded and dropped
        unanswered, so the client retries (an ERROR would end a UEFI boot).
    :param per_address_transfers: concurrent transfers to one client address; a request beyond it
        is dropped unanswered (the client's own retry asks again), so one address flooding read
        requests holds at most this many of ``max_transfers`` and is sent nothing more.
    :param engine: serve real files' blocks with the compiled engine on worker threads
        (:mod:`bootbox.net.tftp.engine`) when it is built; False keeps every transfer in the loop.
    :param engine_threads: transfers out on the engine at once, a thread each; more stay in the
        loop, where every ACK takes the interpreter lock. 256 left ~750 of a 1,000-host storm's
        loaders in the loop, which then read new requests seconds late (BIOS ROMs gave up).
    """

    _epoll: select.epoll  # created by start()

    def __init__(
        self,
        *,
        open_file: OpenFile,
        on_transfer: Callable[[TransferRecord], None] | None = None,
        bind_address: str = "0.0.0.0",
        port: int = 69,
        timeout: float = 1.0,
        retries: int = 5,
        max_transfers: int = 2048,
        per_address_transfers: int = 32,
        engine: bool = True,
        engine_threads: int = 1024,
        logger: logging.Logger | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0 or max_transfers < 1 or per_address_transfers < 1 or engine_threads < 1:
            raise ValueError("timeout must be > 0, retries >= 0, max_transfers, per_address_transfers and "
                             "engine_threads >= 1")
        self._open_file = open_file
        self._on_transfer = on_transfer
        self._bind_address = bind_address
        self._port = port
        self._timeout = timeout
        self._retries = retries
        self._max_transfers = max_transfers
        self._engine_threads = engine_threads
        self._per_address_transfers = per_address_transfers
        self._log = logger or logging.getLogger("bootbox.tftp")
        self._refusals = Refusals(self._log, _REFUSALS, describe=_REFUSALS.__getitem__)
        self._per_address: dict[str, int] = {}  # client address → its running transfers
        self._factory = TftpPacketFactory()
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._by_client: dict[Client, Transfer] = {}
        self._targets: dict[int, Transfer | str] = {}  # descriptor → its transfer, "listen" or "wake"
        self._timers: list[tuple[float, int, Transfer]] = []
        self._sequence = itertools.count()
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._use_engine = engine and ENGINE_AVAILABLE
        self._engine: Engine | None = None  # created by start()
        self._steady: dict[Transfer, None] = {}  # to hand to the engine at the end of this batch of events

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound port once started (useful with ``port=0``), else the configured one."""
        return self._port

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start (a copy, safe to read from any thread).

        ``requests`` counts well-formed RRQs. ``failed`` counts requests that did not deliver
        their file, except ``aborted`` ones: the client ended option negotiation with error 8,
        as EDK2 does after every tsize probe. ``malformed`` counts packets dropped or answered
        with an error because they could not be understood. ``refused_per_address`` counts
        requests dropped because their address had ``per_address_transfers`` running;
        ``gave_up`` counts transfers ended because the client answered no retransmission.
        """
        counters = dict(self._stats)
        counters["active"] = len(self._by_client)
        counters.update(self._refusals.counts())
        return counters

    def start(self) -> None:
        """Bind the port and start the server thread.

        :raises OSError: the port cannot be bound; the message says why and what to do.
        """
        if self._thread is not None:
            raise RuntimeError("TftpServer.start() called twice")
        ipv6 = ":" in self._bind_address
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if ipv6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.bind((self._bind_address, self._port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, _bind_advice(self._bind_address, self._port, exc)) from exc
        try:  # SO_RCVBUFFORCE (root or CAP_NET_ADMIN) may exceed net.core.rmem_max; else what it allows
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _LISTEN_RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _LISTEN_RCVBUF)
        sock.setblocking(False)
        self._sock, self._port = sock, sock.getsockname()[1]
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._watch(sock, "listen")
        self._watch(self._wake_r, "wake")
        if self._use_engine:
            self._engine = Engine(limit=min(self._max_transfers, self._engine_threads), wake=self._wake,
                                  spin=_SPIN, slow_ack_limit=_SLOW_ACKS, thread_name=f"bootbox-tftp-engine:{self._port}")
        self._thread = threading.Thread(target=self._run, name=f"bootbox-tftp:{self._port}", daemon=True)
        self._thread.start()
        self._log.info("tftp listening on %s:%d; blocks served by %s", self._bind_address, self._port,
                       "the compiled engine" if self._engine is not None else
                       "the loop (engine off in the configuration)" if ENGINE_AVAILABLE else
                       "the loop (bootbox.net.tftp._tftpengine not built: see bootbox doctor)")

    def stop(self) -> None:
        """End every transfer, close every socket and wait (up to 2 s) for the thread to end."""
        thread = self._thread
        if thread is None or self._stopping:
            return
        self._stopping = True
        self._wake()
        if thread is not threading.current_thread():
            thread.join(_JOIN_SECONDS)
            if thread.is_alive():
                self._log.warning("tftp thread on port %d did not stop in %.0f s", self._port, _JOIN_SECONDS)

    def _wake(self) -> None:
        """Wake the loop thread (from any thread)."""
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full (a wake-up is pending anyway), or the loop already ended and closed it

    def _watch(self, sock: socket.socket, target: Transfer | str) -> None:
        self._targets[sock.fileno()] = target
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _run(self) -> None:
        # Raw epoll rather than ``selectors``: its per-call bookkeeping was a tenth of the time
        # a lock-step block costs. Descriptors map to what they belong to in ``_targets``.
        poll, targets, timers = self._epoll.poll, self._targets, self._timers
        try:
            while not self._stopping:
                wait = max(0.0, timers[0][0] - time.monotonic()) if timers else -1
                for fd, mask in poll(wait):
                    target = targets.get(fd)
                    if mask == select.EPOLLIN and type(target) is Transfer:  # an ACK, nearly always
                        # One packet per event: epoll is level-triggered and reports the socket
                        # again if more is queued, while a second recv in lock-step mode only fails.
                        self._read_one(target)
                        if len(self._by_client) == 1:
                            self._spin(target)
                    elif target is not None:
                        self._dispatch(target, mask)
                self._expire(time.monotonic())
                if self._steady:
                    self._hand_over_steady()
        except Exception:  # a bug in the loop itself: log it, and still release everything
            self._log.exception("tftp loop on port %d failed", self._port)
        finally:
            for transfer in self._engine.out() if self._engine is not None else ():
                try:
                    self._take_back(transfer, self._engine.recall(transfer))  # type: ignore[union-attr]
                except Exception:  # a bug: still stop the others, and end this one below
                    self._log.exception("%s taking back a transfer failed", _peer(transfer.client))
            if self._engine is not None:
                self._engine.close()
            for transfer in list(self._by_client.values()):
                try:
                    self._finish(transfer, Ending(ok=False, error="server stopped",
                                                  reply=(tt.ERR_UNDEFINED, "server shutting down")))
                except Exception:
                    self._log.exception("%s ending a transfer failed", _peer(transfer.client))
            self._epoll.close()
            self._targets.clear()
            for sock in (self._sock, self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._log.info("tftp on port %d stopped", self._port)

    def _dispatch(self, data: Transfer | str, mask: int) -> None:
        if isinstance(data, Transfer):
            if mask & _READABLE:
                self._read_one(data)  # an error or a hang-up: recv says which
            if mask & select.EPOLLOUT and not data.done:
                self._step(data, data.pump, time.monotonic())
        elif data == "listen":
            self._on_listen_readable()
        elif self._wake_r is not None:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            if self._engine is not None:
                for transfer, result in self._engine.returned():
                    self._take_back(transfer, result)

    # ------------------------------------------------------------------ requests (port 69)

    def _on_listen_readable(self) -> None:
        assert self._sock is not None
        for _ in range(_DRAIN):
            try:
                data, ancillary, _flags, client = self._sock.recvmsg(_MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log.debug("tftp receive on port %d failed: %s", self._port, exc)
                return
            try:
                self._on_request(data, client, _local_of(ancillary, self._bind_address))
            except Exception:
                self._log.exception("%s request handling failed", _peer(client))

    def _on_request(self, data: bytes, client: Client, local: _Local) -> None:
        opcode = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        if opcode == tt.OP_WRQ:
            self._stats["refused_writes"] += 1
            self._log.warning("%s write request refused: this server is read-only", _peer(client))
            self._reply(client, local, tt.ERR_ACCESS, "uploads are not accepted")
            return
        if opcode != tt.OP_RRQ:
            self._malformed(client, f"not a request (opcode {opcode}, {len(data)} bytes)")
            return
        try:
            packet = self._factory.parse(data)
            requested = tt.parse_options(packet.options)
        except tt.OptionError as exc:
            self._malformed(client, str(exc), local, tt.ERR_OPTIONS)
            return
        except Exception as exc:  # tftpy raises TftpException, UnicodeDecodeError, struct.error...
            self._malformed(client, f"undecodable RRQ ({type(exc).__name__})", local, tt.ERR_ILLEGAL)
            return
        if packet.mode not in ("octet", "netascii"):
            self._malformed(client, f"unsupported mode {packet.mode[:20]!r}", local, tt.ERR_ILLEGAL)
            return
        self._stats["requests"] += 1
        if self._settle_existing(client, data):
            self._serve(client, local, data, packet.filename, requested)

    def _settle_existing(self, client: Client, request: bytes) -> bool:
        """Decide what an RRQ from a client with a running transfer means; True: serve it.

        First read what that transfer's socket already holds: EDK2 sends error 8 there and its
        new RRQ here back to back, and the loop may see either first. A repeat of the same
        request is a retransmission and is ignored (our own timer answers it); a different one
        means the client gave up on the old transfer, which is ended.
        """
        existing = self._by_client.get(client)
        if existing is not None and existing.away:
            assert self._engine is not None
            existing.strays += 1  # a repeated RRQ costs the engine a thread: count it as a stray packet
            self._take_back(existing, self._engine.recall(existing))
            existing = self._by_client.get(client)
        if existing is not None:
            self._on_transfer_readable(existing)
            existing = self._by_client.get(client)
        if existing is None:
            return True
        if existing.request == request:
            self._log.debug("%s duplicate RRQ for %r ignored", _peer(client), existing.filename)
            return False
        self._finish(existing, Ending(ok=False, error="superseded by a new request from the same port"))
        return True

    def _serve(self, client: Client, local: _Local, request: bytes, filename: str, requested: RequestedOptions) -> None:
        started = time.monotonic()
        if self._per_address.get(client[0], 0) >= self._per_address_transfers:
            # Unanswered: an error would be one more packet to an address that may be spoofed or
            # flooding; a real client asks again after its own timeout.
            self._refusals.count("refused_per_address", client[0])
            return
        if len(self._by_client) >= self._max_transfers:
            # Unanswered too: an ERROR ends a UEFI firmware's boot (EDK2 takes error 0 as final),
            # while silence makes it send the RRQ again after its timeout (4 s, up to 6 tries),
            # by when a slot is likely free (seen in a 1,000-host boot storm: bench.full_boot_storm).
            self._refusals.count("refused_busy", client[0])
            self._stats["failed"] += 1
            self._emit(TransferRecord(client[0], client[1], filename, 0, tt.DEFAULT_BLKSIZE, 1,
                                      time.monotonic() - started, False,
                                      f"busy: {self._max_transfers} transfers running (request dropped, the client retries)"))
            return
        try:
            stream = self._open_file(filename, client)
        except NotFound as exc:
            self._refuse(client, local, filename, started, tt.ERR_NOT_FOUND, "file not found", f"not found: {exc}")
            return
        except Forbidden as exc:
            self._refuse(client, local, filename, started, tt.ERR_ACCESS, "access violation", f"forbidden: {exc}")
            return
        except Exception as exc:
            self._log.exception("%s open_file(%r) failed", _peer(client), filename)
            self._refuse(client, local, filename, started, tt.ERR_UNDEFINED, "internal error", f"internal error: {exc}")
            return
        try:
            source = BlockSource(stream)
            assert self._sock is not None
            max_blksize = tt.max_blksize_for_mtu(tt.interface_mtu(self._sock, local.ifindex),
                                                 ipv6=":" in client[0])
            negotiated = tt.negotiate(requested, size=source.size, max_blksize=max_blksize,
                                      default_timeout=self._timeout)
            sock = tt.open_transfer_socket(local.addresses, client)
        except Exception as exc:
            _close_quietly(stream, self._log, client)
            self._log.exception("%s cannot start sending %r", _peer(client), filename)
            self._refuse(client, local, filename, started, tt.ERR_UNDEFINED, "internal error", f"internal error: {exc}")
            return
        transfer = Transfer(sock=sock, client=client, filename=filename, request=request, source=source,
                            negotiated=negotiated, retries=self._retries, now=started)
        self._begin(transfer, negotiated)

    def _begin(self, transfer: Transfer, negotiated: Negotiated) -> None:
        self._watch(transfer.sock, transfer)
        self._by_client[transfer.client] = transfer
        address = transfer.client[0]
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._queue_timer(transfer)
        self._log.info("%s RRQ %r: %d bytes, blksize %d, windowsize %d, OACK %s", _peer(transfer.client),
                       transfer.filename, transfer.source.size, transfer.blksize, transfer.windowsize,
                       dict(negotiated.oack) or "none")
        self._step(transfer, transfer.pump, transfer.started)

    def _refuse(self, client: Client, local: _Local, filename: str, started: float,
                code: int, message: str, reason: str) -> None:
        """Answer a request with an error before any transfer started, and record it."""
        level = logging.INFO if code == tt.ERR_NOT_FOUND else logging.WARNING
        self._log.log(level, "%s RRQ %r refused: %s", _peer(client), filename[:80], reason)
        self._reply(client, local, code, message)
        self._stats["failed"] += 1
        self._emit(TransferRecord(client[0], client[1], filename, 0, tt.DEFAULT_BLKSIZE, 1,
                                  time.monotonic() - started, False, reason))

    def _malformed(self, client: Client, why: str, local: _Local | None = None, code: int | None = None) -> None:
        """Count a packet we could not use; answer it (only requests) when ``code`` is given."""
        self._stats["malformed"] += 1
        self._log.debug("%s malformed packet %s: %s", _peer(client), "answered" if code is not None else "dropped", why)
        if local is not None and code is not None:
            self._reply(client, local, code, why if code == tt.ERR_OPTIONS else "malformed request")

    def _reply(self, client: Client, local: _Local, code: int, message: str) -> None:
        """Send an error for a request from a fresh port on the address it came to, as any
        reply to a request (RFC 1350 §4; tftpd-hpa does the same); else from port 69."""
        packet = tt.encode_error(code, message)
        try:
            with tt.open_transfer_socket(local.addresses) as sock:
                sock.sendto(packet, client)
            return
        except OSError:
            pass
        try:
            assert self._sock is not None
            self._sock.sendto(packet, client)
        except OSError as exc:
            self._log.debug("%s error reply not sent: %s", _peer(client), exc)

    # ------------------------------------------------------------------ transfers

    def _on_transfer_readable(self, transfer: Transfer) -> None:
        """Act on everything the transfer's socket holds (at most ``_DRAIN`` packets)."""
        for _ in range(_DRAIN):
            if transfer.done or not self._read_one(transfer):
                return

    def _read_one(self, transfer: Transfer) -> bool:
        """Read one packet from the client and act on it; False when none was waiting (or the
        transfer was just handed to the engine)."""
        if transfer.away:
            return False
        data = self._receive(transfer)
        if data is None:
            return False
        self._step(transfer, transfer.receive, data, time.monotonic())
        return True

    def _receive(self, transfer: Transfer) -> bytes | None:
        """The client's next datagram; None when none is waiting or the socket reported an error
        instead (reading it clears it). A closed client port ends the transfer."""
        try:
            return transfer.sock.recv(_MAX_CLIENT_PACKET)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionRefusedError:
            self._client_gone(transfer)
        except OSError as exc:  # another ICMP error (host unreachable...): the timer resends
            self._log.debug("%s receive failed: %s", _peer(transfer.client), exc)
        return None

    def _client_gone(self, transfer: Transfer) -> None:
        """ICMP port unreachable came back for something we sent (reported by a receive, or by a
        send of a resent window). The kernel reports it ahead of datagrams already queued, so a
        last ACK (or error 8) that crossed a resend may still be waiting: act on those first, and
        end the transfer only if they did not. Nothing is sent
        meanwhile: a resend to the closed port would only bring back another ICMP error, and the
        drain would stop before the last ACK."""
        for _ in range(_DRAIN):
            if transfer.done:
                return
            try:
                data = transfer.sock.recv(_MAX_CLIENT_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # another ICMP error, for an earlier packet: look further
                continue
            self._step(transfer, transfer.receive, data, time.monotonic(), False)
        self._finish(transfer, tt.CLIENT_GONE)

    def _spin(self, transfer: Transfer) -> None:
        """With a single lock-step transfer running, wait for its next ACK by polling the socket
        for up to ``_SPIN`` seconds instead of sleeping in epoll: a near client answers within
        tens of microseconds, and waking a sleeping thread costs about as much again, per block
        (measured: 1.6-2.4x tftpd-hpa with a lone curl instead of 0.74-0.88x). ``_SLOW_ACKS``
        ACKs in a row that take longer turn it off for that transfer, so a far or slow client (a
        firmware under emulation, a routed path) costs next to no CPU. Bounded to ``_SPIN_BLOCKS`` blocks at a
        time so new requests and ``stop`` are seen soon."""
        if transfer.windowsize != 1 or transfer.slow_acks >= _SLOW_ACKS or transfer in self._steady:
            return  # (a steady transfer is about to go to the engine, which polls for its ACKs itself)
        for _ in range(_SPIN_BLOCKS):
            deadline = time.perf_counter() + _SPIN
            while True:
                if transfer.done or transfer.want_write or transfer.away or self._stopping:
                    return
                data = self._receive(transfer)
                if data is not None:
                    transfer.slow_acks = 0
                    break
                if time.perf_counter() > deadline:
                    transfer.slow_acks += 1  # a few in a row: a slow client or a long path
                    return
            self._step(transfer, transfer.receive, data, time.monotonic())
            if transfer in self._steady:  # steady again after a stray packet: the engine takes it
                return

    def _step(self, transfer: Transfer, action: Callable[..., Ending | None], *args: Any) -> None:
        """Run ``action(*args)``, one step of a transfer, and apply its outcome. A packet that
        cannot be decoded is counted and dropped; any other exception ends that transfer only,
        with error 0."""
        try:
            ending = action(*args)
        except tt.MalformedPacket as exc:
            self._malformed(transfer.client, str(exc))
            return
        except tt.ClientGone:  # a send met the closed port: a last ACK may be queued all the same
            self._client_gone(transfer)
            return
        except Exception as exc:
            self._log.exception("%s transfer of %r failed", _peer(transfer.client), transfer.filename)
            ending = _internal_error(exc)
        if ending is not None:
            self._finish(transfer, ending)
            return
        if transfer.want_write != transfer.write_registered:
            self._epoll.modify(transfer.sock.fileno(), select.EPOLLIN | (select.EPOLLOUT if transfer.want_write else 0))
            transfer.write_registered = transfer.want_write
        if self._engine is not None and self._engine.can_take(transfer):
            self._steady[transfer] = None  # handed over after this batch of events: see _hand_over_steady

    # ------------------------------------------------------------------ the engine (bootbox.net.tftp.engine)

    def _hand_over_steady(self) -> None:
        """Give the transfers that became steady in this batch of events to engine workers.

        Not from inside :meth:`_step`: the code that called it may still act on the transfer
        (a write-ready event after a read, the drain in :meth:`_client_gone`, a recall), and
        once handed over nothing but its worker may touch it.
        """
        engine, steady = self._engine, self._steady
        assert engine is not None
        while steady:
            transfer, _ = steady.popitem()
            if self._stopping or not engine.can_take(transfer):
                continue
            try:
                engine.take(transfer, before_start=lambda t=transfer: self._unwatch(t.sock))
            except (OSError, RuntimeError) as exc:  # no descriptor or thread: the loop keeps serving it
                self._log.warning("%s tftp engine not used for %r (%s); serving it from the loop",
                                  _peer(transfer.client), transfer.filename, exc)
                if transfer.sock.fileno() not in self._targets:
                    self._watch(transfer.sock, transfer)
                transfer.strays = MAX_STRAYS  # do not try again for this one

    def _unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._targets.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _take_back(self, transfer: Transfer, result: EngineResult) -> None:
        """Watch a transfer the engine returned again and act on why it returned."""
        outcome, packet, error = result
        self._watch(transfer.sock, transfer)
        transfer.write_registered = False
        self._queue_timer(transfer)
        now = time.monotonic()
        if outcome == "complete":
            self._finish(transfer, tt.COMPLETE)
        elif outcome == "packet":
            assert packet is not None
            self._step(transfer, transfer.receive, packet, now)
        elif outcome in ("refused", "gone"):  # the port is closed, reported by a receive or a send
            self._client_gone(transfer)
        elif outcome == "resume":
            self._step(transfer, transfer.pump, now)
        elif outcome == "error":  # a system error the engine cannot go on from (EBADF...): end this one
            assert isinstance(error, int)
            ending = _internal_error(OSError(error, os.strerror(error)))
            self._log.warning("%s transfer of %r: %s", _peer(transfer.client), transfer.filename, ending.error)
            self._finish(transfer, ending)
        elif outcome == "failed":  # run() itself raised: a bug, logged with its traceback by _step
            assert isinstance(error, BaseException)
            self._step(transfer, _raise, error)
        # "timeout": the timer heap resends at the deadline; "recalled": the caller goes on

    def _queue_timer(self, transfer: Transfer) -> None:
        """Give ``transfer`` its one timer-heap entry unless it has it already."""
        if not transfer.timer_queued:
            heapq.heappush(self._timers, (transfer.deadline, next(self._sequence), transfer))
            transfer.timer_queued = True

    def _expire(self, now: float) -> None:
        """Fire due retransmission timers.

        Each live transfer has at most one heap entry (``timer_queued``). An ACK only moves
        ``transfer.deadline`` forward; when the outdated entry surfaces it is pushed again at the
        real deadline. A transfer out on an engine worker keeps its deadline there: its entry is
        dropped when it surfaces, and queued again when the transfer comes back.
        """
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, transfer = heapq.heappop(timers)
            transfer.timer_queued = False
            if transfer.done or transfer.away:  # an engine worker keeps its own deadline meanwhile
                continue
            if transfer.deadline <= now:
                self._log.debug("%s timeout: resending from block %d", _peer(transfer.client), transfer.base)
                self._step(transfer, transfer.on_timeout, now)
            if not transfer.done and not transfer.away:
                self._queue_timer(transfer)

    def _finish(self, transfer: Transfer, ending: Ending) -> None:
        """End a transfer exactly once: reply, release its socket and file, count, record."""
        if transfer.away:  # get it back from the engine first: what it returned may end it already
            assert self._engine is not None
            self._take_back(transfer, self._engine.recall(transfer))
        if transfer.done:
            return
        transfer.done = True
        if ending.reply is not None:
            try:
                transfer.sock.send(tt.encode_error(*ending.reply))
            except OSError:
                pass
        if self._targets.pop(transfer.sock.fileno(), None) is not None:
            self._epoll.unregister(transfer.sock.fileno())  # else never registered: it failed while starting
        transfer.sock.close()
        _close_quietly(transfer.source, self._log, transfer.client)
        if self._by_client.get(transfer.client) is transfer:
            del self._by_client[transfer.client]
            address = transfer.client[0]
            held = self._per_address.pop(address, 0) - 1
            if held > 0:
                self._per_address[address] = held
        self._stats["completed" if ending.ok else "aborted" if ending.aborted else "failed"] += 1
        if ending.gave_up:
            self._refusals.count("gave_up", transfer.client[0])
        duration, sent, peer = time.monotonic() - transfer.started, transfer.bytes_acked, _peer(transfer.client)
        # With an on_transfer callback the service records (and logs) the transfer: one line, not
        # two (as the proxyDHCP server does); a storm's 1,500 transfers were 3,000 log lines.
        quiet = logging.DEBUG if self._on_transfer is not None else logging.INFO
        if ending.ok:
            self._log.log(quiet, "%s sent %r: %d bytes in %.3f s", peer, transfer.filename, sent, duration)
        elif ending.aborted:
            self._log.log(quiet, "%s %r: %s", peer, transfer.filename, ending.error)
        elif ending.gave_up:  # logged once per interval by the refusal counter instead: a flood's own line
            self._log.debug("%s sending %r abandoned after %d bytes: %s", peer, transfer.filename, sent, ending.error)
        else:
            self._log.warning("%s sending %r failed after %d bytes: %s", peer, transfer.filename, sent, ending.error)
        self._emit(TransferRecord(transfer.client[0], transfer.client[1], transfer.filename, sent,
                                  transfer.blksize, transfer.windowsize, duration, ending.ok, ending.error))

    def _emit(self, record: TransferRecord) -> None:
        if self._on_transfer is None:
            return
        try:
            self._on_transfer(record)
        except Exception:
            self._log.exception("%s:%d on_transfer callback failed", record.client_ip, record.client_port)


def _internal_error(exc: BaseException) -> Ending:
    """How a transfer ends when something on our side failed: error 0 to the client, the cause
    in the record."""
    return Ending(ok=False, error=f"internal error: {exc}", reply=(tt.ERR_UNDEFINED, "internal error"))


def _raise(exc: BaseException) -> None:
    """Raise ``exc`` inside :meth:`TftpServer._step`, which ends the transfer with it."""
    raise exc


def _local_of(ancillary: list[tuple[int, int, bytes]], fallback: str) -> _Local:
    """Read ``IP_PKTINFO``: the request's destination address, then the receiving interface's
    own address (for a broadcast destination, which cannot be bound); or ``IPV6_PKTINFO``: the
    destination address (multicast is not used by TFTP clients)."""
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(payload) >= _PKTINFO6.size:
            address, ifindex = _PKTINFO6.unpack_from(payload)
            text = socket.inet_ntop(socket.AF_INET6, address)
            # A link-local address can only be bound with its interface (scope) named.
            return _Local((f"{text}%{ifindex}" if text.lower().startswith("fe80:") else text,), ifindex)
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= _PKTINFO.size:
            ifindex, spec_dst, dst = _PKTINFO.unpack_from(payload)
            addresses = dict.fromkeys((socket.inet_ntoa(dst), socket.inet_ntoa(spec_dst)))
            return _Local(tuple(addresses), ifindex)
    return _Local((fallback,))


def _bind_advice(address: str, port: int, exc: OSError) -> str:
    """The bind error in words an operator can act on."""
    where = f"cannot bind TFTP to {address}:{port}/udp"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE "
                "(AmbientCapabilities= in the systemd unit), or configure another port")
    if exc.errno == errno.EADDRINUSE:
        return (f"{where}: the port is already in use (tftpd-hpa or dnsmasq's TFTP?); "
                "stop that service or configure another port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {address} is not an address of this host; fix bind_address"
    return f"{where}: {exc.strerror or exc}; run as root or with CAP_NET_BIND_SERVICE, or configure another port"


def _close_quietly(closable: BinaryIO | BlockSource, log: logging.Logger, client: Client) -> None:
    """Close what ``open_file`` returned: a plugin's odd stream must not break the loop."""
    try:
        closable.close()
    except Exception:
        log.debug("%s closing a served file failed", _peer(client), exc_info=True)


def _peer(client: Client) -> str:
    return f"{client[0]}:{client[1]}"
