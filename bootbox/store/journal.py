"""The boot-event journal: what happened to each host, kept in memory and appended to JSON lines.

Boot events are produced on the hot path (a DHCP packet, a TFTP or HTTP request) and a boot
storm produces thousands a second, so recording one must never wait for the disk: ``append``
only updates in-memory rings and queues the event, and one writer thread appends the queued
events to ``events.jsonl`` in batches. Events never go through the store: TinyDB rewrites its
whole file on every write (facts/libraries.md §3).

The file is one ``BootEvent.to_dict()`` JSON object per line. When it would grow past
``max_bytes`` it is rotated (``events.jsonl`` → ``.1`` → ``.2`` … up to ``backups``), so disk use
is bounded by ``(backups + 1) * max_bytes``. On start the newest ``load_bytes`` of the retained
files are read back, oldest first, so ``bootbox host events MAC`` survives a restart; a torn last
line from a crash is skipped. Only a tail is read: parsing costs about 9 µs a line on a small
appliance (measured: 3.5 s for one full 64 MiB file), and start-up should not wait for history
older than the rings can hold anyway.

If the writer falls behind by more than ``queue_size`` events, new events are still kept in
memory but counted as dropped for the file rather than blocking the caller.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import BinaryIO, Iterator

from bootbox.errors import BootboxError, ValidationError
from bootbox.model import BootEvent
from bootbox.runtime.pacing import PAUSE, lower_priority, sliced
from bootbox.store.diskhealth import DiskHealth
from bootbox.store.setaside import set_aside

log = logging.getLogger("bootbox.journal")

_BAD_LINE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)


MAX_EVENTS = 300_000
"""Events kept in memory across all hosts (about 150 MB); older ones stay only in the files."""
GATHER_SECONDS = 0.05
"""How long the writer lets events gather before writing them (a flush does not wait)."""


class Journal:
    """Boot events per host (the last ``per_host``) and overall (the last ``recent``), in memory,
    mirrored to an append-only JSON-lines file unless ``path`` is ``None``.

    ``max_hosts`` bounds memory when a network sprays random MACs: the host whose last event is
    oldest is forgotten first (its events stay in the file). ``max_events`` bounds the events held
    across all hosts (100,000 hosts × ``per_host`` would not fit): past it, the least recently
    active host loses its oldest event. Thread-safe; the methods that read never touch the disk.
    """

    def __init__(
        self,
        path: Path | str | None,
        *,
        per_host: int = 1000,
        recent: int = 10000,
        max_bytes: int = 64 * 2**20,
        backups: int = 3,
        max_hosts: int = 100_000,
        max_events: int = MAX_EVENTS,
        queue_size: int = 100_000,
        load_bytes: int = 16 * 2**20,
    ) -> None:
        _check_positive(
            per_host=per_host,
            recent=recent,
            max_bytes=max_bytes,
            max_hosts=max_hosts,
            max_events=max_events,
            queue_size=queue_size,
            load_bytes=load_bytes,
        )
        if backups < 0:
            raise ValidationError("backups", f"{backups} must be 0 or more")
        self.path = Path(path) if path is not None else None
        self.per_host, self.max_bytes, self.backups = per_host, max_bytes, backups
        self.max_hosts, self.queue_size, self.load_bytes = max_hosts, queue_size, load_bytes
        self.max_events = max_events
        self._held = 0  # events in the per-host rings
        self.gather_seconds = GATHER_SECONDS
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._by_mac: OrderedDict[str, deque[BootEvent]] = OrderedDict()
        self._recent: deque[BootEvent] = deque(maxlen=recent)
        self._pending: deque[BootEvent] = deque()
        self._stats = dict.fromkeys(("appended", "written", "dropped", "bytes", "loaded", "skipped", "errors"), 0)
        # Sequence numbers of queued events: the writer has fsynced everything up to _synced;
        # _failed is the last one in a batch that could not be written, _reported the last
        # one a flush() has already answered for.
        self._queued = self._synced = self._failed = self._reported = 0
        self._sync_wanted = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._writer_alive = False
        self._file: BinaryIO | None = None  # the append handle, used by the writer thread only
        self._size = 0
        self._lost_reason = ""  # the most recent failure, kept for flush() to report
        self._unsynced = 0  # events written since the last fsync (lost if that fsync fails)
        self.disk = DiskHealth(f"journal {self.path}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the newest ``load_bytes`` of the journal files into memory and start the writer.
        Idempotent."""
        with self._lock:
            if self._closed:
                raise BootboxError("the journal is closed")
            if self._thread is not None or self.path is None:
                return
            # Claimed before loading, so a concurrent start() returns and a flush() waits.
            self._thread = threading.Thread(target=self._run, name="bootbox-journal", daemon=True)
            self._writer_alive = True
        self._load()
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> None:
        """Return once every event appended so far is in the file and fsynced.

        :raises TimeoutError: the writer did not get there within ``timeout`` seconds.
        :raises BootboxError: the journal is not started, the writer died, or events queued
            since the last flush could not be written (the message says why).
        """
        if self.path is None:
            return
        with self._changed:
            if self._closed and not self._writer_alive:
                return
            if self._thread is None:
                raise BootboxError("the journal is not started")
            target = self._queued
            if self._synced < target:
                self._sync_wanted = True
                self._changed.notify_all()
                done = self._changed.wait_for(lambda: self._synced >= target or not self._writer_alive, timeout)
                if not done:
                    raise TimeoutError(f"journal {self.path}: events still not on disk after {timeout} s")
                if self._synced < target:
                    raise BootboxError(f"journal {self.path}: the writer thread died; see the log")
            self._raise_if_lost(target)

    def close(self, timeout: float = 10.0) -> None:
        """Write out everything queued, fsync, and stop the writer. Idempotent.

        Events appended after this are kept in memory but not written (counted as dropped), so
        a late event from a protocol thread during shutdown cannot fail.
        """
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
            if thread is None:
                self._stats["dropped"] += len(self._pending)
                self._pending.clear()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("journal %s: writer still busy after %s s; unwritten events may be lost", self.path, timeout)

    # -- the hot path ----------------------------------------------------------------------

    def append(self, event: BootEvent) -> None:
        """Record ``event``: O(1), no I/O. The writer thread puts it in the file later.

        Events appended before :meth:`start` are queued and written once it runs (in memory
        they then sort before the events loaded from disk, so start first).
        """
        with self._changed:
            self._remember(event)
            self._stats["appended"] += 1
            if self.path is None:
                return
            if self._closed or len(self._pending) >= self.queue_size:
                self._stats["dropped"] += 1
                return
            self._pending.append(event)
            self._queued += 1
            if len(self._pending) == 1:  # the writer waits for the first; it gathers the rest itself
                self._changed.notify_all()

    # -- reading (memory only) -------------------------------------------------------------

    def events(self, mac: str, limit: int | None = None, since: float | None = None) -> list[BootEvent]:
        """The host's events, oldest first: those at or after ``since``, then the last ``limit``.

        ``mac`` is matched exactly as the events spelled it (producers use ``normalize_mac``).
        """
        with self._lock:
            found = list(self._by_mac.get(mac, ()))
        if since is not None:
            found = [event for event in found if event.time >= since]
        if limit is not None:
            found = found[len(found) - limit :] if limit > 0 else []
        return found

    def recent(self, limit: int = 100) -> list[BootEvent]:
        """The newest ``limit`` events of all hosts, oldest first."""
        with self._lock:
            newest = list(itertools.islice(reversed(self._recent), max(limit, 0)))
        newest.reverse()
        return newest

    def macs(self) -> list[str]:
        """Every MAC with events in memory, sorted."""
        with self._lock:
            return sorted(self._by_mac)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: appended, written (to the file), dropped (not written), bytes (written),
        loaded and skipped (lines read back at start), errors (failed writes)."""
        with self._lock:
            return dict(self._stats)

    # -- memory ----------------------------------------------------------------------------

    def _remember(self, event: BootEvent) -> None:
        """Put ``event`` in its host's ring and the overall ring. Caller holds the lock."""
        ring = self._by_mac.get(event.mac)
        if ring is None:
            ring = self._by_mac[event.mac] = deque(maxlen=self.per_host)
            if len(self._by_mac) > self.max_hosts:
                self._held -= len(self._by_mac.popitem(last=False)[1])
        else:
            self._by_mac.move_to_end(event.mac)
        if len(ring) < self.per_host:
            self._held += 1
        ring.append(event)
        self._recent.append(event)
        while self._held > self.max_events:  # the least recently active host gives up its oldest
            mac, oldest = next(iter(self._by_mac.items()))
            oldest.popleft()
            self._held -= 1
            if not oldest:
                del self._by_mac[mac]

    def _raise_if_lost(self, target: int) -> None:
        """Report (once) events up to ``target`` the writer failed to write. Caller holds the lock."""
        lost = self._failed > self._reported
        self._reported = max(self._reported, target)
        if lost:
            raise BootboxError(f"journal {self.path}: some events could not be written: {self._lost_reason}")

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        """Read the newest ``load_bytes`` of the retained files back, oldest first, skipping
        lines a crash tore."""
        for path, offset in self._tail():
            for event in self._read_events(path, offset):
                with self._lock:
                    self._remember(event)
                    self._stats["loaded"] += 1

    def _tail(self) -> list[tuple[Path, int]]:
        """``(file, offset to start at)`` covering the newest ``load_bytes``, oldest file first."""
        parts: list[tuple[Path, int]] = []
        remaining = self.load_bytes
        for path in reversed(self._files_oldest_first()):
            if remaining <= 0:
                break
            size = path.stat().st_size
            offset = max(0, size - remaining)
            remaining -= size - offset
            parts.append((path, offset))
        parts.reverse()
        return parts

    def _files_oldest_first(self) -> list[Path]:
        assert self.path is not None
        names = [self._rotated(n) for n in range(self.backups, 0, -1)] + [self.path]
        return [path for path in names if path.is_file()]

    def _rotated(self, n: int) -> Path:
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.{n}")

    def _read_events(self, path: Path, offset: int) -> Iterator[BootEvent]:
        """The events in ``path`` from ``offset``. A line a crash tore is skipped; if other lines
        are damaged (zeroed, garbage, the wrong shape) the file is set aside first, byte for byte."""
        lines = damaged = 0
        try:
            with path.open("rb") as fh:
                _seek_line_start(fh, offset)
                for line in fh:
                    if not line.strip():
                        continue
                    lines += 1
                    try:
                        yield BootEvent.from_dict(json.loads(line))
                    except _BAD_LINE_ERRORS:
                        with self._lock:
                            self._stats["skipped"] += 1
                        damaged += not _torn(line)
        except OSError as err:
            log.warning("journal %s: cannot read %s: %s", self.path, path, err)
        if damaged:
            summary = f"journal file {path}: {lines - damaged} of {lines} events read, {damaged} damaged line(s) skipped"
            try:
                kept = set_aside(path, f"{summary}. The events bootbox could read are loaded; the rest are only in this copy.")
                log.error("%s; the file as it was is kept in %s", summary, kept)
            except OSError as err:
                log.error("%s; could not set a copy aside: %s", summary, err)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        """Write queued events until closed, fsyncing when a flush asks and at the end."""
        lower_priority()
        try:
            while self._write_round():
                pass
        except Exception:
            log.exception("journal %s: the writer thread crashed", self.path)
        finally:
            self._close_file()
            with self._changed:
                self._writer_alive = False
                self._changed.notify_all()

    def _write_round(self) -> bool:
        """Wait for work, write one batch, fsync if asked; return False once closed and drained."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending or self._sync_wanted or self._closed)
            # Let a burst gather (a boot storm appends thousands a second) so the writer takes
            # the interpreter lock once per batch, not once per event, unless a flush is waiting.
            self._changed.wait_for(lambda: self._sync_wanted or self._closed, self.gather_seconds)
            batch = list(self._pending)
            self._pending.clear()
            upto, closing = self._queued, self._closed
            sync = self._sync_wanted or closing
            self._sync_wanted = False
        # Nobody waits on a plain round: encode it in slices (bootbox.runtime.pacing) so a boot storm's
        # DHCP thread is not kept waiting; a flush or close is written at once.
        ok = self._write_batch(batch, 0.0 if sync else PAUSE) if batch else True
        if sync:
            ok = self._fsync() and ok
        with self._changed:
            if not ok:
                self._failed = upto
            if sync:
                self._synced = upto
            self._changed.notify_all()
        return not closing

    def _write_batch(self, batch: list[BootEvent], pause: float = 0.0) -> bool:
        """Append ``batch`` to the file, rotating as needed; count what did not reach it dropped.

        Lines are written with plain ``os.write`` (no buffer that would fail later, at a flush,
        after the events were already counted written), one write per file; a write that fails
        part-way is cut off again, so every event is either wholly in the file and counted
        ``written`` or not there and counted ``dropped``.
        """
        written = size = 0
        chunk: list[bytes] = []
        chunk_size = 0
        try:
            self._ensure_open()
            for part in sliced(batch, pause=pause):
                for event in part:
                    line = _encode(event)
                    if self._size + chunk_size and self._size + chunk_size + len(line) > self.max_bytes:
                        self._write_chunk(chunk)
                        written, size = written + len(chunk), size + chunk_size
                        chunk, chunk_size = [], 0
                        self._rotate()
                    chunk.append(line)
                    chunk_size += len(line)
            self._write_chunk(chunk)
            written, size = written + len(chunk), size + chunk_size
        except OSError as err:
            dropped = len(batch) - written
            self._count(written=written, bytes=size, errors=1, dropped=dropped)
            self._unsynced += written
            self._failing(err, f"{dropped} boot event(s) dropped")
            self._close_file()
            return False
        self._count(written=written, bytes=size)
        self._unsynced += written
        self._recovered()
        return True

    def _ensure_open(self) -> None:
        if self._file is None:
            self._file = self._open_file()

    def _write_chunk(self, chunk: list[bytes]) -> None:
        """Append ``chunk`` to the open file whole, or cut the file back to where it was."""
        if not chunk:
            return
        self._ensure_open()
        assert self._file is not None
        fd, start = self._file.fileno(), self._size
        try:
            _write_all(fd, b"".join(chunk))
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the line a crash tore is skipped on load; this is no worse
            raise
        self._size = start + sum(map(len, chunk))

    def _open_file(self) -> BinaryIO:
        """Open the journal for appending (unbuffered); end a line a crash left unfinished so the
        next event does not get glued onto it."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab", buffering=0)
        try:
            self._size = handle.tell()
            if self._size and _last_byte(self.path) != b"\n":
                _write_all(handle.fileno(), b"\n")
                self._size += 1
        except OSError:
            handle.close()
            raise
        return handle  # type: ignore[return-value]

    def _rotate(self) -> None:
        """Shift ``events.jsonl`` → ``.1`` → ``.2`` …, dropping the oldest; the next write opens
        a new file. The old file is fsynced first: once renamed, nothing would sync it."""
        assert self.path is not None and self._file is not None
        os.fsync(self._file.fileno())
        self._unsynced = 0
        self._close_file()
        for n in range(self.backups - 1, 0, -1):
            if self._rotated(n).exists():
                os.replace(self._rotated(n), self._rotated(n + 1))
        if self.backups:
            os.replace(self.path, self._rotated(1))
        else:
            self.path.unlink()
        self._ensure_open()

    def _fsync(self) -> bool:
        """fsync the file; if that fails, the events written since the last fsync may never reach
        the disk (a full disk found at write-back): they move from ``written`` to ``dropped``."""
        if self._file is None:
            return True
        try:
            os.fsync(self._file.fileno())
        except OSError as err:
            lost, self._unsynced = self._unsynced, 0
            self._count(errors=1, dropped=lost, written=-lost)
            self._failing(err, f"{lost} boot event(s) written since the last fsync may be lost")
            self._close_file()
            return False
        self._unsynced = 0
        return True

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError as err:
                log.warning("journal %s: closing: %s", self.path, err)

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._stats[name] += amount

    def _failing(self, err: OSError, lost: str) -> None:
        """Count and log (once per interval, :class:`DiskHealth`) a failed write, not one line per
        batch in a storm; the next batch tries again by itself."""
        self.disk.failed(err, lost)
        self._lost_reason = str(err)

    def _recovered(self) -> None:
        self.disk.succeeded()


def _encode(event: BootEvent) -> bytes:
    """One JSON line. Whatever a plugin put in ``data`` (a set, an object, a cycle), the event
    is written: odd values as ``str()``, and data JSON cannot express at all as its ``repr()``."""
    doc = event.to_dict()
    try:
        text = json.dumps(doc, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        doc["data"] = {"unencodable": repr(event.data)}
        text = json.dumps(doc, separators=(",", ":"), default=str)
    return (text + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _seek_line_start(fh: BinaryIO, offset: int) -> None:
    """Position ``fh`` at the first line that starts at or after ``offset``."""
    if offset == 0:
        return
    fh.seek(offset - 1)
    if fh.read(1) != b"\n":
        fh.readline()  # the rest of a line cut by the offset: not an event, not corrupt either


def _torn(line: bytes) -> bool:
    """A line a crash cut short: the start of an event, without the zeroes of a damaged region."""
    return line.startswith(b"{") and b"\0" not in line and not line.endswith(b"}\n")


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValidationError(name, f"{value} must be 1 or more")
