"""The host-profile applier against a real vSphere API: govmomi's ESXi simulator (``esxsim``).

Each test starts a fresh simulated stateless host (empty root password), applies a profile
through pyVmomi, reads it back and checks compliance, as bootbox does after a host's boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootbox_esxi.hostprofile import apply as applier
from bootbox_esxi.hostprofile import schema, vsphere
from bootbox_esxi.hostprofile.diff import compliant
from bootbox_esxi.tests.esxsim import EsxSim

PROFILE = """
vswitches:
  - {name: vSwitch1, uplinks: [vmnic1], mtu: 9000, ports: 256}
portgroups:
  - {name: storage, vswitch: vSwitch1, vlan: 20}
  - {name: vmotion, vswitch: vSwitch1, vlan: 30}
vmknics:
  - {portgroup: storage, ip: 198.18.1.5/24, mtu: 9000}
dns: {hostname: esx01, domain: lab.example, servers: [198.18.0.53, 198.18.0.54], search: [lab.example]}
ntp: {servers: [198.18.0.1], policy: on}
services:
  TSM-SSH: {policy: on}
  TSM: {policy: off}
firewall: {sshServer: true, nfsClient: true}
advanced: {Syslog.global.logHost: "udp://198.18.0.9:514"}
nfs:
  - {name: iso, host: 198.18.0.7, path: /export/iso, readonly: true}
users:
  - {name: ops, password: {input: ops_password}, description: operators}
