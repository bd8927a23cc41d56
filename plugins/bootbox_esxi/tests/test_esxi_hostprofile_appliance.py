"""Host profiles after every boot, end to end: a running appliance, a stateless ESXi boot up to
its report-in, and govmomi's ESXi simulator as the host's vSphere API.

The host fetches its boot script, boot.cfg and call-in module like the boot test's host; its
report-in (the up URL from the module) makes the esxi plugin apply the host's ``esxi`` host
profile through pyVmomi. Restarting the simulator is the stateless reboot: state wiped, a new
``runtime.bootTime`` and certificate; the plugin's watcher (``watch_seconds``) sees it and
applies everything again, with a timeline that says so.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pyVmomi import vim
from typer.testing import CliRunner

from bootbox.appliance import Appliance
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox_esxi import EsxiPlugin
from bootbox_esxi.hostprofile import vsphere
from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from bootbox_esxi.tests.esxsim import EsxSim
from bootbox_esxi.tests.test_esxi_appliance import Running, http
from tests.conftest import test_settings
from tests.support.lab_fixtures import lab_unavailable

MAC = "52:54:00:e5:0c:01"
WATCH = 0.5
HOST_YAML = """\
vswitches:
  - {name: vSwitch1, uplinks: [vmnic1], mtu: 9000}
portgroups:
  - {name: storage, vswitch: vSwitch1, vlan: 20}
  - {name: vmotion, vswitch: vSwitch1, vlan: 30}
vmknics:
  - {portgroup: storage, ip: "{{ answers.storage_ip }}", mtu: 9000}
dns: {hostname: "{{ answers.hostname }}", domain: lab.example, servers: [198.18.0.53], search: [lab.example]}
ntp: {servers: [198.18.0.1], policy: on}
services:
  TSM-SSH: {policy: on}
advanced: {Syslog.global.logHost: "udp://198.18.0.9:514"}
nfs:
  - {name: iso, host: 198.18.0.7, path: /export/iso, readonly: true}
root_password: {input: root_password}
firewall: {FIREWALL}
"""


def host_profile(firewall: str = "{sshServer: true}") -> dict[str, Any]:
    return {"name": "esx-lab", "kind": "esxi",
            "inputs": [{"name": "hostname", "validation": "hostname"},
                       {"name": "storage_ip", "validation": "cidr"},
                       {"name": "root_password", "type": "password"}],
            "templates": {"host.yaml": HOST_YAML.replace("{FIREWALL}", firewall)}}


def start(tmp_path: Path, watch: float = WATCH, plugin: EsxiPlugin | None = None, host_cert_days: int = 0) -> Running:
    """An appliance with the esxi plugin. ``host_cert_days=0`` (these tests): no certificate in the
    call-in module, so the simulator keeps its own and bootbox pins it per boot; the CA path, where
    the simulator presents the module's certificate, is ``test_esxi_hostcert_appliance.py``."""
    loaders = {}
    for key, name in (("efi", "mboot.efi"), ("c32", "mboot.c32"), ("pxelinux", "pxelinux.0")):
        loaders[key] = tmp_path / name
        loaders[key].write_bytes(os.urandom(2048))
    settings = test_settings(tmp_path, plugins={"esxi": {"loaders": {k: str(v) for k, v in loaders.items()},
                                                         "watch_seconds": watch,
                                                         "host_cert_days": host_cert_days}},
                             push={"attempts": 2, "first_delay": 0.2, "step_min": 0.1, "step_max": 0.2})
    appliance = Appliance(settings, load_entrypoints=False, extra_plugins=(plugin or EsxiPlugin(),))
    appliance.start()
    token = (Path(settings.state_dir) / "api-token").read_text().strip()
    return Running(appliance, f"http://127.0.0.1:{settings.http.port}", token, tmp_path, loaders)


