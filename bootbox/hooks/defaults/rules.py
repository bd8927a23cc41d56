"""Deploy rules choose a host's profile: the ``image`` item of its associations.

Registered ``trylast`` on ``bootbox_select_profile``, so a site plugin can override the rules for
some hosts; for everyone else the rule engine decides. A host that no rule gives an image gets
``None`` here, and so waits and retries (it is never given a default).
"""

from __future__ import annotations

from bootbox.hooks.context import PluginContext
from bootbox.hooks.markers import hookimpl
from bootbox.model import Host


class RulesPlugin:
    """One instance per plugin manager; the context arrives at start-up."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None

    @hookimpl
    def bootbox_startup(self, context: PluginContext) -> None:
        self.context = context

    @hookimpl(trylast=True)
    def bootbox_select_profile(self, host: Host) -> str | None:
        if self.context is None:
            return None
        return self.context.associations(host).get("image") or None
