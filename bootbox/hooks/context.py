"""What a plugin may use of the running appliance: handed over once, at start-up.

A plugin gets a :class:`PluginContext` in ``bootbox_startup``: the settings, a data directory
of its own, a store namespace of its own, and a few service calls (record an event on a host,
look up hosts and profiles). It never sees the service, the plugin manager or the servers, so the
core can change behind this surface without breaking plugins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

from bootbox.config import Settings
from bootbox.model import BootEvent, Host, Profile
from bootbox.core.hostprofile import HostProfile


class PluginStore:
    """A plugin's own tables in the appliance store: ``put("depots", key, doc)`` etc.

    Table names are prefixed with the plugin's name behind the scenes, so plugins cannot read
    or clobber each other's (or bootbox's) data. Same semantics as :class:`bootbox.store.Store`:
    durable when a write returns, ``batch()`` for one atomic write of many changes.
    """

    def __init__(self, store: Any, plugin: str) -> None:
        self._store = store
        self._prefix = "p_" + re.sub(r"[^a-z0-9]+", "_", plugin.lower()).strip("_") + "_"

    def _table(self, table: str) -> str:
        return self._prefix + table

    def get(self, table: str, key: str) -> dict[str, Any]:
        return self._store.get(self._table(table), key)

    def has(self, table: str, key: str) -> bool:
        return self._store.has(self._table(table), key)

    def put(self, table: str, key: str, doc: Mapping[str, Any]) -> None:
        self._store.put(self._table(table), key, doc)

    def put_many(self, table: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        self._store.put_many(self._table(table), docs)

    def delete(self, table: str, key: str) -> None:
        self._store.delete(self._table(table), key)

    def all(self, table: str) -> dict[str, dict[str, Any]]:
        return self._store.all(self._table(table))

    def batch(self) -> ContextManager[None]:
        return self._store.batch()


@dataclass(frozen=True)
class PluginContext:
    """Everything of the appliance a plugin may use (see ``bootbox_startup``)."""

    name: str
    settings: Settings
    data_dir: Path
    store: PluginStore
    record: Callable[..., BootEvent]
    """``record(mac, kind, message, **data)``: add a step to a host's timeline."""
    host: Callable[[str], Host]
    """``host(mac)``: the host (raises :class:`bootbox.NotFound`)."""
    hosts: Callable[[], list[Host]]
    profile: Callable[[str], Profile]
    """``profile(name)``: a profile (raises :class:`bootbox.NotFound`)."""
    profiles: Callable[[], list[Profile]]
    put_profile: Callable[..., Profile]
    """``put_profile(profile, replace_existing=False)``: validate (by its kind's plugin) and store
    a profile, durably, as ``POST/PUT /api/v1/profiles`` does; returns the stored profile."""
    delete_profile: Callable[[str], None]
    image_packages: Callable[[Host, Profile], list[str]]
    """``image_packages(host, profile)``: what every plugin adds to this host's image
    (``bootbox_image_inject`` for ``profile.kind``/``profile.name``), so the boot kind can
    resolve the whole set."""
    image_injections: Callable[..., list[tuple[str, str]]]
    """``image_injections(image_kind, image_name, host=None)``: ``[(plugin, package)]`` that
    every plugin injects into an image (``bootbox_image_inject``), each under its plugin's name."""
    rules_using: Callable[[str, str], list[str]]
    """``rules_using(item_type, value)``: the rules (working or active set) that assign
    ``item_type=value``, e.g. before removing what they name."""
    associations: Callable[[Host], Mapping[str, str]]
    """``associations(host)``: the host's cached rule items (image, host_profile, group, …); on its
    first boot, what the active rule set gives it (then cached, as Auto Deploy does)."""
    host_profile_files: Callable[[Host], tuple[HostProfile, dict[str, str]]]
    """``host_profile_files(host)``: the host's host profile and every file it renders for the host
    (unmasked, as the host itself would fetch them), for plugins that apply a host profile after
    boot; raises :class:`bootbox.NotFound` if the host has none."""
    answers: Callable[[Host], dict[str, Any]]
    """``answers(host)``: the host's answers in clear with its schema's defaults (what
    ``bootbox_host_up`` gets), for work outside a push (compliance checks, reboot watchers)."""
    report_check: Callable[..., None]
    """``report_check(mac, result, message="")``: record this plugin's latest compliance result
    for a host (``compliant``, ``non-compliant``, ``unknown``); ``bootbox host list`` shows it."""
