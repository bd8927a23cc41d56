"""Reading members of zips we did not build (offline bundles, their ``metadata.zip``).

Nothing is ever extracted by its name: members are looked up by the paths the depot metadata
gives and read as streams into content-addressed files, so a member called ``../../etc/passwd``
cannot be written anywhere. Before a member is read, its name, type and declared size are
checked:

* names are normalised; absolute names, ``..`` components, backslashes and NULs are refused;
* symlinks (a zip can carry Unix mode ``S_IFLNK``) and directories are refused;
* a declared size over the limit is refused before a byte is inflated, and zipfile itself
  stops at the declared size and checks the CRC, which catches a lying header.
"""

from __future__ import annotations

import posixpath
import stat
import zipfile
from typing import IO

from bootbox_esxi.ar import read_exact
from bootbox_esxi.xmlutil import DepotError


def clean_name(name: str, what: str) -> str:
    """``./vib20/x.vib`` → ``vib20/x.vib``; hostile names raise DepotError naming ``what``."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/", 1)[0]:
        raise DepotError(f"{what}: {name!r} is not a relative path inside the bundle; refusing the bundle")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or normal.startswith("/") or normal == ".":
        raise DepotError(f"{what}: {name!r} points outside the bundle; refusing the bundle")
    return normal


def find(zf: zipfile.ZipFile, name: str, what: str, limit: int) -> zipfile.ZipInfo:
    """The member ``name`` (after cleaning), checked to be a regular file within ``limit`` bytes."""
    wanted = clean_name(name, what)
    info = _index(zf).get(wanted)
    if info is None:
        raise DepotError(f"{what}: {wanted} is missing from the bundle")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DepotError(f"{what}: {wanted} is a symbolic link inside the zip; refusing the bundle")
    kind = stat.S_IFMT(mode)  # 0 when the zip carries no Unix type (Windows tools, Python's writestr)
    if info.is_dir() or (kind and kind != stat.S_IFREG):
        raise DepotError(f"{what}: {wanted} is not a regular file inside the zip; refusing the bundle")
    if info.file_size > limit:
        raise DepotError(f"{what}: {wanted} declares {info.file_size} bytes, more than the {limit}-byte limit")
    return info


def has(zf: zipfile.ZipFile, name: str) -> bool:
    try:
        return clean_name(name, "") in _index(zf)
    except DepotError:
        return False


def names(zf: zipfile.ZipFile) -> list[str]:
    """Clean member names (hostile ones left out: they are never read)."""
    return sorted(_index(zf))


def _index(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    index = getattr(zf, "_bootbox_index", None)
    if index is None:
        index = {}
        for info in zf.infolist():
            try:
                index.setdefault(clean_name(info.filename, ""), info)
            except DepotError:
                continue
        zf._bootbox_index = index  # type: ignore[attr-defined]
    return index


def read(zf: zipfile.ZipFile, name: str, what: str, limit: int) -> bytes:
    """A whole (small) member: metadata files only, never VIBs."""
    info = find(zf, name, what, limit)
    with open_member(zf, info, what) as stream:
        data = read_exact(stream, limit + 1)
    if len(data) > limit:
        raise DepotError(f"{what}: {info.filename} is larger than the {limit}-byte limit")
    return data


class _Guarded:
    """A zip member stream whose zipfile errors (CRC, truncation) become DepotErrors."""

    def __init__(self, stream: IO[bytes], what: str) -> None:
        self._stream = stream
        self._what = what

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise DepotError(f"{self._what} is damaged inside the zip: {exc}") from None

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "_Guarded":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _Guarded:
    try:
        return _Guarded(zf.open(info), what)
    # RuntimeError covers an encrypted member and a compression method zipfile cannot read
    # (PPMd, AES): zipfile raises a subclass of it for the latter.
    except (zipfile.BadZipFile, RuntimeError, OSError) as exc:
        raise DepotError(f"{what}: cannot read {info.filename} from the zip: {exc}") from None


def open_zip(source: str | IO[bytes], what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DepotError(f"{what} is not a readable zip file: {exc}") from None
