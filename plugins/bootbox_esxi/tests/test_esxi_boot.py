"""Booting ESXi: iPXE script and boot.cfg goldens (BIOS/UEFI × stateless/install), the module
tree a host is served, imgdb.tgz, and VIBs injected per host.

Each boot's URLs carry tokens minted when the host fetched its script (a call-in key for
stateless boots, the core's answer token for installs): the goldens hold ``<KEY>`` and
``<ANSWER>`` where they go, and :func:`tokens` reads both from the script, strictly.

Runs a real BootService with the esxi plugin (and the rules engine choosing profiles) behind
Flask's test client; the image uses builder VIBs plus the real vibauthor-built ghettoVCB VIB.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient

from bootbox import BootContext, Host, Profile
from bootbox.store.journal import Journal
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.memory import MemoryStore
from bootbox.web import create_app
from bootbox_esxi import EsxiPlugin, script
from bootbox_esxi.bootcfg import render_bootcfg
from bootbox_esxi.hostimage import resolve
from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from tests.conftest import test_settings
from tests.support.lab_fixtures import lab_unavailable

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE_URL = "http://198.18.0.1:8080"
MAC = "52:54:00:e5:0a:01"
REAL_VIB = Path("/work/shared/data/esxi/ghettoVCB-1.0.0-0.0.0-2020-12-29.vib")
REAL_ID = "virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0"
KICKSTART = "vmaccepteula\ninstall --firstdisk --overwritevmfs\nrootpw --iscrypted {{ answers.root_password }}\n" \
            "network --bootproto=dhcp --hostname={{ answers.hostname }}\n"
FILES = re.compile(r"/boot/esxi/hosts/525400e50a01/([A-Za-z0-9_-]{32}|-)/([A-Za-z0-9_-]{32}|-)/(?:boot|pxelinux)\.cfg")


@dataclass
class Env:
    service: BootService
    plugin: EsxiPlugin
    client: FlaskClient
    loaders: dict[str, Path]
    tmp: Path

    def post(self, path: str, body: dict) -> dict:  # type: ignore[type-arg]
        response = self.client.post(path, json=body, headers=AUTH)
        assert response.status_code in (200, 201, 202), response.json
        return response.json  # type: ignore[no-any-return]

    def profile(self, name: str, spec: dict, **rule_items: str) -> None:  # type: ignore[type-arg]
        self.post("/api/v1/profiles", {"name": name, "kind": "esxi", "spec": spec})
        self.post("/api/v1/rules", {"name": f"r-{name}", "patterns": [f"mac={rule_items.pop('mac', MAC)}"],
                                    "items": {"image": name, **rule_items}})

    def script(self, mac: str = MAC, platform: str = "efi") -> str:
        response = self.client.get(f"/boot/hosts/{mac}/script.ipxe?platform={platform}", base_url=BASE_URL)
        assert response.status_code == 200
        return response.text

    def files(self, mac: str = MAC, platform: str = "efi") -> str:
        """Fetch the host's script; the path of this boot's boot.cfg / pxelinux.cfg directory."""
        script = self.script(mac, platform)
        found = re.search(r"/boot/esxi/hosts/[0-9a-f]{12}/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/(?=(boot|pxelinux)\.cfg)",
                          script)
        assert found, script
        return found.group(0).rstrip("/")

    def kickstart_host(self, template: str = KICKSTART, mac: str = MAC) -> None:
        """A kickstart host profile, this host's answers, and an install profile whose rule gives both."""
        self.post("/api/v1/hostprofiles", {"name": "esx-ks", "kind": "kickstart", "templates": {"ks.cfg": template},
                                           "inputs": [{"name": "root_password", "type": "password"},
                                                      {"name": "hostname", "validation": "fqdn"}]})
        response = self.client.patch(f"/api/v1/hosts/{mac}/answers", headers=AUTH, json={
            "values": {"root_password": SECRET, "hostname": "esx01.lab.example"}})
        assert response.status_code == 200, response.json
        self.profile("esxi-i", {"vibs": _vibs(real=False), "mode": "install",
                                "kernelopt": "netdevice=vmnic0  bootproto=dhcp"}, mac=mac, host_profile="esx-ks")


