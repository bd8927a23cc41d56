"""Building the plugin manager: built-ins and third-party plugins take the same road.

``make_plugin_manager`` registers the hook specs, the built-in plugin modules, then every
distribution advertising the ``bootbox`` entry-point group (the shipped ``linux`` kind is one),
honours a block list, and finally runs ``check_pending()`` so a misspelt hook name fails at
start-up instead of being silently ignored. Nothing happens at import time.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Iterable

import pluggy

from bootbox.hooks import specs as hookspecs
from bootbox.hooks.markers import PROJECT
from bootbox.errors import PluginError
from bootbox.version import __version__

log = logging.getLogger("bootbox.plugins")

ENTRY_POINT_GROUP = PROJECT

# Classes inside bootbox that implement hooks, by plugin name. One instance of each is
# registered per plugin manager, like any plugin, so ``bootbox plugin list`` shows them and
# ``disable_plugins`` can switch them off.
DEFAULT_PLUGINS: dict[str, str] = {
    "bootbox.rules": "bootbox.hooks.defaults.rules:RulesPlugin",
}


@dataclass(frozen=True)
class PluginInfo:
    """What ``bootbox plugin list`` shows for one registered plugin."""

    name: str
    version: str
    source: str
    hooks: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "source": self.source, "hooks": list(self.hooks)}


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    extra_plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """Return a fresh, fully loaded and checked plugin manager.

    :param load_entrypoints: load third-party plugins from the ``bootbox`` entry-point group
        (tests that want an exact set of plugins pass ``False`` and use ``extra_plugins``).
    :param blocked: plugin names not to load (``disable_plugins`` in the config).
    :param extra_plugins: plugin objects to register in addition (tests, embedding).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for name, target in DEFAULT_PLUGINS.items():
        if pm.is_blocked(name):
            continue
        module_name, _, class_name = target.partition(":")
        pm.register(getattr(importlib.import_module(module_name), class_name)(), name=name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # an import error inside someone's plugin
            raise PluginError(f"a plugin in the {ENTRY_POINT_GROUP!r} entry-point group failed to load: {exc}") from exc
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r} implements an unknown hook: {exc}") from exc
    return pm


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Describe every registered plugin: name, version, where it came from, hooks it implements."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        dist = dists.get(id(plugin))
        if dist is not None:
            version, source = dist.version, f"entry point ({dist.project_name})"
        elif name in DEFAULT_PLUGINS:
            version, source = __version__, "built-in"
        else:
            version, source = str(getattr(plugin, "__version__", "")), "registered"
        infos.append(PluginInfo(name=name, version=version, source=source, hooks=hooks))
    return sorted(infos, key=lambda info: info.name)
