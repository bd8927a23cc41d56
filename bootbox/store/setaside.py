"""Keep what could not be read: a byte-for-byte copy of a damaged state file, with a note.

A state file that loads only partly (a zeroed region in the host log, a line of the wrong shape,
an unreadable store) still holds the only copy of whatever bootbox could not parse. The next
compaction or rewrite would destroy it, so every loader calls :func:`set_aside` *before* anything
rewrites the file: the bytes go to ``<state_dir>/set-aside/<name>.<UTC time>`` with a
``.why`` note beside them (what failed, what was recovered, what to do), and ``bootbox doctor``
lists them (:func:`list_set_aside`). One module for every kind of file, so each kind is kept the
same way and the doctor finds them all in one place.

The copy is a real copy, never a hard link: the host log and the journal are appended to in
place, and a link would change with them. The same bytes are set aside once: a bootbox that a
supervisor restarts in a loop on an unreadable store must not fill the disk with copies.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from bootbox.runtime.atomic import atomic_write_bytes, fsync_directory

SET_ASIDE_DIR = "set-aside"
WHY_SUFFIX = ".why"
_DIGEST_CHARS = 12


@dataclass(frozen=True)
class SetAside:
    """One kept file and the note saying why it was kept."""

    path: Path
    why: str

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


def set_aside_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / SET_ASIDE_DIR


def set_aside(source: Path | str, why: str, *, state_dir: Path | str | None = None) -> Path:
    """Copy ``source`` byte for byte into ``set-aside/`` with a ``.why`` note; return the copy.

    ``state_dir`` defaults to ``source``'s directory. If the same bytes were already set aside,
    the existing copy is returned and nothing is written.

    :raises OSError: the copy could not be made (the caller must then not rewrite ``source``).
    """
    source = Path(source)
    data = source.read_bytes()
    return set_aside_bytes(source.name, data, why, state_dir=state_dir or source.parent)


def set_aside_bytes(name: str, data: bytes, why: str, *, state_dir: Path | str) -> Path:
    """Keep ``data`` (what a file or a document named ``name`` held) in ``set-aside/``."""
    folder = set_aside_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]
    for existing in folder.glob(f"{_glob_escape(name)}.*.{digest}"):
        return existing
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = folder / f"{name}.{stamp}.{digest}"
    atomic_write_bytes(kept, data)
    note = f"{why}\nkept from: {name} ({len(data)} bytes, sha256 prefix {digest}) at {stamp}\n"
    atomic_write_bytes(kept.with_name(kept.name + WHY_SUFFIX), note.encode("utf-8", "replace"))
    fsync_directory(folder)
    return kept  # the caller logs what it recovered and names this path


def list_set_aside(state_dir: Path | str) -> list[SetAside]:
    """Every kept file with its note, oldest first (by name: the time is in it)."""
    folder = set_aside_dir(state_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.endswith(WHY_SUFFIX) or path.name.startswith("."):
            continue
        note = path.with_name(path.name + WHY_SUFFIX)
        try:
            why = note.read_text(errors="replace").splitlines()[0]
        except (OSError, IndexError):
            why = "(no note)"
        found.append(SetAside(path, why))
    return found


def _glob_escape(name: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)
