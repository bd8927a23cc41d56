"""``[plugins.linux]``: where Linux images are kept and built, and the limits of a build.

Every key is optional (docs/linux-images.md)::

    [plugins.linux]
    images_dir = "/var/lib/bootbox/plugins/linux/images"   # default: the plugin's data dir + /images
    build_dir = "/var/tmp/bootbox-build"     # the roots being built (~1 GiB each); default images_dir/tmp
    mirror = "http://deb.debian.org/debian"  # default archive; default: the machine's apt sources
    build_timeout = 1800                     # seconds one build may take
    squashfs_level = 6                       # zstd level of filesystem.squashfs (1-22)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootbox import ConfigError, ValidationError
from bootbox_linux.image import check_mirror

KEYS = ("images_dir", "build_dir", "mirror", "build_timeout", "squashfs_level")


@dataclass(frozen=True)
class LinuxConfig:
    images_dir: Path | None = None
    build_dir: Path | None = None
    mirror: str = ""
    build_timeout: float = 1800.0
    squashfs_level: int = 6


def _path(doc: Mapping[str, Any], key: str) -> Path | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not Path(value).is_absolute():
        raise ConfigError(f"plugins.linux.{key}", f"expected an absolute path, got {value!r}")
    return Path(value)


def parse_config(doc: Mapping[str, Any] | None) -> LinuxConfig:
    doc = dict(doc or {})
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ConfigError(f"plugins.linux.{unknown[0]}", f"unknown key; known: {', '.join(KEYS)}")
    mirror = doc.get("mirror", "")
    if mirror:
        try:
            mirror = check_mirror(mirror, "plugins.linux.mirror")
        except ValidationError as exc:
            raise ConfigError("plugins.linux.mirror", exc.message) from None
    timeout = doc.get("build_timeout", 1800)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 60 <= timeout <= 86400:
        raise ConfigError("plugins.linux.build_timeout", f"expected seconds between 60 and 86400, got {timeout!r}")
    level = doc.get("squashfs_level", 6)
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
        raise ConfigError("plugins.linux.squashfs_level", f"expected an integer from 1 to 22, got {level!r}")
    return LinuxConfig(images_dir=_path(doc, "images_dir"), build_dir=_path(doc, "build_dir"), mirror=mirror,
                       build_timeout=float(timeout), squashfs_level=level)
