"""Map a client-supplied file name to a regular file strictly inside a served root.

TFTP (RFC 1350 has no notion of a served directory; the server decides) and HTTP both take
file names from unauthenticated clients on the boot network, so both go through
:func:`resolve_under`. The rules follow tftpd-hpa's ``-s`` behaviour where it is safe:

* a leading ``/`` means "relative to the root", never the host's ``/``;
* ``\\`` is a path separator, because Windows boot managers ask for ``\\Boot\\BCD``; the usual
  checks then apply, so ``..\\..\\etc\\passwd`` is refused like ``../../etc/passwd``;
* any ``..`` component is refused, even one that would stay inside the root, so no caller has to
  reason about what a name "means";
* symlinks inside the root are followed only when their target is inside the root too; the
  check resolves every link (``os.path.realpath``) and compares paths with
  ``Path.is_relative_to``, never a string prefix (``/srv/tftp-evil`` starts with ``/srv/tftp``);
* only regular files are served: not directories, FIFOs (opening one would block the caller's
  thread), devices or sockets.

The module is pure apart from reading the file system: no logging, no globals.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from bootbox.errors import Forbidden, NotFound

MAX_COMPONENT_BYTES = 255
"""NAME_MAX on Linux; a longer component can only be an attack or a mistake."""

MAX_NAME_BYTES = 1024
"""Longest accepted name, in UTF-8 bytes; real boot file names are far shorter."""

_SHOWN_CHARS = 60

_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})


def resolve_under(root: Path, name: str) -> Path:
    """Return the real path of the regular file ``name`` names inside ``root``.

    :param root: the served directory; it may itself be a symlink.
    :param name: the name as the client sent it (``/`` or ``\\`` separated, optionally with a
        leading separator).
    :raises Forbidden: the name is malformed (NUL, overlong, ``..``, not text), escapes the root
        through a symlink, or names something that is not a regular file.
    :raises NotFound: the root or the file does not exist.
    """
    parts = split_name(name)
    base = _real_root(root)
    joined = os.path.join(base, *parts)
    # Containment is checked before existence, so a link pointing outside the root is refused
    # the same way whether its target exists or not (no probing of the host's file system).
    _require_inside(Path(os.path.realpath(joined)), base, name)
    try:
        real = Path(os.path.realpath(joined, strict=True))
    except OSError as exc:
        raise _classify(exc, name) from None
    # Checked again on the strict result: a component created between the two calls must not
    # smuggle a link in.
    _require_inside(real, base, name)
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise _classify(exc, name) from None
    if not stat.S_ISREG(mode):
        raise Forbidden(f"{_shown(name)}: not a regular file")
    return real


def split_name(name: str) -> list[str]:
    """Split a client-supplied name into safe path components, or raise :class:`Forbidden`.

    Empty and ``.`` components are dropped (``a//./b`` is ``a/b``); the result is never empty.
    """
    if not isinstance(name, str):
        raise Forbidden("file name must be text")
    if "\x00" in name:
        raise Forbidden(f"{_shown(name)}: NUL byte in file name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Forbidden(f"{_shown(name)}: file name is not valid text") from None
    if size > MAX_NAME_BYTES:
        raise Forbidden(f"{_shown(name)}: file name longer than {MAX_NAME_BYTES} bytes")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise Forbidden(f"{_shown(name)}: '..' is not allowed in file names")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise Forbidden(f"{_shown(name)}: path component longer than {MAX_COMPONENT_BYTES} bytes")
    if not parts:
        raise Forbidden(f"{_shown(name)}: names the root directory, not a file")
    return parts


def _real_root(root: Path) -> Path:
    """The root with every symlink resolved; :class:`NotFound` if it does not exist."""
    try:
        return Path(os.path.realpath(root, strict=True))
    except OSError as exc:
        raise NotFound(f"served directory {str(root)!r} is not available: {exc.strerror}") from None


def _require_inside(path: Path, base: Path, name: str) -> None:
    if not path.is_relative_to(base):
        raise Forbidden(f"{_shown(name)}: resolves outside the served directory")


def _classify(exc: OSError, name: str) -> NotFound | Forbidden:
    """A missing file or directory is NotFound; loops, permissions and the rest are Forbidden."""
    if exc.errno in _MISSING_ERRNOS:
        return NotFound(f"{_shown(name)}: no such file")
    return Forbidden(f"{_shown(name)}: {exc.strerror or exc}")


def _shown(name: str) -> str:
    """The name for an error message, cut short: the caller may log it and it may be 1 KiB."""
    text = repr(name)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def open_regular_under(root: Path, name: str) -> BinaryIO:
    """Open a client-named file inside ``root`` for reading, safely against races.

    The resolved path is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with
    ``fstat``: a file swapped for a symlink or a FIFO after :func:`resolve_under` checked it is
    refused instead of being followed or blocking a server thread.
    """
    path = resolve_under(root, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"{name[:60]!r}: no such file") from None
    except OSError as exc:
        raise Forbidden(f"{name[:60]!r}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Forbidden(f"{name[:60]!r}: not a regular file")
    return open(fd, "rb", buffering=0)
