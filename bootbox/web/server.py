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
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import threading
from typing import Any, NamedTuple

import waitress
from flask import Flask
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.wasyncore import _DISCONNECTED  # the errors waitress's own send() takes for a gone client

log = logging.getLogger("bootbox.http")

SEND_PIECE = 256 * 1024
"""Most bytes of a response read and sent in one go (see the module docstring)."""
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
    read at most :data:`SEND_PIECE` bytes at a time (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sendbuf_len = min(self.sendbuf_len, SEND_PIECE)

    def write_soon(self, data: Any) -> Any:
        if type(data) is ReadOnlyFileBasedBuffer:
            data = SendfileBuffer.adopt(data) or data
        return super().write_soon(data)

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


class HttpServer:
    """waitress running ``app`` on one address, in one background thread."""

    def __init__(self, app: Flask, *, host: str, port: int, threads: int = 16, connection_limit: int = 1000) -> None:
        self._app = app
        self._options: dict[str, Any] = dict(
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            asyncore_use_poll=True,
            ident="bootbox",
            channel_timeout=60,
            clear_untrusted_proxy_headers=True,
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
                f"Stop what uses port {port}, or choose another with --http-port / http.port",
            ) from exc
        # One listening dispatcher per address ("localhost" may give two): each makes the channels.
        listeners = getattr(self._server, "map", None) or self._server._map
        for dispatcher in list(listeners.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = BoundedSendChannel
        self._thread = threading.Thread(target=self._server.run, name="bootbox-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.effective_port) if self._server else 0

    @property
    def stats(self) -> dict[str, Any]:
        if not self._server:
            return {}
        return {"port": self.port, "connections": max(0, len(self._server._map) - 2)}

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None

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
