"""Run TFTP transfers' per-block work on worker threads, in C, outside the interpreter lock.

Why: the TFTP server (:mod:`bootbox.net.tftp.server`) is one Python loop, and with many lock-step
clients at once every block's trip through the interpreter kept it to one core, short of
tftpd-hpa, which forks a process per transfer onto every core (README, "Performance"). The
compiled helper ``bootbox.net.tftp._tftpengine`` runs the part of a transfer that repeats per block
(wait for the ACK, move the window, send, keep the deadline) with the lock released, so each
transfer handed to it proceeds on its own thread, in parallel, like tftpd-hpa's processes.

The loop hands a transfer over only between ACKs (:attr:`Transfer.steady`) and gets it back,
with its state, the moment anything else happens (the outcomes are listed in
``_tftpengine.c``): the Python :class:`~bootbox.net.tftp.transfer.Transfer` stays the one
implementation of everything unusual. Files that are not real files (a plugin's BytesIO) stay
in the loop. Without a C compiler at install time the helper is not built, :data:`AVAILABLE`
is False and every transfer runs in the loop, as before: slower with many clients, otherwise
the same.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from typing import Callable

from bootbox.net.tftp.transfer import READ_AHEAD, Transfer

try:
    from bootbox.net.tftp import _tftpengine  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: see the module docstring
    _tftpengine = None

__all__ = ["AVAILABLE", "Engine", "EngineResult"]

AVAILABLE = _tftpengine is not None
"""Whether the compiled helper was built and imports."""

MAX_STRAYS = 16
"""Packets other than ACKs after which a transfer stays in the loop. Each one sends the transfer
back (the loop decides what it means) and the next hand-over costs a thread, so a client that
keeps sending them is served by the loop instead of costing a thread per packet."""

MIN_BLOCKS_LEFT = 8
"""Blocks a transfer must have left to be handed over: starting a thread costs about as much as
serving a few blocks in the loop, so the last ACKs of a small file stay there."""

EngineResult = tuple[str, bytes | None, int | BaseException]
"""(outcome, packet, errno) from :meth:`Transfer.run_steady`, or ("failed", None, exception)
when the call itself raised."""


class Engine:
    """The transfers out on engine threads, for one :class:`~bootbox.net.tftp.server.TftpServer`.

    Used from the server's loop thread only, except :meth:`_drive`, which runs on the worker
    and touches nothing but its own transfer until it has posted the result.

    :param limit: transfers out at once (threads); more stay in the loop.
    :param wake: called from a worker when its transfer comes back, to wake the loop.
    :param spin: seconds a lone lock-step transfer polls for its next ACK before sleeping.
    :param slow_ack_limit: ACKs in a row slower than ``spin`` after which that stops.
    """

    def __init__(self, *, limit: int, wake: Callable[[], None], spin: float, slow_ack_limit: int,
                 thread_name: str) -> None:
        if _tftpengine is None:
            raise RuntimeError("bootbox.net.tftp._tftpengine is not built (no C compiler at install time)")
        self._run = _tftpengine.run
        self._limit = limit
        self._wake = wake
        self._spin = spin
        self._slow_ack_limit = slow_ack_limit
        self._thread_name = thread_name
        self._out: dict[Transfer, tuple[threading.Thread, int]] = {}  # transfer → (worker, recall eventfd)
        self._back: collections.deque[tuple[Transfer, threading.Thread]] = collections.deque()  # by workers
        self._results: dict[Transfer, EngineResult] = {}  # set by a worker before it appends
        self._launched: dict[Transfer, threading.Event] = {}  # set once its worker started (or could not)
        self._to_start: queue.SimpleQueue[tuple[Transfer, threading.Thread, threading.Event] | None] = queue.SimpleQueue()
        self._starter: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._out)

    def can_take(self, transfer: Transfer) -> bool:
        """Whether ``transfer`` can be handed over now."""
        return (not transfer.away and transfer.steady and len(self._out) < self._limit
                and transfer.strays < MAX_STRAYS and transfer.last_block - transfer.base >= MIN_BLOCKS_LEFT)

    def take(self, transfer: Transfer, before_start: Callable[[], None]) -> None:
        """Hand ``transfer`` to a new worker thread; ``before_start`` runs once everything the hand-over
        needs exists (the caller stops watching the transfer's socket there).

        The worker is started by the starter thread, not here: ``Thread.start`` waits until the
        new thread has run, which takes the interpreter lock twice, and in a 1,000-host boot storm
        the loop spent that wait once per transfer while read requests queued behind it (BIOS
        ROMs give up after about 6 s). A worker that cannot be started hands the transfer back
        with "resume", and the loop serves it.

        :raises OSError: no descriptor for the recall eventfd (EMFILE...).
        :raises RuntimeError: no thread for the starter. Either way the transfer was not handed over.
        """
        if self._starter is None:
            starter = threading.Thread(target=self._start_workers, daemon=True,
                                       name=self._thread_name.replace("-engine:", "-engine-starter:"))
            starter.start()
            self._starter = starter
        recall = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        worker = threading.Thread(target=self._drive, args=(transfer, recall), name=self._thread_name, daemon=True)
        try:
            before_start()
        except BaseException:
            os.close(recall)
            raise
        transfer.away = True
        self._out[transfer] = (worker, recall)
        launched = self._launched[transfer] = threading.Event()
        self._to_start.put((transfer, worker, launched))

    def _start_workers(self) -> None:
        """The starter thread: start each worker handed to it by :meth:`take`, in order."""
        while (item := self._to_start.get()) is not None:
            transfer, worker, launched = item
            try:
                worker.start()
            except RuntimeError:  # no thread to be had: the loop serves this one, and keeps it
                transfer.strays = MAX_STRAYS
                self._results[transfer] = ("resume", None, 0)
                self._back.append((transfer, worker))
                self._wake()
            finally:
                launched.set()

    def close(self) -> None:
        """End the starter thread (the server's loop calls this last, once every transfer is back)."""
        if self._starter is not None:
            self._to_start.put(None)
            self._starter.join()
            self._starter = None

    def _drive(self, transfer: Transfer, recall: int) -> None:
        result: EngineResult
        try:
            result = transfer.run_steady(self._run, recall, read_ahead=READ_AHEAD, spin=self._spin,
                                         slow_ack_limit=self._slow_ack_limit)
        except BaseException as exc:  # handed to the loop, which ends the transfer with it
            result = ("failed", None, exc)
        if result[0] == "packet":
            transfer.strays += 1
        self._results[transfer] = result
        self._back.append((transfer, threading.current_thread()))
        self._wake()

    def returned(self) -> list[tuple[Transfer, EngineResult]]:
        """Transfers whose worker has finished, with what it returned; each is the loop's again."""
        back = []
        while self._back:
            transfer, worker = self._back.popleft()
            if transfer in self._out and self._out[transfer][0] is worker:  # else taken back by recall()
                self._release(transfer)
                back.append((transfer, self._results.pop(transfer)))
        return back

    def recall(self, transfer: Transfer) -> EngineResult:
        """Ask the worker serving ``transfer`` to stop, wait for it (it returns within a poll) and
        return what it returned; the transfer is the loop's again."""
        _worker, recall = self._out[transfer]
        os.eventfd_write(recall, 1)
        self._launched[transfer].wait()  # a worker still queued for the starter is started first
        self._release(transfer)
        return self._results.pop(transfer)  # posted before the worker ended; returned() skips it

    def out(self) -> list[Transfer]:
        """The transfers out on workers now."""
        return list(self._out)

    def _release(self, transfer: Transfer) -> None:
        worker, recall = self._out.pop(transfer)
        del self._launched[transfer]
        if worker.ident is not None:  # else the starter could not start it
            worker.join()
        os.close(recall)
        transfer.away = False