root_password: {input: root_password}
license: {input: license_key}
"""
INPUTS = {"root_password": True, "ops_password": True, "license_key": True}
ANSWERS = {"root_password": "Root-Pass-1", "ops_password": "Ops-Pass-1", "license_key": "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"}


def desired(text: str = PROFILE, answers: dict[str, str] | None = None):
    return schema.load(text, schema.secrets_from(INPUTS, answers or ANSWERS))


def session(sim: EsxSim, *passwords: tuple[str, str]) -> vsphere.Session:
    pin = vsphere.thumbprint("127.0.0.1", sim.port, 5)
    assert pin == sim.info["thumbprint_sha256"]
    return vsphere.connect("127.0.0.1", sim.port, passwords or [("empty", "")], pin=pin, timeout=10)


def verify(sim: EsxSim):
    def check(password: str) -> bool:
        try:
            session(sim, ("profile", password)).close()
        except vsphere.LoginRefused:
            return False
        return True
    return check


def test_a_profile_applies_reads_back_and_complies(esxsim: EsxSim) -> None:
    (esxsim.workdir / "iso").mkdir()  # the simulator backs an NFS datastore with a local directory
    want = desired()
    first = session(esxsim, ("the profile's root password", ANSWERS["root_password"]), ("the empty password", ""))
    assert first.password_label == "the empty password"
    assert not compliant(applier.check(first, want))
    report = applier.apply(first, want, verify(esxsim))
    first.close()
    assert report.failed == [], report.to_dict()
    assert report.count(applier.CHANGED) >= 14 and report.login == "the empty password"
    by_key = {o.key: o for o in report.outcomes}
    assert by_key["service:TSM"].result == applier.COMPLIED  # off on a fresh host already
    assert by_key["root_password"].result == applier.CHANGED

    again = session(esxsim, ("the profile's root password", ANSWERS["root_password"]), ("the empty password", ""))
    assert again.password_label == "the profile's root password"
    changes = applier.check(again, want)
    assert compliant(changes), [c.to_dict() for c in changes if not c.complies]
    live = vsphere.read(again, ["Syslog.global.logHost"])
    assert {v.name: (v.uplinks, v.mtu, v.ports) for v in live.vswitches}["vSwitch1"] == (("vmnic1",), 9000, 256)
    assert live.dns is not None and live.dns.servers == ("198.18.0.53", "198.18.0.54")
    assert live.services["TSM-SSH"].running and live.services["ntpd"].policy == "on"
    assert live.advanced["Syslog.global.logHost"] == "udp://198.18.0.9:514"
    assert [(n.name, n.host, n.path) for n in live.nfs] == [("iso", "198.18.0.7", "/export/iso")]
    second = applier.apply(again, want, verify(esxsim))
    assert second.count(applier.COMPLIED) == len(second.outcomes)
    again.close()


def test_a_setting_the_host_refuses_fails_with_its_fault_and_the_rest_applies(esxsim: EsxSim) -> None:
    text = PROFILE.replace("uplinks: [vmnic1]", "uplinks: [vmnic7]")  # the host has vmnic0 and vmnic1
    report = applier.apply(session(esxsim), desired(text), verify(esxsim))
    failed = {o.key: o for o in report.failed}
    assert "vim.fault.NotFound" in failed["vswitch:vSwitch1"].fault and "vmnic7" in failed["vswitch:vSwitch1"].fault
    assert "vim.fault.NotFound" in failed["nfs:iso"].fault  # no backing directory: refused too
    assert "portgroup:storage" in failed  # its vSwitch is missing
    assert {o.key for o in report.outcomes if o.result == applier.CHANGED} >= {"dns", "ntp", "service:TSM-SSH"}


def test_wrong_credentials_fail_clearly(esxsim: EsxSim) -> None:
    with pytest.raises(vsphere.LoginRefused, match=r"root login to 127\.0\.0\.1:\d+ refused \(InvalidLogin\) with "
                                                   r"the profile's root password"):
        session(esxsim, ("the profile's root password", "not-it"))


def test_another_certificate_than_the_pinned_one_is_refused(esxsim: EsxSim) -> None:
    pin = vsphere.thumbprint("127.0.0.1", esxsim.port, 5)
    esxsim.restart()  # a new certificate
    with pytest.raises(vsphere.CertificateMismatch):
        vsphere.connect("127.0.0.1", esxsim.port, [("empty", "")], pin=pin, timeout=10)


def test_a_restart_is_a_stateless_reboot(esxsim: EsxSim) -> None:
    (esxsim.workdir / "iso").mkdir()
    first = session(esxsim)
    applier.apply(first, desired(), verify(esxsim))
    boot = first.boot_time
    first.close()
    esxsim.restart()
    fresh = session(esxsim, ("profile", ANSWERS["root_password"]), ("empty", ""))
    assert fresh.password_label == "empty" and fresh.boot_time != boot
    assert not compliant(applier.check(fresh, desired()))
    fresh.close()


def test_extract_from_a_reference_host_gives_a_profile_that_configures_another(esxsim: EsxSim, tmp_path: Path) -> None:
    import jinja2
    import yaml

    from bootbox_esxi.hostprofile.extract import extract
    from bootbox_esxi.tests.esxsim import EsxSim as Sim

    (esxsim.workdir / "iso").mkdir()
    applier.apply(session(esxsim), desired(), verify(esxsim))
    text, answers, seen = extract(esxsim.address, user="root", password=ANSWERS["root_password"], name="ref")
    assert seen == esxsim.info["thumbprint_sha256"]
    doc = yaml.safe_load(text)
    assert doc["kind"] == "esxi" and doc["name"] == "ref"
    inputs = {i["name"]: i for i in doc["inputs"]}
    assert answers == {"vmk_storage_ip": "198.18.1.5/24", "hostname": "esx01"}
    assert inputs["root_password"]["type"] == "password" and inputs["license_key"]["type"] == "password"
    template = doc["templates"]["host.yaml"]
    assert "198.18.1.5" not in template and "esx01" not in template  # per-host values are answers
    rendered = jinja2.Template(template).render(answers=answers)
    secrets = {name: spec.get("type") == "password" for name, spec in inputs.items()}
    values = {**answers, "root_password": "Root-2", "ops_password": "x", "admin_password": "y",
              "license_key": ANSWERS["license_key"]}
    want = schema.load(rendered, schema.secrets_from(secrets, values))
    other = Sim(esxsim.binary, tmp_path / "other")
    other.start()
    try:
        (other.workdir / "iso").mkdir()
        report = applier.apply(session(other), want, verify(other))
        assert report.failed == [], report.to_dict()
        assert compliant(applier.check(session(other, ("p", "Root-2")), want))
    finally:
        other.stop()


def test_a_free_licence_host_refuses_writes_and_the_round_stops(esxsim_binary: Path, tmp_path: Path) -> None:
    free = EsxSim(esxsim_binary, tmp_path / "free", edition="free")
    free.start()
    try:
        report = applier.apply(session(free), desired(), verify(free))
    finally:
        free.stop()
    assert report.restricted
    [first] = [o for o in report.outcomes if o.result == applier.FAILED]
    assert first.key == "license" and first.fault.startswith("vim.fault.RestrictedVersion")
    assert all(o.result == applier.SKIPPED for o in report.outcomes if o.result not in (applier.FAILED, applier.COMPLIED))
    assert report.count(applier.SKIPPED) >= 10


def test_the_extract_command_writes_a_profile_bootbox_accepts(esxsim: EsxSim, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from bootbox.cli import build_cli
    from bootbox.core.hostprofile import parse_host_profile
    from bootbox.hooks.manager import make_plugin_manager
    from bootbox_esxi import EsxiPlugin

    (esxsim.workdir / "iso").mkdir()
    applier.apply(session(esxsim), desired(), verify(esxsim))
    (tmp_path / "pw").write_text(ANSWERS["root_password"] + "\n")
    app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[EsxiPlugin()]))
    out = tmp_path / "esx.yaml"
    result = CliRunner().invoke(app, ["hostprofile", "extract", "--from", esxsim.address, "--password-file",
                                      str(tmp_path / "pw"), "--name", "esx-ref", "-o", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception}"
    assert "answers for that host: bootbox answer set MAC" in result.output and "hostname=esx01" in result.output
    profile = parse_host_profile(yaml.safe_load(out.read_text()), kinds={"esxi": ("host.yaml",)})
    assert profile.kind == "esxi" and profile.input("root_password") is not None
    wrong = CliRunner().invoke(app, ["hostprofile", "extract", "--from", esxsim.address])
    assert wrong.exit_code != 0 and "InvalidLogin" in f"{wrong.output}\n{wrong.exception}"