@pytest.fixture
def lab(tmp_path: Path, esxsim: EsxSim) -> Iterator[tuple[Running, EsxSim]]:
    (esxsim.workdir / "iso").mkdir()  # the simulator backs an NFS datastore with a directory
    run = start(tmp_path)
    try:
        run.import_depot(write_bundle(tmp_path / "depot.zip", depot_files([esx_base(), driver("net-a")])))
        run.api("POST", "/profiles", {"name": "esxi-lab", "kind": "esxi", "spec": {"vibs": ["esx-base", "net-a"]}})
        yield run, esxsim
    finally:
        run.appliance.stop()


def boot_and_report(run: Running, boot_id: str) -> tuple[int, dict[str, Any]]:
    """What a stateless ESXi host does: script → boot.cfg → call-in module → POST up until not 503."""
    script = http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")[2].decode()
    chain = next(line for line in script.splitlines() if line.startswith("chain --autofree"))
    cfg = dict(line.split("=", 1) for line in http(chain.split()[4])[2].decode().splitlines() if "=" in line)
    callin = cfg["modules"].split(" --- ")[-1]
    with tarfile.open(fileobj=io.BytesIO(http(callin)[2]), mode="r:gz") as tar:
        local_sh = tar.extractfile("etc/rc.local.d/local.sh").read().decode()  # type: ignore[union-attr]
    up_url = next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'")
    return report_up(up_url, boot_id)


def report_up(up_url: str, boot_id: str) -> tuple[int, dict[str, Any]]:
    """The call-in module's POST "up": repeated while bootbox answers 503 (not ready yet)."""
    deadline = time.monotonic() + 60
    while True:
        status, _, body = http(up_url, "POST", {"boot_id": boot_id})
        if status != 503 or time.monotonic() > deadline:
            return status, json.loads(body)
        time.sleep(0.1)


def events(run: Running) -> list[str]:
    return [e["message"] for e in run.api("GET", f"/hosts/{MAC}/events")]


def wait_for(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def cli(run: Running, *args: str) -> Any:
    app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[EsxiPlugin()]))
    return CliRunner().invoke(app, ["--url", run.url, *args], env={"BOOTBOX_TOKEN": run.token})


def setup(run: Running, sim: EsxSim, profile: dict[str, Any]) -> None:
    run.api("POST", "/hostprofiles", profile)
    run.api("POST", "/rules", {"name": "lab", "all_hosts": True,
                               "items": {"image": "esxi-lab", "host_profile": "esx-lab"}})
    run.api("PATCH", f"/hosts/{MAC}/answers", {"values": {
        "hostname": "esx01", "storage_ip": "198.18.1.5/24", "root_password": "Root-Pass-1",
        "esxi_api_endpoint": sim.address}})


def test_applied_after_report_in_compliant_and_again_after_a_reboot(lab: tuple[Running, EsxSim]) -> None:
    run, sim = lab
    setup(run, sim, host_profile())
    status, body = boot_and_report(run, "b1")
    assert status == 200 and body["state"] == "configured", (status, body, events(run))
    said = events(run)
    assert any("vswitch:vSwitch1 changed" in m for m in said)
    assert any("nfs:iso changed" in m for m in said) and any("root_password changed" in m for m in said)
    assert any(m.startswith("esxi host profile esx-lab applied after its report-in (logged in with the empty "
                            "password of a fresh stateless host") for m in said)

    checked = cli(run, "host", "compliance", MAC, "--json")
    assert checked.exit_code == 0, checked.output
    result = json.loads(checked.output)
    assert result["compliant"] and result["non_compliant"] == [] and len(result["settings"]) >= 10
    listed = cli(run, "host", "list")
    assert "compliant" in listed.output, listed.output

    boot_before = result["boot_time"]
    sim.restart()  # a stateless reboot that never reports in: only runtime.bootTime tells
    wait_for(lambda: any(m.startswith("esxi: reboot detected") for m in events(run)), 4 * WATCH + 10)
    wait_for(lambda: sum("applied after a reboot bootbox noticed" in m for m in events(run)) >= 1, 30)
    said = events(run)
    assert any("new certificate with the new boot, pinned" in m for m in said)
    again = next(m for m in said if "applied after a reboot bootbox noticed" in m)
    assert "logged in with the empty password of a fresh stateless host" in again and "0 failed" in again
    result = json.loads(cli(run, "host", "compliance", MAC, "--json").output)
    assert result["compliant"] and result["boot_time"] != boot_before


