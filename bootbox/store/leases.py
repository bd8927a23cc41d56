"""Full-DHCP leases in the appliance store, handed to the DHCP server as two callables.

The protocol servers never see the store (architecture §2), so the DHCP server is given
``load_leases() -> dict`` and ``save_leases(dict)``; this adapter is where they meet the
:class:`~bootbox.store.Store`. The whole lease table is one document (``dhcp/leases``): the
allocator snapshots it whole, and a single put is one atomic, fsynced write, so a crash leaves
either the previous table or the new one, never half of each.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from bootbox.store import Store
from bootbox.store.setaside import set_aside_bytes

log = logging.getLogger("bootbox.leases")

__all__ = ["LEASES_KEY", "LEASES_TABLE", "lease_callables"]

LEASES_TABLE = "dhcp"
LEASES_KEY = "leases"


def lease_callables(store: Store, state_dir: Path | None = None, key: str = LEASES_KEY
                    ) -> tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]:
    """``(load_leases, save_leases)`` over ``store``; loading an empty store gives ``{}``.

    ``key``: the document that holds them. Appliances sharing one database each keep their own
    (``leases@NAME``: full-DHCP pairs serve split ranges, docs/postgresql.md); one that has none
    yet starts from the shared ``leases`` document a migrated single appliance left.

    A lease table of the wrong shape (not ``{"leases": [ {...}, ... ]}``) is not handed to the
    server, which would start empty and save over it: it is set aside in ``state_dir`` first
    (:mod:`bootbox.store.setaside`) and the server starts with no leases.
    """

    def load_leases() -> dict[str, Any]:
        found = key if store.has(LEASES_TABLE, key) else LEASES_KEY
        if not store.has(LEASES_TABLE, found):
            return {}
        state = store.get(LEASES_TABLE, found)
        if _well_shaped(state):
            return state
        why = ("the DHCP lease table in the store has the wrong shape; the DHCP server started with no leases "
               "(clients get new addresses). This is the table as it was.")
        if state_dir is None:
            log.error("%s: %s", why, json.dumps(state)[:500])
        else:
            kept = set_aside_bytes("dhcp-leases.json", json.dumps(state, indent=1).encode(), why, state_dir=state_dir)
            log.error("the DHCP lease table has the wrong shape; starting with no leases; it is kept in %s", kept)
        return {}

    def save_leases(state: dict[str, Any]) -> None:
        store.put(LEASES_TABLE, key, state)

    return load_leases, save_leases


def _well_shaped(state: Any) -> bool:
    leases = state.get("leases", []) if isinstance(state, dict) else None
    return isinstance(leases, list) and all(isinstance(lease, dict) for lease in leases)
