"""In-memory host index: what the boot path reads instead of the store.

DHCP packets and boot requests look hosts up here (a dict read under a short lock) and record
changes here; a write-behind thread (:class:`HostPersister`) copies changed hosts to disk
in batches, to the append-only host log (``bootbox.store.hostlog``): no boot step ever waits for a
write, and a round of writes costs in proportion to the hosts that changed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Iterable

from bootbox.store.hostlog import HostLog, encode_lines
from bootbox.errors import NotFound
from bootbox.model import Host, normalize_mac
from bootbox.runtime.pacing import PAUSE, lower_priority, sliced

log = logging.getLogger("bootbox.index")

HOST_LOG = "hosts.jsonl"
CHANGE_LOG = 65536
"""How many host changes the index remembers for :meth:`HostIndex.changed_since`."""
_IP_ATTRS = ("ipv4", "ipv6")


class HostIndex:
    """Hosts by MAC, plus an IPv4 → MAC map for requests that carry only an address (TFTP)."""

    def __init__(self, hosts: Iterable[Host] = ()) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, Host] = {}
        self._by_ip: dict[str, str] = {}
        self._dirty: set[str] = set()
        # Hosts taken for writing and not yet written, and how often each was taken: a host
        # another appliance changed is not applied over a change of ours on its way to the
        # database (apply_remote), which would otherwise be lost from memory.
        self._writing: set[str] = set()
        self._taken: dict[str, int] = {}
        self.version = 0
        """Grows on every change, so derived views (the DNS zone) know when to rebuild."""
        self._changes: deque[tuple[int, str]] = deque(maxlen=CHANGE_LOG)
        for host in hosts:
            self._put(host)

    def _put(self, host: Host) -> None:
        old = self._hosts.get(host.mac)
        self._hosts[host.mac] = host
        self.version += 1
        self._changes.append((self.version, host.mac))
        addresses = {host.attrs[key] for key in _IP_ATTRS if host.attrs.get(key)}
        for address in addresses:  # TFTP and HTTP clients are known by address, over IPv4 or IPv6
            self._by_ip[address] = host.mac
        if old is not None:  # after the new ones: a lock-free reader never misses an address that stays
            self._forget_ips(old, keep=addresses)

    def _forget_ips(self, host: Host, keep: frozenset[str] | set[str] = frozenset()) -> None:
        for key in _IP_ATTRS:
            address = host.attrs.get(key)
            if address and address not in keep and self._by_ip.get(address) == host.mac:
                del self._by_ip[address]

    def get(self, mac: str) -> Host | None:
        """The host with this MAC, read without the lock: the boot path reads a host several
        times per request, and a writer that loses the interpreter lock while it holds the
        index's made every reader queue behind it (seen as lock waits on the HTTP threads in a
        boot storm profile). One dict read is atomic, and a write replaces a whole frozen
        :class:`Host`, so a reader sees the host before or after a change, never half of one."""
        return self._hosts.get(mac)

    def require(self, mac: str) -> Host:
        """The host with this MAC (any accepted spelling); NotFound when bootbox never saw it."""
        mac = normalize_mac(mac)
        host = self.get(mac)
        if host is None:
            raise NotFound(f"host {mac} is not known to bootbox")
        return host

    def all(self) -> list[Host]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda h: h.mac)

    def __len__(self) -> int:
        with self._lock:
            return len(self._hosts)

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC last seen at ``ip``; a single dict read, lock-free as :meth:`get` is."""
        return self._by_ip.get(ip)

    def update(self, mac: str, change: Callable[[Host | None], Host]) -> Host:
        """Apply ``change`` to the current host (``None`` if new) atomically; mark it dirty."""
        with self._lock:
            host = change(self._hosts.get(mac))
            self._put(host)
            self._dirty.add(mac)
            return host

    def remove(self, mac: str) -> bool:
        with self._lock:
            host = self._hosts.pop(mac, None)
            self.version += 1
            self._changes.append((self.version, mac))
            if host is not None:
                self._forget_ips(host)
            self._dirty.discard(mac)
            return host is not None

    def changed_since(self, version: int) -> tuple[int, set[str] | None]:
        """``(current version, MACs changed after version)``, or None for the MACs when the change
        log (the last :data:`CHANGE_LOG` changes) does not reach back that far: a derived view
        (the DNS zone) updates those hosts only, or everything on None."""
        with self._lock:
            if version < 0 or not self._changes or self._changes[0][0] > version + 1:
                return self.version, None if self.version != version else set()
            changed: set[str] = set()
            for v, mac in reversed(self._changes):  # newest first: only the changes since version
                if v <= version:
                    break
                changed.add(mac)
            return self.version, changed

    def write_marks(self, macs: Iterable[str]) -> dict[str, int]:
        """How often each host was taken for writing so far; read *before* fetching what another
        appliance wrote, and handed back to :meth:`apply_remote`."""
        with self._lock:
            return {mac: self._taken.get(mac, 0) for mac in macs}

    def apply_remote(self, mac: str, host: Host | None, mark: int | None = None) -> bool:
        """Take a host as another appliance wrote it (None: it removed it), without marking it
        dirty, so it is not written back. A host with a change of our own not yet written, being
        written, or written since ``mark`` (:meth:`write_marks`) keeps ours: it reaches the
        database after theirs and wins there too. True when memory changed."""
        with self._lock:
            if mac in self._dirty or mac in self._writing or (mark is not None and self._taken.get(mac, 0) != mark):
                return False
            old = self._hosts.get(mac)
            if host is None:
                if old is None:
                    return False
                del self._hosts[mac]
                self._forget_ips(old)
            elif old == host:
                return False
            else:
                self._put(host)
                return True
            self.version += 1
            self._changes.append((self.version, mac))
            return True

    def take_dirty(self) -> dict[str, Host]:
        with self._lock:
            dirty = {mac: self._hosts[mac] for mac in self._dirty if mac in self._hosts}
            self._dirty.clear()
            self._writing.update(dirty)
            for mac in dirty:
                self._taken[mac] = self._taken.get(mac, 0) + 1
            return dirty

    def mark_dirty(self, macs: Iterable[str]) -> None:
        with self._lock:
            macs = set(macs)
            self._dirty.update(mac for mac in macs if mac in self._hosts)
            self._writing.difference_update(macs)

    def written(self, macs: Iterable[str]) -> None:
        """Hosts taken by :meth:`take_dirty` are in the host log now."""
        with self._lock:
            self._writing.difference_update(macs)


