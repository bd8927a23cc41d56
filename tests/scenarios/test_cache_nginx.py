"""A real nginx with the shipped appliance/nginx-cache.conf in front of a real ``bootbox serve``:
hosts' image downloads (curl, all at once) go through the cache, and bootbox's own counters
show it sent one copy of each image; host-bound files never pass through the cache.

Loopback only: bootbox, nginx and the curls are processes on this machine (docs/caching.md).
The full boot storm across a bridge is ``python -m bench.cache_storm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from bench.cache_storm import appliance_bytes, cache_statuses, start_cache
from bench.common import Server, start_bootbox
from bootbox.testing import free_port
from tests.support.lab_fixtures import lab_unavailable

HOSTS = 8
GROUP = "site-a"


def _need_tools() -> None:
    for tool in ("nginx", "curl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            lab_unavailable(f"the cache test needs {tool} (apt-get install nginx-light curl)")


def _api(base: str, token: str, method: str, path: str, body: object) -> None:
    request = urllib.request.Request(f"{base}/api/v1{path}", method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _curl_all(urls: list[str], outdir: Path) -> list[Path]:
    """One curl per URL, all at once (a storm's worth of hosts); every one must succeed."""
    outdir.mkdir()
    outs = [outdir / f"{i}" for i in range(len(urls))]
    procs = [subprocess.Popen(["curl", "-sSf", "-o", str(out), url]) for url, out in zip(urls, outs)]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs), urls
    return outs


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    _need_tools()
    tmp_path.chmod(0o755)
    files = {"kernel": tmp_path / "vmlinuz", "initrd-0": tmp_path / "initrd.img"}
    files["kernel"].write_bytes(os.urandom(3 * 2**20 + 4321))  # several 1 MiB slices, the last one short
    files["initrd-0"].write_bytes(os.urandom(5 * 2**20 + 17))
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    http_port, cache_port = free_port(), free_port()
    work = tmp_path / "bootbox"
    work.mkdir()
    servers: list[Server] = []
    try:
        servers.append(start_bootbox(work, tftp_root=tftp, http_port=http_port, tftp_port=free_port(),
                                     extra_toml=f'[groups.{GROUP}]\ncache_urls = ["http://127.0.0.1:{cache_port}"]\n'))
        base = f"http://127.0.0.1:{http_port}"
        token = (work / "state" / "api-token").read_text().strip()
        _api(base, token, "POST", "/profiles", {"name": "demo", "kind": "linux", "spec": {
            "kernel": str(files["kernel"]), "initrd": [str(files["initrd-0"])],
            "cmdline": "console=ttyS0 bootbox.callback={callback}"}})
        _api(base, token, "POST", "/rules", {"name": "site-a", "all_hosts": True,
                                             "items": {"image": "demo", "group": GROUP}})
        servers.append(start_cache(tmp_path, f"127.0.0.1:{http_port}", "127.0.0.1", cache_port))
        yield base, f"http://127.0.0.1:{cache_port}", files, tmp_path / "cache.log"
    finally:
        for server in reversed(servers):
            server.stop()


def test_a_storm_through_nginx_costs_the_appliance_one_copy_of_each_image(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, cache, files, log = site
    before = appliance_bytes(_get(f"{base}/metrics").decode())
    scripts = [_get(f"{base}/boot/hosts/52-54-00-cc-00-{n:02x}/script.ipxe?platform=pcbios").decode()
               for n in range(HOSTS)]
    downloads: list[tuple[str, str]] = []  # (name, first URL) per host and file
    for n, script in enumerate(scripts):
        mac = f"525400cc00{n:02x}"
        for name, command in (("kernel", "kernel --name kernel"), ("initrd-0", "initrd --name initrd-0")):
            line = next(line for line in script.splitlines() if line.startswith(command))
            urls = re.findall(rf"{command} (\S+)", line)
            digest = hashlib.sha256(files[name].read_bytes()).hexdigest()
            assert urls == [f"{cache}/boot/blobs/{digest}/{name}", f"{base}/boot/hosts/{mac}/assets/{name}"], line
            downloads.append((name, urls[0]))
        # everything host-bound in the script (callback with its token, the retry) names the appliance
        for url in re.findall(r"http://\S+", script):
            assert url.startswith(f"{base}/") or url.startswith(f"{cache}/boot/blobs/"), url
    outs = _curl_all([url for _, url in downloads], tmp_path / "got")
    for (name, _), out in zip(downloads, outs):
        assert out.read_bytes() == files[name].read_bytes()
    after = appliance_bytes(_get(f"{base}/metrics").decode())
    one_copy = sum(path.stat().st_size for path in files.values())
    assert after[1] - before[1] == one_copy  # bootbox_http_blob_bytes_total: each image once, for 8 hosts
    assert after[0] - before[0] == one_copy + sum(len(s.encode()) for s in scripts)  # and nothing else on /boot/
    statuses = cache_statuses(log)
    assert statuses.get("HIT", 0) + statuses.get("MISS", 0) >= 2 * HOSTS and statuses.get("HIT", 0) >= 2 * (HOSTS - 1)
    requested = [line.split('"')[1] for line in log.read_text().splitlines()]
    assert all(r.startswith("GET /boot/blobs/") for r in requested[1:]), requested  # [0]: start_cache's probe

    # A second wave (hosts rebooting), and a Range request, cost the appliance nothing at all.
    outs = _curl_all([url for _, url in downloads], tmp_path / "again")
    assert all(out.read_bytes() == files[name].read_bytes() for (name, _), out in zip(downloads, outs))
    part = subprocess.run(["curl", "-sSf", "-r", "1048000-1049999", downloads[0][1]], capture_output=True, check=True)
    assert part.stdout == files["kernel"].read_bytes()[1048000:1050000]
    assert appliance_bytes(_get(f"{base}/metrics").decode()) == after


def test_host_bound_files_never_come_through_the_cache(site) -> None:  # type: ignore[no-untyped-def]
    base, cache, files, _ = site
    script = _get(f"{base}/boot/hosts/52-54-00-cc-01-01/script.ipxe?platform=pcbios").decode()
    callback = re.search(r"bootbox\.callback=http://127\.0\.0\.1:\d+(/\S+)", script)
    assert callback
    before = appliance_bytes(_get(f"{base}/metrics").decode())
    for path in ("/boot/hosts/52-54-00-cc-01-01/script.ipxe", "/boot/hosts/525400cc0101/assets/kernel",
                 callback.group(1), "/boot.ipxe", "/api/v1/hosts", "/metrics"):
        done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{cache}{path}"],
                              capture_output=True, text=True, check=True)
        assert done.stdout == "404", path
    assert appliance_bytes(_get(f"{base}/metrics").decode()) == before  # nginx never asked bootbox
    # the cached headers bootbox gave are what hosts see through the cache
    digest = hashlib.sha256(files["kernel"].read_bytes()).hexdigest()
    with urllib.request.urlopen(f"{cache}/boot/blobs/{digest}/kernel", timeout=30) as response:
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["ETag"] == f'"{digest}"'
        response.read()
