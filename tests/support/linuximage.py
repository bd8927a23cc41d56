"""The shared Linux test image: built once per test run with mmdebstrap, reused by every test.

``linux_image`` (session fixture, import ``linux_image_fixture``) builds the image
:data:`IMAGE_NAME` from the machine's apt sources with :data:`TEST_PACKAGES` plus a tiny local
``.deb`` (:func:`make_test_deb`) injected by a test plugin (:class:`InjectTestDeb`, the plugin
name :data:`INJECTOR`), through the ``linux`` plugin's own image service, into a run-scoped
images directory. Tests that run an appliance point ``[plugins.linux] images_dir`` at
``linux_image.images_dir`` (and register ``InjectTestDeb(linux_image.deb)``, so a rebuild keeps
the digest): the image is then built already, and ``profile add --spec image=bootbox-test``
boots it.

Set ``TEST_LINUX_IMAGES_DIR`` (not ``BOOTBOX_…``: the appliance refuses unknown settings) to keep the images directory between runs: builds are
content-addressed, so an unchanged recipe is not built again.

The injected package's service writes ``/run/bootbox-injected-ok`` and prints
:data:`INJECTED_MARKER` on the console, so a boot test sees it in the serial log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootbox import hookimpl
from tests.support.lab_fixtures import lab_unavailable

__all__ = [
    "IMAGE_NAME",
    "INJECTED_MARKER",
    "INJECTOR",
    "TEST_PACKAGES",
    "BuiltImage",
    "InjectTestDeb",
    "build_test_image",
    "linux_image_fixture",
    "make_test_deb",
    "require_image_tools",
]

IMAGE_NAME = "bootbox-test"
SUITE = "bookworm"
TEST_PACKAGES = ("linux-image-amd64", "live-boot", "systemd-sysv", "openssh-server", "cloud-init", "python3",
                 "ifupdown", "isc-dhcp-client")
"""What the issue's boot test needs: sshd and python3 (Ansible), cloud-init, and ifupdown +
dhclient so the network cloud-init configures comes up after the live-boot initramfs's."""
INJECTOR = "bootbox-test-inject"
INJECTED_PACKAGE = "bootbox-injected-test"
INJECTED_MARKER = "BOOTBOX-INJECTED-OK"

_UNIT = f"""\
[Unit]
Description=bootbox test: the service of a package a plugin injected into the image
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo ok > /run/bootbox-injected-ok; echo {INJECTED_MARKER}'
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def make_test_deb(out_dir: Path, version: str = "1.0") -> Path:
    """Build ``bootbox-injected-test_<version>_all.deb`` with ``dpkg-deb`` (its service enabled
    by a shipped symlink, so no maintainer script runs in the build)."""
    tree = out_dir / f"deb-tree-{version}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {INJECTED_PACKAGE}\nVersion: {version}\nArchitecture: all\nMaintainer: bootbox tests <t@example.invalid>\n"
        "Description: bootbox test package injected by a plugin\n writes /run/bootbox-injected-ok at boot\n")
    units = tree / "lib/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / f"{INJECTED_PACKAGE}.service").write_text(_UNIT)
    (units / "multi-user.target.wants" / f"{INJECTED_PACKAGE}.service").symlink_to(f"../{INJECTED_PACKAGE}.service")
    deb = out_dir / f"{INJECTED_PACKAGE}_{version}_all.deb"
    for path in [tree, *tree.rglob("*")]:  # fixed times: the same bytes (and image digest) every run
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True, timeout=60, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    shutil.rmtree(tree)
    return deb


class InjectTestDeb:
    """A plugin that injects one local ``.deb`` into every Linux image (``bootbox_image_inject``)."""

    def __init__(self, deb: Path) -> None:
        self.deb = deb
        self.__name__ = INJECTOR

    @hookimpl
    def bootbox_image_inject(self, image_kind: str, host: Any) -> list[str] | None:
        return [str(self.deb)] if image_kind == "linux" and host is None else None


@dataclass(frozen=True)
class BuiltImage:
    images_dir: Path
    name: str
    digest: str
    deb: Path
    summary: dict[str, Any]

    @property
    def object_dir(self) -> Path:
        return self.images_dir / "objects" / self.digest


def require_image_tools() -> None:
    """Skip (or fail in CI, see lab_unavailable) unless we are root with mmdebstrap and mksquashfs."""
    if os.geteuid() != 0:
        lab_unavailable("Linux image builds need root (mmdebstrap --mode=root)")
    missing = [t for t in ("mmdebstrap", "mksquashfs", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        lab_unavailable(f"Linux image builds need {', '.join(missing)}")


def build_test_image(images_dir: Path, deb: Path, packages: tuple[str, ...] = TEST_PACKAGES,
                     name: str = IMAGE_NAME) -> dict[str, Any]:
    """Build (or find cached) ``name`` in ``images_dir`` with ``deb`` injected, as the appliance would."""
    from bootbox_linux.build import Builder
    from bootbox_linux.image import host_mirror
    from bootbox_linux.images import ImageService
    from bootbox_linux.imagestore import ImageStore

    service = ImageService(ImageStore(images_dir), Builder(images_dir / "tmp"), host_mirror(),
                           inject=lambda _name: [(INJECTOR, str(deb))],
                           used_by=lambda _name: {"profiles": [], "rules": []})
    return service.build(name, SUITE, packages)


@pytest.fixture(scope="session", name="linux_image")
def linux_image_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    require_image_tools()
    kept = os.environ.get("TEST_LINUX_IMAGES_DIR")
    # One directory for the whole run, whichever module's copy of this fixture asks first: pytest
    # makes a session fixture per module that imports it, and the build is then found cached.
    images_dir = Path(kept) if kept else tmp_path_factory.getbasetemp() / "linux-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    deb = make_test_deb(images_dir)
    summary = build_test_image(images_dir, deb)
    yield BuiltImage(images_dir=images_dir, name=IMAGE_NAME, digest=summary["digest"], deb=deb, summary=summary)
