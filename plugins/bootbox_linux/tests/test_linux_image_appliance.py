"""Linux images in a running appliance: API, image profiles, boot scripts, assets, drift, remove.

The appliance is real (HTTP on loopback, the ``linux`` plugin as shipped); the images are
prepared in its images directory as a finished build leaves them (content-addressed object +
manifest), under the digest of the recipe the test then asks the API to build, so the build is
found cached. The build itself is covered by the ``image``-marked tests (test_linux_image_build).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import bootbox_linux
from bootbox.testing import (
    FakeHost,
    TestAppliance,
    bootbox_appliance,
    bootbox_push_policy,
    http,
)
from bootbox_linux.image import Recipe

__all__ = ["bootbox_appliance", "bootbox_push_policy"]

MIRROR = "http://archive.invalid/debian"
HOST_PROFILE = {"name": "base", "kind": "cloud-init", "inputs": [],
                "templates": {"user-data": "#cloud-config\nhostname: web01\n"}}


def prepare_build(images_dir: Path, packages: list[str], versions: dict[str, str]) -> str:
    """Put a finished build of ``packages`` where the image store looks; return its digest."""
    recipe = Recipe.make("bookworm", MIRROR, packages)
    folder = images_dir / "objects" / recipe.digest
    folder.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (folder / name).write_bytes(f"{name} of {recipe.digest}".encode())
    rows = [{"name": p, "version": versions.get(p, "1.0"), "arch": "amd64"} for p in recipe.packages]
    (folder / "build.log").write_text("built\n")
    (folder / "manifest.json").write_text(json.dumps({
        "digest": recipe.digest, "builder": "1", "recipe": recipe.to_doc(), "kernel_version": "6.1.0-57-amd64",
        "packages": rows, "sizes": {n: (folder / n).stat().st_size for n in ("vmlinuz", "initrd.img",
                                                                           "filesystem.squashfs")},
        "built": time.time(), "seconds": 1.0}))
    return recipe.digest


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [bootbox_linux]


@pytest.fixture
def bootbox_config(images_dir: Path) -> dict[str, Any]:
    return {"plugins": {"linux": {"images_dir": str(images_dir), "mirror": MIRROR}}}


def build(appliance: TestAppliance, name: str, packages: list[str]) -> dict[str, Any]:
    job = appliance.api.post("/linux/images", {"name": name, "suite": "bookworm", "packages": packages})
    deadline = time.monotonic() + 30
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = appliance.api.get(f"/linux/jobs/{job['id']}")
    assert job["state"] == "done", job
    result: dict[str, Any] = job["result"]
    return result


def linux_check(host: FakeHost) -> dict[str, Any]:
    checks = host.show()["checks"]
    found: dict[str, Any] = next(v for k, v in checks.items() if "linux" in k)
    return found


def test_an_image_boots_through_a_rule_and_a_rebuild_shows_as_drift(
        bootbox_appliance: TestAppliance, images_dir: Path) -> None:
    api = bootbox_appliance.api
    bootbox_host = bootbox_appliance.host("52:54:00:b0:07:01")
    first = prepare_build(images_dir, ["openssh-server"], {"openssh-server": "1:9.2p1-2+deb12u3"})

    built = build(bootbox_appliance, "deb", ["openssh-server"])
    assert built["cached"] and built["digest"] == first and built["profile"] == "created"
    assert [i["name"] for i in api.get("/linux/images")] == ["deb"]
    shown = api.get("/linux/images/deb")
    assert {"name": "openssh-server", "version": "1:9.2p1-2+deb12u3", "arch": "amd64"} in shown["packages"]
    assert api.get("/profiles/deb")["spec"] == {"image": "deb", "cmdline": ""}

    api.post("/hostprofiles", HOST_PROFILE)
    api.post("/rules", {"name": "debs", "all_hosts": True, "items": {"image": "deb", "host_profile": "base"}})
    script = bootbox_host.boot()
    kernel = next((line for line in script.splitlines() if line.startswith("kernel ")), script)
    assert f"/assets/{first}-vmlinuz " in kernel
    assert f"fetch=http://127.0.0.1:{bootbox_appliance.settings.http.port}/" in kernel
    assert f"{first}-filesystem.squashfs" in kernel and "boot=live" in kernel
    assert "bootbox.callback=http" in kernel and f"bootbox.mac={bootbox_host.mac}" in kernel
    assert "ds=nocloud-net;s=http" in kernel and "console=ttyS0,115200n8" in kernel
    assert f"initrd --name initrd.img http://127.0.0.1:{bootbox_appliance.settings.http.port}/" in script

    grub = http("GET", f"{bootbox_appliance.url}/grub/hosts/{bootbox_host.mac}.cfg").text
    linux = next(line for line in grub.splitlines() if line.startswith("linux "))
    assert f"{first}-vmlinuz" in linux and "'ds=nocloud-net;s=http" in linux and "boot=live" in linux, grub
    assert f"{first}-initrd.img" in grub

    rootfs = kernel.split("fetch=")[1].split()[0]
    assert http("GET", rootfs).text == f"filesystem.squashfs of {first}"
    assert http("GET", rootfs.replace(first, "0" * 64)).status == 404
    assert linux_check(bootbox_host)["result"] == "compliant"
    assert any(f"boots image deb (digest {first[:12]})" in e["message"] for e in bootbox_host.events())

    # The recipe changes: a new digest; the host still runs the old build, so it drifts.
    second = prepare_build(images_dir, ["openssh-server", "less"], {"openssh-server": "1:9.2p1-2+deb12u4"})
    rebuilt = build(bootbox_appliance, "deb", ["openssh-server", "less"])
    assert rebuilt["digest"] == second and rebuilt["previous"] == [first] and rebuilt["profile"] == "exists"
    check = linux_check(bootbox_host)
    assert check["result"] == "non-compliant" and f"{first[:12]} -> {second[:12]}" in check["message"]
    [row] = api.get("/linux/compliance")
    assert row["digest"] == first and row["current"] == second and row["compliant"] is False
    diff = api.get("/linux/diff", a="deb@previous", b="deb")
    assert diff["added"] == [{"name": "less", "version": "1.0"}]
    assert diff["changed"] == [{"name": "openssh-server", "from": "1:9.2p1-2+deb12u3", "to": "1:9.2p1-2+deb12u4"}]
    # The old build is still served (a host between kernel and root fetch), the next boot takes the new one.
    assert http("GET", rootfs).status == 200
    assert f"{second}-filesystem.squashfs" in bootbox_host.boot()
    assert linux_check(bootbox_host)["result"] == "compliant"

    # In use: refused, naming the profile and the rule.
    refused = http("DELETE", f"{bootbox_appliance.url}/api/v1/linux/images/deb",
                   headers={"Authorization": f"Bearer {bootbox_appliance.token}"})
    assert refused.status == 409
    assert "profiles deb" in refused.text and "rules debs" in refused.text
    api.delete("/rules/debs")
    api.delete("/profiles/deb")
    assert api.delete("/linux/images/deb")["removed_digests"] == [second, first]
    assert not (images_dir / "objects" / first).exists() and api.get("/linux/images") == []


def test_image_profiles_are_checked(bootbox_appliance: TestAppliance, images_dir: Path) -> None:
    prepare_build(images_dir, ["openssh-server"], {})
    build(bootbox_appliance, "deb", ["openssh-server"])

    def add(spec: dict[str, Any]) -> Any:
        return http("POST", f"{bootbox_appliance.url}/api/v1/profiles", {"name": "p", "kind": "linux", "spec": spec},
                    headers={"Authorization": f"Bearer {bootbox_appliance.token}"})

    missing = add({"image": "nope"})
    assert missing.status == 422 and "spec.image" in missing.text and "no Linux image named 'nope'" in missing.text
    both = add({"image": "deb", "kernel": "/boot/vmlinuz"})
    assert both.status == 422 and "spec.kernel" in both.text and "not both" in both.text
    assert add({"image": "deb", "cmdline": "console=ttyS1"}).status == 201


def test_builds_need_the_token_and_bad_requests_name_the_field(bootbox_appliance: TestAppliance) -> None:
    url = f"{bootbox_appliance.url}/api/v1/linux/images"
    assert http("POST", url, {"name": "x", "suite": "bookworm", "packages": ["openssh-server"]}).status == 401
    auth = {"Authorization": f"Bearer {bootbox_appliance.token}"}
    for body, field in (({"name": "Bad Name", "suite": "bookworm"}, "name"), ({"name": "x"}, "suite"),
                        ({"name": "x", "suite": "bookworm", "packages": ["ok", "No!"]}, "packages[1]"),
                        ({"name": "x", "suite": "?"}, "suite"),
                        ({"name": "x", "suite": "bookworm", "mirror": "nope"}, "mirror")):
        reply = http("POST", url, body, headers=auth)
        assert reply.status == 422 and field in reply.text, (body, reply.text)
    assert http("GET", f"{url}/nope").status == 404


def test_a_build_without_mmdebstrap_is_refused_at_once_naming_what_to_install(
        bootbox_appliance: TestAppliance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An appliance installed by appliance/install.sh has no mmdebstrap: the request says so at
    once (409) instead of starting a job that fails minutes later."""
    monkeypatch.setenv("PATH", str(tmp_path))  # the appliance runs in this process: no build tools on PATH
    reply = http("POST", f"{bootbox_appliance.url}/api/v1/linux/images",
                 {"name": "x", "suite": "bookworm", "packages": []},
                 headers={"Authorization": f"Bearer {bootbox_appliance.token}"})
    assert reply.status == 409, reply.text
    assert "mmdebstrap" in reply.text and "mksquashfs" in reply.text and "apt-get install" in reply.text
    monkeypatch.undo()
    assert bootbox_appliance.api.get("/linux/images") == []  # nothing was started or kept
