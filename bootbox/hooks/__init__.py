"""The plugin contract and the machinery that calls it, through pluggy only.

The hook specifications (:mod:`~bootbox.hooks.specs`, documented hook by hook in
docs/plugins.md), pluggy's two markers (:mod:`~bootbox.hooks.markers`, re-exported as
``bootbox.hookimpl``), building the plugin manager (:mod:`~bootbox.hooks.manager`), what a plugin
may use of the running appliance (:mod:`~bootbox.hooks.context`), calling a hook one plugin at a
time (:mod:`~bootbox.hooks.calls`) and bootbox's own implementations
(:mod:`~bootbox.hooks.defaults`). Only this package and ``bootbox.service`` call ``pm.hook``;
code that runs before a service exists (the CLI's commands, the web app's blueprints) calls the
registration hooks through a function of :mod:`~bootbox.hooks.calls`. It may import the core
and the bottom layers (config, model, errors), never the store, the service or anything above.
"""
