"""The plugin contract: every hook bootbox calls, in the order a host meets them.

All hooks are named ``bootbox_*`` and are called with keyword arguments only, so an
implementation may accept any subset of the arguments (pluggy passes only those it names).
Built-in behaviour is implemented with these same hooks and registered exactly like a
third-party plugin (see ``bootbox.plugins``); ``docs/plugins.md`` documents each hook with an
example, and a test fails when a hook here is missing from that page.

Hooks called on the boot path (script, assets) run on HTTP worker threads; an exception in a
plugin there is logged with the host's MAC and the boot falls back as if the plugin returned
``None``. After-boot hooks run on a worker pool, each failure isolated.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

if TYPE_CHECKING:
    from bootbox.config import Settings
    from bootbox.model import BootContext, BootEvent, Host, Profile

hookspec = pluggy.HookspecMarker("bootbox")

# --------------------------------------------------------------------------------------------
# Start-up: called once, in this order, before any server starts.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_configure(settings: "Settings") -> None:
    """Give the plugin the appliance's settings before anything starts.

    :param settings: the validated, immutable :class:`bootbox.config.Settings`.

    Called once at start-up, after all plugins are registered. Return values are ignored; raise
    :class:`bootbox.PluginError` to refuse to start (the message is shown to the operator).
    """


@hookspec
def bootbox_register_profile_kinds(register: Callable[..., None]) -> None:
    """Declare the profile kinds (boot recipes) this plugin knows.

    :param register: call ``register(kind, validate=fn, description="...")`` once per kind.
        ``validate(spec: dict) -> dict`` returns the normalised spec or raises
        :class:`bootbox.ValidationError` naming the field.

    Called once at start-up. A kind registered twice is a start-up error. ``bootbox profile
    add --kind K`` and ``POST /api/v1/profiles`` refuse kinds nobody registered.
    """


# --------------------------------------------------------------------------------------------
# The boot decision: called when a host asks for its iPXE script.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_host_attributes(host: "Host", params: Mapping[str, str]) -> Mapping[str, str] | None:
    """Contribute facts about a host that rules can match on.

    :param host: the host as known before this request.
    :param params: the query parameters iPXE sent (``mac``, ``uuid``, ``serial``, ...).

    Called on every script request. All results are merged into the host's attributes, later
    plugins overriding earlier ones; return ``None`` to add nothing.
    """


@hookspec(firstresult=True)
def bootbox_select_profile(host: "Host") -> str | None:
    """Choose the name of the profile a host boots.

    :param host: the host with its attributes and cached associations.

    ``firstresult``: the first non-``None`` name wins. The built-in fallback (the configured
    ``default_profile``) is registered ``trylast``, so any plugin can override it. Returning
    ``None`` everywhere means the host matches nothing: it is shown the "waiting" script and
    retries.
    """


@hookspec(firstresult=True)
def bootbox_boot_script(host: "Host", profile: "Profile", boot: "BootContext") -> str | None:
    """Render the iPXE script that boots ``host`` with ``profile``.

    :param host: the host asking.
    :param profile: the chosen profile; implement this only for the ``profile.kind`` you own.
    :param boot: URLs for this host (``boot.asset_url(name)``, ``boot.callback_url``,
        ``boot.script_url`` to retry).

    ``firstresult``: return the script text (starting ``#!ipxe``) for kinds you own, ``None``
    otherwise.
    """


# --------------------------------------------------------------------------------------------
# Serving files: called when a host fetches a file of its profile.
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bootbox_profile_asset(profile: "Profile", name: str) -> Path | None:
    """Map a file name in a profile's asset URL to a regular file on disk.

    :param profile: the profile of the host asking (hosts only get their own profile's files).
    :param name: the last path component of ``boot.asset_url(name)``.

    ``firstresult``: return a :class:`pathlib.Path` for names you own, ``None`` otherwise. The
    HTTP server serves it with Range, ETag and Last-Modified.
    """


# --------------------------------------------------------------------------------------------
# After boot: called when the booted OS reports in.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_host_booted(host: "Host", event: "BootEvent") -> None:
    """React to a host that has booted and reported in (a stateless host forgets everything).

    :param host: the host, state ``booted``.
    :param event: the ``booted`` event with what the host reported (``ip``, ``boot_id``, ...).

    Every implementation runs, on a worker thread, never on a protocol thread; an exception in
    one is logged as an event on the host and does not stop the others.
    """


def documented_hooks() -> list[str]:
    """Names of every hook in this contract, for docs tests and ``bootbox plugin list``."""
    return sorted(name for name, obj in globals().items() if name.startswith("bootbox_") and callable(obj))


__all__ = ["hookspec", "documented_hooks"]
