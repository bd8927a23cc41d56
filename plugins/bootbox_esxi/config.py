"""``[plugins.esxi]`` in bootbox.toml: validated here, with errors naming ``plugins.esxi.KEY``.

bootbox hands every plugin its own table raw, so a typo must be caught by the plugin at
start-up rather than surface at the first ESXi boot::

    [plugins.esxi]
    acceptance = "PartnerSupported"      # default level of new image profiles
    cache_urls = ["http://cache1:8080"]  # caching reverse proxies put into boot.cfg's prefix (a host's
                                         # group's [groups.NAME] cache_urls take its place: docs/caching.md)
    bios = "pxelinux"                    # how BIOS hosts reach mboot.c32: "pxelinux" or "com32"
    max_vib_bytes = 4294967296           # largest VIB (and payload) an import accepts
    watch_seconds = 60                   # how often known hosts' runtime.bootTime is read (reboots)
    host_cert_days = 1825                # validity of the TLS certificate in each stateless host's boot module (0: none)

    [plugins.esxi.loaders]               # VMware's boot loaders (copy them from an ESXi ISO)
    efi = "/srv/esxi/mboot.efi"          # efi/boot/bootx64.efi renamed
    c32 = "/srv/esxi/mboot.c32"
    pxelinux = "/srv/esxi/pxelinux.0"    # SYSLINUX 3.86, which VMware builds mboot.c32 for
    # ldlinux = "/usr/lib/syslinux/modules/bios/ldlinux.c32"  # only with a SYSLINUX 5+ pxelinux.0

    [plugins.esxi.inject]                # VIBs added at boot to hosts of a group (rule item)
    vcd = ["vcloud-agent"]
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bootbox import ConfigError, ValidationError
from bootbox_esxi.versions import normalize_level

LOADER_NAMES: dict[str, str] = {"efi": "mboot.efi", "c32": "mboot.c32", "pxelinux": "pxelinux.0",
                                 "ldlinux": "ldlinux.c32"}
"""Loader key → the asset name hosts fetch it by. ``ldlinux`` is only for a SYSLINUX 5+ pxelinux.0,
which loads ldlinux.c32 from its path prefix (SYSLINUX 3.86, the one VMware builds mboot.c32 for,
is a single file)."""

BIOS_MODES = ("pxelinux", "com32")
PREFIX = "plugins.esxi"


@dataclass(frozen=True)
class EsxiConfig:
    acceptance: str = "partner"
    cache_urls: tuple[str, ...] = ()
    bios: str = "pxelinux"
    loaders: Mapping[str, str] = field(default_factory=dict)
    inject: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_vib_bytes: int = 4 << 30
    watch_seconds: float = 60.0
    """How often the host-profile watcher reads ``runtime.bootTime`` of known ESXi hosts; a
    changed boot time is a reboot, and the host profile is applied again. 0 turns it off."""
    host_cert_days: int = 1825
    """Validity of the per-host certificate from the appliance's CA in each stateless host's boot
    module (``hostcert.py``); a new one is issued at every boot. 5 years, as VMCA's default for
    ESXi host certificates: a stateless host may run that long between reboots. 0: no certificate
    in the module, no CA; the host's API thumbprint is pinned per boot instead."""


def _key(name: str) -> str:
    return f"{PREFIX}.{name}"


def _absolute_file(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "expected an absolute file path")
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(key, f"{value!r} must be an absolute path")
    if not path.is_file():
        raise ConfigError(key, f"{value} does not exist or is not a regular file")
    return value


def _url(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected an http URL, got {value!r}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "http" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(key, f"{value!r} is not a plain http://host[:port][/path] URL (ESXi's loader speaks http)")
    return value.rstrip("/")


def parse_config(raw: Mapping[str, Any] | None) -> EsxiConfig:
    """Validate the raw ``[plugins.esxi]`` table."""
    raw = dict(raw or {})
    known = {"acceptance", "cache_urls", "bios", "loaders", "inject", "max_vib_bytes", "watch_seconds",
             "host_cert_days"}
    for key in raw:
        if key not in known:
            raise ConfigError(_key(key), f"unknown setting; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    if "acceptance" in raw:
        try:
            values["acceptance"] = normalize_level(raw["acceptance"], _key("acceptance"))
        except ValidationError as exc:
            raise ConfigError(exc.field, exc.message) from None
    if "cache_urls" in raw:
        urls = raw["cache_urls"]
        if not isinstance(urls, list):
            raise ConfigError(_key("cache_urls"), "expected a list of http URLs")
        values["cache_urls"] = tuple(_url(f"{_key('cache_urls')}[{i}]", u) for i, u in enumerate(urls))
    if "bios" in raw:
        if raw["bios"] not in BIOS_MODES:
            raise ConfigError(_key("bios"), f"{raw['bios']!r} is not one of {', '.join(BIOS_MODES)}")
        values["bios"] = raw["bios"]
    if "loaders" in raw:
        loaders = raw["loaders"]
        if not isinstance(loaders, Mapping):
            raise ConfigError(_key("loaders"), "expected a table: efi, c32, pxelinux, ldlinux = absolute paths")
        for name in loaders:
            if name not in LOADER_NAMES:
                raise ConfigError(_key(f"loaders.{name}"), f"unknown loader; known: {', '.join(LOADER_NAMES)}")
        values["loaders"] = {k: _absolute_file(_key(f"loaders.{k}"), v) for k, v in loaders.items()}
    if "inject" in raw:
        inject = raw["inject"]
        if not isinstance(inject, Mapping):
            raise ConfigError(_key("inject"), "expected a table: group = [VIB names]")
        parsed: dict[str, tuple[str, ...]] = {}
        for group, names in inject.items():
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(_key(f"inject.{group}"), "expected a list of VIB names or IDs")
            parsed[str(group)] = tuple(names)
        values["inject"] = parsed
    if "max_vib_bytes" in raw:
        size = raw["max_vib_bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 << 20:
            raise ConfigError(_key("max_vib_bytes"), "expected a whole number of bytes, at least 1048576")
        values["max_vib_bytes"] = size
    if "watch_seconds" in raw:
        seconds = raw["watch_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (seconds == 0 or 0.1 <= seconds <= 86400):
            raise ConfigError(_key("watch_seconds"), "expected seconds from 0.1 to 86400, or 0 to turn the watch off")
        values["watch_seconds"] = float(seconds)
    if "host_cert_days" in raw:
        days = raw["host_cert_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not (days == 0 or 1 <= days <= 3650):
            raise ConfigError(_key("host_cert_days"),
                              "expected a whole number of days from 1 to 3650, or 0 for no certificate (pinning)")
        values["host_cert_days"] = days
    return EsxiConfig(**values)
