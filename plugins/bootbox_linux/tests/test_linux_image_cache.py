"""Linux image boots through the host's group caches (``[groups.NAME] cache_urls``, docs/caching.md).

The kernel and initrd lines try each cache's content-addressed URL, then the appliance; the
root image (live-boot's ``fetch=``, one URL) comes from the group's first cache. A real nginx
with the shipped cache configuration sits in front of a real appliance on loopback, and the
root image is fetched through it twice: the appliance sends it once.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.cache_storm import cache_statuses, start_cache
from bootbox.testing import TestAppliance, bootbox_appliance, bootbox_push_policy, http
from bootbox_linux.tests.test_linux_image_appliance import (  # noqa: F401  (the appliance's fixtures)
    bootbox_plugins,
    build,
    images_dir,
    prepare_build,
)
from tests.conftest import free_port
from tests.support.lab_fixtures import lab_unavailable

__all__ = ["bootbox_appliance", "bootbox_push_policy"]

CACHED = "52:54:00:ca:11:01"
PLAIN = "52:54:00:ca:11:02"
DEAD_CACHE = "http://198.18.201.1:8081"  # only named in scripts, never reached
FILES = ("vmlinuz", "initrd.img", "filesystem.squashfs")


@pytest.fixture
def cache_port() -> int:
    return free_port()


@pytest.fixture
def bootbox_config(images_dir: Path, cache_port: int) -> dict[str, Any]:
    return {"plugins": {"linux": {"images_dir": str(images_dir), "mirror": "http://archive.invalid/debian"}},
            "groups": {"site-a": {"cache_urls": [f"http://127.0.0.1:{cache_port}", DEAD_CACHE]}}}


@pytest.fixture
def image(bootbox_appliance: TestAppliance, images_dir: Path) -> str:
    """A built image ``deb`` and two rules: one host in group site-a, every other host without a group."""
    digest = prepare_build(images_dir, ["openssh-server"], {})
    build(bootbox_appliance, "deb", ["openssh-server"])
    api = bootbox_appliance.api
    api.post("/rules", {"name": "site-a", "patterns": [f"mac={CACHED}"], "items": {"image": "deb", "group": "site-a"}})
    api.post("/rules", {"name": "rest", "all_hosts": True, "items": {"image": "deb"}})
    return digest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_files_come_from_the_groups_caches_then_the_appliance(
        bootbox_appliance: TestAppliance, images_dir: Path, cache_port: int, image: str) -> None:
    appliance = f"http://127.0.0.1:{bootbox_appliance.settings.http.port}"
    cache = f"http://127.0.0.1:{cache_port}"
    sha = {f: _sha(images_dir / "objects" / image / f) for f in FILES}
    script = bootbox_appliance.host(CACHED).boot()
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    tries = kernel.split(" || ")
    urls = [t.split()[3] for t in tries[:3]]
    assert urls[:2] == [f"{cache}/boot/blobs/{sha['vmlinuz']}/{image}-vmlinuz",
                        f"{DEAD_CACHE}/boot/blobs/{sha['vmlinuz']}/{image}-vmlinuz"], kernel
    assert urls[2].startswith(f"{appliance}/") and urls[2].endswith(f"/assets/{image}-vmlinuz"), kernel
    assert tries[-1] == "goto failed" and len(tries) == 4
    assert all("boot=live" in t for t in tries[:3])  # every try carries the command line
    assert kernel.count(f"fetch={cache}/boot/blobs/{sha['filesystem.squashfs']}/{image}-filesystem.squashfs ") == 3
    initrd = next(line for line in script.splitlines() if line.startswith("initrd "))
    assert initrd.startswith(f"initrd --name initrd.img {cache}/boot/blobs/{sha['initrd.img']}/{image}-initrd.img || "
                             f"initrd --name initrd.img {DEAD_CACHE}/")
    assert initrd.endswith(" || goto failed") and initrd.count(" || ") == 3
    assert "&&" not in script  # iPXE runs `&&` after a skipped command: only `||` chains

    plain = bootbox_appliance.host(PLAIN).boot()  # no group: the appliance only, as before
    assert "/boot/blobs/" not in plain and f"fetch={appliance}/" in plain
    assert next(line for line in plain.splitlines() if line.startswith("kernel ")).count(" || ") == 1


def test_the_root_image_is_fetched_through_a_real_nginx_cache_once(
        bootbox_appliance: TestAppliance, images_dir: Path, cache_port: int, image: str, tmp_path: Path) -> None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        lab_unavailable("nginx is not installed (apt-get install nginx-light)")
    tmp_path.chmod(0o755)
    script = bootbox_appliance.host(CACHED).boot()
    rootfs = script.split("fetch=")[1].split()[0]
    assert rootfs.startswith(f"http://127.0.0.1:{cache_port}/boot/blobs/")
    expected = (images_dir / "objects" / image / "filesystem.squashfs").read_text()
    server = start_cache(tmp_path, f"127.0.0.1:{bootbox_appliance.settings.http.port}", "127.0.0.1", cache_port)
    try:
        for _ in range(2):  # two hosts' live-boot fetches
            response = http("GET", rootfs)
            assert response.status == 200 and response.text == expected
    finally:
        server.stop()
    statuses = cache_statuses(tmp_path / "cache.log")
    assert statuses.get("MISS") == 1 and statuses.get("HIT") == 1, statuses
