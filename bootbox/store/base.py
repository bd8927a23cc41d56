"""The Store Protocol and the checks both implementations share.

This module is the bottom of the store package: it imports only :mod:`bootbox.errors` and the
standard library, so :mod:`bootbox.store.memory` and :mod:`bootbox.store.tinydb` can build on it
without importing the package's ``__init__`` (which names them, lazily, for its callers).
Everyone else imports these names from :mod:`bootbox.store`, which re-exports them.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, ContextManager, Mapping, Protocol, runtime_checkable

from bootbox.errors import ValidationError

__all__ = ["TABLE_NAME", "Store", "check_key", "check_table", "copy_doc", "json_doc"]

TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")


@runtime_checkable
class Store(Protocol):
    """Documents (JSON-serialisable dicts) in named tables, addressed by a string key.

    Every method is thread-safe. Documents are copied in both directions, so a caller can never
    change what the store holds except through :meth:`put`. Table names match
    ``[a-z][a-z0-9_]*``; keys are non-empty strings; anything else raises
    :class:`~bootbox.errors.ValidationError` before anything is written.
    """

    def get(self, table: str, key: str) -> dict[str, Any]:
        """Return a copy of the document.

        :raises NotFound: ``"{table} {key!r} not found"``, also when the table does not exist.
        """
        ...

    def has(self, table: str, key: str) -> bool:
        """Whether the document exists."""
        ...

    def put(self, table: str, key: str, doc: Mapping[str, Any]) -> None:
        """Insert or replace (never merge) the document.

        Durable when it returns (TinyDB: the file is fsynced), unless inside :meth:`batch`,
        where it lands when the outermost batch exits.

        :raises ValidationError: ``doc`` is not a JSON object; nothing was written.
        """
        ...

    def put_many(self, table: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert or replace several documents of one table in one atomic write; all or none."""
        ...

    def delete(self, table: str, key: str) -> None:
        """Remove the document.

        :raises NotFound: it did not exist.
        """
        ...

    def all(self, table: str) -> dict[str, dict[str, Any]]:
        """Every document of the table as ``{key: copy}``; ``{}`` for an unknown table."""
        ...

    def batch(self) -> ContextManager[None]:
        """Group writes so they land together in one atomic write when the block exits.

        If the block raises, none of its writes land and the exception propagates (rollback).
        A nested batch joins the outer one: its writes land when the outermost batch exits, and
        if the nested block raises, only the nested block's writes are undone. Other threads wait
        for the whole batch, so they never see or join half of it.
        """
        ...

    def close(self) -> None:
        """Flush and release the state directory. Idempotent; any later call raises
        :class:`~bootbox.errors.BootboxError`."""
        ...


def check_table(table: str) -> str:
    """Return ``table`` if it is a valid table name, else raise ValidationError."""
    if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
        raise ValidationError("table", f"{table!r} is not a table name (want [a-z][a-z0-9_]*)")
    return table


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid document key (a non-empty string), else raise ValidationError."""
    if not isinstance(key, str) or not key:
        raise ValidationError("key", f"{key!r} is not a document key (want a non-empty string)")
    return key


def json_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``doc`` as a JSON object and return an independent copy of it, as JSON gives it back.

    The round trip is the validation: it refuses exactly what cannot be stored, and its result
    shares nothing with the caller's object.
    """
    if not isinstance(doc, Mapping):
        raise ValidationError("document", f"a document must be a mapping, not {type(doc).__name__}")
    try:
        return json.loads(json.dumps(dict(doc), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValidationError("document", f"not JSON-serialisable: {err}") from None


def copy_doc(value: Any) -> Any:
    """Deep-copy data the store already holds, so callers get something they may mutate.

    (``copy.deepcopy`` measured slightly faster than a JSON round trip on such data.)
    """
    return copy.deepcopy(value)
