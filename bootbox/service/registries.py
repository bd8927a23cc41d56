"""What plugins declare at start-up: profile kinds, rule item types and host attributes.

Each ``register`` a plugin receives in ``bootbox_register_profile_kinds`` /
``bootbox_register_item_types`` / ``bootbox_register_attributes`` ends here, bound to the
plugin's name (:func:`bootbox.hooks.calls.register_each`), so a bad or duplicate name is refused
at start-up with the plugin that made it. The service reads the three tables afterwards: profile
validation reads :attr:`Registries.kinds`, the rule book the item types and attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from bootbox.core.rules.pattern import BUILTIN_ATTRIBUTES
from bootbox.core.rules.ruleset import BUILTIN_ITEM_TYPE_DESCRIPTIONS
from bootbox.errors import PluginError

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
"""Characters of profile kinds, item types and profile names: usable unquoted in shells, URLs, YAML."""


@dataclass(frozen=True)
class ProfileKind:
    """A registered profile kind: its name, its spec validator and who registered it."""

    name: str
    validate: Callable[[Mapping[str, Any]], dict[str, Any]]
    description: str
    plugin: str


class Registries:
    """The profile kinds, rule item types and host attributes known to one service."""

    def __init__(self) -> None:
        self.kinds: dict[str, ProfileKind] = {}
        self.item_types: dict[str, str] = dict(BUILTIN_ITEM_TYPE_DESCRIPTIONS)
        self.attributes: dict[str, str] = {name: "built in" for name in BUILTIN_ATTRIBUTES}

    def register_kind(self, kind: str, *, validate: Callable[..., dict[str, Any]], description: str = "",
                      plugin: str) -> None:
        """``bootbox_register_profile_kinds``' ``register``; a kind registered twice is an error."""
        if not kind or not set(kind) <= NAME_CHARS:
            raise PluginError(f"profile kind {kind!r} is not a valid name")
        if kind in self.kinds:
            raise PluginError(f"profile kind {kind!r} is registered twice (by {self.kinds[kind].plugin} and {plugin})")
        self.kinds[kind] = ProfileKind(kind, validate, description, plugin=plugin)

    def register_item_type(self, name: str, *, description: str = "", plugin: str) -> None:
        """``bootbox_register_item_types``' ``register``."""
        if not name or not set(name) <= NAME_CHARS or name in self.item_types:
            raise PluginError(f"rule item type {name!r} from {plugin} is invalid or registered twice")
        self.item_types[name] = description or f"registered by {plugin}"

    def register_attribute(self, name: str, *, description: str = "", plugin: str) -> None:
        """``bootbox_register_attributes``' ``register``: lower-case names with ``_``."""
        if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
            raise PluginError(f"host attribute {name!r} from {plugin} is not a valid name (lower-case, _)")
        if name in self.attributes:
            raise PluginError(f"host attribute {name!r} from {plugin} is registered twice")
        self.attributes[name] = description or f"registered by {plugin}"


__all__ = ["NAME_CHARS", "ProfileKind", "Registries"]
