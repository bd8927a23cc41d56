"""The image-profile repository: what hosts boot, kept in memory and written through to the store.

:class:`ProfileRepository` owns the ``profiles`` table. Reads (the boot path asks for a host's
profile on every script) are a dict lookup under a short lock; a write is validated by the
profile kind's plugin, then written to the store *before* it is acknowledged, so an accepted
profile survives a crash. The kinds themselves are registered by plugins at start-up and reach
the repository through a callable, so it sees the registry as it is when a write arrives.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable, Mapping

from bootbox.errors import Conflict, NotFound, ValidationError
from bootbox.model import Profile
from bootbox.store.records import load_records
from bootbox.service.registries import NAME_CHARS, ProfileKind
from bootbox.store import Store

PROFILES_TABLE = "profiles"
NAME_MAX = 64


def valid_name(name: str) -> bool:
    """A profile name: 1-64 of letters, digits, ``.``, ``_`` and ``-``."""
    return bool(name) and set(name) <= NAME_CHARS and len(name) <= NAME_MAX


class ProfileRepository:
    """Image profiles by name: validated by their kind, written through, read from memory."""

    def __init__(self, store: Store, kinds: Callable[[], Mapping[str, ProfileKind]]) -> None:
        """``kinds``: the registered profile kinds, read at each write."""
        self._store = store
        self._kinds = kinds
        self._lock = threading.Lock()
        self._profiles: dict[str, Profile] = {  # a record of the wrong shape is skipped and kept aside
            p.name: p for p in load_records(store, PROFILES_TABLE, Profile.from_dict).values()
        }

    def all(self) -> list[Profile]:
        """Every profile, by name."""
        with self._lock:
            return sorted(self._profiles.values(), key=lambda p: p.name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._profiles)

    def get_or_none(self, name: str) -> Profile | None:
        with self._lock:
            return self._profiles.get(name)

    def get(self, name: str) -> Profile:
        profile = self.get_or_none(name)
        if profile is None:
            raise NotFound(f"profile {name!r} does not exist")
        return profile

    def put(self, profile: Profile, *, replace_existing: bool = False) -> Profile:
        """Validate with the kind's plugin, then write through to the store."""
        if not valid_name(profile.name):
            raise ValidationError("name", "use 1-64 letters, digits, '.', '_' or '-'")
        kinds = self._kinds()
        kind = kinds.get(profile.kind)
        if kind is None:
            known = ", ".join(sorted(kinds)) or "none"
            raise ValidationError("kind", f"unknown profile kind {profile.kind!r}; known kinds: {known}")
        validated = replace(profile, spec=kind.validate(dict(profile.spec)))
        with self._lock:
            if profile.name in self._profiles and not replace_existing:
                raise Conflict(f"profile {profile.name!r} already exists")
            self._store.put(PROFILES_TABLE, profile.name, validated.to_dict())
            self._profiles[profile.name] = validated
        return validated

    def delete(self, name: str) -> None:
        with self._lock:
            if name not in self._profiles:
                raise NotFound(f"profile {name!r} does not exist")
            self._store.delete(PROFILES_TABLE, name)
            del self._profiles[name]