def test_a_setting_the_host_refuses_fails_the_push_with_its_fault(lab: tuple[Running, EsxSim]) -> None:
    run, sim = lab
    setup(run, sim, host_profile(firewall="{sshServer: true, noSuchRuleset: true}"))
    status, body = boot_and_report(run, "b1")
    assert status == 409 and body["state"] == "failed", (status, body)
    said = events(run)
    assert any(m == "esxi host profile esx-lab: firewall:noSuchRuleset failed: vim.fault.NotFound" for m in said), said
    assert any("push esxi attempt 1/2 failed" in m and "firewall:noSuchRuleset failed" in m for m in said), said
    checked = cli(run, "host", "compliance", MAC)
    assert checked.exit_code == 1 and "NOT compliant" in checked.output
    assert "-- firewall:noSuchRuleset" in checked.output and "ok vswitch:vSwitch1" in checked.output


def test_wrong_credentials_fail_clearly(lab: tuple[Running, EsxSim]) -> None:
    run, sim = lab
    setup(run, sim, host_profile())
    # The host's root password is neither the profile's nor empty: a host someone else configured.
    pin = vsphere.thumbprint("127.0.0.1", sim.port, 5)
    session = vsphere.connect("127.0.0.1", sim.port, [("empty", "")], pin=pin, timeout=10)
    session.content.accountManager.UpdateUser(
        user=vim.host.LocalAccountManager.AccountSpecification(id="root", password="Someone-Else-1"))
    session.close()
    status, body = boot_and_report(run, "b1")
    assert status == 409, (status, body)
    assert ("root login to 127.0.0.1:%d refused (InvalidLogin) with the profile's root password and the empty "
            "password of a fresh stateless host" % sim.port) in body["message"]


def test_host_render_shows_the_document_without_secrets_and_names_a_bad_field(lab: tuple[Running, EsxSim]) -> None:
    run, sim = lab
    setup(run, sim, host_profile())
    http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")  # first boot: the rules give it its host profile
    shown = cli(run, "host", "render", MAC, "esxi")
    assert shown.exit_code == 0, shown.output
    assert "esx01" in shown.output and "vSwitch1" in shown.output
    assert "Root-Pass-1" not in shown.output
    # A document that renders valid with example answers but not with this host's: the render names the field.
    bad = host_profile()
    bad["inputs"].append({"name": "mtu", "type": "integer"})
    bad["templates"]["host.yaml"] = bad["templates"]["host.yaml"].replace("mtu: 9000}", "mtu: {{ answers.mtu }}}", 1)
    run.api("PUT", "/hostprofiles/esx-lab", bad)
    run.api("PATCH", f"/hosts/{MAC}/answers", {"values": {"mtu": 20000}})
    refused = cli(run, "host", "render", MAC, "esxi")
    assert refused.exit_code != 0
    said = f"{refused.output}\n{refused.exception}"
    assert "host.yaml: vswitches[0].mtu" in said and "1280 to 9000" in said, said


BAD_DOCUMENTS = [
    (("mtu: 9000}", "mtu: 20000}"), "host.yaml: vswitches[0].mtu", "from 1280 to 9000"),
    (("vlan: 20}", "vlan: 5000}"), "host.yaml: portgroups[0].vlan", "from 0 to 4095"),
    (("TSM-SSH: {policy: on}", "TSM-SSH: {policy: sometimes}"), "host.yaml: services.TSM-SSH.policy",
     "'sometimes' is not one of on, off, automatic"),
    (("root_password: {input: root_password}", "root_password: {input: nope}"), "host.yaml: root_password.input",
     "'nope' is not an input of this host profile"),
    (("{{ answers.hostname }}", "{{ answers.hostnme }}"), "templates.host.yaml", "no attribute 'hostnme'"),
    (("portgroups:", "portgroup:"), "host.yaml: (document).portgroup", "unknown field"),
]


