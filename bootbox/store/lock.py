"""One bootbox per state directory.

Two processes writing the same store would each rewrite the whole file from their own memory
and silently undo the other's changes, so the state directory is locked for as long as a store
is open. ``flock`` is used rather than a PID file because the kernel drops the lock when the
owner dies, even by SIGKILL: a crashed bootbox never needs a manual clean-up.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from bootbox.errors import BootboxError, StoreLocked

LOCK_FILENAME = "bootbox.lock"


class StateDirLock:
    """An exclusive lock on ``state_dir``, taken on construction and held until :meth:`release`.

    The directory is created (mode 0700) if missing. The lock file records the owner's PID so
    the refusal message can say which process to stop. A second lock fails even inside the same
    process: every ``StateDirLock`` opens its own file description, and Linux ``flock`` locks
    conflict between descriptions.
    """

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILENAME
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise BootboxError(f"cannot create state directory {self.state_dir}: {err.strerror}") from err
        self._fd: int | None = _acquire(self.path, self.state_dir)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the directory up. Idempotent. The lock file stays: deleting it would let a
        process that opened the old file before the unlink and one that creates a new file both
        believe they hold the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> "StateDirLock":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"StateDirLock({str(self.state_dir)!r}, held={self.held})"


def _acquire(path: Path, state_dir: Path) -> int:
    """Open and lock ``path``; return the descriptor that keeps the lock alive.

    O_CLOEXEC keeps the descriptor out of child programs (helpers, QEMU in tests); an inherited
    copy would keep the directory locked after bootbox itself exits.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise BootboxError(f"cannot open lock file {path}: {err.strerror}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_pid(fd)
        os.close(fd)
        raise StoreLocked(
            f"state directory {state_dir} is in use by another bootbox (pid {owner}); stop it first, or use --state-dir"
        ) from None
    except OSError as err:
        os.close(fd)
        raise BootboxError(f"cannot lock {path}: {err.strerror}") from err
    _write_pid(fd)
    return fd


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _read_pid(fd: int) -> str:
    """The PID the owner wrote, or ``unknown`` if it has locked but not yet written it."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