class HostPersister:
    """Copies changed hosts from the index to the host log, off the boot path, each round."""

    def __init__(self, index: HostIndex, hostlog: HostLog, interval: float = 0.5) -> None:
        self._index = index
        self._log = hostlog
        self._interval = interval
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bootbox-host-persister", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self, pause: float = 0.0) -> None:
        """Write every dirty host now (on shutdown and before answers that promise durability).

        ``pause`` > 0 (the background rounds) encodes in slices with that much sleep between
        them (:mod:`bootbox.runtime.pacing`), so a round during a boot storm does not stall the DHCP
        thread; the lines still reach the disk in one write and one fsync.
        """
        with self._write_lock:
            dirty = self._index.take_dirty()
            if not dirty:
                return
            try:
                self._log.append_lines(self._encode(list(dirty.values()), pause), len(dirty))
            except Exception:
                self._index.mark_dirty(dirty)
                raise
            self._index.written(dirty)
            if self._log.wants_compaction(len(self._index)):
                hosts = self._index.all()
                self._log.replace_lines(self._encode(hosts, pause), len(hosts))

    @staticmethod
    def _encode(hosts: list[Host], pause: float) -> bytes:
        return b"".join(
            encode_lines({host_key(host.mac): host.to_dict() for host in part}) for part in sliced(hosts, pause=pause)
        )

    def forget(self, mac: str) -> None:
        """Record a removed host durably (an operator's delete is acknowledged only after this)."""
        with self._write_lock:
            self._log.append({host_key(mac): None})

    def _run(self) -> None:
        lower_priority()
        while not self._stop.wait(self._interval):
            try:
                self.flush(pause=PAUSE)
            except OSError:
                pass  # the host log says so itself, once per interval (HostLog.disk); kept dirty, retried
            except Exception:
                log.exception("could not save hosts to the host log; will retry")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()


def host_key(mac: str) -> str:
    """A host's key on disk: its MAC as 12 hex digits."""
    return mac.replace(":", "")
