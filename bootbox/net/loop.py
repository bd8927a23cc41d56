"""One service thread multiplexing a server's sockets with ``selectors``; stops at once.

Every UDP server here (proxyDHCP, full DHCP, DHCPv6) needs the same loop: epoll over its sockets
(never ``select()``, which dies once a descriptor passes 1024), a wake-up socket pair so ``stop``
takes effect immediately instead of at the next timeout, and an optional periodic task (lease
expiry). The servers keep their sockets and their packet handling; this owns the thread.
Once a wake-up's packets are answered, young garbage that is nearly due is collected
(:mod:`bootbox.runtime.idlegc`), so the collector runs between packets rather than in the middle of one.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Any, Callable, Mapping

from bootbox.runtime.idlegc import collect_if_due

_WAKE = object()


class SelectorLoop:
    """``handle(sock, key)`` runs on the loop thread for each readable socket; ``idle()`` after
    every wake-up or ``tick`` seconds."""

    def __init__(
        self,
        name: str,
        handle: Callable[[socket.socket, Any], None],
        *,
        idle: Callable[[], None] | None = None,
        tick: float = 1.0,
    ) -> None:
        self._name = name
        self._handle = handle
        self._idle = idle
        self._tick = tick
        self.stopping = threading.Event()
        """Set when ``stop`` was asked: long-running handlers check it to return early."""
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._sockets: dict[Any, socket.socket] = {}

    @property
    def running(self) -> bool:
        """Started and not yet stopped."""
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """The loop thread is running right now (False if it died of a bug or was stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, sockets: Mapping[Any, socket.socket]) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already started")
        self._sockets = dict(sockets)
        self._wake = socket.socketpair()
        self.stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the thread (it wakes at once); ``False`` if it was not running. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return False
        self.stopping.set()
        wake = self._wake
        if wake is not None:
            wake[1].send(b"\0")
        thread.join(timeout=timeout)
        if wake is not None:
            for sock in wake:
                sock.close()
        self._wake = None
        return True

    def _run(self) -> None:
        assert self._wake is not None
        with selectors.DefaultSelector() as sel:
            for key, sock in self._sockets.items():
                sel.register(sock, selectors.EVENT_READ, key)
            sel.register(self._wake[0], selectors.EVENT_READ, _WAKE)
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=self._tick):
                    if key.data is not _WAKE:
                        self._handle(key.fileobj, key.data)  # type: ignore[arg-type]
                if self._idle is not None and not self.stopping.is_set():
                    self._idle()
                collect_if_due()