SECRET = "VMware1!-s3cret"


def tokens(script: str) -> tuple[str, str]:
    """The call-in key and the answer token (``-`` when absent) in a script's boot.cfg URL."""
    found = FILES.findall(script)
    assert len(set(found)) == 1, script
    return found[0]


def golden(text: str, key: str = "-", answer: str = "-") -> str:
    return text.replace("<KEY>", key).replace("<ANSWER>", answer)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    loaders = {}
    for key, name in (("efi", "mboot.efi"), ("c32", "mboot.c32"), ("pxelinux", "lpxelinux.0")):
        loaders[key] = tmp_path / name
        loaders[key].write_bytes(f"fake {name}".encode() * 100)
    settings = test_settings(tmp_path, plugins={"esxi": {"loaders": {k: str(v) for k, v in loaders.items()},
                                                         "inject": {"vcd": ["vcloud-agent"]}}})
    plugin = EsxiPlugin()
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[plugin])
    journal = Journal(None)
    journal.start()
    service = BootService(settings, MemoryStore(), journal, pm)
    service.start()
    try:
        bundle = write_bundle(tmp_path / "test-depot.zip", depot_files(
            [esx_base(), driver("net-a"), driver("vcloud-agent"), driver("low-agent", acceptance="community"),
             driver("agent-stateful", stateless=False)]))
        plugin.state.importer.run(str(bundle))
        if REAL_VIB.is_file():
            shutil.copyfile(REAL_VIB, tmp_path / REAL_VIB.name)
            plugin.state.importer.run(str(tmp_path / REAL_VIB.name))
        yield Env(service, plugin, create_app(service, token=TOKEN).test_client(), loaders, tmp_path)
    finally:
        service.close()
        journal.close()


def _vibs(real: bool = True) -> list[str]:
    vibs = [esx_base().id, driver("net-a").id]
    if real and REAL_VIB.is_file():
        vibs.append(REAL_ID)
    return vibs


def _needs_real() -> None:
    if not REAL_VIB.is_file():
        lab_unavailable("the shared real VIB is not present")


# ------------------------------------------------------------------------------- goldens


UEFI_STATELESS = f"""#!ipxe
echo bootbox: {MAC} boots ESXi image profile esxi-s (stateless, UEFI)
chain --autofree {BASE_URL}/boot/hosts/525400e50a01/assets/mboot.efi -c {BASE_URL}/boot/esxi/hosts/525400e50a01/<KEY>/<ANSWER>/boot.cfg || goto failed
:failed
echo bootbox: starting mboot.efi failed; retrying in 10 seconds
sleep 10
chain --replace --autofree {BASE_URL}/boot/hosts/525400e50a01/script.ipxe
"""

BIOS_STATELESS = f"""#!ipxe
echo bootbox: {MAC} boots ESXi image profile esxi-s (stateless, BIOS)
set 209:string {BASE_URL}/boot/esxi/hosts/525400e50a01/<KEY>/<ANSWER>/pxelinux.cfg
set 210:string {BASE_URL}/boot/hosts/525400e50a01/assets/
chain --autofree {BASE_URL}/boot/hosts/525400e50a01/assets/pxelinux.0 || goto failed
:failed
echo bootbox: starting pxelinux.0 failed; retrying in 10 seconds
sleep 10
chain --replace --autofree {BASE_URL}/boot/hosts/525400e50a01/script.ipxe
"""