@pytest.mark.parametrize(("change", "field", "words"), BAD_DOCUMENTS)
def test_a_bad_esxi_host_profile_is_refused_at_add_by_the_api_naming_the_field(
        tmp_path: Path, change: tuple[str, str], field: str, words: str) -> None:
    run = start(tmp_path, watch=0)
    try:
        bad = host_profile()
        bad["templates"]["host.yaml"] = bad["templates"]["host.yaml"].replace(*change, 1)
        assert bad["templates"]["host.yaml"] != host_profile()["templates"]["host.yaml"]
        status, _, body = http(f"{run.url}/api/v1/hostprofiles", "POST", bad, run.token)
        error = json.loads(body)["error"]
        assert status == 422 and error["field"] == field and words in error["message"], (status, error)
        assert http(f"{run.url}/api/v1/hostprofiles/esx-lab", token=run.token)[0] == 404  # nothing stored
        run.api("POST", "/hostprofiles", host_profile())  # the good one is taken ...
        status, _, body = http(f"{run.url}/api/v1/hostprofiles/esx-lab", "PUT", bad, run.token)
        assert status == 422 and json.loads(body)["error"]["field"] == field  # ... and a bad new version is not
        assert run.api("GET", "/hostprofiles/esx-lab")["version"] == 1
    finally:
        run.appliance.stop()


def test_a_bad_esxi_host_profile_is_refused_by_hostprofile_add(tmp_path: Path) -> None:
    run = start(tmp_path, watch=0)
    try:
        bad = host_profile()
        bad["templates"]["host.yaml"] = bad["templates"]["host.yaml"].replace("mtu: 9000}", "mtu: 20000}", 1)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        added = cli(run, "hostprofile", "add", str(tmp_path / "bad.json"))
        said = f"{added.output}\n{added.exception}"
        assert added.exit_code == 1 and "host.yaml: vswitches[0].mtu" in said and "1280 to 9000" in said, said
        listed = cli(run, "hostprofile", "list", "--json")
        assert listed.exit_code == 0 and json.loads(listed.output) == [], listed.output
        (tmp_path / "good.json").write_text(json.dumps(host_profile()))
        assert cli(run, "hostprofile", "add", str(tmp_path / "good.json")).exit_code == 0
        # Wrong only for some answers (an input with no validation used as an address): taken, and
        # checked with each host's real answers when its files are rendered.
        loose = host_profile()
        loose["name"] = "esx-loose"
        loose["inputs"].append({"name": "dns_server"})
        loose["templates"]["host.yaml"] = loose["templates"]["host.yaml"].replace(
            "servers: [198.18.0.53]", "servers: ['{{ answers.dns_server }}']")
        (tmp_path / "loose.json").write_text(json.dumps(loose))
        added = cli(run, "hostprofile", "add", str(tmp_path / "loose.json"))
        assert added.exit_code == 0, f"{added.output}\n{added.exception}"
    finally:
        run.appliance.stop()


