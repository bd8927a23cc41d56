"""The ansible plugin's pieces on their own: config, the key pair, the playbook checks, the
user-data the key goes into, and the host-profile kind in a real appliance (over HTTP)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from bootbox import ConfigError, PluginError, ValidationError
from bootbox.testing import (
    TestAppliance,
    bootbox_appliance,
    bootbox_config,
    bootbox_push_policy,
    http,
)
from bootbox_ansible import AnsiblePlugin, playbook, userdata, validate_host_profile
from bootbox_ansible.config import parse_config
from bootbox_ansible.keys import host_key, load_or_create
from bootbox_ansible.tests.support import (
    MARKER_PLAYBOOK,
    ansible_host_profile,
    authorized_keys,
)

__all__ = ["bootbox_appliance", "bootbox_config", "bootbox_push_policy"]  # fixtures, used by name

GOOD = MARKER_PLAYBOOK.format(marker="/tmp/x")


@pytest.mark.parametrize(("raw", "key"), [
    ({"user": "Root!"}, "plugins.ansible.user"),
    ({"port": 0}, "plugins.ansible.port"),
    ({"port": True}, "plugins.ansible.port"),
    ({"connect_timeout": 0}, "plugins.ansible.connect_timeout"),
    ({"command": 5}, "plugins.ansible.command"),
    ({"colour": "red"}, "plugins.ansible.colour"),
    ({"pin_host_keys": "yes"}, "plugins.ansible.pin_host_keys"),
    ({"python_interpreter": "python3"}, "plugins.ansible.python_interpreter"),
])
def test_config_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.field == key


def test_config_defaults() -> None:
    config = parse_config(None)
    assert (config.user, config.port, config.connect_timeout) == ("root", 22, 10.0)
    assert parse_config({"user": "deploy", "port": 2222}).port == 2222


def test_the_key_pair_is_made_once_private_0600_and_ssh_keygen_reads_it(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "ssh")
    mode = stat.S_IMODE(first.private_path.stat().st_mode)
    assert mode == 0o600 and first.public.startswith("ssh-ed25519 ")
    again = load_or_create(tmp_path / "ssh")
    assert again == first  # not made again at the next start
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(first.private_path)], capture_output=True, text=True,
                             check=True).stdout.split()[:2]
    assert derived == first.public.split()[:2]
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(first.private_path.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed[1] == first.fingerprint


def _raw(pem: str) -> bytes:
    """The key itself (an OpenSSH private key file has a random check number in it)."""
    key = serialization.load_ssh_private_key(pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def test_host_keys_are_per_boot_and_only_the_appliance_can_derive_them(tmp_path: Path) -> None:
    one, other = load_or_create(tmp_path / "one"), load_or_create(tmp_path / "other")
    first = host_key(one.private_path, "bootbox-525400a50001-aaaaaaaaaaaa")
    again = host_key(one.private_path, "bootbox-525400a50001-aaaaaaaaaaaa")  # every render of a boot
    assert again[1] == first[1] and _raw(again[0]) == _raw(first[0])
    assert first[1] != host_key(one.private_path, "bootbox-525400a50001-bbbbbbbbbbbb")[1]  # the next boot
    assert first[1] != host_key(other.private_path, "bootbox-525400a50001-aaaaaaaaaaaa")[1]  # another appliance
    key_file = tmp_path / "host_key"
    key_file.write_text(first[0])
    key_file.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == first[1].split()[:2]


def test_a_key_others_can_read_or_a_foreign_public_key_is_refused(tmp_path: Path) -> None:
    pair = load_or_create(tmp_path / "a")
    pair.private_path.chmod(0o644)
    with pytest.raises(PluginError, match="readable by others"):
        load_or_create(tmp_path / "a")
    pair.private_path.chmod(0o600)
    other = load_or_create(tmp_path / "b")
    (tmp_path / "a" / "id_ed25519.pub").write_text(other.public + "\n")
    with pytest.raises(PluginError, match="does not belong"):
        load_or_create(tmp_path / "a")


@pytest.mark.parametrize(("text", "field", "words"), [
    ("- hosts: all\n  tasks: [\n", "templates.playbook.yml", "not valid YAML"),
    ("hosts: all\n", "templates.playbook.yml", "list of plays"),
    ("- just a string\n", "templates.playbook.yml[0]", "expected a play"),
    ("- tasks: [{debug: {msg: hi}}]\n", "templates.playbook.yml[0].hosts", "required"),
    ("- hosts: web\n  tasks: [{debug: {msg: hi}}]\n", "templates.playbook.yml[0].hosts", "use 'all'"),
    ("- hosts: all\n", "templates.playbook.yml[0]", "does nothing"),
    ("- hosts: all\n  tasks: {debug: {msg: hi}}\n", "templates.playbook.yml[0].tasks", "expected a list"),
    ("- hosts: all\n  tasks: [{debug: {msg: hi}}]\n- import_playbook: other.yml\n",
     "templates.playbook.yml[1].import_playbook", "one file"),
    ("- hosts: all\n  connection: local\n  tasks: [{debug: {msg: hi}}]\n",
     "templates.playbook.yml[0].connection", "SSH"),
])
def test_bad_playbooks_are_refused_naming_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        playbook.check_template(text)
    assert info.value.field == field and words in info.value.message


def test_a_playbook_template_is_checked_whatever_the_answers() -> None:
    playbook.check_template(GOOD)
    loops = ("- hosts: all\n  tasks:\n{% for pkg in answers.packages %}\n    - apt: {name: '{{ pkg }}'}\n"
             "{% endfor %}\n    - debug: {msg: '{{ answers.hostname }}'}\n")
    playbook.check_template(loops)
    with pytest.raises(ValidationError) as info:
        validate_host_profile({"playbook.yml": GOOD, "ks.cfg": "x"})
    assert info.value.field == "templates.ks.cfg"


def test_the_key_is_added_to_the_cloud_config_for_root() -> None:
    text = userdata.with_key("#cloud-config\nhostname: web01\nssh_authorized_keys: [ssh-ed25519 AAAAother]\n",
                             "ssh-ed25519 AAAAbootbox bootbox", "root")
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["ssh_authorized_keys"] == ["ssh-ed25519 AAAAother", "ssh-ed25519 AAAAbootbox bootbox"]
    assert doc["disable_root"] is False and doc["hostname"] == "web01"
    assert authorized_keys(text)[-1] == "ssh-ed25519 AAAAbootbox bootbox"


def test_the_key_goes_to_a_named_user_and_refusals_name_the_field() -> None:
    text = userdata.with_key("#cloud-config\nusers: [default, {name: deploy, sudo: ALL=(ALL) NOPASSWD:ALL}]\n",
                             "ssh-ed25519 AAAAk", "deploy")
    doc = yaml.safe_load(text)
    assert doc["users"][1]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAk"] and "disable_root" not in doc
    for bad, field in (("#!/bin/sh\necho hi\n", "templates.user-data"),
                       ("#cloud-config\ndisable_root: true\n", "templates.user-data.disable_root"),
                       ("#cloud-config\nssh_authorized_keys: one\n", "templates.user-data.ssh_authorized_keys")):
        with pytest.raises(ValidationError) as info:
            userdata.with_key(bad, "ssh-ed25519 AAAAk", "root")
        assert info.value.field == field


# ------------------------------------------------------------------------------ in an appliance


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [AnsiblePlugin()]


def test_the_kind_renders_user_data_with_the_key_per_host_and_never_elsewhere(bootbox_appliance: TestAppliance) -> None:
    api = bootbox_appliance.api
    doc = ansible_host_profile("web", MARKER_PLAYBOOK.format(marker="/srv/marker"),
                               "#cloud-config\nhostname: {{ answers.hostname }}\n", inputs=["hostname"])
    api.post("/hostprofiles", doc)
    bootbox_appliance.add_fake_profile("fake", host_profile="web")
    host = bootbox_appliance.host("52:54:00:a5:00:01")
    api.request("PATCH", f"/hosts/{host.mac}/answers", {"values": {"hostname": "web01"}})
    host.boot()
    user_data = host.fetch_answer("user-data")
    assert user_data.status == 200, user_data.text
    public = next(bootbox_appliance.settings.state_path.rglob("id_ed25519.pub")).read_text().strip()
    assert authorized_keys(user_data.text) == [public]
    assert "hostname: web01" in user_data.text and "disable_root: false" in user_data.text
    meta = host.fetch_answer("meta-data")
    assert meta.status == 200 and "instance-id:" in meta.text
    # This boot's SSH host key, derived from its instance-id under the appliance's key.
    instance = yaml.safe_load(meta.text)["instance-id"]
    private = next(bootbox_appliance.settings.state_path.rglob("id_ed25519"))
    given = yaml.safe_load(user_data.text)["ssh_keys"]
    expected = host_key(private, instance)
    assert given["ed25519_public"] == expected[1] and _raw(given["ed25519_private"]) == _raw(expected[0])
    # Previews, masked or revealed, give no host key (and store none).
    for method in ("GET", "POST"):
        preview = http(method, f"{bootbox_appliance.url}/api/v1/hosts/{host.mac}/render/ansible",
                       headers={"Authorization": f"Bearer {bootbox_appliance.token}"})
        assert preview.status == 200 and "ssh_keys" not in preview.json()["files"]["user-data"], preview.text
        assert public in preview.json()["files"]["user-data"]
    rendered = host.fetch_answer("playbook.yml")
    assert rendered.status == 200 and "host web01 boot {{ bootbox.boot_id }}" in rendered.text
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # The key is this appliance's: `bootbox ansible key`'s API says the same, never the private key.
    info = api.get("/ansible/key")
    assert info["public_key"] == public and "PRIVATE" not in str(info)


def test_a_bad_playbook_is_refused_at_add_naming_the_field_and_nothing_is_stored(
        bootbox_appliance: TestAppliance) -> None:
    bad = ansible_host_profile("bad", "- hosts: webservers\n  tasks: [{debug: {msg: hi}}]\n")
    reply = http("POST", f"{bootbox_appliance.url}/api/v1/hostprofiles", bad,
                 headers={"Authorization": f"Bearer {bootbox_appliance.token}"})
    assert reply.status == 422 and reply.json()["error"]["field"] == "templates.playbook.yml[0].hosts", reply.text
    assert "use 'all'" in reply.text
    assert http("GET", f"{bootbox_appliance.url}/api/v1/hostprofiles/bad",
                headers={"Authorization": f"Bearer {bootbox_appliance.token}"}).status == 404
    shell = ansible_host_profile("shell", GOOD, "#!/bin/sh\necho not a cloud-config\n")
    reply = http("POST", f"{bootbox_appliance.url}/api/v1/hostprofiles", shell,
                 headers={"Authorization": f"Bearer {bootbox_appliance.token}"})
    assert reply.status == 422 and reply.json()["error"]["field"] == "templates.user-data", reply.text


def test_a_playbook_ansible_cannot_parse_is_refused_at_the_push_without_retries(
        bootbox_appliance: TestAppliance) -> None:
    """It passes bootbox's checks (the shape is right) but names a module Ansible does not have:
    ``ansible-playbook`` stops before any play, and retrying cannot help."""
    api = bootbox_appliance.api
    api.post("/hostprofiles", ansible_host_profile(
        "typo", "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: oops\n      no_such_module_xyz: {}\n"))
    bootbox_appliance.add_fake_profile("fake", host_profile="typo")
    host = bootbox_appliance.host("52:54:00:a5:00:03")
    host.boot()
    assert host.fetch_answer("user-data").status == 200  # as cloud-init does: its keys for this boot
    assert host.report_up() == 503
    shown = host.wait_for_state("failed", "configured", timeout=120)
    assert shown["state"] == "failed" and shown["pushes"]["ansible"]["result"] == "refused"
    assert shown["pushes"]["ansible"]["attempts"] == 1
    assert "no_such_module_xyz" in shown["reason"] and "host profile typo" in shown["reason"]


def test_hosts_without_an_ansible_host_profile_get_no_push(bootbox_appliance: TestAppliance) -> None:
    bootbox_appliance.add_fake_profile("fake")
    host = bootbox_appliance.host("52:54:00:a5:00:04")
    host.boot()
    host.report_up()
    shown = host.wait_for_state("configured", "failed")
    assert shown["state"] == "configured" and "ansible" not in shown["pushes"]
    assert not [e for e in host.events() if e["kind"] == "push"]


def test_a_host_that_did_not_fetch_its_user_data_is_not_pushed_to(bootbox_appliance: TestAppliance) -> None:
    """Without this boot's user-data the host has neither the appliance's key nor a host key the
    push could check: each attempt says so (and no ssh is tried), retried with the backoff."""
    bootbox_appliance.api.post("/hostprofiles", ansible_host_profile("web", "- hosts: all\n  tasks: [{ping: {}}]\n"))
    bootbox_appliance.add_fake_profile("fake", host_profile="web")
    host = bootbox_appliance.host("52:54:00:a5:00:05")
    host.boot()
    host.report_up()
    shown = host.wait_for_state("failed", "configured", timeout=60)
    assert shown["state"] == "failed" and shown["pushes"]["ansible"]["attempts"] == 3
    attempts = [e for e in host.events() if e["kind"] == "push" and "result" in e["data"]]
    assert [e["data"]["result"] for e in attempts] == ["retry", "retry", "failed"]
    assert all("has not fetched its user-data" in e["message"] for e in attempts)
    assert not [e for e in host.events() if e["kind"] == "push" and "task" in e["data"]]
