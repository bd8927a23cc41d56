"""Replace a file so that readers, and a machine that loses power, see the old or the new version.

Writing in place (truncate, write) leaves a half-written file if the process is killed or the
power goes mid-write; TinyDB's own JSONStorage does exactly that (facts/libraries.md §3). The
recipe here is the POSIX one: write a temporary file in the *same* directory (``rename`` is only
atomic within one file system), fsync it, rename it over the target, then fsync the directory
so the rename itself is on disk. Used for the store, token files and configs.
"""

from __future__ import annotations

import errno
import glob
import os
import secrets
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"

# Hard links are the O(1) way to keep the previous version; these errnos mean "this file system
# cannot link here" (vfat, some FUSE and network file systems), so a copy is made instead.
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV})


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int = 0o600, backup: Path | str | None = None) -> None:
    """Make ``path`` contain exactly ``data``, atomically and durably.

    :param mode: permission bits of the new file; 0600 by default because most of what bootbox
        writes (state, tokens) is nobody else's business.
    :param backup: if given and ``path`` exists, the current ``path`` is kept there (replacing
        any older backup) before it is replaced, so one good previous version always exists.
    :raises OSError: nothing was replaced; the temporary file has been removed.
    """
    target = Path(path)
    tmp = _write_temp(target, data, mode)
    try:
        if backup is not None and target.exists():
            _keep_backup(target, Path(backup))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(directory: Path | str) -> None:
    """Flush a directory's entries (new names, renames) to disk; a renamed file is not durable
    until its directory is."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_file_pattern(path: Path | str) -> str:
    """The glob that matches every temporary file :func:`atomic_write_bytes` may leave next to
    ``path`` (and next to its backup, whose name extends ``path``'s) after a crash."""
    target = Path(path)
    return str(target.parent / f".{glob.escape(target.name)}*{TEMP_SUFFIX}")


def remove_stale_temp_files(path: Path | str) -> list[Path]:
    """Delete temporary files a crashed writer left next to ``path``; return what was removed.

    Only safe while no other process writes ``path``: call it while holding the state-directory
    lock, or it may delete another writer's file before that writer renames it.
    """
    removed = []
    for name in glob.glob(temp_file_pattern(path)):
        stale = Path(name)
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _write_temp(target: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a new, fsynced temporary file beside ``target`` and return its path."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=TEMP_SUFFIX)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _keep_backup(target: Path, backup: Path) -> None:
    """Make ``backup`` a copy of the current ``target``.

    A hard link costs nothing whatever the size, and stays valid after ``target`` is renamed
    over because the backup keeps the old inode. ``link`` cannot overwrite, so the link is
    made under a temporary name and renamed over the old backup.
    """
    link = backup.parent / f"{_temp_prefix(backup)}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    try:
        os.link(target, link)
    except OSError as err:
        if err.errno not in _NO_LINK_ERRNOS:
            raise
        atomic_write_bytes(backup, target.read_bytes(), mode=os.stat(target).st_mode & 0o777)
        return
    try:
        os.replace(link, backup)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