def test_a_free_licence_host_gets_the_boot_module_path_from_its_next_boot(
        lab: tuple[Running, EsxSim], esxsim_binary: Path, tmp_path: Path) -> None:
    run, _ = lab
    free = EsxSim(esxsim_binary, tmp_path / "free", edition="free")
    free.start()
    try:
        setup(run, free, host_profile())
        status, body = boot_and_report(run, "b1")
    finally:
        free.stop()
    assert status == 409 and "RestrictedVersion" in body["message"], body
    said = events(run)
    assert any("the host's vSphere API is read-only (vim.fault.RestrictedVersion" in m for m in said), said
    assert not any("attempt 2/2" in m for m in said)  # refused at once: retrying cannot help

    # Its next boot: the call-in module now carries the profile as an esxcli script.
    script = http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")[2].decode()
    chain = next(line for line in script.splitlines() if line.startswith("chain --autofree"))
    cfg = dict(line.split("=", 1) for line in http(chain.split()[4])[2].decode().splitlines() if "=" in line)
    callin_url = cfg["modules"].split(" --- ")[-1]
    with tarfile.open(fileobj=io.BytesIO(http(callin_url)[2]), mode="r:gz") as tar:
        local_sh = tar.extractfile("etc/rc.local.d/local.sh").read().decode()  # type: ignore[union-attr]
    assert "bb_step vswitch:vSwitch1" in local_sh and "esxcli storage nfs add -H 198.18.0.7" in local_sh
    assert "Root-Pass-1" not in local_sh and "root:$6$" in local_sh
    assert local_sh.index("bb_step root_password") < local_sh.index("URL=")  # configured before it reports up
    steps_url = callin_url.rsplit("/", 1)[0] + "/hostprofile-steps"
    assert f"--post-file \"$BB_REPORT\" {steps_url}" in local_sh

    report = tmp_path / "report"
    report.write_text("license complied\nvswitch:vSwitch1 changed\nnfs:iso failed 1 Unable to connect to NFS server\n")
    wget = shutil.which("busybox")
    if wget is None:
        lab_unavailable("busybox is needed to post the report as ESXi's wget does")
    done = subprocess.run([wget, "wget", "-q", "-O", "-", "--post-file", str(report), steps_url],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and json.loads(done.stdout) == {"steps": 3}, done.stderr
    said = events(run)
    assert "esxi host profile (esxcli): nfs:iso failed: exit 1 Unable to connect to NFS server" in said
    assert "esxi host profile applied by the boot module: 3 steps, 1 failed (nfs:iso)" in said
    assert http(steps_url.replace("/hostprofile-steps", "x/hostprofile-steps"), "POST", {})[0] == 403
    listed = cli(run, "host", "list")
    assert "esxi non-compliant" in listed.output, listed.output
    # ... and its report-in is not failed for the read-only API any more: the module did the work.
    up_url = next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'")
    free.start()
    try:
        deadline = time.monotonic() + 60
        while (answer := http(up_url, "POST", {"boot_id": "b2"}))[0] == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        free.stop()
    assert answer[0] == 200, answer
    assert any("its boot module's esxcli script applies the profile" in m for m in events(run))


def test_a_new_certificate_from_a_host_that_is_not_fresh_gets_no_credentials(tmp_path: Path, esxsim: EsxSim) -> None:
    """The watcher meets another certificate: only a freshly booted host (empty root password,
    new boot time) may have it pinned; anything else is refused with an audit event."""
    (esxsim.workdir / "iso").mkdir()
    plugin = EsxiPlugin()
    run = start(tmp_path, watch=0, plugin=plugin)  # no watcher thread: the test calls watch_once()
    try:
        run.import_depot(write_bundle(tmp_path / "depot.zip", depot_files([esx_base(), driver("net-a")])))
        run.api("POST", "/profiles", {"name": "esxi-lab", "kind": "esxi", "spec": {"vibs": ["esx-base", "net-a"]}})
        setup(run, esxsim, host_profile())
        assert boot_and_report(run, "b1")[0] == 200
        esxsim.restart()
        pin = vsphere.thumbprint("127.0.0.1", esxsim.port, 5)
        other = vsphere.connect("127.0.0.1", esxsim.port, [("empty", "")], pin=pin, timeout=10)
        other.content.accountManager.UpdateUser(  # someone else's host now answers at that address
            user=vim.host.LocalAccountManager.AccountSpecification(id="root", password="Someone-Else-1"))
        other.close()
        plugin.hostprofiles.watch_once()
        said = events(run)
        assert any("presents a new certificate but is not a freshly booted host" in m for m in said), said
        assert not any(m.startswith("esxi: reboot detected") for m in said)
    finally:
        run.appliance.stop()
