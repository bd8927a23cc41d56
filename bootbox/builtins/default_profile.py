"""Fallback profile choice: every host gets the configured ``default_profile``.

Registered ``trylast`` so that any plugin (the rules engine, a site override) that returns a
profile name wins; an empty ``default_profile`` makes unmatched hosts wait instead.
"""

from __future__ import annotations

from bootbox import hookimpl
from bootbox.config import Settings


class DefaultProfilePlugin:
    """One instance per plugin manager, so tests never share state."""

    def __init__(self) -> None:
        self.profile_name = ""

    @hookimpl
    def bootbox_configure(self, settings: Settings) -> None:
        self.profile_name = settings.default_profile

    @hookimpl(trylast=True)
    def bootbox_select_profile(self, host: object) -> str | None:
        return self.profile_name or None
