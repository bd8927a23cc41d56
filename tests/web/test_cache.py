"""Per-group HTTP caches (docs/caching.md): the URL choice, the scripts, the content-addressed
blob endpoint and its validators, through Flask's test client on a real BootService."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient

from bootbox import BootContext, ConfigError, NotFound, asset_urls, group_cache_urls, ipxe_fetch
from bootbox.config import load_settings
from bootbox.core.caches import blob_path, fetch_urls
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.service.caches import BLOBS, BlobIndex
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from bootbox.web import create_app
from tests.conftest import test_settings

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CACHED = "52:54:00:ca:00:01"
PLAIN = "52:54:00:ca:00:02"
CACHES = ["http://198.18.0.10:8081", "http://198.18.0.11:8081/bootcache/"]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.gz"
    kernel.write_bytes(os.urandom(300_000))
    initrd.write_bytes(os.urandom(100_000))
    return kernel, initrd


@pytest.fixture
def client(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[FlaskClient]:
    import bootbox_linux

    settings = test_settings(tmp_path, groups={"site-a": {"cache_urls": CACHES}})
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
    journal = Journal(None)
    journal.start()
    service = BootService(settings, MemoryStore(), journal, pm)
    service.start()
    try:
        client = create_app(service, token=TOKEN).test_client()
        profile = {"name": "demo", "kind": "linux", "spec": {
            "kernel": str(files[0]), "initrd": [str(files[1])], "cmdline": "bootbox.callback={callback} ds=nocloud-net;s={answers}"}}
        assert client.post("/api/v1/profiles", json=profile, headers=AUTH).status_code == 201
        rules = [{"name": "site-a", "items": {"image": "demo", "group": "site-a"}, "patterns": [f"mac={CACHED}"]},
                 {"name": "rest", "all_hosts": True, "items": {"image": "demo"}}]
        for rule in rules:
            response = client.post("/api/v1/rules", json=rule, headers=AUTH)
            assert response.status_code == 201, response.json
        yield client
    finally:
        service.close()
        journal.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _script(client: FlaskClient, mac: str) -> str:
    response = client.get(f"/boot/hosts/{mac}/script.ipxe?ip=198.18.0.50&platform=pcbios")
    assert response.status_code == 200
    return response.text


def test_group_cache_urls_are_parsed_and_wrong_ones_named(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, groups={"site-a": {"cache_urls": CACHES, "loader": "ipxe"}})
    assert settings.groups["site-a"]["cache_urls"] == ("http://198.18.0.10:8081", "http://198.18.0.11:8081/bootcache")
    assert group_cache_urls(settings.groups, {"group": "site-a"}) == settings.groups["site-a"]["cache_urls"]
    assert group_cache_urls(settings.groups, {"group": "elsewhere"}) == ()
    assert group_cache_urls(settings.groups, {}) == ()
    toml = tmp_path / "bootbox.toml"
    for value, field in (('["http://ok:1", "https://tls:443"]', "groups.site-a.cache_urls[1]"),
                         ('"http://not-a-list"', "groups.site-a.cache_urls"),
                         ('["http://c:1/?q=1"]', "groups.site-a.cache_urls[0]")):
        toml.write_text(f'[groups.site-a]\ncache_urls = {value}\n')
        with pytest.raises(ConfigError) as caught:
            load_settings(toml, env={})
        assert caught.value.field == field


def test_fetch_lines_try_each_cache_then_the_appliance() -> None:
    digest = "ab" * 32
    urls = fetch_urls(("http://c1", "http://c2/"), digest, "kernel", "http://bootbox/boot/hosts/x/assets/kernel")
    assert urls == [f"http://c1/boot/blobs/{digest}/kernel", f"http://c2/boot/blobs/{digest}/kernel",
                    "http://bootbox/boot/hosts/x/assets/kernel"]
    assert ipxe_fetch("kernel --name kernel", urls[1:], "quiet") == (
        f"kernel --name kernel http://c2/boot/blobs/{digest}/kernel quiet || "
        "kernel --name kernel http://bootbox/boot/hosts/x/assets/kernel quiet")
    for bad in (("zz" * 32, "kernel"), (digest, "../etc"), (digest, "a/b")):
        with pytest.raises(ValueError):
            blob_path(*bad)
    with pytest.raises(ValueError):
        ipxe_fetch("kernel", [])


def test_a_host_in_a_cached_group_gets_its_images_from_the_caches_first(client: FlaskClient, files: tuple[Path, Path]) -> None:
    script = _script(client, CACHED)
    kernel, initrd = _sha(files[0]), _sha(files[1])
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    urls = re.findall(r"kernel --name kernel (\S+)", kernel_line)
    assert urls == [f"http://198.18.0.10:8081/boot/blobs/{kernel}/kernel",
                    f"http://198.18.0.11:8081/bootcache/boot/blobs/{kernel}/kernel",
                    "http://localhost/boot/hosts/525400ca0001/assets/kernel"]
    assert kernel_line.endswith(" || goto failed") and kernel_line.count("initrd=initrd-0 bootbox.callback=") == 3
    assert (f"initrd --name initrd-0 http://198.18.0.10:8081/boot/blobs/{initrd}/initrd-0 || initrd --name initrd-0 "
            f"http://198.18.0.11:8081/bootcache/boot/blobs/{initrd}/initrd-0 || initrd --name initrd-0 "
            "http://localhost/boot/hosts/525400ca0001/assets/initrd-0 || goto failed") in script
    # host-bound URLs (the callback with its up token, the answers, the retry) stay on the appliance
    for url in re.findall(r"http://\S+", script):
        if "/boot/blobs/" not in url:
            assert url.startswith("http://localhost/"), url


def test_a_host_without_caches_boots_as_before(client: FlaskClient) -> None:
    script = _script(client, PLAIN)
    assert "/boot/blobs/" not in script and "198.18.0.1" not in script
    assert "kernel --name kernel http://localhost/boot/hosts/525400ca0002/assets/kernel initrd=initrd-0 " in script
    assert "initrd --name initrd-0 http://localhost/boot/hosts/525400ca0002/assets/initrd-0 || goto failed" in script


def test_blobs_are_immutable_with_strong_validators_and_ranges(client: FlaskClient, files: tuple[Path, Path]) -> None:
    _script(client, CACHED)
    digest = _sha(files[0])
    url = f"/boot/blobs/{digest}/kernel"
    sent = BLOBS.sent_bytes
    full = client.get(url)
    assert full.status_code == 200 and full.data == files[0].read_bytes()
    assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert full.headers["ETag"] == f'"{digest}"'  # strong: no W/
    assert full.headers["Last-Modified"] and full.headers["Accept-Ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == files[0].read_bytes()[1000:2000]
    assert client.get(url, headers={"If-None-Match": f'"{digest}"'}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": full.headers["Last-Modified"]}).status_code == 304
    assert client.head(url).status_code == 200
    assert BLOBS.sent_bytes - sent == len(full.data) + 1000  # bootbox_http_blob_bytes_total: bodies sent, no 304/HEAD
    # a blob fetch is not host-bound: nothing lands on any host's timeline
    kinds = [e["message"] for e in client.get(f"/api/v1/hosts/{CACHED}/events").json]
    assert not any("kernel" in message and "http" in message for message in kinds)


def test_only_named_unchanged_blobs_are_served(client: FlaskClient, files: tuple[Path, Path]) -> None:
    digest = _sha(files[0])
    assert client.get(f"/boot/blobs/{digest}/kernel").status_code == 404  # no script named it yet
    _script(client, CACHED)
    assert client.get(f"/boot/blobs/{digest}/kernel").status_code == 200
    assert client.get(f"/boot/blobs/{digest}/initrd-0").status_code == 404  # not that file's name
    assert client.get(f"/boot/blobs/{'0' * 64}/kernel").status_code == 404
    assert client.get(f"/boot/blobs/{digest[:-1]}X/kernel").status_code == 404
    files[0].write_bytes(os.urandom(300_000))  # the profile's kernel is replaced in place
    assert client.get(f"/boot/blobs/{digest}/kernel").status_code == 404  # never other bytes under a digest
    script = _script(client, CACHED)
    fresh = _sha(files[0])
    assert f"/boot/blobs/{fresh}/kernel" in script
    assert client.get(f"/boot/blobs/{fresh}/kernel").data == files[0].read_bytes()


def test_blob_index_hashes_once_per_version_and_stays_bounded(tmp_path: Path) -> None:
    index = BlobIndex(limit=2)
    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(1000 + i))
        paths.append(path)
    digests = [index.register(path, "kernel") for path in paths]
    assert digests == [_sha(p) for p in paths] and len(index) == 2
    with pytest.raises(NotFound):
        index.resolve(digests[0], "kernel")  # the oldest was forgotten
    assert index.resolve(digests[2], "kernel") == paths[2]
    boot = BootContext(base_url="http://bb:8080", mac="52:54:00:00:00:01")
    assert asset_urls(boot, "kernel", paths[1]) == ["http://bb:8080/boot/hosts/525400000001/assets/kernel"]
    cached = BootContext(base_url="http://bb:8080", mac="52:54:00:00:00:01", cache_urls=("http://c:1",))
    assert asset_urls(cached, "kernel", paths[1])[0] == f"http://c:1/boot/blobs/{digests[1]}/kernel"
    # a file that is gone: only the appliance's URL, which answers 404 as it did without caches
    assert asset_urls(cached, "kernel", tmp_path / "gone") == ["http://bb:8080/boot/hosts/525400000001/assets/kernel"]
