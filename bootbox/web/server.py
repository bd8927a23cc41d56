"""Serving the Flask app in-process with waitress, and stopping it cleanly.

waitress is a real multi-threaded WSGI server; ``asyncore_use_poll=True`` matters because its
default ``select()`` loop dies once any descriptor in the process passes 1024
(facts/libraries.md). Stopping closes every dispatcher from inside the loop thread (through
waitress's trigger), so the loop ends on its own and no socket is left open.

Connections are :class:`BoundedSendChannel`s, which change two things about how waitress sends
a file (``send_file`` of a path hands waitress its ``wsgi.file_wrapper``):

* A regular file goes out with ``os.sendfile``: the kernel copies page cache to the socket, the
  interpreter lock is released meanwhile, and no Python bytes object is made. Serving an ESXi
  module set (19 modules, 398 MB) to 32 hosts took bootbox 5.8 s of CPU against nginx's 2.5 s
  while every byte passed through a ``read()`` and a ``send()``.
* Anything else read into memory (a Range response, a generated file) is read in pieces of at
  most :data:`SEND_PIECE`, not the socket's send-buffer size, which Linux reports as 4 MiB on
  loopback and fast links. Pieces that large pushed glibc's malloc into keeping them in
  per-thread arenas: resident memory grew by ~60 MiB with every 8 parallel 16 MiB downloads
  (53 → 173 MiB after six rounds); with 256 KiB pieces it stays at ~60 MiB (``python -m
  bench.boot_path`` reports the peak).

With ``HttpServer(send_threads=N)`` (off by default: see :class:`HttpServer`), a body of at
least :data:`bootbox.web.sendfile.OFFLOAD_MIN` bytes (a kernel, an initrd) is not sent by
waitress's loop thread at all: once its headers are out, the connection goes to a
:class:`~bootbox.web.sendfile.SendPool` thread (a :class:`PooledSendChannel`), which sends the
rest with one blocking ``os.sendfile`` and hands the connection back.

Every connection is also held to the per-client limits of :mod:`bootbox.web.limits` (bodies,
connections per address, slow and idle connections; docs/limits.md), and an HTTPS listener
(``[http] tls_cert``) uses :class:`TlsChannel`, since waitress has no TLS of its own.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import ssl
import stat
import threading
import time
from typing import Any, NamedTuple

import waitress
from flask import Flask
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.utilities import RequestEntityTooLarge
from waitress.wasyncore import _DISCONNECTED  # the errors waitress's own send() takes for a gone client

from bootbox.errors import ConfigError
from bootbox.web.limits import ConnectionGuard, HttpLimits
from bootbox.web.sendfile import OFFLOAD_MIN, Outcome, SendJob, SendPool

log = logging.getLogger("bootbox.http")

SEND_PIECE = 256 * 1024
"""Most bytes of a response read and sent in one go (see the module docstring)."""
ACCEPT_BATCH = 64
"""Connections accepted per readiness event of a listening socket (waitress accepts one)."""
SENDFILE_PIECE = 4 * 2**20
"""Most bytes of a file handed to one ``os.sendfile`` call (no memory is involved)."""
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
"""What os.sendfile raises where the kernel cannot splice this file to this socket."""


class FileSlice(NamedTuple):
    """Bytes of an open file to send, named instead of read (what a :class:`SendfileBuffer`
    gives waitress in place of the bytes themselves)."""

    fd: int
    offset: int
    count: int


class SendfileBuffer(ReadOnlyFileBasedBuffer):  # type: ignore[misc]
    """A ``wsgi.file_wrapper`` response over a regular file, sent by the kernel.

    waitress flushes a file buffer as ``chunk = get(n)``, ``sent = channel.send(chunk)``,
    ``skip(sent)``: here ``get`` returns a :class:`FileSlice` at the file's position, which
    :meth:`BoundedSendChannel.send` passes to ``os.sendfile``, and the inherited ``skip``
    moves the position on by what was sent.
    """

    @classmethod
    def adopt(cls, buffer: ReadOnlyFileBasedBuffer) -> "SendfileBuffer | None":
        """The same response as a :class:`SendfileBuffer`, or None unless its file is a plain
        open file of a regular file: a BytesIO or pipe has no usable descriptor, and a
        ``gzip``/``bz2``/``lzma`` file's descriptor holds other bytes than it reads."""
        file = buffer.file
        raw = file.raw if isinstance(file, (io.BufferedReader, io.BufferedRandom)) else file
        if not isinstance(raw, io.FileIO):
            return None
        try:
            fd = file.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
        except (OSError, ValueError):  # closed, or not a file after all
            return None
        adopted = cls(buffer.file, buffer.block_size)
        adopted.remain = buffer.remain
        adopted.fd = fd
        return adopted

    def get(self, numbytes: int = -1, skip: bool = False) -> Any:
        if skip:  # waitress itself never asks for this; keep the copying contract for anyone who does
            return super().get(numbytes, skip)
        return FileSlice(self.fd, self.file.tell(), min(SENDFILE_PIECE, self.remain))  # not n: no memory is used


