"""One nginx caching reverse proxy in front of bootbox serves a full ESXi module set.

As Auto Deploy's caches do: ``cache_urls`` goes into boot.cfg's ``prefix`` (through the
host's script probing the cache), the first host's fetches fill the cache, and the second
host of the same image is served every module from the cache without the request reaching
bootbox. nginx logs ``$upstream_cache_status`` for each request, which is what is asserted.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from bootbox_esxi.tests.test_esxi_appliance import Running, http, start
from tests.conftest import free_port
from tests.support.lab_fixtures import lab_unavailable

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 128; }}
http {{
    log_format cache '$request_uri $status $upstream_cache_status $body_bytes_sent';
    access_log {work}/access.log cache;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    proxy_cache_path {work}/cache levels=1:2 keys_zone=esxi:10m max_size=1g inactive=1d use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {origin};
            proxy_cache esxi;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, work: Path, port: int, origin: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.port = work, port
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, port=port, origin=origin))
        self.proc = subprocess.Popen(["nginx", "-e", str(work / "error.log"), "-p", str(work), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                http(f"http://127.0.0.1:{port}/boot/esxi/health")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
                time.sleep(0.05)

    def log(self) -> list[list[str]]:
        return [line.split() for line in (self.work / "access.log").read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[tuple[Running, Nginx]]:
    if shutil.which("nginx") is None:
        lab_unavailable("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    run = start(tmp_path, cache_urls=[f"http://127.0.0.1:{port}"])
    try:
        nginx = Nginx(tmp_path / "nginx", port, run.url)
        try:
            yield run, nginx
        finally:
            nginx.stop()
    finally:
        run.appliance.stop()


def _boot(run: Running, mac: str) -> tuple[dict[str, str], list[str]]:
    """What a host does: script (which probes the cache), boot.cfg via the cache choice; the
    image's module names (the host's own call-in module, last, comes from bootbox itself)."""
    script = http(f"{run.url}/boot/hosts/{mac}/script.ipxe?platform=efi")[2].decode()
    probe = next(line for line in script.splitlines() if line.startswith("imgfetch --name probe"))
    assert http(probe.split()[3])[0] == 200  # the probe goes through the cache to bootbox
    cfg_url = next(line for line in script.splitlines() if line.startswith("chain")).split()[4]
    assert cfg_url.endswith("${via}")
    text = http(cfg_url.replace("${via}", "?via=0"))[2].decode()
    cfg = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    *names, callin = [cfg["kernel"], *cfg["modules"].split(" --- ")]
    assert callin.startswith(f"{run.url}/boot/esxi/hosts/{mac.replace(':', '')}/") and callin.endswith("/bbcallin.tgz")
    return cfg, names


def test_nginx_cache_serves_the_full_module_set(cached: tuple[Running, Nginx]) -> None:
    run, nginx = cached
    base = esx_base(size=1 << 20)
    run.import_depot(write_bundle(run.tmp / "d.zip", depot_files([base, driver("net-a")])))
    run.api("POST", "/profiles", {"name": "cached", "kind": "esxi", "spec": {"vibs": ["esx-base", "net-a"]}})
    run.api("POST", "/rules", {"name": "all", "all_hosts": True, "items": {"image": "cached"}})

    cfg, names = _boot(run, "52:54:00:ca:c4:01")
    assert cfg["prefix"].startswith(f"http://127.0.0.1:{nginx.port}/boot/esxi/images/")
    first = {name: http(f"{cfg['prefix']}/{name}") for name in names}
    assert all(status == 200 and headers["X-Cache-Status"] == "MISS" for status, headers, _ in first.values())

    # A second host of the same image: same prefix, every module a cache HIT, same bytes.
    cfg2, names2 = _boot(run, "52:54:00:ca:c4:02")
    assert cfg2["prefix"] == cfg["prefix"] and names2 == names
    for name in names:
        status, headers, data = http(f"{cfg2['prefix']}/{name}")
        assert status == 200 and headers["X-Cache-Status"] == "HIT", name
        assert data == first[name][2]
    s_v00 = next(p for p in base.payloads if p.vfatname == "s.v00")
    assert hashlib.sha256(first["s.v00"][2]).hexdigest() == hashlib.sha256(s_v00.packed()).hexdigest()

    # nginx's own log agrees: each module went upstream exactly once; the health probes never
    # came from the cache (bootbox marks them no-store).
    log = nginx.log()
    for name in names:
        statuses = [row[2] for row in log if row[0].endswith(f"/{name}")]
        assert statuses == ["MISS", "HIT"], (name, statuses)
    assert {row[2] for row in log if row[0] == "/boot/esxi/health"} <= {"MISS", "-"}


def test_without_a_live_cache_the_prefix_is_the_appliance(cached: tuple[Running, Nginx]) -> None:
    run, nginx = cached
    run.import_depot(write_bundle(run.tmp / "d.zip", depot_files([esx_base()])))
    run.api("POST", "/profiles", {"name": "p", "kind": "esxi", "spec": {"vibs": ["esx-base"]}})
    run.api("POST", "/rules", {"name": "all", "all_hosts": True, "items": {"image": "p"}})
    mac = "52:54:00:ca:c4:03"
    script = http(f"{run.url}/boot/hosts/{mac}/script.ipxe?platform=efi")[2].decode()
    cfg_url = next(line for line in script.splitlines() if line.startswith("chain")).split()[4]
    # iPXE leaves ${via} empty when no probe answered: boot.cfg then points at bootbox itself.
    text = http(cfg_url.replace("${via}", ""))[2].decode()
    assert f"prefix={run.url}/boot/hosts/525400cac403/assets\n" in text
