"""Threads that send large file bodies with blocking ``os.sendfile``, off waitress's loop thread.

waitress runs every connection from one loop thread: it polls them all, reads requests, and
sends every response body. With files going out by ``os.sendfile`` (bootbox.web.server) the
kernel does the copying, but still on that one thread, in pieces as large as the socket's free
send buffer, and after every piece the thread waits for the interpreter lock again while the
DHCP, TFTP and request threads hold it. Profiling a 1,000-host boot storm (``python -m
bench.full_boot_storm``) found the loop thread busy all the time, 41 % of it inside or just
after ``os.sendfile`` and 25 % in ``poll``: a 300-byte iPXE script or a report-in waited
behind every kernel and initrd being sent (2 s per script at the median; nginx: 40 ms).

A :class:`SendPool` takes a body of at least :data:`OFFLOAD_MIN` bytes once the bytes before it
(the headers) are out. Each of its threads makes the socket blocking and sends the rest of
the file in *one* ``os.sendfile`` call: the interpreter lock is released once per body instead
of once per piece, the copying of several bodies runs on several cores, and the loop thread
is left with what only it can do. A send that has not finished after :data:`SEND_SLICE`
seconds (``SO_SNDTIMEO``: a slow reader) gives the connection back to the loop, which polls
it and offers it again once it is writable, so a slow reader never holds a thread for more
than a slice at a time.

The pool knows nothing about waitress: a :class:`SendJob`'s owner is called back, on the pool
thread, with how many bytes went out and how the send ended (:class:`Outcome`).
"""

from __future__ import annotations

import collections
import enum
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable

log = logging.getLogger("bootbox.http")

OFFLOAD_MIN = 1 * 2**20
"""Bodies smaller than this stay with the loop thread: one non-blocking call sends them."""
SEND_SLICE = 0.1
"""Longest one blocking ``os.sendfile`` may wait for a reader (seconds) before the connection
goes back to the loop thread."""
SEND_NICE = 10
"""The pool threads' nice value: copying boot files may wait for the CPU, a DHCP or TFTP
answer must not (in a storm, pool threads at the normal priority took the CPU from the TFTP
thread until BIOS clients gave up on their loader)."""
_MOST_PER_CALL = 0x7FFFF000
"""Linux sends at most this many bytes in one sendfile(2) call."""
_DISCONNECTED = frozenset({errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE,
                           errno.EBADF})  # fmt: skip
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


class Outcome(enum.Enum):
    """How a job's turn on a pool thread ended."""

    DONE = "done"
    """Every byte asked for was sent."""
    SLOW = "slow"
    """The reader did not take the rest within a slice: poll the socket and offer it again."""
    GONE = "gone"
    """The client went away, or the job was cancelled (the socket was shut down)."""
    UNSUPPORTED = "unsupported"
    """This file cannot be spliced to this socket: send the copying way."""
    SHORT = "short"
    """The file ended before the bytes asked for (it shrank while being sent)."""


class SendJob:
    """``count`` bytes of the open file ``file_fd`` from ``offset``, to socket ``sock``.

    ``finished(sent, outcome)`` runs on the pool thread once the job's turn ends; it is called
    exactly once per :meth:`SendPool.submit` that returned True. :meth:`cancel` shuts the
    socket down, which ends a blocked send at once (the owner then closes the connection).
    """

    def __init__(self, sock: socket.socket, file_fd: int, offset: int, count: int,
                 finished: Callable[[int, Outcome], None], started: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.sock, self.file_fd, self.offset, self.count = sock, file_fd, offset, count
        self.finished, self.started = finished, started
        self.cancelled = False

    def cancel(self) -> None:
        """Stop sending: the running or queued send ends with :attr:`Outcome.GONE`."""
        self.cancelled = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed or never connected
            pass

    def run(self) -> tuple[int, Outcome]:
        """One turn: a blocking sendfile of everything, bounded by :data:`SEND_SLICE`."""
        if self.cancelled:
            return 0, Outcome.GONE
        fd = self.sock.fileno()
        if fd < 0:
            return 0, Outcome.GONE
        sent, outcome = 0, Outcome.DONE
        os.set_blocking(fd, True)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(SEND_SLICE))
            while sent < self.count:
                try:
                    n = os.sendfile(fd, self.file_fd, self.offset + sent, min(self.count - sent, _MOST_PER_CALL))
                except BlockingIOError:  # SO_SNDTIMEO passed with nothing sent
                    outcome = Outcome.SLOW
                    break
                except OSError as exc:
                    outcome = (Outcome.GONE if exc.errno in _DISCONNECTED else
                               Outcome.UNSUPPORTED if exc.errno in _NO_SENDFILE else None)  # fmt: skip
                    if outcome is None:
                        log.warning("sending a file to %s failed: %s", _peer(self.sock), exc)
                        outcome = Outcome.GONE
                    break
                if n == 0:
                    outcome = Outcome.SHORT
                    break
                sent += n
                if sent < self.count:  # a partial send: the slice passed with the reader behind
                    outcome = Outcome.SLOW
                    break
        finally:
            try:
                os.set_blocking(fd, False)
            except OSError:  # the socket is gone; nothing else will use it
                pass
        if self.cancelled:
            outcome = Outcome.GONE
        return sent, outcome


class SendPool:
    """``threads`` threads running :class:`SendJob` turns in the order they were submitted."""

    def __init__(self, threads: int, name: str = "bootbox-sendfile") -> None:
        if threads < 1:
            raise ValueError("a send pool needs at least one thread")
        self._queue: collections.deque[SendJob] = collections.deque()
        self._ready = threading.Condition()
        self._running: set[SendJob] = set()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, job: SendJob) -> bool:
        """Queue ``job``; False (and the job is not taken) once the pool is stopping."""
        with self._ready:
            if self._stopping:
                return False
            self._queue.append(job)
            self._ready.notify()
        return True

    def busy(self) -> int:
        """Jobs queued or being sent."""
        with self._ready:
            return len(self._queue) + len(self._running)

    def stop(self, timeout: float = 5.0) -> None:
        """Take no more jobs, cancel every queued and running one (each owner hears GONE), and
        wait for the threads to end."""
        with self._ready:
            self._stopping = True
            pending = list(self._queue) + list(self._running)
            self._ready.notify_all()
        for job in pending:
            job.cancel()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a file-sending thread did not stop within %s s", timeout)

    def _work(self) -> None:
        try:  # Linux: a thread's own nice value (its thread id is a "process" to setpriority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SEND_NICE)
        except (OSError, AttributeError):
            pass
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:  # stopping, and nothing is left to hand back
                    return
                job = self._queue.popleft()
                if self._stopping:
                    job.cancelled = True
                self._running.add(job)
            try:
                if job.started is not None:
                    job.started()
                sent, outcome = job.run()
            except Exception:  # never lose a job: its connection would hang until its idle timeout
                log.exception("sending a file to %s failed", _peer(job.sock))
                sent, outcome = 0, Outcome.GONE
            with self._ready:
                self._running.discard(job)
            try:
                job.finished(sent, outcome)
            except Exception:
                log.exception("handing a sent file back to its connection failed")


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername())
    except OSError:
        return "a closed connection"
