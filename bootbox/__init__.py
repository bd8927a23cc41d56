"""bootbox: a stateless network-boot appliance (proxyDHCP, TFTP, HTTP, rules) with plugins.

This module is the public API: plugins import from here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

from bootbox.config import Settings  # noqa: E402
from bootbox.hooks.context import PluginContext, PluginStore  # noqa: E402  (needs the model first)
from bootbox.core.hostprofile import AnswerEnv, HostProfile, InputSpec  # noqa: E402
from bootbox.service.pushes import PushRefused  # noqa: E402
from bootbox.core.render.callin import callin_script  # noqa: E402
from bootbox.core.render.grub import linux_config as grub_linux_config  # noqa: E402

hookimpl = pluggy.HookimplMarker("bootbox")
"""Decorator for plugin hook implementations: ``@hookimpl def bootbox_boot_script(...)``."""

def api_client(ctx: object) -> "ApiClient":
    """A client of the running appliance's API for a plugin's CLI command (``ctx``: typer's)."""
    from bootbox.cli.common import state

    return state(ctx).client()  # type: ignore[arg-type]


if TYPE_CHECKING:
    from bootbox.client import ApiClient

__all__ = [
    "ARCHITECTURES",
    "AnswerEnv",
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
    "HostProfile",
    "HostState",
    "InputSpec",
    "Machine",
    "NotFound",
    "PluginContext",
    "PluginStore",
    "Settings",
    "Platform",
    "PluginError",
    "Profile",
    "PushRefused",
    "ValidationError",
    "__version__",
    "api_client",
    "callin_script",
    "grub_linux_config",
    "hookimpl",
    "normalize_mac",
    "normalize_uuid",
]
