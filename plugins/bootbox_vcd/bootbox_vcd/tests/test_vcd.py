"""The vCloud Director agent plugin: config, VIB injection, its answers, stateful → stateless."""

from __future__ import annotations

import os
from typing import Any

import pytest
from typer.testing import CliRunner

from bootbox import ConfigError, Host, Profile
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.config import PushPolicy
from bootbox.testing import FakeHost, TestAppliance, bootbox_appliance, bootbox_config, bootbox_host, bootbox_plugins, bootbox_push_policy
from bootbox_vcd import VcdPlugin
from bootbox_vcd.config import parse_config
from bootbox_vcd.tests.vcd_endpoint import FakeVcd, fake_vcd

__all__ = ["bootbox_appliance", "bootbox_config", "bootbox_host", "bootbox_plugins", "bootbox_push_policy", "fake_vcd"]

SECRET = "vcd-host-pw-55"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"url": "ftp://vcd"}, "plugins.vcd.url"),
        ({"url": "https://vcd/x?y=1"}, "plugins.vcd.url"),
        ({"groups": "vcd"}, "plugins.vcd.groups"),
        ({"timeout": 0}, "plugins.vcd.timeout"),
        ({"password": "a", "password_file": "/etc/hostname"}, "plugins.vcd.password_file"),
        ({"password_file": "/nonexistent/pw"}, "plugins.vcd.password_file"),
        ({"vib": ""}, "plugins.vcd.vib"),
        ({"colour": "red"}, "plugins.vcd.colour"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.field == key


def test_config_reads_the_password_file_and_never_prints_it(tmp_path: Any) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cr3t\n")
    config = parse_config({"url": "https://vcd.example/agent/", "password_file": str(secret_file), "vib": "my-agent"})
    assert config.password == "s3cr3t" and config.url == "https://vcd.example/agent" and config.vib == "my-agent"
    assert "s3cr3t" not in repr(config)


def test_unconfigured_the_plugin_does_nothing() -> None:
    plugin = VcdPlugin()
    plugin.bootbox_configure(settings=type("S", (), {"plugins": {}})())
    host = Host(mac="52:54:00:00:00:01", associations={"group": "vcd"})
    assert plugin.bootbox_image_packages(host=host, profile=Profile("e", "esxi")) is None
    registered: list[str] = []
    plugin.bootbox_register_answer_inputs(register=lambda name, **kw: registered.append(name))
    assert registered == []


def test_the_agent_vib_is_injected_for_hosts_of_a_vcd_group() -> None:
    plugin = VcdPlugin()
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[plugin])
    plugin.bootbox_configure(settings=type("S", (), {"plugins": {"vcd": {"groups": ["vcd", "tenant-b"], "vib": "vcloud-agent-10"}}})())
    esxi = Profile("esxi-8", "esxi")
    for group, expected in (("vcd", [["vcloud-agent-10"]]), ("tenant-b", [["vcloud-agent-10"]]), ("lab", [])):
        host = Host(mac="52:54:00:00:00:01", associations={"group": group})
        assert pm.hook.bootbox_image_packages(host=host, profile=esxi) == expected
    linux = Host(mac="52:54:00:00:00:01", associations={"group": "vcd"})
    assert pm.hook.bootbox_image_packages(host=linux, profile=Profile("deb", "linux")) == []


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [VcdPlugin()]


@pytest.fixture
def bootbox_config(fake_vcd: FakeVcd) -> dict[str, Any]:
    return {"plugins": {"vcd": {"url": fake_vcd.url, "timeout": 2}}}


@pytest.fixture
def bootbox_push_policy() -> PushPolicy:
    return PushPolicy(attempts=2, timeout=5.0, first_delay=0.05, step_min=0.01, step_max=0.02, max_delay=0.1)


def _setup(appliance: TestAppliance, host: FakeHost, mode: str) -> None:
    api = appliance.api
    api.put("/profiles/fake", {"name": "fake", "kind": "fake", "spec": {"mode": mode}})
    api.post("/rules", {"name": "vcd-group", "all_hosts": True, "items": {"group": "vcd"}, "at": 0})
    api.request("PATCH", f"/hosts/{host.mac}/answers", {"values": {"vcd_host_password": SECRET}})


def test_a_stateful_host_must_be_unprepared_before_it_boots_stateless(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host, api = bootbox_host, bootbox_appliance.api
    _setup(bootbox_appliance, host, "install")
    host.boot()
    host.report_up()
    host.wait_for_state("configured")
    assert fake_vcd.received[-1].body["mode"] == "stateful"
    assert api.get("/vcd/hosts")[0]["mode"] == "stateful"

    api.put("/profiles/fake", {"name": "fake", "kind": "fake", "spec": {"mode": "stateless"}})
    assert host.reboot() in (409, 503)
    failed = host.wait_for_state("failed")
    assert "unprepare it first" in failed["reason"] and failed["pushes"]["vcd"]["result"] == "refused"
    assert len(fake_vcd.received) == 1  # refused before anything was sent
    assert host.report_up() == 409

    env = {**os.environ, "BOOTBOX_TOKEN": bootbox_appliance.token}
    cli = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[VcdPlugin()]))
    result = CliRunner().invoke(cli, ["--url", bootbox_appliance.url, "vcd", "unprepare", host.mac], env=env)
    assert result.exit_code == 0, result.output
    assert fake_vcd.paths()[-1] == f"/agent/hosts/{host.mac}/unprepare"
    assert api.get("/vcd/hosts") == []

    api.post(f"/hosts/{host.mac}/push", {})
    host.wait_for_state("configured")
    assert fake_vcd.received[-1].body["mode"] == "stateless"
    hosts = CliRunner().invoke(cli, ["--url", bootbox_appliance.url, "vcd", "hosts"], env=env)
    assert f"{host.mac}  stateless" in hosts.output


def test_hosts_outside_vcd_groups_are_not_asked_and_not_pushed(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host = bootbox_host
    assert "held" not in host.boot()
    assert host.report_up() in (200, 503)
    shown = host.wait_for_state("configured")
    assert shown["pushes"] == {} and fake_vcd.received == []
    assert [e["kind"] for e in host.events()][-1] == "booted"  # nothing to push: no more events
