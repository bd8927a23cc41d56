"""Real builds (marker ``image``): mmdebstrap from the machine's Debian archive, live-boot, squashfs.

The shared test image (tests/support/linuximage.py) is built once per run; these tests look
inside it, build it again through the appliance's CLI (found cached), and make three builds
fail — an unknown package, an archive nobody listens on, a build dir that fills up, side by side
— checking each names its cause and leaves the shared image exactly as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import bootbox_linux
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.testing import TestAppliance, bootbox_appliance, bootbox_push_policy
from bootbox_linux.build import Builder, BuildError
from bootbox_linux.image import host_mirror
from bootbox_linux.images import ImageService
from bootbox_linux.imagestore import ImageStore
from tests.support.linuximage import (
    INJECTED_PACKAGE,
    INJECTOR,
    TEST_PACKAGES,
    BuiltImage,
    InjectTestDeb,
    linux_image_fixture,
)

__all__ = ["bootbox_appliance", "bootbox_push_policy", "linux_image_fixture"]

pytestmark = pytest.mark.image


def _listing(image: BuiltImage) -> list[str]:
    out = subprocess.run(["unsquashfs", "-lc", str(image.object_dir / "filesystem.squashfs")], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return [line.removeprefix("squashfs-root") for line in out.splitlines()]


def test_the_image_has_its_packages_the_injected_deb_and_no_per_host_state(linux_image: BuiltImage) -> None:
    summary = linux_image.summary
    names = {p["name"]: p for p in summary["packages"]}
    for package in (*TEST_PACKAGES, INJECTED_PACKAGE, "busybox"):
        assert names[package]["version"], package
    assert names[INJECTED_PACKAGE] == {"name": INJECTED_PACKAGE, "version": "1.0", "arch": "all",
                                       "injected_by": INJECTOR}
    assert summary["injected"][0]["plugin"] == INJECTOR and summary["injected"][0]["source"] == str(linux_image.deb)
    assert summary["kernel_version"] in names["linux-image-" + summary["kernel_version"]]["name"]
    files = set(_listing(linux_image))
    assert f"/usr/lib/systemd/system/{INJECTED_PACKAGE}.service" in files  # (merged /usr: /lib is a link)
    assert "/usr/lib/bootbox/report-in" in files and "/etc/cloud/cloud.cfg.d/90-bootbox.cfg" in files
    assert not [f for f in files if f.startswith("/etc/ssh/ssh_host_")]  # each boot makes its own
    # ... an ed25519 key only (an RSA key costs tens of seconds of an emulated CPU at every boot)
    assert {"/etc/ssh/sshd_config.d/bootbox-hostkeys.conf", "/etc/systemd/system/ssh.service.d/bootbox-hostkeys.conf"} <= files
    assert not [f for f in files if f.endswith(".deb") or f.startswith("/boot/")]
    assert not [f for f in files if f.startswith("/usr/share/man/")]
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs", "build.log", "manifest.json"):
        assert (linux_image.object_dir / name).stat().st_size > 0


@pytest.fixture
def bootbox_plugins(linux_image: BuiltImage) -> list[object]:
    return [bootbox_linux, InjectTestDeb(linux_image.deb)]


@pytest.fixture
def bootbox_config(linux_image: BuiltImage) -> dict[str, Any]:
    return {"plugins": {"linux": {"images_dir": str(linux_image.images_dir)}}}


def _cli(appliance: TestAppliance, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("BOOTBOX_URL", "BOOTBOX_CONFIG")}
    env["BOOTBOX_TOKEN"] = appliance.token
    app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux]))
    return CliRunner().invoke(app, ["--url", appliance.url, *args], env=env)


def test_the_cli_finds_the_same_recipe_built_and_shows_what_was_injected(
        bootbox_appliance: TestAppliance, linux_image: BuiltImage) -> None:
    args = ["image", "build", linux_image.name, "--suite", "bookworm"]
    for package in TEST_PACKAGES:
        args += ["--package", package]
    result = _cli(bootbox_appliance, *args)
    assert result.exit_code == 0, result.output
    assert f"image {linux_image.name} {linux_image.digest[:12]}: already built (cached)" in result.output
    assert f"injected {INJECTED_PACKAGE} by plugin {INJECTOR}" in result.output
    assert f"profile {linux_image.name} made" in result.output
    shown = _cli(bootbox_appliance, "image", "show", linux_image.name)
    assert f"(injected by {INJECTOR})" in shown.output and "openssh-server" in shown.output
    listed = json.loads(_cli(bootbox_appliance, "image", "list", "--json").output)
    assert [(i["name"], i["digest"]) for i in listed] == [(linux_image.name, linux_image.digest)]
    refused = _cli(bootbox_appliance, "image", "remove", linux_image.name)
    assert refused.exit_code != 0 and f"profiles {linux_image.name}" in refused.output
    bootbox_appliance.api.delete(f"/profiles/{linux_image.name}")  # the fixture's image stays for the others


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _state(image: BuiltImage) -> dict[str, Any]:
    ref = (image.images_dir / "names" / f"{image.name}.json").read_text()
    files = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in image.object_dir.iterdir()}
    return {"ref": ref, "files": files}


def test_failed_builds_name_their_cause_and_leave_earlier_images_intact(
        linux_image: BuiltImage, small_tmpfs: Path) -> None:
    before = _state(linux_image)
    store = ImageStore(linux_image.images_dir)

    def service(build_dir: Path) -> ImageService:
        return ImageService(store, Builder(build_dir), host_mirror(), inject=lambda _n: [],
                            used_by=lambda _n: {"profiles": [], "rules": []})

    cases = [
        ("broken-unknown", service(linux_image.images_dir / "tmp"), "", ["openssh-server", "no-such-package-bootbox"],
         "unknown-package", "unknown package no-such-package-bootbox"),
        ("broken-archive", service(linux_image.images_dir / "tmp"), "http://127.0.0.1:9/debian", ["openssh-server"],
         "archive-unreachable", "the archive http://127.0.0.1:9/debian is unreachable"),
        ("broken-disk", service(small_tmpfs), "", ["openssh-server"], "disk-full", "ran out of disk space"),
    ]

    def fail(name: str, images: ImageService, mirror: str, packages: list[str]) -> BuildError:
        try:
            images.build(name, "bookworm", packages, mirror)
        except BuildError as exc:
            return exc
        raise AssertionError(f"the build of {name} did not fail")

    # The three builds at once (each its own Builder and name): each spends its time waiting on
    # the archive, and a failure must not disturb a build beside it any more than earlier images.
    with ThreadPoolExecutor(len(cases)) as pool:
        errors = [pool.submit(fail, name, images, mirror, packages) for name, images, mirror, packages, _, _ in cases]
        results = [future.result(timeout=600) for future in errors]
    for (name, _, _, _, cause, words), error in zip(cases, results):
        assert error.cause == cause and words in str(error), str(error)
        assert str(store.log_path(name)) in str(error)
        assert words.split()[0] in store.log_path(name).read_text() or cause == "disk-full"
        assert not (linux_image.images_dir / "names" / f"{name}.json").exists()
    assert not list((linux_image.images_dir / "objects").glob(".stage-*"))
    assert _state(linux_image) == before
    assert not list(small_tmpfs.iterdir())  # the failed root was cleaned up
