"""``bootbox lab up --images-dir`` / ``lab boot --image``: the lab boots a built Linux image.

Cheap parts, without QEMU: the lab appliance's config, the refusal of a directory holding no
images, and what ``lab boot --image`` sets up in the appliance (the image's profile and a rule
for the client's MAC ahead of the demo rule), checked against a real appliance on loopback
whose next script for that MAC boots the image. The boot itself is the E2E tests' business.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bootbox_linux.tests.test_linux_image_appliance import (  # noqa: F401  (the appliance's fixtures)
    MIRROR,
    bootbox_config,
    bootbox_plugins,
    build,
    images_dir,
    prepare_build,
)

from bootbox.config import load_settings
from bootbox.lab.labboot import Api, api_call, image_rule
from bootbox.lab.netns import LabError
from bootbox.lab.session import check_images_dir, config_text
from bootbox.testing import TestAppliance, bootbox_appliance, bootbox_push_policy

__all__ = ["bootbox_appliance", "bootbox_push_policy"]

MAC = "02:42:0a:00:00:01"
OTHER = "02:42:0a:00:00:02"


def test_the_lab_config_points_the_linux_plugin_at_the_images_dir(tmp_path: Path) -> None:
    images = tmp_path / "my images"
    path = tmp_path / "bootbox.toml"
    path.write_text(config_text(tmp_path / "lab", "full", images))
    settings = load_settings(path)
    assert settings.plugins["linux"]["images_dir"] == str(images)
    assert settings.http.port == 8080 and "[plugins.linux]" not in config_text(tmp_path / "lab", "full")


def test_an_images_dir_without_images_is_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="--images-dir .* holds no built Linux images"):
        check_images_dir(tmp_path)
    (tmp_path / "names").mkdir()
    (tmp_path / "objects").mkdir()
    assert check_images_dir(tmp_path) == tmp_path.resolve() and check_images_dir(None) is None
    done = subprocess.run([sys.executable, "-m", "bootbox", "lab", "up", "--dir", str(tmp_path / "lab"),
                           "--images-dir", str(tmp_path / "names")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "--images-dir" in done.stderr and "holds no built Linux images" in done.stderr
    assert not (tmp_path / "lab").exists()  # refused before anything was made


def test_lab_boot_image_needs_a_lab(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bootbox", "lab", "boot", "--dir", str(tmp_path), "--image", "deb"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "no lab is up" in done.stderr


def test_image_rule_boots_the_mac_into_the_image_ahead_of_the_demo_rule(
        bootbox_appliance: TestAppliance, images_dir: Path) -> None:
    api: Api = lambda method, path, body=None: api_call(bootbox_appliance.url, bootbox_appliance.token, method,
                                                         path, body)
    digest = prepare_build(images_dir, ["openssh-server"], {})
    build(bootbox_appliance, "deb", ["openssh-server"])  # also makes the profile "deb"
    api("DELETE", "/profiles/deb", None)  # as a lab whose images were built elsewhere: no profile yet
    bootbox_appliance.api.post("/profiles", {"name": "demo", "kind": "linux",
                                             "spec": {"kernel": "http://198.18.0.1/k", "initrd": []}})
    bootbox_appliance.api.post("/rules", {"name": "demo", "all_hosts": True, "items": {"image": "demo"}})
    bootbox_appliance.api.post("/hostprofiles", {"name": "base", "kind": "cloud-init", "inputs": [],
                                                 "templates": {"user-data": "#cloud-config\n"}})

    rule = image_rule(api, MAC, "deb", "base")
    assert rule["name"] == "lab-image-02420a000001"
    assert api("GET", "/profiles/deb", None)["spec"] == {"image": "deb", "cmdline": ""}  # made, named after it
    assert [r["name"] for r in api("GET", "/rules", None)][:2] == ["lab-image-02420a000001", "demo"]
    script = bootbox_appliance.host(MAC).boot()
    assert f"{digest}-vmlinuz" in script and "boot=live" in script and "ds=nocloud-net;s=http" in script
    assert "http://198.18.0.1/k" in bootbox_appliance.host(OTHER).boot()  # everyone else: still the demo

    api("PUT", "/profiles/deb", {"name": "deb", "kind": "linux", "spec": {"image": "deb", "cmdline": "quiet"}})
    image_rule(api, OTHER, "deb")  # an existing profile naming the image is used, not replaced
    assert api("GET", "/profiles/deb", None)["spec"]["cmdline"] == "quiet"
    with pytest.raises(LabError, match="spec.image.*no Linux image named 'nope' is built"):
        image_rule(api, "02:42:0a:00:00:03", "nope")