BOOTCFG_STATELESS = f"""bootstate=0
title=bootbox: ESXi image profile esxi-s (stateless) for {MAC}
timeout=5
prefix={BASE_URL}/boot/hosts/525400e50a01/assets
kernel=b.b00
kernelopt=
modules=jumpstrt.gz --- k.b00 --- s.v00 --- net_a.v00 --- payload1.v00 --- imgdb.tgz --- {BASE_URL}/boot/esxi/hosts/525400e50a01/<KEY>/bbcallin.tgz
build=7.0.3-0.0.1
updated=0
"""

BOOTCFG_INSTALL = f"""bootstate=0
title=bootbox: ESXi image profile esxi-i (install) for {MAC}
timeout=5
prefix={BASE_URL}/boot/hosts/525400e50a01/assets
kernel=b.b00
kernelopt=runweasel ks={BASE_URL}/boot/hosts/525400e50a01/answers/<ANSWER>/ks.cfg netdevice=vmnic0 bootproto=dhcp
modules=jumpstrt.gz --- k.b00 --- s.v00 --- net_a.v00 --- imgdb.tgz
build=7.0.3-0.0.1
updated=0
"""

PXELINUX_CFG = f"""DEFAULT esxi
PROMPT 0
TIMEOUT 1
LABEL esxi
  KERNEL {BASE_URL}/boot/hosts/525400e50a01/assets/mboot.c32
  APPEND -c {BASE_URL}/boot/esxi/hosts/525400e50a01/<KEY>/<ANSWER>/boot.cfg
  IPAPPEND 2
"""


def test_uefi_stateless_script_and_boot_cfg_golden(env: Env) -> None:
    _needs_real()
    env.profile("esxi-s", {"vibs": _vibs(), "acceptance": "community"})
    script = env.script(platform="efi")
    key, answer = tokens(script)
    assert answer == "-" and script == golden(UEFI_STATELESS, key)
    response = env.client.get(f"/boot/esxi/hosts/525400e50a01/{key}/-/boot.cfg", base_url=BASE_URL)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.text == golden(BOOTCFG_STATELESS, key)


def test_bios_stateless_script_and_pxelinux_cfg_golden(env: Env) -> None:
    _needs_real()
    env.profile("esxi-s", {"vibs": _vibs(), "acceptance": "community"})
    script = env.script(platform="pcbios")
    key, _ = tokens(script)
    assert script == golden(BIOS_STATELESS, key)
    files = f"/boot/esxi/hosts/525400e50a01/{key}/-"
    assert env.client.get(f"{files}/pxelinux.cfg", base_url=BASE_URL).text == golden(PXELINUX_CFG, key)
    assert env.client.get(f"{files}/boot.cfg", base_url=BASE_URL).text == golden(BOOTCFG_STATELESS, key)


@pytest.mark.parametrize("platform", ["efi", "pcbios"])
def test_install_mode_goldens(env: Env, platform: str) -> None:
    env.kickstart_host()
    script = env.script(platform=platform)
    key, answer = tokens(script)
    assert key == "-" and answer != "-"  # installs call in from %firstboot: no call-in module
    expected = (UEFI_STATELESS if platform == "efi" else BIOS_STATELESS).replace("esxi-s (stateless,",
                                                                                 "esxi-i (install,")
    assert script == golden(expected, answer=answer)
    cfg = env.client.get(f"/boot/esxi/hosts/525400e50a01/-/{answer}/boot.cfg", base_url=BASE_URL).text
    assert cfg == golden(BOOTCFG_INSTALL, answer=answer)
    if platform == "pcbios":
        pxe = env.client.get(f"/boot/esxi/hosts/525400e50a01/-/{answer}/pxelinux.cfg", base_url=BASE_URL).text
        assert pxe == golden(PXELINUX_CFG, answer=answer)
    ks_url = cfg.split("ks=", 1)[1].split()[0]
    assert ks_url == BootContext(base_url=BASE_URL, mac=MAC, answer_token=answer).answer_url("ks.cfg")
    ks = env.client.get(ks_url, base_url=BASE_URL)
    assert ks.status_code == 200 and ks.text.startswith("vmaccepteula\ninstall --firstdisk")
    assert "--hostname=esx01.lab.example\n\n%firstboot --interpreter=busybox\n#!/bin/sh\n" in ks.text


