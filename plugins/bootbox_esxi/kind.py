"""The ``esxi`` boot kind's name and its firmware rule: what every part of the plugin shares.

Apart from ``plugin.py`` (the hook implementations) so that the parts the hooks wire together,
``web.py`` and ``api_views.py``, read them without importing the hooks back: imports in this
package point from ``plugin.py`` to its parts, never the other way.
"""

from __future__ import annotations

from bootbox import BootContext, Host

KIND = "esxi"


def firmware_of(host: Host, boot: BootContext | None = None) -> str:
    """``uefi`` or ``bios`` from what iPXE reported (``platform``) or DHCP saw (``firmware``)."""
    platform = (boot.firmware if boot else "") or host.attrs.get("platform", "")
    if platform:
        return "bios" if platform == "pcbios" else "uefi"
    return "bios" if host.attrs.get("firmware", "") == "bios" else "uefi"
