"""What a Linux image *is*: a recipe (suite, archive, packages, injected packages) and its digest.

An image is named by the operator (``debian-ssh``) but identified by its content digest: the
SHA-256 of everything that decides what the build produces — the builder's version, the suite,
the archive URL, the sorted package list and each injected package (by name, or a local
``.deb`` by the SHA-256 of its bytes). Two builds with the same recipe are the same image, so
the second is served from the cache; a recipe that changes in any of these gets a new digest,
which is what rule compliance compares (a host booted with digest A is drifted once its image
name points at digest B).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootbox import ValidationError

BUILDER_VERSION = "3"
"""Bumped whenever the build steps change what an image contains (part of every digest)."""

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SUITE = re.compile(r"[a-z][a-z0-9-]{1,31}")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")
"""Debian policy §5.6.1: lower case letters, digits, ``+``, ``-`` and ``.``; at least two chars."""

BASE_PACKAGES = ("busybox", "linux-image-amd64", "live-boot", "systemd-sysv")
"""What every image needs to boot at all: a kernel, the initramfs that fetches the root, an init,
and busybox (its ``wget`` reports the boot in to the appliance)."""


def check_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(field_name, f"{name!r} is not an image name (lower-case letters, digits, '.', '_', "
                                          "'-'; at most 63 characters)")
    return name


def check_mirror(mirror: str, field_name: str = "mirror") -> str:
    if not isinstance(mirror, str) or not re.fullmatch(r"(https?|file)://[^\s]+", mirror):
        raise ValidationError(field_name, f"{mirror!r} is not an archive URL (http://, https:// or file://)")
    return mirror.rstrip("/")


@dataclass(frozen=True)
class Injection:
    """A package a plugin adds to an image: an archive package name or a local ``.deb``."""

    plugin: str
    package: str
    """The archive package name, or the absolute path of the ``.deb``."""
    sha256: str = ""
    """For a ``.deb``: the SHA-256 of its bytes (what the digest covers), else ``""``."""
    name: str = ""
    """For a ``.deb``: the package name inside it (``dpkg-deb -f``), else the package itself."""

    @property
    def is_file(self) -> bool:
        return self.package.startswith("/")

    def key(self) -> str:
        return f"deb:{self.sha256}" if self.is_file else self.package

    def to_doc(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "package": self.name or self.package,
                "source": self.package if self.is_file else "archive", "sha256": self.sha256}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def injection(plugin: str, item: str) -> Injection:
    """Check one answer of ``bootbox_image_inject`` (a package name or a local ``.deb``)."""
    item = str(item).strip()
    if item.startswith("/"):
        path = Path(item)
        if path.suffix != ".deb":
            raise ValidationError("inject", f"plugin {plugin} injects {item}, which is not a .deb file")
        if not path.is_file():
            raise ValidationError("inject", f"plugin {plugin} injects {item}, which does not exist")
        from bootbox_linux.debfile import package_name  # lazily: runs dpkg-deb

        return Injection(plugin=plugin, package=str(path), sha256=file_sha256(path), name=package_name(path))
    if not PACKAGE.fullmatch(item):
        raise ValidationError("inject", f"plugin {plugin} injects {item!r}, which is neither a package name nor "
                                        "an absolute path to a .deb")
    return Injection(plugin=plugin, package=item, name=item)


@dataclass(frozen=True)
class Recipe:
    """Everything a build depends on; ``digest`` identifies the image it makes."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    injected: tuple[Injection, ...] = field(default=())

    @staticmethod
    def make(suite: str, mirror: str, packages: Iterable[str], injected: Iterable[Injection] = ()) -> Recipe:
        if not isinstance(suite, str) or not SUITE.fullmatch(suite):
            raise ValidationError("suite", f"{suite!r} is not a Debian suite name (e.g. bookworm)")
        wanted = []
        for i, package in enumerate(packages):
            if not isinstance(package, str) or not PACKAGE.fullmatch(package):
                raise ValidationError(f"packages[{i}]", f"{package!r} is not a Debian package name")
            wanted.append(package)
        return Recipe(suite=suite, mirror=check_mirror(mirror), packages=tuple(sorted(set(wanted) | set(BASE_PACKAGES))),
                      injected=tuple(sorted(injected, key=lambda i: (i.plugin, i.key()))))

    @property
    def digest(self) -> str:
        doc = {"builder": BUILDER_VERSION, "suite": self.suite, "mirror": self.mirror,
               "packages": list(self.packages), "injected": sorted(i.key() for i in self.injected)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def to_doc(self) -> dict[str, Any]:
        return {"suite": self.suite, "mirror": self.mirror, "packages": list(self.packages),
                "injected": [i.to_doc() for i in self.injected]}


def host_mirror(sources: Iterable[Path] = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))) -> str:
    """The first Debian archive in the machine's apt sources (the default archive), or
    ``http://deb.debian.org/debian`` if none is found. Security and update archives are skipped:
    an image is built from one archive, so its digest names where every package came from."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in (".list", ".sources"))
        elif source.is_file():
            files.append(source)
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            found = re.match(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)((?:https?|file)://\S+)", line)
            if found and "security" not in found.group(1):
                return found.group(1).rstrip("/")
    return "http://deb.debian.org/debian"
