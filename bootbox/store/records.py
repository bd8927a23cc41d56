"""Load a table's documents through a parser, skipping (and keeping) the ones it refuses.

A store file can be valid JSON and still hold a document of the wrong shape (edited by hand,
written by another version, damaged in a way that kept the JSON valid). Parsing it at start-up
raised a traceback and bootbox did not start at all. Every repository loads its table through
:func:`load_records` instead: a document its parser refuses is skipped, counted in one log line,
and a copy is kept in ``set-aside/`` (:mod:`bootbox.store.setaside`), so the next write of the
table cannot lose the only copy. The document also stays in the store until something replaces
or deletes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from bootbox.store.setaside import set_aside_bytes

log = logging.getLogger("bootbox.store")

T = TypeVar("T")


def load_records(store: Any, table: str, parse: Callable[[Mapping[str, Any]], T]) -> dict[str, T]:
    """``{key: parse(doc)}`` for every document of ``table`` that ``parse`` accepts."""
    docs = store.all(table)
    parsed: dict[str, T] = {}
    refused: dict[str, str] = {}
    for key, doc in docs.items():
        try:
            parsed[key] = parse(doc)
        except Exception as exc:  # whatever the parser refuses is a record of the wrong shape
            refused[key] = f"{type(exc).__name__}: {exc}"
    if refused:
        _keep(store, table, {key: docs[key] for key in refused}, refused, len(docs))
    return parsed


def _keep(store: Any, table: str, docs: Mapping[str, Any], reasons: Mapping[str, str], total: int) -> None:
    summary = (f"store table {table!r}: loaded {total - len(docs)} of {total} records; skipped "
               + "; ".join(f"{key!r} ({reason})" for key, reason in sorted(reasons.items())[:5]))
    path = getattr(store, "path", None)
    if not isinstance(path, Path):
        log.error("%s", summary)
        return
    why = (f"{summary}. bootbox runs without them; they stay in the store until replaced. Fix or re-create them "
           "through the API, or restore a backup (bootbox state restore) with bootbox stopped.")
    try:
        kept = set_aside_bytes(f"{table}-records.json", json.dumps(docs, indent=1, sort_keys=True).encode(), why,
                               state_dir=path.parent)
    except OSError as err:
        log.error("%s (could not keep a copy: %s)", summary, err)
        return
    log.error("%s; they are kept in %s", summary, kept)
