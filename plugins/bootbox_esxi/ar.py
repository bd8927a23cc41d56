"""The Unix ``ar`` container VIBs use, read as a stream and written byte-exactly.

A VIB is ``!<arch>\\n`` followed by members, each a 60-byte header (name, mtime, uid, gid,
mode, size, "`\\n") and its data padded to an even length. Members are read one after the other
from any binary stream (a zip member, an HTTP response), never seeked and never loaded whole,
so a 400 MB VIB costs one chunk of memory.

Everything a header declares is checked before it is trusted: the size must be a number under
the caller's limit (a VIB that claims a petabyte member is refused before one byte is read), the
name must be a plain file name, and a stream that ends early is reported as truncated with the
member and the byte counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Protocol

from bootbox_esxi.xmlutil import DepotError

MAGIC = b"!<arch>\n"
HEADER_SIZE = 60
CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class Readable(Protocol):
    """Anything with ``read(n)``: a file, a zip member, an HTTP response, a counting wrapper."""

    def read(self, size: int = -1, /) -> bytes: ...


def read_exact(stream: Readable, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads (HTTP and zip streams return less)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(left, CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class ArHeader:
    """One member header as found in the archive (``raw`` keeps the exact 60 bytes)."""

    name: str
    size: int
    raw: bytes


def parse_header(raw: bytes, what: str, limit: int) -> ArHeader:
    """Decode and check one 60-byte header; ``what`` names the archive in errors."""
    if raw[58:60] != b"`\n":
        raise DepotError(f"{what}: corrupt ar member header (bad terminator); the file is damaged")
    name = raw[0:16].decode("ascii", errors="replace").rstrip()
    if name.endswith("/") and name not in ("/", "//"):
        name = name[:-1]  # GNU ar ends short names with "/"
    size_field = raw[48:58].decode("ascii", errors="replace").strip()
    if not size_field.isdigit():
        raise DepotError(f"{what}: member {name!r} has a non-numeric size {size_field!r}")
    size = int(size_field)
    if size > limit:
        raise DepotError(f"{what}: member {name!r} declares {size} bytes, more than the {limit}-byte limit")
    if not _SAFE_NAME.match(name):
        raise DepotError(f"{what}: member name {name!r} is not a plain file name; refusing the archive")
    return ArHeader(name=name, size=size, raw=raw)


class ArReader:
    """Iterate over the members of an ``ar`` stream; read each one before asking for the next."""

    def __init__(self, stream: Readable, what: str, limit: int) -> None:
        self._stream = stream
        self._what = what
        self._limit = limit
        self._pending = 0  # unread bytes (data + padding) of the current member
        self._left = 0  # unread data bytes of the current member
        self._current = ArHeader(name="", size=0, raw=b"")

    def __iter__(self) -> Iterator[ArHeader]:
        magic = read_exact(self._stream, len(MAGIC))
        if magic != MAGIC:
            raise DepotError(f"{self._what} is not an ar archive (a VIB starts with '!<arch>')")
        seen: set[str] = set()
        while True:
            self._skip_pending()
            raw = read_exact(self._stream, HEADER_SIZE)
            if not raw:
                return
            if len(raw) < HEADER_SIZE:
                raise DepotError(f"{self._what} is truncated: a member header has only {len(raw)} of 60 bytes")
            header = parse_header(raw, self._what, self._limit)
            if header.name in seen:
                raise DepotError(f"{self._what}: member {header.name!r} appears twice")
            seen.add(header.name)
            self._current = header
            self._left = header.size
            self._pending = header.size + (header.size & 1)
            yield header

    def read(self, size: int = CHUNK) -> bytes:
        """Read the next piece of the current member's data (b"" at its end)."""
        if self._left <= 0:
            return b""
        data = self._stream.read(min(size, self._left, CHUNK))
        if not data:
            got = self._current.size - self._left
            raise DepotError(
                f"{self._what} is truncated: member {self._current.name!r} declares "
                f"{self._current.size} bytes, only {got} are present"
            )
        self._left -= len(data)
        self._pending -= len(data)
        return data

    def read_all(self, limit: int) -> bytes:
        """The whole current member, refused if it is larger than ``limit``."""
        if self._current.size > limit:
            raise DepotError(
                f"{self._what}: member {self._current.name!r} is {self._current.size} bytes, "
                f"more than the {limit}-byte limit for it"
            )
        parts: list[bytes] = []
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def _skip_pending(self) -> None:
        while self._left > 0:
            self.read()
        if self._pending > 0:  # the padding byte after an odd-sized member
            read_exact(self._stream, self._pending)  # a missing pad byte at EOF is harmless
            self._pending = 0
