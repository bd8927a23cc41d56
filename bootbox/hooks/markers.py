"""The two pluggy markers of the ``bootbox`` project, defined once.

``hookspec`` marks the contract in :mod:`bootbox.hooks.specs`; ``hookimpl`` marks a plugin's
implementations (the public API re-exports it as ``bootbox.hookimpl``). pluggy matches them by
the project name, so the built-in plugins import ``hookimpl`` from here, never from the public
``bootbox`` package above this layer.
"""

from __future__ import annotations

import pluggy

PROJECT = "bootbox"
"""pluggy's project name: the prefix of the marker attributes, and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
"""Decorator for the hook specifications in :mod:`bootbox.hooks.specs`."""

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator for plugin hook implementations: ``@hookimpl def bootbox_boot_script(...)``;
``@hookimpl(wrapper=True)`` for a wrapper, ``tryfirst`` / ``trylast`` to move in the order."""

__all__ = ["PROJECT", "hookimpl", "hookspec"]
