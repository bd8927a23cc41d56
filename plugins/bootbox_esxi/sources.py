"""Where a depot's files come from: a zip (offline bundle), an HTTP tree, or a directory.

The depot walk (``depot.py``) asks one of these for files by reference, relative to the file
that named them, exactly as ``index.xml`` → ``vendor-index.xml`` → ``metadata.zip`` → VIBs
chain in a real depot. Each source enforces the same rules: references stay inside the source
(no ``../``, no absolute paths, no other URL schemes), every read is size-limited, and big files
(VIBs, metadata zips) are streams or temp files under the plugin's ``tmp`` directory, never
whole in memory.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

from bootbox_esxi import zipsafe
from bootbox_esxi.ar import CHUNK, read_exact
from bootbox_esxi.xmlutil import DepotError

HTTP_TIMEOUT = 60.0


class Source(Protocol):
    name: str

    def join(self, base: str, relative: str) -> str: ...
    def read(self, ref: str, limit: int) -> bytes: ...
    def open(self, ref: str, limit: int) -> tuple[BinaryIO, int | None]: ...


def copy_to_temp(
    stream: BinaryIO, tmp_dir: Path, limit: int, what: str, on_bytes: Callable[[int], None] | None = None
) -> Path:
    """Stream into a temp file under ``tmp_dir`` (refusing more than ``limit`` bytes)."""
    fd, name = tempfile.mkstemp(prefix="fetch-", dir=tmp_dir)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise DepotError(f"{what} is larger than the {limit}-byte limit; refusing it")
                out.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


class ZipSource:
    """An offline bundle: references are member names, relative to the naming member's folder."""

    def __init__(self, zf: zipfile.ZipFile, name: str) -> None:
        self.zf = zf
        self.name = name

    def join(self, base: str, relative: str) -> str:
        joined = posixpath.join(posixpath.dirname(base), relative) if base else relative
        return zipsafe.clean_name(joined, self.name)

    def read(self, ref: str, limit: int) -> bytes:
        return zipsafe.read(self.zf, ref, self.name, limit)

    def open(self, ref: str, limit: int) -> tuple[BinaryIO, int | None]:
        info = zipsafe.find(self.zf, ref, self.name, limit)
        return zipsafe.open_member(self.zf, info, f"{self.name}:{info.filename}"), info.file_size  # type: ignore[return-value]


class UrlSource:
    """An online depot: references are absolute http(s) URLs, resolved like a browser would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def join(self, base: str, relative: str) -> str:
        url = urllib.parse.urljoin(base, relative)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise DepotError(f"{self.name}: {relative!r} resolves to {url!r}, which is not an http(s) URL")
        return url

    def open(self, ref: str, limit: int) -> tuple[BinaryIO, int | None]:
        if urllib.parse.urlsplit(ref).scheme not in ("http", "https"):
            raise DepotError(f"{ref!r} is not an http(s) URL")
        try:
            response = urllib.request.urlopen(ref, timeout=HTTP_TIMEOUT)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as exc:
            raise DepotError(f"{ref}: the depot answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DepotError(f"cannot fetch {ref}: {getattr(exc, 'reason', exc)}") from None
        if urllib.parse.urlsplit(response.geturl()).scheme not in ("http", "https"):
            response.close()
            raise DepotError(f"{ref} redirected to a non-http URL; refusing it")
        length = response.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        if size is not None and size > limit:
            response.close()
            raise DepotError(f"{ref} is {size} bytes, more than the {limit}-byte limit")
        return response, size

    def read(self, ref: str, limit: int) -> bytes:
        stream, _ = self.open(ref, limit)
        with stream:
            data = read_exact(stream, limit + 1)
        if len(data) > limit:
            raise DepotError(f"{ref} is larger than the {limit}-byte limit")
        return data


class DirSource:
    """An unpacked depot tree on disk: references are relative paths inside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def join(self, base: str, relative: str) -> str:
        joined = posixpath.join(posixpath.dirname(base), relative) if base else relative
        return zipsafe.clean_name(joined, self.name)

    def _path(self, ref: str) -> Path:
        path = (self.root / zipsafe.clean_name(ref, self.name)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise DepotError(f"{self.name}: {ref} leads outside the depot directory")
        if not path.is_file():
            raise DepotError(f"{self.name}: {ref} is missing")
        return path

    def open(self, ref: str, limit: int) -> tuple[BinaryIO, int | None]:
        path = self._path(ref)
        size = path.stat().st_size
        if size > limit:
            raise DepotError(f"{self.name}: {ref} is {size} bytes, more than the {limit}-byte limit")
        return path.open("rb"), size

    def read(self, ref: str, limit: int) -> bytes:
        stream, _ = self.open(ref, limit)
        with stream:
            return stream.read()


def download(
    url: str, tmp_dir: Path, limit: int, on_start: Callable[[int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Fetch a whole bundle over HTTP into a temp file (it is a zip: it needs seeking)."""
    stream, size = UrlSource(url).open(url, limit)
    if on_start is not None:
        on_start(size)
    with stream:
        return copy_to_temp(stream, tmp_dir, limit, url, on_bytes)


def remove_quietly(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