def test_cache_and_com32_script_variants_golden() -> None:
    boot = BootContext(base_url=BASE_URL, mac=MAC)
    inputs = script.ScriptInputs(profile="p", mode="stateless", firmware="bios", bootcfg_url="http://o/b.cfg",
                                 pxelinux_cfg_url="http://o/p.cfg", cache_urls=("http://c0:80", "http://c1:80"),
                                 bios="com32")
    # int("525400e50a01", 16) is odd: this host tries cache 1 first, then cache 0.
    assert script.render(boot, inputs) == f"""#!ipxe
echo bootbox: {MAC} boots ESXi image profile p (stateless, BIOS)
clear via ||
imgfetch --name probe http://c1:80/boot/esxi/health && set via ?via=1 && goto load ||
imgfetch --name probe http://c0:80/boot/esxi/health && set via ?via=0 && goto load ||
echo bootbox: no cache answered; loading the modules from the appliance
:load
imgfree probe ||
chain --autofree {BASE_URL}/boot/hosts/525400e50a01/assets/mboot.c32 -c http://o/b.cfg${{via}} BOOTIF=01-${{netX/mac:hexhyp}} || goto failed
:failed
echo bootbox: starting mboot.c32 failed; retrying in 10 seconds
sleep 10
chain --replace --autofree {BASE_URL}/boot/hosts/525400e50a01/script.ipxe
"""
    assert script.cache_order("52:54:00:00:00:01", 3) == [2, 0, 1]
    assert script.cache_order("52:54:00:00:00:02", 3) == [0, 1, 2]


# ------------------------------------------------------------------------------- the module tree


def test_every_module_in_boot_cfg_is_served_with_the_right_bytes(env: Env) -> None:
    _needs_real()
    env.profile("esxi-s", {"vibs": _vibs(), "acceptance": "community"})
    files = env.files()
    cfg = dict(line.split("=", 1) for line in env.client.get(f"{files}/boot.cfg", base_url=BASE_URL).text.split("\n")
               if "=" in line)
    *names, callin = [cfg["kernel"], *cfg["modules"].split(" --- ")]
    assert callin.startswith(f"{BASE_URL}/boot/esxi/hosts/525400e50a01/") and callin.endswith("/bbcallin.tgz")
    assert env.client.get("/boot/hosts/525400e50a01/assets/bbcallin.tgz").status_code == 404  # not by MAC alone
    image = env.plugin.image_for(env.service.host(MAC), env.service.profile("esxi-s"))
    for name in names:
        response = env.client.get(f"/boot/hosts/525400e50a01/assets/{name}")
        assert response.status_code == 200, name
        assert response.headers["ETag"] and "max-age=" in response.headers["Cache-Control"]
        module = image.module(name)
        if module is not None:
            assert hashlib.sha256(response.data).hexdigest() == module.sha256
    real = env.client.get("/boot/hosts/525400e50a01/assets/payload1.v00").data
    assert hashlib.sha256(real).hexdigest() == "f93d9901a98b35cbe5b7ccb55934c41f4f69704dafc5d20c70a5fc694893bb33"
    assert env.client.get("/boot/hosts/525400e50a01/assets/mboot.efi").data == env.loaders["efi"].read_bytes()
    # Other hosts cannot reach this host's files, and names outside the image are not files.
    assert env.client.get("/boot/hosts/525400e50a02/assets/b.b00").status_code == 404
    for name in ("../../etc/passwd", "low_agen.v00", "descriptor.xml", "bbcallin.tgz"):
        assert env.client.get(f"/boot/hosts/525400e50a01/assets/{name}").status_code == 404
    timeline = [e.data.get("file") for e in env.service.host_events(MAC)]
    assert {"b.b00", "imgdb.tgz", "payload1.v00", "boot.cfg"} <= set(timeline)


