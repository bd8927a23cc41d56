"""Calling a hook one plugin at a time, through pluggy.

Most hooks are called whole: ``pm.hook.bootbox_x(...)``. A few must keep each plugin's
implementation apart, because what it does is recorded under the plugin's name: start-up (each
plugin gets its own context), the ``bootbox_register_*`` hooks (every kind, item type, attribute
and answer input remembers who registered it), shutdown and ``bootbox_host_booted`` (one
plugin's failure is logged under its name and the others still run) and ``bootbox_host_up``
(each plugin's push is its own job, with its own retries and result). Those call the hook
through :class:`PluginCall`: a pluggy call of the whole hook minus the *other* plugins'
implementations (``pm.subset_hook_caller``), so everything pluggy promises still holds:

- an implementation may accept fewer arguments than the spec (pluggy passes the ones it names);
- wrappers (``@hookimpl(wrapper=True)`` or old-style ``hookwrapper=True``) of plugins that only
  wrap the hook run around *each* plugin's call, seeing that plugin's results alone. A plugin
  that both implements and wraps the hook (through ``specname``) wraps only its own call;
- plugins are called in pluggy's order: ``tryfirst`` ones, then the last registered first, then
  ``trylast`` ones (``get_hookimpls()`` serves only to learn that order and the plugin names).

The CLI's commands and the web app's blueprints are added before a service exists; they are
called through :func:`register_commands` and :func:`plugin_blueprints`, so ``pm.hook`` stays in
``hooks/`` and ``service/``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pluggy

from bootbox.model import Profile


def _wraps(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def implementers(pm: pluggy.PluginManager, hook: str) -> list[str]:
    """Names of the plugins implementing ``hook`` (plugins that only wrap it do not count), in
    the order ``pm.hook.<hook>(...)`` calls them."""
    names: list[str] = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        if not _wraps(impl) and impl.plugin_name not in names:
            names.append(impl.plugin_name)
    return names


@dataclass(frozen=True)
class PluginCall:
    """``hook`` as pluggy calls it, restricted to the implementations of one ``plugin``.

    The restriction is worked out at each call, so a plugin registered in between (a test, an
    embedding) never slips into another plugin's push retry.
    """

    pm: pluggy.PluginManager
    hook: str
    plugin: str

    def __call__(self, **kwargs: Any) -> Any:
        """Call the plugin's implementations; pluggy's result (a list of the non-``None`` ones)."""
        impls = getattr(self.pm.hook, self.hook).get_hookimpls()
        others = [impl.plugin for impl in impls if not _wraps(impl) and impl.plugin_name != self.plugin]
        return self.pm.subset_hook_caller(self.hook, remove_plugins=others)(**kwargs)


def per_plugin(pm: pluggy.PluginManager, hook: str) -> list[PluginCall]:
    """One :class:`PluginCall` per plugin implementing ``hook``, in pluggy's order."""
    return [PluginCall(pm, hook, name) for name in implementers(pm, hook)]


def register_each(pm: pluggy.PluginManager, hook: str, register: Callable[..., None]) -> None:
    """Call a ``bootbox_register_*`` hook plugin by plugin, handing each plugin ``register``
    with ``plugin=<its name>`` bound, so every registration records who made it."""
    for call in per_plugin(pm, hook):
        call(register=functools.partial(register, plugin=call.plugin))


def call_each(pm: pluggy.PluginManager, hook: str, *, on_error: Callable[[str, Exception], None],
              **kwargs: Any) -> None:
    """Call ``hook`` plugin by plugin; a plugin that raises goes to ``on_error(plugin, exc)`` and
    the next plugin is still called (shutdown, notifications)."""
    for call in per_plugin(pm, hook):
        try:
            call(**kwargs)
        except Exception as exc:
            on_error(call.plugin, exc)


def register_commands(pm: pluggy.PluginManager, register: Callable[..., None]) -> None:
    """``bootbox_register_commands``: let plugins add nouns and verbs to the CLI being built."""
    pm.hook.bootbox_register_commands(register=register)


def plugin_blueprints(pm: pluggy.PluginManager) -> list[Any]:
    """``bootbox_register_routes``: the Flask blueprints plugins add to the web app, in pluggy's order."""
    blueprints: list[Any] = []
    pm.hook.bootbox_register_routes(register=blueprints.append)
    return blueprints


def demo_profile(pm: pluggy.PluginManager, *, name: str, kernel: Path, initrd: Path, cmdline: str,
                 description: str) -> Profile | None:
    """``bootbox_demo_profile``: the profile a plugin's kind offers for the demo payload (the
    appliance builds the payload, then asks, so the core never names a kind)."""
    profile: Profile | None = pm.hook.bootbox_demo_profile(name=name, kernel=kernel, initrd=initrd, cmdline=cmdline,
                                                           description=description)
    return profile


__all__ = ["PluginCall", "call_each", "demo_profile", "implementers", "per_plugin", "plugin_blueprints",
           "register_commands", "register_each"]
