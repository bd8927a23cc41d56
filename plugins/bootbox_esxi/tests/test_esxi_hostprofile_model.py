"""The ``esxi`` host-profile document (schema) and the diff against a live state: pure code,
no simulator. Every error names its field; the diff lists every setting the profile names, in
apply order, and says which already comply."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bootbox import ValidationError
from bootbox_esxi.hostprofile import schema
from bootbox_esxi.hostprofile.diff import ADD, NONE, UPDATE, compliant, diff
from bootbox_esxi.hostprofile.model import Dns, HostConfig, Nfs, PortGroup, Service, User, VmkNic, VSwitch

INPUTS = {"root_password": True, "ops_password": True, "hostname": False}
ANSWERS = {"root_password": "Root-1", "ops_password": "Ops-1", "hostname": "esx01"}
DOC = """
vswitches: [{name: vSwitch1, uplinks: [vmnic1, vmnic2], mtu: 9000}]
portgroups: [{name: storage, vswitch: vSwitch1, vlan: 20}, {name: vm, vswitch: vSwitch0}]
vmknics: [{portgroup: storage, ip: 198.18.1.5/24, mtu: 9000}]
dns: {hostname: esx01, domain: lab.example, servers: [198.18.0.53], search: [lab.example]}
ntp: {servers: [198.18.0.1, pool.ntp.org], policy: on}
services: {TSM-SSH: {policy: on}, TSM: {policy: off}}
firewall: {sshServer: true, CIMSLP: false}
advanced: {Syslog.global.logHost: "udp://198.18.0.9:514", Net.TcpipHeapSize: 32}
nfs: [{name: iso, host: 198.18.0.7, path: /export/iso, readonly: true, version: 4.1}]
users: [{name: ops, password: {input: ops_password}}]
root_password: {input: root_password}
license: AAAAA-BBBBB-CCCCC-DDDDD-EEEEE
"""


def parse(text: str = DOC, answers: dict[str, str] | None = None) -> HostConfig:
    return schema.load(text, schema.secrets_from(INPUTS, ANSWERS if answers is None else answers))


def test_a_full_document_parses_into_the_desired_state() -> None:
    want = parse()
    assert want.vswitches == (VSwitch("vSwitch1", ("vmnic1", "vmnic2"), 9000, 128),)
    assert want.portgroups[1] == PortGroup("vm", "vSwitch0", 0)
    assert want.vmknics == (VmkNic("storage", "198.18.1.5/24", 9000),)
    assert want.ntp_servers == ("198.18.0.1", "pool.ntp.org")
    assert want.services["ntpd"] == Service("on", True) and want.services["TSM"] == Service("off", False)
    assert want.services["TSM-SSH"] == Service("on", True)
    assert want.nfs == (Nfs("iso", "198.18.0.7", "/export/iso", True, "NFS41"),)
    assert want.users == (User("ops", "Ops-1"),) and want.root_password == "Root-1"
    assert want.advanced == {"Syslog.global.logHost": "udp://198.18.0.9:514", "Net.TcpipHeapSize": 32}
    assert "Root-1" not in repr(want) and "Ops-1" not in repr(want)


@pytest.mark.parametrize(("text", "field", "words"), [
    ("vswitches: [{name: vSwitch1, mtu: 20000}]", "host.yaml: vswitches[0].mtu", "1280 to 9000"),
    ("vswitches: [{name: vSwitch1, uplinks: [eth0]}]", "host.yaml: vswitches[0].uplinks[0]", "vmnic1"),
    ("vswitches: [{name: a}, {name: a}]", "host.yaml: vswitches[1]", "declared twice"),
    ("portgroups: [{name: pg, vswitch: nope}]", "host.yaml: portgroups[0].vswitch", "not a vSwitch"),
    ("portgroups: [{name: pg, vswitch: vSwitch0, vlan: 5000}]", "host.yaml: portgroups[0].vlan", "0 to 4095"),
    ("vmknics: [{portgroup: storage}]", "host.yaml: vmknics[0].portgroup", "not a port group"),
    ("vmknics: [{portgroup: VM Network, ip: 198.18.1.5}]", "host.yaml: vmknics[0].ip", "prefix"),
    ("dns: {servers: [not-an-ip]}", "host.yaml: dns.servers[0]", "not an IP address"),
    ("ntp: {servers: [a], policy: sometimes}", "host.yaml: ntp.policy", "not one of"),
    ("services: {ntpd: {policy: on}}\nntp: {servers: [a]}", "host.yaml: services.ntpd", "under ntp"),
    ("firewall: {sshServer: yes-please}", "host.yaml: firewall.sshServer", "true or false"),
    ("advanced: {logHost: x}", "host.yaml: advanced.logHost", "advanced option key"),
    ("nfs: [{name: iso, host: 198.18.0.7, path: export}]", "host.yaml: nfs[0].path", "absolute"),
    ("root_password: hunter2", "host.yaml: root_password", "never sits in the profile"),
    ("root_password: {input: hostname}", "host.yaml: root_password.input", "must be secret"),
    ("root_password: {input: nope}", "host.yaml: root_password.input", "not an input"),
    ("users: [{name: root, password: {input: root_password}}]", "host.yaml: users[0].name", "root_password"),
    ("license: 12345", "host.yaml: license", "licence key"),
    ("vswitch: []", "host.yaml: (document).vswitch", "unknown field"),
    ("vswitches: [{name: a, mtu: 9000}\n", "host.yaml: (document)", "not valid YAML"),
])
def test_every_error_names_its_field(text: str, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(text)
    assert caught.value.field == field and words in caught.value.message, (caught.value.field, caught.value.message)


def test_a_masked_preview_validates_without_secrets() -> None:
    want = schema.load(DOC, schema.secrets_from(INPUTS, ANSWERS, masked=True))
    assert want.root_password is None and want.users[0].password == ""


def live() -> HostConfig:
    """A host with part of the profile already in place."""
    return HostConfig(
        vswitches=(VSwitch("vSwitch0", ("vmnic0",), 1500, 128), VSwitch("vSwitch1", ("vmnic1", "vmnic2"), 1500, 128)),
        portgroups=(PortGroup("storage", "vSwitch1", 20),),
        dns=Dns("localhost", "localdomain", (), ()), ntp_servers=(),
        services={"TSM-SSH": Service("off", False), "TSM": Service("off", False), "ntpd": Service("off", False)},
        firewall={"sshServer": False, "CIMSLP": False},
        advanced={"Net.TcpipHeapSize": 32},
        users=(User("root"), User("ops")), root_password="", license="00000-00000-00000-00000-00000")


def test_the_diff_names_every_setting_in_apply_order() -> None:
    changes = diff(parse(), live())
    keys = [c.key for c in changes]
    assert keys[0] == "license" and keys[-1] == "root_password"
    assert keys.index("vswitch:vSwitch1") < keys.index("portgroup:storage") < keys.index("vmknic:storage")
    by = {c.key: c for c in changes}
    assert by["vswitch:vSwitch1"].action == UPDATE and "mtu=1500" in by["vswitch:vSwitch1"].have
    assert by["portgroup:storage"].action == NONE and by["portgroup:vm"].action == ADD
    assert by["vmknic:storage"].action == ADD and by["nfs:iso"].action == ADD
    assert by["service:TSM"].action == NONE and by["service:TSM-SSH"].action == UPDATE
    assert by["firewall:CIMSLP"].action == NONE and by["firewall:sshServer"].action == UPDATE
    assert by["advanced:Net.TcpipHeapSize"].action == NONE
    assert by["advanced:Syslog.global.logHost"].action == ADD
    assert by["user:ops"].action == NONE and by["root_password"].action == UPDATE
    assert by["license"].want == "AAAAA-…" and "BBBBB" not in str([c.to_dict() for c in changes])
    assert "Root-1" not in str([c.to_dict() for c in changes])
    assert not compliant(changes)


def test_a_host_that_has_everything_complies() -> None:
    want = parse()
    have = replace(want, users=(User("root"), User("ops")), dns=replace(want.dns, hostname="esx01"),
                   advanced={k: str(v) for k, v in want.advanced.items()},
                   vswitches=want.vswitches + (VSwitch("vSwitch0", ("vmnic0",)),))
    changes = diff(want, have)
    assert compliant(changes), [c.to_dict() for c in changes if not c.complies]


def test_dns_fields_the_profile_leaves_out_keep_the_hosts_values() -> None:
    want = parse("dns: {servers: [198.18.0.53]}")
    [change] = diff(want, HostConfig(dns=Dns("esx07", "lab.example", ("198.18.0.53",), ())))
    assert change.action == NONE and change.item.hostname == "esx07"


def test_a_change_never_shows_the_secret_it_carries() -> None:
    """``Change.item`` is what the applier writes (the root password itself); a repr in a log
    line or an assertion message must not show it, as the model's own reprs do not."""
    want = HostConfig(root_password="S3cret-pw", license="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")
    changes = diff(want, HostConfig(root_password="other"))
    assert [c.item for c in changes] == ["AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "S3cret-pw"]
    assert "S3cret-pw" not in repr(changes) and "BBBBB" not in repr(changes)
