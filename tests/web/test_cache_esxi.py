"""ESXi hosts use their group's caches (``[groups.NAME] cache_urls``) instead of
``[plugins.esxi] cache_urls``, through the shipped nginx configuration (docs/caching.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from bench.cache_storm import cache_statuses, start_cache
from bench.common import Server
from bootbox.appliance import Appliance
from bootbox_esxi.plugin import EsxiPlugin
from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from bootbox_esxi.tests.test_esxi_appliance import Running, http
from tests.conftest import free_port, test_settings
from tests.support.lab_fixtures import lab_unavailable

GLOBAL_CACHE = "http://198.18.200.1:8081"  # never reached: only named in scripts
GROUPED = "52:54:00:ca:e5:01"
UNGROUPED = "52:54:00:ca:e5:02"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Running, str, Path]]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        lab_unavailable("nginx is not installed (apt-get install nginx-light)")
    tmp_path.chmod(0o755)
    loaders = {}
    for key, name in (("efi", "mboot.efi"), ("c32", "mboot.c32"), ("pxelinux", "pxelinux.0")):
        loaders[key] = tmp_path / name
        loaders[key].write_bytes(os.urandom(2048))
    cache_port = free_port()
    group_cache = f"http://127.0.0.1:{cache_port}"
    settings = test_settings(tmp_path, plugins={"esxi": {"loaders": {k: str(v) for k, v in loaders.items()},
                                                         "cache_urls": [GLOBAL_CACHE]}},
                             groups={"site-b": {"cache_urls": [group_cache]}})
    appliance = Appliance(settings, load_entrypoints=False, extra_plugins=(EsxiPlugin(),))
    appliance.start()
    cache: Server | None = None
    try:
        token = (Path(settings.state_dir) / "api-token").read_text().strip()
        run = Running(appliance, f"http://127.0.0.1:{settings.http.port}", token, tmp_path, loaders)
        cache = start_cache(tmp_path, f"127.0.0.1:{settings.http.port}", "127.0.0.1", cache_port)
        yield run, group_cache, tmp_path / "cache.log"
    finally:
        if cache is not None:
            cache.stop()
        appliance.stop()


def _boot_cfg(run: Running, mac: str, via: str) -> dict[str, str]:
    script = http(f"{run.url}/boot/hosts/{mac}/script.ipxe?platform=efi")[2].decode()
    cfg_url = next(line for line in script.splitlines() if line.startswith("chain")).split()[4]
    status, _, body = http(cfg_url.replace("${via}", via))
    assert status == 200, body
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


def test_esxi_hosts_of_a_group_use_the_groups_cache(site: tuple[Running, str, Path]) -> None:
    run, group_cache, log = site
    run.import_depot(write_bundle(run.tmp / "d.zip", depot_files([esx_base(size=1 << 20), driver("net-a")])))
    run.api("POST", "/profiles", {"name": "esx", "kind": "esxi", "spec": {"vibs": ["esx-base", "net-a"]}})
    run.api("POST", "/rules", {"name": "b", "patterns": [f"mac={GROUPED}"], "items": {"image": "esx", "group": "site-b"}})
    run.api("POST", "/rules", {"name": "rest", "all_hosts": True, "items": {"image": "esx"}})

    grouped = http(f"{run.url}/boot/hosts/{GROUPED}/script.ipxe?platform=efi")[2].decode()
    assert f"imgfetch --name probe {group_cache}/boot/esxi/health" in grouped and GLOBAL_CACHE not in grouped
    ungrouped = http(f"{run.url}/boot/hosts/{UNGROUPED}/script.ipxe?platform=efi")[2].decode()
    assert f"imgfetch --name probe {GLOBAL_CACHE}/boot/esxi/health" in ungrouped and group_cache not in ungrouped
    assert http(f"{group_cache}/boot/esxi/health")[0] == 200  # the probe passes through the shipped config

    cfg = _boot_cfg(run, GROUPED, "?via=0")
    assert cfg["prefix"].startswith(f"{group_cache}/boot/esxi/images/")
    assert _boot_cfg(run, UNGROUPED, "?via=0")["prefix"].startswith(f"{GLOBAL_CACHE}/boot/esxi/images/")
    script = http(f"{run.url}/boot/hosts/{GROUPED}/script.ipxe?platform=efi")[2].decode()
    cfg_url = next(line for line in script.splitlines() if line.startswith("chain")).split()[4]
    assert http(cfg_url.replace("${via}", "?via=1"))[0] == 422  # the group has one cache, not two

    names = [cfg["kernel"], *cfg["modules"].split(" --- ")][:-1]  # the last is the host's call-in module
    for _ in range(3):  # three hosts' worth of the module set, through the cache
        for name in names:
            status, headers, _ = http(f"{cfg['prefix']}/{name}")
            assert status == 200 and headers["Cache-Control"] == "public, max-age=31536000, immutable"
    statuses = cache_statuses(log)
    assert statuses.get("HIT", 0) >= 2 * len(names) and statuses.get("MISS", 0) <= len(names) + 1
