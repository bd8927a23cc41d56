"""Issue 18's boot check: a Debian image built from the archive boots statelessly and is
configured by cloud-init from its host profile on every boot.

The shared test image (tests/support/linuximage.py: openssh-server, cloud-init, python3 and a
plugin-injected ``.deb``) is served by ``bootbox serve`` beside the site's DHCP server; a rule
gives one QEMU host (SeaBIOS + iPXE, 1.5 GiB: the root is held in RAM) the image and a
cloud-init host profile. The guest's own runcmd prints what it sees on the serial console:
hostname, the user, the file, the injected package's marker and cloud-init's instance-id. Then
the host is power-cycled: nothing survives in RAM, and the configuration comes back by itself
with a new instance-id; both boots report in (``booted``) with their own boot IDs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest

from bootbox.lab.netns import LabError
from bootbox.lab.qemu import QemuClient, random_mac
from tests.support.e2e_bootbox import BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import (
    LabSegment,
    demo_cache_fixture,
    require_qemu,
    segment_fixture,
)
from tests.support.linuximage import INJECTED_MARKER, BuiltImage, linux_image_fixture

__all__ = ["demo_cache_fixture", "linux_image_fixture", "segment_fixture"]

BOOT_TIMEOUT = 420.0
"""Seconds a TCG guest gets from power-on to cloud-init's last stage (a 2-core CI host, loaded)."""
MEMORY_MB = 1536
CHECK = re.compile(r"BOOTBOX-E2E hostname=(\S*) user=(\S*) file=(\S*) injected=(\S*) iid=(\S*)")

USER_DATA = """\
#cloud-config
hostname: {{ answers.hostname }}
users:
  - name: alice
    shell: /bin/bash
write_files:
  - path: /etc/bootbox-e2e
    content: "for-{{ answers.hostname }}"
runcmd:
  - [sh, -c, 'echo "BOOTBOX-E2E hostname=$(hostname) user=$(id -un alice) file=$(cat /etc/bootbox-e2e) injected=$(cat /run/bootbox-injected-ok) iid=$(cat /var/lib/cloud/data/instance-id)" > /dev/ttyS0']
"""


def _boot(segment: LabSegment, bootbox: BootboxOnSegment, mac: str) -> tuple[QemuClient, re.Match[str]]:
    vm = segment.boot("bios", mac=mac, extra_args=("-m", str(MEMORY_MB)))
    try:
        vm.wait_for(CHECK, BOOT_TIMEOUT)
        vm.wait_for(INJECTED_MARKER, 30)
    except (TimeoutError, LabError) as exc:
        vm.stop()
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(80)}\nbootbox log:\n{bootbox.log_tail(60)}")
    found = CHECK.search(vm.serial_text())
    assert found is not None
    return vm, found


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.image
def test_a_debian_image_boots_into_ram_and_cloud_init_configures_it_on_every_boot(
    segment: LabSegment, linux_image: BuiltImage, record_property: Callable[[str, object], None]
) -> None:
    require_qemu()
    segment.start_site_dhcp()
    bootbox = start_bootbox(segment, extra_toml=f'[plugins.linux]\nimages_dir = "{linux_image.images_dir}"\n')
    bootbox.cli("profile", "add", "deb", "--kind", "linux", "--spec", json.dumps({"image": linux_image.name}))
    hostprofile = segment.workdir / "deb-base.json"
    hostprofile.write_text(json.dumps({"name": "deb-base", "kind": "cloud-init",
                                       "inputs": [{"name": "hostname", "validation": "hostname"}],
                                       "templates": {"user-data": USER_DATA}}))
    bootbox.cli("hostprofile", "add", str(hostprofile))
    mac = random_mac()
    bootbox.cli("rule", "add", "debian", "--pattern", f"mac={mac}", "--item", "image=deb",
                "--item", "host_profile=deb-base")
    bootbox.cli("answer", "set", mac, "hostname=img-e2e")

    first, seen = _boot(segment, bootbox, mac)
    first_seconds = first.wait_for(CHECK, 1)
    record_property("linux_image_boot_to_configured_s", round(first_seconds, 1))
    assert seen.groups()[:4] == ("img-e2e", "alice", "for-img-e2e", "ok"), first.console_tail(40)
    console = first.serial_text()
    assert "live-boot" in console or "/run/live/medium" in console  # the root came over HTTP, into RAM
    booted = bootbox.wait_for_event(mac, "booted", 60)
    host = bootbox.json("host", "show", mac)
    assert host["profile"] == "deb" and host["associations"]["image"] == "deb"
    assert any(f"boots image {linux_image.name} (digest {linux_image.digest[:12]})" in e["message"] for e in booted)
    first_iid = seen.group(5)
    first.stop()  # power off: the RAM root and everything cloud-init wrote are gone

    second, again = _boot(segment, bootbox, mac)
    try:
        assert again.groups()[:4] == ("img-e2e", "alice", "for-img-e2e", "ok")
        assert again.group(5) != first_iid  # a new instance-id: cloud-init ran again, it was not remembered
        ids = _booted_ids(bootbox, mac, 2, timeout=120)  # it reports in once cloud-init is done
    finally:
        second.stop()
    assert ids[0] != ids[1], ids


def _booted_ids(bootbox: BootboxOnSegment, mac: str, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = [e["data"].get("boot_id") for e in bootbox.events(mac) if e["kind"] == "booted"]
        if len(ids) >= count or time.monotonic() > deadline:
            assert len(ids) == count, (ids, bootbox.log_tail(20))
            return ids
        time.sleep(2)