class BoundedSendChannel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """waitress's connection: regular files go out with ``os.sendfile``, other responses are
    read at most :data:`SEND_PIECE` bytes at a time (see the module docstring).

    With a :class:`ConnectionGuard` it also keeps what the guard's sweep needs
    (``reading_since``: when the request being read began, None between requests), counts
    bodies waitress refused as too large, and gives its address's place back when it closes.
    """

    reading_since: float | None = None
    unbuffered = False
    """The response being sent said ``X-Accel-Buffering: no`` (an event stream, bootbox.web.events)."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None,
                 guard: ConnectionGuard | None = None) -> None:
        self.guard = guard
        super().__init__(server, sock, addr, adj, map=map)
        self.sendbuf_len = min(self.sendbuf_len, SEND_PIECE)
        self.reading_since = self.creation_time  # its first request is due within request_timeout

    def received(self, data: bytes) -> bool:
        if self.reading_since is None and data:
            self.reading_since = time.time()
        result = bool(super().received(data))
        if self.request is None:  # no request half-read: the idle rule applies until the next byte
            self.reading_since = None
        # (waitress reads nothing more while a request waits for its answer, and closes after
        # an error answer: the rest of a refused body is never read.)
        if self.guard is not None:
            for request in self.requests:
                if type(request.error) is RequestEntityTooLarge and not getattr(request, "counted", False):
                    request.counted = True
                    self.guard.refusals.count("refused_body_too_large", str(self.addr[0]))
        return result

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        guard, self.guard = self.guard, None
        if guard is not None:
            guard.release(str(self.addr[0]))

    def write_soon(self, data: Any) -> Any:
        if type(data) is ReadOnlyFileBasedBuffer:
            data = SendfileBuffer.adopt(data) or data
        elif type(data) is bytes and data.startswith(b"HTTP/"):  # a response's headers
            self.unbuffered = b"\r\nx-accel-buffering: no\r\n" in data.lower()
        written = super().write_soon(data)
        if self.unbuffered:  # an event stream: wake the loop to send this now, not at its next 1 s turn
            self.server.pull_trigger()
        return written

    def send(self, data: Any, do_close: bool = True) -> int:
        if type(data) is not FileSlice:
            return int(super().send(data, do_close=do_close))
        try:
            sent = os.sendfile(self.socket.fileno(), data.fd, data.offset, data.count)
        except BlockingIOError:  # the socket buffer is full: waitress tries again when writable
            return 0
        except OSError as exc:
            if exc.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            if exc.errno not in _NO_SENDFILE:
                raise
            # This file system or socket cannot splice: send this piece the copying way.
            return int(super().send(os.pread(data.fd, min(data.count, SEND_PIECE), data.offset), do_close=do_close))
        if sent == 0 and data.count and do_close:
            # The file ended before Content-Length: it shrank after the response began. The
            # client cannot get the bytes it was promised; close rather than stall until timeout.
            # (A task thread's flush, do_close False, leaves this to the loop thread's next one.)
            log.warning("%s: a file being sent ended before its Content-Length; closing the connection",
                        self.addr)  # fmt: skip
            self.handle_close()
        return sent


class PooledSendChannel(BoundedSendChannel):
    """A plain-HTTP connection whose large file bodies are sent by a :class:`SendPool` thread
    (``HttpServer(send_threads=...)``; bootbox.web.sendfile). A separate class, so that a
    server without a pool pays nothing for it on the loop's hottest path (``writable``)."""

    _job: SendJob | None = None
    """The body being sent by a pool thread; meanwhile the connection is out of the loop's map
    (not polled, nothing flushed), and closing waits for the job to be handed back."""
    _offload = True
    """False once a pool send ended with the client gone or the file not spliceable: the rest
    goes the loop's way (which closes a gone client's connection)."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None,
                 guard: ConnectionGuard | None = None, pool: SendPool | None = None) -> None:
        assert pool is not None
        self.pool = pool
        super().__init__(server, sock, addr, adj, map=map, guard=guard)

    def writable(self) -> bool:
        return self._job is None and bool(super().writable())

    def _flush_some(self, do_close: bool = True) -> bool:
        if self._job is not None:  # a pool thread owns the socket and the head buffer
            return False
        return bool(super()._flush_some(do_close=do_close))

    def handle_close(self) -> None:
        with self.outbuf_lock:  # a task thread may be handing the body to the pool right now
            job = self._job
            if job is not None:  # end the send first; the loop closes once the job is handed back
                self.will_close = True
                job.cancel()
                return
            super().handle_close()

    def _hand_to_pool(self, data: FileSlice) -> bool:
        """Give the body at the head of the output to the send pool (see the module docstring);
        False when it stays here: too small, not a whole regular file, or the pool is stopping."""
        buffer = self.outbufs[0] if self.outbufs else None
        if (not self._offload or type(buffer) is not SendfileBuffer
                or buffer.fd != data.fd or buffer.remain < OFFLOAD_MIN):  # fmt: skip
            return False
        job = SendJob(self.socket, data.fd, data.offset, buffer.remain,
                      lambda sent, outcome: self._handed_back(buffer, sent, outcome), started=self._touch)  # fmt: skip
        self._job = job
        # Out of the loop's map meanwhile: each turn of waitress's loop asks every connection in
        # it whether it is readable and writable, and hundreds of bodies may wait for a thread.
        self._map.pop(self._fileno, None)
        if self.pool.submit(job):
            return True
        self._map[self._fileno] = self
        self._job = None
        return False

    def _touch(self) -> None:
        """A pool thread starts sending: the connection is active (the idle sweep's clock)."""
        self.last_activity = time.time()

    def _handed_back(self, buffer: SendfileBuffer, sent: int, outcome: Outcome) -> None:
        """On the pool thread: account for what was sent, give the connection back to the
        loop and wake it (it sends the rest, reads the next request, or closes)."""
        with self.outbuf_lock:
            if sent:
                buffer.skip(sent)
                self.total_outbufs_len -= sent
                self.last_activity = time.time()
            if outcome in (Outcome.GONE, Outcome.UNSUPPORTED):
                self._offload = False
            if outcome is Outcome.SHORT:
                log.warning("%s: a file being sent ended before its Content-Length; closing the connection",
                            self.addr)  # fmt: skip
                self.will_close = True
                self._offload = False
            self._job = None
            if self._fileno is not None:
                self._map[self._fileno] = self  # back in the loop's care
            self.outbuf_lock.notify()  # a task thread may wait for the output to drain
        try:
            self.server.pull_trigger()
        except OSError:  # the server is stopping: its loop is gone
            pass

    def send(self, data: Any, do_close: bool = True) -> int:
        if type(data) is FileSlice and self._hand_to_pool(data):
            return 0  # "nothing sent": waitress stops flushing; the pool thread takes it from here
        return super().send(data, do_close=do_close)


class TlsChannel(BoundedSendChannel):
    """A connection of the HTTPS listener (``[http] tls_cert``): waitress itself has no TLS, so
    the accepted socket is wrapped here and read and written the non-blocking TLS way.

    * The handshake runs from the loop's read and write events (``do_handshake_on_connect``
      off), so a client that never finishes it is only a slow connection (``request_timeout``).
    * OpenSSL's "want read/write" means "try again when ready", not an error (waitress's own
      ``recv``/``send`` would close the connection on them), and a record may leave decrypted
      bytes inside OpenSSL that poll() cannot see, so each read drains ``pending()``.
    * Files are never handed to ``os.sendfile``: the kernel would write them unencrypted.
    """

    _handshaken = False
    _want_write = False

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None,
                 guard: ConnectionGuard | None = None, context: ssl.SSLContext | None = None) -> None:
        assert context is not None
        sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        super().__init__(server, sock, addr, adj, map=map, guard=guard)

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is done."""
        if self._handshaken:
            return True
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write = False
            return False
        except ssl.SSLWantWriteError:
            self._want_write = True
            return False
        except (ssl.SSLError, OSError) as exc:  # not TLS, a bad certificate on their side, a reset...
            log.debug("%s TLS handshake failed: %s", self.addr, exc)
            self.handle_close()
            return False
        self._handshaken, self._want_write = True, False
        return True

    def writable(self) -> bool:
        return bool(self._want_write or super().writable())

    def handle_read(self) -> None:
        if not self._handshake():
            return
        while self.connected:
            try:
                data = self.socket.recv(self.adj.recv_bytes)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError):
                self.handle_close()
                return
            if not data:  # the client closed (or sent close_notify)
                self.handle_close()
                return
            self.last_activity = time.time()
            self.received(data)
            if not self.socket.pending():
                return

    def handle_write(self) -> None:
        if self._handshake():
            super().handle_write()

    def write_soon(self, data: Any) -> Any:
        return HTTPChannel.write_soon(self, data)  # no SendfileBuffer: see the class docstring

    def send(self, data: Any, do_close: bool = True) -> int:
        try:
            return int(self.socket.send(data))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0  # waitress offers the same bytes again when the socket is writable
        except (ssl.SSLError, OSError):
            if do_close:
                self.handle_close()
            return 0


class HttpServer:
    """waitress running ``app`` on one address, in one background thread, with the per-client
    limits of :mod:`bootbox.web.limits`.

    ``send_threads`` > 0 (plain HTTP only) adds that many threads sending large file bodies
    (bootbox.web.sendfile). It is off by default: in the full boot storm it cut the HTTP steps
    from seconds to a fraction (scripts 3 s → 0.2 s, report-in 1.5 s → 0.05 s at the median),
    but the request threads, no longer held back by the loop thread, then took the interpreter
    lock from the TFTP thread often enough that BIOS clients' loader requests went unanswered
    for their 6 s and the boots failed (docs: README "Performance")."""

    def __init__(self, app: Flask, *, host: str, port: int, threads: int = 16, connection_limit: int = 1000,
                 limits: HttpLimits | None = None, tls: ssl.SSLContext | None = None,
                 send_threads: int = 0) -> None:  # fmt: skip
        self._app = app
        self._tls = tls
        self._send_threads = send_threads
        self._pool: SendPool | None = None
        self._guard = ConnectionGuard(limits or HttpLimits())
        limits = self._guard.limits
        self._options: dict[str, Any] = dict(
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            asyncore_use_poll=True,
            ident="bootbox",
            # The guard's sweep replaces waitress's maintenance; it runs every second so a slow or
            # idle connection is closed within a second of its limit.
            channel_timeout=max(1, int(limits.idle_timeout)),
            cleanup_interval=1,
            # A Content-Length above this is refused at the headers; a chunked body is read up to it.
            max_request_body_size=limits.max_body,
            clear_untrusted_proxy_headers=True,
            url_scheme="https" if tls is not None else "http",
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server = waitress.create_server(self._app, **self._options)
        except OSError as exc:
            port = self._options["port"]
            raise OSError(
                exc.errno,
                f"cannot listen for HTTP on {self._options['host']}:{port}: {exc.strerror}. "
                f"Stop what uses port {port}, or choose another with "
                f"{'http.tls_port' if self._tls is not None else '--http-port / http.port'}",
            ) from exc
        # One listening dispatcher per address ("localhost" may give two): each makes the channels.
        listeners = getattr(self._server, "map", None) or self._server._map
        for dispatcher in list(listeners.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = self._make_channel
                dispatcher.maintenance = _sweeper(self._guard, dispatcher)
                dispatcher.handle_accept = _acceptor(dispatcher)
        if self._tls is None and self._send_threads > 0:  # TLS bodies are encrypted by OpenSSL, not spliced
            self._pool = SendPool(self._send_threads)
        self._thread = threading.Thread(target=self._server.run, name="bootbox-http", daemon=True)
        self._thread.start()

    def _make_channel(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> Any:
        """waitress's ``channel_class``: a :class:`BoundedSendChannel`, or None (the socket
        closed) when the client's address holds all the connections it may."""
        address = str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)
        if not self._guard.admit(address, sock):
            sock.close()
            return None
        try:
            if self._tls is not None:
                return TlsChannel(server, sock, addr, adj, map=map, guard=self._guard, context=self._tls)
            if self._pool is not None:
                return PooledSendChannel(server, sock, addr, adj, map=map, guard=self._guard, pool=self._pool)
            return BoundedSendChannel(server, sock, addr, adj, map=map, guard=self._guard)
        except BaseException:
            self._guard.release(address)
            raise

    @property
    def port(self) -> int:
        return int(self._server.effective_port) if self._server else 0

    @property
    def stats(self) -> dict[str, Any]:
        if not self._server:
            return {}
        sending = self._pool.busy() if self._pool is not None else 0  # out of the loop's map meanwhile
        return {"port": self.port, "connections": max(0, len(self._server._map) - 2) + sending,
                "sending_files": sending, "send_threads": self._pool.threads if self._pool is not None else 0,
                **self._guard.counts()}  # fmt: skip

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        pool, self._pool = self._pool, None
        if pool is not None:  # every body being sent ends first: no socket is closed under a send
            pool.stop()

        def close_all() -> None:
            for dispatcher in list(server._map.values()):
                try:
                    dispatcher.close()
                except OSError:
                    pass

        try:
            server.trigger.pull_trigger(close_all)
        except OSError:
            close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("the HTTP server thread did not stop within 5 s")
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


