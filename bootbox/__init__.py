"""bootbox: a stateless network-boot appliance (proxyDHCP, TFTP, HTTP, rules) with plugins.

This module is the public API: plugins import from here and nowhere else.
"""

from __future__ import annotations

import pluggy

from bootbox.errors import (
    BootboxError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    PluginError,
    ValidationError,
)
from bootbox.model import (
    ARCHITECTURES,
    BootContext,
    BootEvent,
    BootSpec,
    EventKind,
    Firmware,
    Host,
    HostState,
    Machine,
    Platform,
    Profile,
    normalize_mac,
    normalize_uuid,
)

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("bootbox")
"""Decorator for plugin hook implementations: ``@hookimpl def bootbox_boot_script(...)``."""

__all__ = [
    "ARCHITECTURES",
    "BootContext",
    "BootEvent",
    "BootSpec",
    "BootboxError",
    "ConfigError",
    "Conflict",
    "EventKind",
    "Firmware",
    "Forbidden",
    "Host",
    "HostState",
    "Machine",
    "NotFound",
    "Platform",
    "PluginError",
    "Profile",
    "ValidationError",
    "__version__",
    "hookimpl",
    "normalize_mac",
    "normalize_uuid",
]