def test_imgdb_lists_the_profile_and_every_vib_descriptor(env: Env) -> None:
    env.profile("esxi-s", {"vibs": _vibs(real=False)})
    env.script()
    data = env.client.get("/boot/hosts/525400e50a01/assets/imgdb.tgz").data
    again = env.client.get("/boot/hosts/525400e50a01/assets/imgdb.tgz").data
    assert data == again  # deterministic: same image, same bytes, same ETag
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        profile = tar.extractfile("var/db/esximg/profiles/esxi-s").read()  # type: ignore[union-attr]
        vib_files = [n for n in names if n.startswith("var/db/esximg/vibs/")]
        descriptors = [tar.extractfile(n).read() for n in vib_files]  # type: ignore[union-attr]
    assert profile.count(b"<vibid>") == 2 and esx_base().id.encode() in profile
    assert len(vib_files) == 2 and all(d.startswith(b'<vib version="5.0">') for d in descriptors)


# ------------------------------------------------------------------------------- injection


def test_injected_vibs_join_the_image_boot_cfg_and_imgdb(env: Env) -> None:
    env.profile("esxi-vcd", {"vibs": _vibs(real=False)}, group="vcd")
    files = env.files()
    image = env.client.get("/api/v1/esxi/hosts/52-54-00-e5-0a-01/image").json
    assert [v["name"] for v in image["vibs"] if v["injected"]] == ["vcloud-agent"]
    assert image["requested"] == ["vcloud-agent"] and image["refused"] == [] and image["callin_module"] == "bbcallin.tgz"
    cfg = env.client.get(f"{files}/boot.cfg").text
    assert "--- vcloud_a.v00 --- imgdb.tgz --- http" in cfg
    data = env.client.get("/boot/hosts/525400e50a01/assets/imgdb.tgz").data
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        profile = tar.extractfile("var/db/esximg/profiles/esxi-vcd").read()  # type: ignore[union-attr]
    assert driver("vcloud-agent").id.encode() in profile
    # A host of the same profile outside the group boots without it.
    other = "52:54:00:e5:0a:02"
    env.post("/api/v1/rules", {"name": "r-other", "patterns": [f"mac={other}"], "items": {"image": "esxi-vcd"}})
    assert "vcloud_a" not in env.client.get(f"{env.files(mac=other)}/boot.cfg").text


def test_an_injected_vib_that_breaks_a_rule_is_left_out_and_reported(env: Env) -> None:
    env.plugin.config = type(env.plugin.config)(**{**env.plugin.config.__dict__,
                                                   "inject": {"vcd": ["low-agent", "agent-stateful", "no-such"]}})
    env.profile("esxi-vcd", {"vibs": _vibs(real=False)}, group="vcd")
    assert "chain --autofree" in env.script()
    image = env.client.get(f"/api/v1/esxi/hosts/{MAC}/image").json
    reasons = {r["vib"]: r["reason"] for r in image["refused"]}
    assert "below the profile's PartnerSupported" in reasons[driver("low-agent", acceptance="community").id]
    assert "not stateless-ready" in reasons[driver("agent-stateful").id]
    assert "no imported VIB" in reasons["no-such"]
    assert not any(v["injected"] for v in image["vibs"])
    messages = [e.message for e in env.service.host_events(MAC)]
    assert any("injected VIB no-such left out" in m for m in messages)


def test_resolve_keeps_the_profile_order_and_replaces_an_older_injected_name(env: Env) -> None:
    catalog = env.plugin.state.catalog
    spec = {"vibs": _vibs(real=False), "acceptance": "partner", "mode": "stateless"}
    image = resolve("p", spec, catalog, ["net-a", "vcloud-agent"])
    assert [v.name for v in image.vibs] == ["esx-base", "net-a", "vcloud-agent"]
    assert image.injected == (driver("vcloud-agent").id,)  # net-a was already there


