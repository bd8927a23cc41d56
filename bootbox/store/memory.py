"""MemoryStore, the in-memory twin, and DictStore, the engine it shares with TinyDBStore.

DictStore does everything the Store contract asks (validation, copies, the lock, batches with
rollback) on a plain dict, and calls :meth:`DictStore._commit` once at the end of every outermost
write. MemoryStore commits nowhere; TinyDBStore writes its file there. Sharing the engine is what
keeps the twin honest: the only behaviour the two can differ in is persistence, which
``tests/store/test_store_tinydb.py`` covers.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from bootbox.errors import BootboxError, NotFound
from bootbox.store.base import check_key, check_table, copy_doc, json_doc

# The whole store: {table: {key: document}}. Also TinyDB's file layout, with keys as document IDs.
Tables = dict[str, dict[str, dict[str, Any]]]

# One undo record: (table, key, the document before the write, or None if there was none).
_Undo = tuple[str, str, "dict[str, Any] | None"]


class DictStore:
    """Tables of documents in a dict, behind one ``RLock``; see :class:`bootbox.store.Store`.

    Every write, batched or not, runs inside :meth:`batch` and records how to undo itself, so a
    failing block *or a failing commit* puts memory back exactly as it was. An undo log rather
    than a snapshot keeps the cost of a write O(1) whatever the store's size.
    """

    def __init__(self, tables: Tables | None = None) -> None:
        self._lock = threading.RLock()
        self._tables: Tables = tables if tables is not None else {}
        self._undo: list[_Undo] = []
        self._depth = 0
        self._closed = False

    def get(self, table: str, key: str) -> dict[str, Any]:
        check_table(table)
        check_key(key)
        with self._lock:
            self._check_open()
            doc = self._tables.get(table, {}).get(key)
            if doc is None:
                raise NotFound(f"{table} {key!r} not found")
            return copy_doc(doc)

    def has(self, table: str, key: str) -> bool:
        check_table(table)
        check_key(key)
        with self._lock:
            self._check_open()
            return key in self._tables.get(table, {})

    def put(self, table: str, key: str, doc: Mapping[str, Any]) -> None:
        self.put_many(table, {key: doc})

    def put_many(self, table: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        check_table(table)
        stored = {check_key(key): json_doc(doc) for key, doc in docs.items()}
        with self.batch():
            for key, doc in stored.items():
                self._set(table, key, doc)

    def delete(self, table: str, key: str) -> None:
        check_table(table)
        check_key(key)
        with self.batch():
            if key not in self._tables.get(table, {}):
                raise NotFound(f"{table} {key!r} not found")
            self._set(table, key, None)

    def table_names(self) -> list[str]:
        """Every table that holds documents (for checks over the whole store, e.g. secrets)."""
        with self._lock:
            return sorted(name for name, rows in self._tables.items() if rows)

    def all(self, table: str) -> dict[str, dict[str, Any]]:
        check_table(table)
        with self._lock:
            self._check_open()
            return copy_doc(self._tables.get(table, {}))

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            mark = len(self._undo)
            self._depth += 1
            try:
                yield
                if self._depth == 1 and self._undo:
                    self._commit()
            except BaseException:
                self._undo_to(mark)
                raise
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._undo.clear()

    def close(self) -> None:
        with self._lock:
            if self._depth:
                raise BootboxError("close() called inside batch(); leave the batch first")
            self._closed = True

    def _commit(self) -> None:
        """Make the current contents durable; called with the lock held after each outermost
        write. If it raises, the writes are undone and the exception reaches the caller."""

    def _check_open(self) -> None:
        if self._closed:
            raise BootboxError(f"{self!r} is closed")

    def _set(self, table: str, key: str, doc: dict[str, Any] | None) -> None:
        """Write (or, with ``None``, delete) one document and log how to undo it."""
        rows = self._tables.setdefault(table, {})
        self._undo.append((table, key, rows.get(key)))
        if doc is None:
            del rows[key]
        else:
            rows[key] = doc

    def _undo_to(self, mark: int) -> None:
        """Restore every document written since the undo log had ``mark`` entries, newest first."""
        while len(self._undo) > mark:
            table, key, old = self._undo.pop()
            rows = self._tables[table]
            if old is None:
                rows.pop(key, None)
            else:
                rows[key] = old


class MemoryStore(DictStore):
    """A store that lives and dies with the process: tests and ``bootbox serve --ephemeral``."""

    def __init__(self) -> None:
        super().__init__()

    def __repr__(self) -> str:
        return "MemoryStore()"
