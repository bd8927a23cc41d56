"""bootbox: a stateless network-boot appliance (proxyDHCP, TFTP, HTTP, rules) with plugins.

This module is the public API: plugins import from here and nowhere else. It sits above the
layers (docs/architecture.md) and only imports down into them; nothing inside the layers imports
it (an import-linter contract), so it may re-export from any of them. ``api_client`` imports
:mod:`bootbox.client` when called, never the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bootbox.errors import (
    BootboxError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    PluginError,
    PushRefused,
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

from bootbox.version import __version__  # (code inside the layers imports it from there)

from bootbox.config import PushPolicy, Settings  # noqa: E402
from bootbox.hooks.context import PluginContext, PluginStore  # noqa: E402  (needs the model first)
from bootbox.core.hostprofile import AnswerEnv, HostProfile, InputSpec  # noqa: E402
from bootbox.core.render.callin import callin_script  # noqa: E402
from bootbox.store.secretbox import sha512_crypt  # noqa: E402  (a password as ESXi's /etc/shadow holds it)
from bootbox.core.render.grub import linux_config as grub_linux_config  # noqa: E402
from bootbox.core.caches import group_cache_urls, ipxe_fetch  # noqa: E402  (docs/caching.md)
from bootbox.service.caches import asset_urls  # noqa: E402  (a boot file's URLs: its group's caches, then here)

from bootbox.hooks.markers import hookimpl  # noqa: E402  (``@hookimpl def bootbox_boot_script(...)``)


def api_client(ctx: object) -> "ApiClient":
    """A client of the running appliance's API for a plugin's CLI command (``ctx``: typer's)."""
    from bootbox.client import cli_state  # lazily: urllib is not needed until a command runs

    return cli_state(ctx).client()  # type: ignore[arg-type]


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
    "PushPolicy",
    "PushRefused",
    "ValidationError",
    "__version__",
    "api_client",
    "asset_urls",
    "callin_script",
    "grub_linux_config",
    "group_cache_urls",
    "hookimpl",
    "ipxe_fetch",
    "normalize_mac",
    "normalize_uuid",
    "sha512_crypt",
]