# ------------------------------------------------------------------------------- failures


def test_missing_loader_gives_a_script_that_says_what_to_set(env: Env) -> None:
    env.profile("esxi-s", {"vibs": _vibs(real=False)})
    env.loaders["efi"].unlink()
    text = env.script(platform="efi")
    assert "mboot.efi is not available: set plugins.esxi.loaders.efi" in text
    assert text.rstrip().endswith("script.ipxe") and "sleep 60" in text


def test_a_stored_profile_that_no_longer_resolves_retries_with_the_reason(env: Env) -> None:
    """E.g. a state dir restored without its depots: the stored spec names a VIB that is gone."""
    stale = Profile(name="esxi-s", kind="esxi", spec={"vibs": ["Gone_bootbank_x_1"], "acceptance": "partner"})
    boot = BootContext(base_url=BASE_URL, mac=MAC, firmware="efi")
    text = env.plugin.bootbox_boot_script(host=Host(mac=MAC), profile=stale, boot=boot)
    assert text is not None and "cannot boot ESXi image profile esxi-s" in text and "Gone_bootbank_x_1" in text
    assert env.plugin.bootbox_profile_asset(host=Host(mac=MAC), profile=stale, name="b.b00") is None
    linux = Profile(name="l", kind="linux", spec={})
    assert env.plugin.bootbox_boot_script(host=Host(mac=MAC), profile=linux, boot=boot) is None


def test_boot_cfg_is_only_for_known_esxi_hosts(env: Env) -> None:
    assert env.client.get("/boot/esxi/hosts/525400e50a09/-/-/boot.cfg").status_code == 404
    env.profile("esxi-s", {"vibs": _vibs(real=False)})
    assert env.client.get("/boot/esxi/hosts/525400e50a01/-/-/boot.cfg").status_code == 404  # no script fetched yet
    files = env.files()
    assert env.client.get(f"{files}/boot.cfg?via=3").status_code == 422
    assert env.client.get("/boot/esxi/hosts/525400e50a01/x;rm/-/boot.cfg").status_code == 404  # not a token


def test_real_profile_renders_with_the_render_function_directly(env: Env) -> None:
    _needs_real()
    spec = env.plugin.validate_spec({"vibs": _vibs(), "acceptance": "CommunitySupported"})
    image = resolve("direct", spec, env.plugin.state.catalog, [])
    text = render_bootcfg(image, mac=MAC, prefix="http://cache:3128/boot/esxi/images/x/",
                          callin_url="http://bootbox:8080/boot/esxi/hosts/525400e50a01/k/bbcallin.tgz")
    assert "prefix=http://cache:3128/boot/esxi/images/x\n" in text
    assert "payload1.v00 --- imgdb.tgz --- http://bootbox:8080/boot/esxi/hosts/525400e50a01/k/bbcallin.tgz\n" in text


def test_the_image_tree_survives_a_restart_and_refuses_made_up_ids(env: Env) -> None:
    env.profile("esxi-s", {"vibs": _vibs(real=False)})
    env.script()
    image = env.plugin.image_for(env.service.host(MAC), env.service.profile("esxi-s"))
    url = f"/boot/esxi/images/{image.id}/s.v00"
    expected = env.client.get(url)
    assert expected.status_code == 200 and "max-age=31536000, immutable" in expected.headers["Cache-Control"]
    state = env.plugin.state
    state.images.clear(), state.by_id.clear()  # what a restart forgets
    state.rescanned = float("-inf")
    again = env.client.get(url)
    assert again.status_code == 200 and again.data == expected.data
    assert env.client.get(f"/boot/esxi/images/{'0' * 32}/s.v00").status_code == 404
    assert env.client.get(f"/boot/esxi/images/{image.id}/mboot.efi").status_code == 403
    assert env.client.get(f"/boot/esxi/images/{image.id}/nothing.v00").status_code == 404
