"""Full-DHCP leases in the appliance store, handed to the DHCP server as two callables.

The protocol servers never see the store (architecture §2), so the DHCP server is given
``load_leases() -> dict`` and ``save_leases(dict)``; this adapter is where they meet the
:class:`~bootbox.store.Store`. The whole lease table is one document (``dhcp/leases``): the
allocator snapshots it whole, and a single put is one atomic, fsynced write, so a crash leaves
either the previous table or the new one, never half of each.
"""

from __future__ import annotations

from typing import Any, Callable

from bootbox.store import Store

__all__ = ["LEASES_KEY", "LEASES_TABLE", "lease_callables"]

LEASES_TABLE = "dhcp"
LEASES_KEY = "leases"


def lease_callables(store: Store) -> tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]:
    """``(load_leases, save_leases)`` over ``store``; loading an empty store gives ``{}``."""

    def load_leases() -> dict[str, Any]:
        return store.get(LEASES_TABLE, LEASES_KEY) if store.has(LEASES_TABLE, LEASES_KEY) else {}

    def save_leases(state: dict[str, Any]) -> None:
        store.put(LEASES_TABLE, LEASES_KEY, state)

    return load_leases, save_leases