def _sweeper(guard: ConnectionGuard, dispatcher: Any) -> Any:
    """A listening dispatcher's ``maintenance(now)``: the guard's sweep over its channels."""

    def maintenance(now: float) -> None:
        guard.sweep(list(dispatcher.active_channels.values()), now)

    return maintenance


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The HTTPS listener's context from PEM files (``[http] tls_cert``, ``tls_key``): TLS 1.2 or
    newer, the library's default ciphers.

    :raises ConfigError: a file is missing or unreadable, or the pair does not load (not PEM,
        a key that does not match the certificate, an encrypted key), naming the key to fix.
    """
    for name, path in (("http.tls_cert", cert), ("http.tls_key", key)):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError(name, f"{path!r} is not a readable file (a PEM {'certificate' if 'cert' in name else 'key'})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # an encrypted key fails instead of prompting
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError("http.tls_cert", f"{cert!r} and {key!r} do not load as a PEM certificate chain and its "
                                           f"unencrypted private key: {exc}") from None
    return context


def _acceptor(dispatcher: Any) -> Any:
    """A listening dispatcher's ``handle_accept``: waitress's, for up to :data:`ACCEPT_BATCH`
    waiting connections instead of one. Each turn of waitress's loop walks every open
    connection, so a flood of new connections (refused, most of them, by the per-address limit)
    cost the loop thread a whole walk per connection: about 0.25 ms with 64 open, most of the CPU
    it spent under ``bench.flood``. Never past ``connection_limit``."""

    def handle_accept() -> None:
        for _ in range(ACCEPT_BATCH):
            if len(dispatcher._map) >= dispatcher.adj.connection_limit:
                return
            try:
                accepted = dispatcher.accept()
                if accepted is None:  # nothing more waiting
                    return
                conn, addr = accepted
                dispatcher.set_socket_options(conn)
            except OSError:  # a connection gone before it was accepted, or no descriptor: as waitress
                return
            dispatcher.channel_class(dispatcher, conn, dispatcher.fix_addr(addr), dispatcher.adj, map=dispatcher._map)

    return handle_accept
