"""The esxi plugin inside a real running appliance, over real sockets on loopback.

A client fetches the ESXi script, then boot.cfg, then every module boot.cfg lists, and checks
each module's bytes against the VIBs the test built (not against the plugin's own records); the
last module is the host's call-in, whose up URL the appliance then accepts as the host's. The
CLI drives the same appliance: ``depot add`` with its progress bar, ``vib``, ``profile
clone/add-vib/remove-vib/diff/export``, ``host image``; an exported bundle imports again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from bootbox.appliance import Appliance
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox_esxi import EsxiPlugin
from bootbox_esxi.tests.esxi_builder import ProfileSpec, depot_files, driver, esx_base, write_bundle
from tests.conftest import test_settings

MAC = "52:54:00:e5:0b:01"
REAL_BUNDLE = Path("/work/shared/data/esxi/ghettoVCB-offline-bundle-2020-12-29.zip")
REAL_PAYLOAD_SHA = "f93d9901a98b35cbe5b7ccb55934c41f4f69704dafc5d20c70a5fc694893bb33"
VIBS = [esx_base(), driver("net-a"), driver("net-a", version="1.1.0-1.0.0"), driver("nvme-b")]


def http(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Message, bytes]:
    """One request; headers come back as a case-insensitive mapping."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@dataclass
class Running:
    appliance: Appliance
    url: str
    token: str
    tmp: Path
    loaders: dict[str, Path]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = http(f"{self.url}/api/v1{path}", method, body, self.token)
        assert status < 300, (status, data)
        return json.loads(data)

    def import_depot(self, source: Path | str) -> dict:  # type: ignore[type-arg]
        job = self.api("POST", "/esxi/depots", {"source": str(source)})
        while job["state"] == "running":
            time.sleep(0.05)
            job = self.api("GET", f"/esxi/jobs/{job['id']}")
        assert job["state"] == "done", job["error"]
        return job["result"]  # type: ignore[no-any-return]

    def cli(self, *args: str) -> Any:
        app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[EsxiPlugin()]))
        return CliRunner().invoke(app, ["--url", self.url, *args], env={"BOOTBOX_TOKEN": self.token})


def _said(result: Any) -> str:
    """Everything a CLI run told the operator (the error message included)."""
    return f"{result.output}\n{result.exception}"


def start(tmp_path: Path, **esxi: Any) -> Running:
    loaders = {}
    for key, name in (("efi", "mboot.efi"), ("c32", "mboot.c32"), ("pxelinux", "pxelinux.0")):
        loaders[key] = tmp_path / name
        loaders[key].write_bytes(os.urandom(2048))
    config = {"loaders": {k: str(v) for k, v in loaders.items()}, **esxi}
    settings = test_settings(tmp_path, plugins={"esxi": config})
    appliance = Appliance(settings, load_entrypoints=False, extra_plugins=(EsxiPlugin(),))
    appliance.start()
    token = (Path(settings.state_dir) / "api-token").read_text().strip()
    return Running(appliance, f"http://127.0.0.1:{settings.http.port}", token, tmp_path, loaders)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path)
    try:
        yield run
    finally:
        run.appliance.stop()


def _expected_modules() -> dict[str, str]:
    """Module name → sha-256 of its bytes, from the builder's own VIB specs."""
    out = {}
    for spec in (esx_base(), driver("net-a", version="1.1.0-1.0.0")):
        for p in spec.payloads:
            name = p.vfatname or ("jumpstrt.gz" if p.name == "jumpstrt" else f"{p.name[:8]}.v00")
            out[name] = hashlib.sha256(p.packed()).hexdigest()
    if REAL_BUNDLE.is_file():
        out["payload1.v00"] = REAL_PAYLOAD_SHA
    return out


def _setup_host(run: Running, bundle: Path) -> None:
    run.import_depot(bundle)
    vibs = [esx_base().id, "net-a"]
    if REAL_BUNDLE.is_file():
        shutil.copyfile(REAL_BUNDLE, run.tmp / REAL_BUNDLE.name)
        run.import_depot(run.tmp / REAL_BUNDLE.name)
        vibs.append("ghettoVCB")
    run.api("POST", "/profiles", {"name": "esxi-lab", "kind": "esxi",
                                  "spec": {"vibs": vibs, "acceptance": "community"}})
    run.api("POST", "/rules", {"name": "lab", "all_hosts": True, "items": {"image": "esxi-lab"}})


