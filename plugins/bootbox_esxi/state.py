"""The esxi plugin's running state, and the part of the plugin its HTTP side works with.

:class:`PluginState` is what exists between ``bootbox_startup`` and ``bootbox_shutdown``.
:class:`ServedPlugin` is the plugin as ``web.py`` and ``api_views.py`` see it: they are handed
the :class:`~bootbox_esxi.plugin.EsxiPlugin` at route registration, and typing them against this
Protocol instead of the class keeps ``plugin.py`` the only module that imports them, with no
import (not even under ``TYPE_CHECKING``) pointing back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bootbox import Host, PluginContext, Profile
from bootbox_esxi.callin import CallinKeys
from bootbox_esxi.catalog import Catalog
from bootbox_esxi.config import EsxiConfig
from bootbox_esxi.depot import Importer
from bootbox_esxi.image import Image
from bootbox_esxi.jobs import Jobs


@dataclass
class PluginState:
    """What exists between start-up and shutdown."""

    context: PluginContext
    catalog: Catalog
    importer: Importer
    jobs: Jobs
    lock: threading.Lock = field(default_factory=threading.Lock)
    images: dict[tuple[Any, ...], Image] = field(default_factory=dict)
    by_id: dict[str, Image] = field(default_factory=dict)
    imgdbs: dict[str, str] = field(default_factory=dict)
    rescanned: float = float("-inf")
    callins: CallinKeys = field(default_factory=CallinKeys)


class ServedPlugin(Protocol):
    """What the esxi routes and API views use of the plugin (``EsxiPlugin`` provides it)."""

    config: EsxiConfig
    public_url: str

    @property
    def state(self) -> PluginState:
        """The running state; raises ``PluginError`` before start-up."""
        ...

    def image_for(self, host: Host | None, profile: Profile) -> Image:
        """The (cached) image ``host`` boots; ``host=None``: the profile alone."""
        ...

    def image_by_id(self, image_id: str) -> Image:
        """An image some host or profile resolves to; ``NotFound`` otherwise."""
        ...

    def file_of(self, image: Image, name: str) -> Path | None:
        """The file behind ``name`` in an image's tree."""
        ...

    def injected_for(self, host: Host, profile: Profile) -> list[str]:
        """What plugins add to ``host``'s image."""
        ...

    def host_certificate(self, mac: str, requester: str, boot_key: str) -> tuple[bytes, bytes] | None:
        """This boot's TLS key and certificate for ``mac`` from the appliance's CA (``(cert PEM,
        key PEM)``), for its call-in module; None before start-up."""
        ...

    def hostprofile_boot_script(self, mac: str, report_url: str) -> str:
        """The boot-module path's ``esxcli`` script for this boot of ``mac`` ("" when it uses the API)."""
        ...
