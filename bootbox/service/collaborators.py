"""The small interfaces the service's parts are handed instead of the service itself.

:class:`~bootbox.service.bootservice.BootService` builds its parts (firmware boot, host
configuration, after-boot rounds) with the few collaborators each one uses: the settings, the
host index, the store, and bound methods of the service typed here. A part never imports the
service module, so the service sits above its parts and no import runs in a circle.
"""

from __future__ import annotations

from typing import Any, Protocol

from bootbox.model import BootEvent


class Record(Protocol):
    """``record(mac, kind, message, **data)``: append one step to a host's timeline."""

    def __call__(self, mac: str, kind: str, message: str, /, **data: Any) -> BootEvent: ...


__all__ = ["Record"]