def _parse_cfg(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_host_fetches_script_boot_cfg_and_every_module_with_the_right_bytes(running: Running) -> None:
    bundle = write_bundle(running.tmp / "lab-depot.zip", depot_files(VIBS))
    _setup_host(running, bundle)
    status, _, body = http(f"{running.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")
    script = body.decode()
    assert status == 200 and script.startswith("#!ipxe")
    chain = next(line for line in script.splitlines() if line.startswith("chain --autofree"))
    _, _, loader_url, _, cfg_url, *_ = chain.split()
    status, _, loader = http(loader_url)
    assert status == 200 and loader == running.loaders["efi"].read_bytes()
    status, headers, cfg_body = http(cfg_url)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    cfg = _parse_cfg(cfg_body.decode())
    assert "runweasel" not in cfg["kernelopt"] and cfg["kernel"] == "b.b00"
    *names, callin = [cfg["kernel"], *cfg["modules"].split(" --- ")]
    assert names[-1] == "imgdb.tgz" and callin.startswith(f"{running.url}/boot/esxi/hosts/525400e50b01/")
    status, headers, module = http(callin)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    with tarfile.open(fileobj=io.BytesIO(module), mode="r:gz") as tar:
        local_sh = tar.extractfile("etc/rc.local.d/local.sh").read().decode()  # type: ignore[union-attr]
    up_url = next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'")
    for _ in range(100):  # 503 while the after-boot pushes run (the esxi plugin's host profile: none here)
        status, _, body = http(up_url, "POST", {"boot_id": "b1"})  # the token in the module is the host's
        if status != 503:
            break
        time.sleep(0.05)
    assert status == 200 and json.loads(body)["state"] == "configured"
    assert http(up_url.replace("token=", "token=x"), "POST", {"boot_id": "b2"})[0] == 401
    expected = _expected_modules()
    assert set(names) - {"imgdb.tgz"} == set(expected)  # net-a resolved to its newest version, 1.1.0
    for name in names:
        status, headers, data = http(f"{cfg['prefix']}/{name}")
        assert status == 200, name
        assert headers.get("ETag") and "max-age" in headers.get("Cache-Control", "")
        if name == "imgdb.tgz":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                vib_count = 3 if REAL_BUNDLE.is_file() else 2  # esx-base, net-a (+ ghettoVCB)
                assert len([n for n in tar.getnames() if n.startswith("var/db/esximg/vibs/")]) == vib_count
        else:
            assert hashlib.sha256(data).hexdigest() == expected[name], name
    # Conditional GET and Range: what a cache in front relies on.
    status, headers, _ = http(f"{cfg['prefix']}/b.b00")
    request = urllib.request.Request(f"{cfg['prefix']}/b.b00", headers={"If-None-Match": headers["ETag"]})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 304


def test_api_writes_need_the_token(running: Running) -> None:
    status, _, body = http(f"{running.url}/api/v1/esxi/depots", "POST", {"source": "/tmp/x.zip"})
    assert status == 401 and b"token" in body
    status, _, _ = http(f"{running.url}/api/v1/esxi/plans/clone", "POST", {"source": "x"})
    assert status == 401
    assert http(f"{running.url}/api/v1/esxi/depots")[0] == 200  # reads are open


def test_cli_depot_vib_and_profile_commands(running: Running) -> None:
    vibs = [esx_base(), driver("net-a"), driver("net-a", version="1.1.0-1.0.0"), driver("nvme-b"),
            driver("tool-c", acceptance="community"), driver("needs-net", depends=[("net-a", ">=", "1.0")])]
    profile = ProfileSpec("ESXi-lab-standard", [v.id for v in vibs[:2]], acceptance="partner")
    bundle = write_bundle(running.tmp / "cli-depot.zip", depot_files(vibs, [profile]))

    added = running.cli("depot", "add", str(bundle))
    assert added.exit_code == 0, added.output
    assert "100%" in added.output and "imported depot cli-depot: 6 VIBs, 1 image profiles" in added.output
    assert "cli-depot  bundle  6" in running.cli("depot", "list").output
    assert "cli-depot/ESXi-lab-standard" in running.cli("depot", "profiles").output
    listed = running.cli("vib", "list", "--name", "net", "--acceptance", "PartnerSupported")
    rows = [line.split()[0] for line in listed.output.splitlines()[1:]]
    assert sorted(rows) == ["needs-net", "net-a", "net-a"]  # tool-c is CommunitySupported: filtered out
    shown = running.cli("vib", "show", "nvme-b")
    assert "depots:          cli-depot" in shown.output and "nvme_b.v00" in shown.output

    cloned = running.cli("profile", "clone", "ESXi-lab-standard", "lab")
    assert cloned.exit_code == 0, cloned.output
    assert "added profile lab: 2 VIBs, PartnerSupported, stateless" in cloned.output
    upgraded = running.cli("profile", "add-vib", "lab", "net-a")
    assert "lab: upgraded net-a 1.0.0-1.0.0 -> 1.1.0-1.0.0" in upgraded.output
    refused = running.cli("profile", "add-vib", "lab", "tool-c")
    assert refused.exit_code != 0 and "--acceptance CommunitySupported" in _said(refused)
    lowered = running.cli("profile", "add-vib", "lab", "tool-c", "--acceptance", "community")
    assert "acceptance PartnerSupported -> CommunitySupported" in lowered.output
    assert running.cli("profile", "add-vib", "lab", "needs-net").exit_code == 0
    blocked = running.cli("profile", "remove-vib", "lab", "net-a")
    assert "required by" in _said(blocked)
    assert running.cli("profile", "remove-vib", "lab", "tool-c").exit_code == 0
    stored = running.api("GET", "/profiles/lab")
    assert stored["kind"] == "esxi" and len(stored["spec"]["vibs"]) == 3

    diff = running.cli("profile", "diff", "cli-depot/ESXi-lab-standard", "lab")
    assert "net-a 1.0.0-1.0.0 -> 1.1.0-1.0.0" in diff.output and "needs-net" in diff.output

    target = running.tmp / "exported.zip"
    exported = running.cli("profile", "export", "lab", "--bundle", str(target))
    assert exported.exit_code == 0, exported.output
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        assert {"index.xml", "vendor-index.xml", "metadata.zip"} <= names
        assert f"vib20/net-a/{driver('net-a', version='1.1.0-1.0.0').id}.vib" in names
        with zipfile.ZipFile(io.BytesIO(zf.read("metadata.zip"))) as meta:
            assert "profiles/lab.xml" in meta.namelist() and "vmware.xml" in meta.namelist()
    # Round trip: the exported bundle is an offline bundle bootbox (and so Image Builder) imports.
    again = running.import_depot(target)
    assert again["profiles"] == ["lab"] and set(again["vibs"]) == set(stored["spec"]["vibs"])


def test_host_image_shows_profile_and_injected_vibs(tmp_path: Path) -> None:
    run = start(tmp_path, inject={"vcd": ["vcloud-agent"]})
    try:
        run.import_depot(write_bundle(tmp_path / "d.zip", depot_files([esx_base(), driver("vcloud-agent")])))
        run.api("POST", "/profiles", {"name": "p", "kind": "esxi", "spec": {"vibs": ["esx-base"]}})
        run.api("POST", "/rules", {"name": "vcd", "all_hosts": True, "items": {"image": "p", "group": "vcd"}})
        http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=pcbios")
        shown = run.cli("host", "image", MAC)
        assert shown.exit_code == 0, shown.output
        assert f"host {MAC} boots image profile p (stateless, PartnerSupported, bios)" in shown.output
        assert any(line.split()[:2] == ["vcloud-agent", "1.0.0-1.0.0"] and line.split()[-1] == "injected"
                   for line in shown.output.splitlines())
    finally:
        run.appliance.stop()


def test_import_errors_reach_the_cli_with_the_vib_named(running: Running) -> None:
    bad = driver("net-a")
    bad.payloads[0].wrong_sha256 = True
    bundle = write_bundle(running.tmp / "bad.zip", depot_files([esx_base(), bad]))
    result = running.cli("depot", "add", str(bundle))
    assert result.exit_code != 0 and f"VIB {bad.id} is corrupt" in _said(result)
    assert running.api("GET", "/esxi/depots") == []


def test_entry_point_plugin_serves_through_bootbox_serve(tmp_path: Path) -> None:
    """The shipped entry point (not a test-registered instance) works in `bootbox serve`."""
    import signal
    import subprocess
    import sys

    from tests.scenarios.test_appliance import _wait_for, _write_config

    settings = test_settings(tmp_path)
    env = {**os.environ, "BOOTBOX_CONFIG": str(_write_config(tmp_path, settings))}
    proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{settings.http.port}"
        _wait_for(url + "/api/v1/status")
        bundle = write_bundle(tmp_path / "ep.zip", depot_files([esx_base()]))
        cli = [sys.executable, "-m", "bootbox", "--url", url]
        done = subprocess.run(cli + ["depot", "add", str(bundle)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "100%" in done.stderr and "imported depot ep: 1 VIBs" in done.stdout
        kinds = subprocess.run(cli + ["profile", "kinds"], env=env, capture_output=True, text=True).stdout
        assert "esxi" in kinds
        bad = subprocess.run(cli + ["profile", "clone", "nope", "x"], env=env, capture_output=True, text=True)
        assert bad.returncode == 1 and "no image profile 'nope'" in bad.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

