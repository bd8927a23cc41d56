"""A cpio "newc" writer: the archive format the kernel's initramfs unpacker reads.

Written here rather than by the ``cpio`` tool so the archive is reproducible (fixed mtimes and
owners, entries in the caller's order) and needs no tool on the appliance.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["CpioEntry", "write_cpio"]


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o755``).

    ``data`` is the file content, or the link target for a symlink; ``rdev`` is the
    (major, minor) of a device node.
    """

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_cpio(entries: Iterable[CpioEntry], out: BinaryIO, *, mtime: int = 0) -> None:
    """Write ``entries`` as a cpio newc archive (magic 070701) followed by the trailer.

    Owners are root, every entry has its own inode number with nlink 1 (2 for directories), so
    the kernel never tries to hard-link members. Parents must come before their children.
    """
    for ino, entry in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        name = entry.name.lstrip("/").encode()
        trailer = entry.name == "TRAILER!!!"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (
            0 if trailer else ino,
            entry.mode,
            0,  # uid
            0,  # gid
            0 if trailer else nlink,
            0 if trailer else mtime,
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(name) + 1,
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + name + b"\0")
        out.write(_pad4(len(header) + len(name) + 1))
        out.write(entry.data)
        out.write(_pad4(len(entry.data)))
    # The kernel accepts trailing zeros; pad to 512 like cpio(1) so tools that expect blocks work.
    position = out.tell() if out.seekable() else None
    if position is not None:
        out.write(b"\0" * (-position % 512))
