"""TinyDBStore: the default store, a TinyDB database file in the state directory.

This is the only module in bootbox that imports tinydb. TinyDB as shipped is not thread-safe,
writes its file in place (a crash leaves a torn file), and rebuilds a whole table in memory and
rewrites the whole file on every operation (facts/libraries.md §3). So:

* documents live in the :class:`~bootbox.store.memory.DictStore` engine (one ``RLock``, an undo
  log for rollback): reads never touch the disk and a write costs O(1) in memory;
* the file is written through a TinyDB ``Storage`` whose ``write`` replaces it atomically
  (:mod:`bootbox.runtime.atomic`) after keeping the previous version as ``<file>.bak``, exactly
  once per ``put``/``put_many``/``delete`` and once per outermost ``batch()``;
* a :class:`~bootbox.store.lock.StateDirLock` is held while the store is open, so no second
  process rewrites the file from its own stale memory.

The file stays TinyDB's format, with the document key as the document ID, so TinyDB (given a
table class with ``document_id_class = str``) can open and query it, and it reads well::

    {"hosts": {"aa:bb:cc:dd:ee:ff": {"mac": "aa:bb:cc:dd:ee:ff", ...}}, "profiles": {...}}

TinyDB's own table layer is deliberately not on the write path: it rebuilds the table dict on
every insert or remove, which made a 100-put batch on a 100,000-document store take 3.4 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from tinydb.storages import Storage

from bootbox.errors import BootboxError, ValidationError
from bootbox.runtime.atomic import atomic_write_bytes, remove_stale_temp_files
from bootbox.store.diskhealth import DiskHealth
from bootbox.store.lock import StateDirLock
from bootbox.store.memory import DictStore, Tables
from bootbox.store.setaside import set_aside

DEFAULT_FILENAME = "bootbox.json"


class AtomicJSONStorage(Storage):
    """A TinyDB storage for one JSON file that is never left half-written.

    ``read`` refuses a file that is not a TinyDB database instead of reporting it empty, and
    ``write`` keeps the previous good version as ``<file>.bak`` before replacing the file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.backup = path.with_name(path.name + ".bak")

    def read(self) -> Tables | None:
        """The database, or ``None`` if the file does not exist yet (TinyDB's "empty").

        :raises BootboxError: the file is unreadable; the message names it and its backup.
        Starting empty instead would make bootbox forget every host and rule, and its next
        write would overwrite the evidence.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError as err:
            raise self._corrupt(f"not valid JSON: {err}") from None
        if not _is_tables(data):
            raise self._corrupt("not a TinyDB database ({table: {id: document}})")
        return cast(Tables, data)

    def write(self, data: Tables) -> None:
        # ASCII escapes make any string encodable, lone surrogates included.
        payload = json.dumps(data, separators=(",", ":")).encode("ascii")
        atomic_write_bytes(self.path, payload, backup=self.backup)

    def _corrupt(self, reason: str) -> BootboxError:
        """The refusal to start; a byte-for-byte copy of the file is set aside first, so whatever
        an operator does next (copying the backup over it) cannot destroy the only copy."""
        try:
            kept = f" A copy of it as it is was kept as {set_aside(self.path, f'store unreadable: {reason}')}."
        except OSError as err:
            kept = f" (A copy could not be set aside: {err.strerror}.)"
        if self.backup.exists():
            advice = f"the previous good version is {self.backup}: check it, then copy it over {self.path} to restore it"
        else:
            advice = f"there is no backup ({self.backup}); move {self.path} aside to start with an empty store"
        return BootboxError(f"store file {self.path} is unreadable ({reason}); bootbox will not start empty: "
                            f"{advice}, or restore a backup (bootbox state restore FILE).{kept}")


class TinyDBStore(DictStore):
    """The default :class:`~bootbox.store.Store`: ``state_dir/filename``, loaded into memory.

    Opening locks ``state_dir`` (:class:`~bootbox.errors.StoreLocked` if another store has it),
    removes temporary files a crash left behind, and loads the file (a
    :class:`~bootbox.errors.BootboxError` naming the file and its backup if it is unreadable).
    """

    def __init__(self, state_dir: Path | str, filename: str = DEFAULT_FILENAME) -> None:
        if not isinstance(filename, str) or not filename or Path(filename).name != filename:
            raise ValidationError("filename", f"{filename!r} must be a plain file name")
        self.path = Path(state_dir) / filename
        self._dir_lock = StateDirLock(state_dir)
        self.disk = DiskHealth(f"store {self.path}")
        try:
            remove_stale_temp_files(self.path)
            self._storage = AtomicJSONStorage(self.path)
            super().__init__(self._storage.read())
        except BaseException:
            self._dir_lock.release()
            raise

    def close(self) -> None:
        """Release the state directory. Every write was already committed when it returned."""
        with self._lock:
            super().close()
            self._storage.close()
            self._dir_lock.release()

    def _commit(self) -> None:
        try:
            self._storage.write(self._tables)
        except OSError as err:
            self.disk.failed(err, "the API write was refused and rolled back")
            raise
        self.disk.succeeded()

    def __repr__(self) -> str:
        return f"TinyDBStore({str(self.path.parent)!r}, filename={self.path.name!r})"


def _is_tables(data: object) -> bool:
    return isinstance(data, dict) and all(
        isinstance(rows, dict) and all(isinstance(doc, dict) for doc in rows.values()) for rows in data.values()
    )
