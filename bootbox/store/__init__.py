"""Bootbox's persistent state behind one small interface: JSON documents in named tables.

The service codes against :class:`Store` only. :class:`~bootbox.store.tinydb.TinyDBStore` is the
default (a TinyDB file in the state directory); :class:`~bootbox.store.memory.MemoryStore` is its
twin for tests and ``--ephemeral`` runs. One contract suite (``tests/store/test_store_contract.py``)
runs against both, so the twin cannot drift from the real thing.

Both implementations keep documents as JSON would give them back: a document is validated and
copied by a JSON round trip on the way in (tuples become lists, non-string keys become strings,
NaN and non-JSON types are refused), so what a caller reads before a restart is exactly what it
reads after one.

The Protocol and its checks live in :mod:`bootbox.store.base` (so the implementations never import
this ``__init__``, which names them); they are re-exported here, and the implementations lazily, so
code that only needs the Protocol (the pure core) does not import TinyDB. Import every name from
``bootbox.store``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bootbox.store.base import TABLE_NAME, Store, check_key, check_table, copy_doc, json_doc

if TYPE_CHECKING:
    from bootbox.runtime.atomic import atomic_write_bytes
    from bootbox.store.lock import StateDirLock
    from bootbox.store.memory import MemoryStore
    from bootbox.store.tinydb import TinyDBStore

__all__ = [
    "MemoryStore",
    "StateDirLock",
    "Store",
    "TABLE_NAME",
    "TinyDBStore",
    "atomic_write_bytes",
    "check_key",
    "check_table",
    "copy_doc",
    "json_doc",
]

_LAZY_EXPORTS = {
    "MemoryStore": "bootbox.store.memory",
    "TinyDBStore": "bootbox.store.tinydb",
    "StateDirLock": "bootbox.store.lock",
    "atomic_write_bytes": "bootbox.runtime.atomic",
}


def __getattr__(name: str) -> Any:
    """Import an implementation on first use, so importing the Protocol does not import TinyDB."""
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
