"""The `bootbox rule` and `bootbox host rules` commands through typer's runner, against a live appliance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

import bootbox_linux
from bootbox.appliance import Appliance
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.store.apitoken import read_token
from tests.conftest import test_settings


@pytest.fixture
def cli(tmp_path: Path) -> Iterator:
    settings = test_settings(tmp_path)
    appliance = Appliance(settings, load_entrypoints=False, extra_plugins=(bootbox_linux,))
    appliance.start()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux]))
    runner = CliRunner()
    env = {"BOOTBOX_TOKEN": read_token(settings.state_path) or "", "BOOTBOX_CONFIG": ""}
    url = f"http://127.0.0.1:{settings.http.port}"

    def run(*args: str, ok: bool = True):
        result = runner.invoke(app, ["--url", url, "--state-dir", str(settings.state_path), *args], env=env)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    try:
        run("profile", "add", "esxi-7", "--kernel", str(kernel))
        run("profile", "add", "esxi-8", "--kernel", str(kernel))
        yield run, appliance
    finally:
        appliance.stop()


def test_rule_lifecycle_from_the_command_line(cli, tmp_path: Path) -> None:
    run, appliance = cli
    out = run("rule", "add", "all", "--all-hosts", "--item", "image=esxi-7").output
    assert "added rule all at 0" in out
    run("rule", "add", "dell", "-p", "vendor=Dell", "-i", "image=esxi-8", "--at", "0", "--no-activate")
    assert "added rule 'dell' at 0" in run("rule", "diff").output
    listed = json.loads(run("rule", "list", "--set", "active", "--json").output)
    assert [r["name"] for r in listed] == ["all"]
    assert "activated the working set (1 change(s))" in run("rule", "activate").output
    table = run("rule", "list").output.splitlines()
    assert table[0].split() == ["#", "NAME", "V", "WHEN", "ITEMS"]
    assert table[1].split()[:2] == ["0", "dell"]
    # export → import round trip, YAML
    export = tmp_path / "rules.yaml"
    run("rule", "export", "-o", str(export))
    run("rule", "remove", "dell")
    assert "imported 2 rule(s) and activated them" in run("rule", "import", str(export)).output
    assert [r["name"] for r in json.loads(run("rule", "list", "--json").output)] == ["dell", "all"]
    assert "rolled back" in run("rule", "rollback").output


def test_compliance_and_repair_from_the_command_line(cli) -> None:
    run, appliance = cli
    run("rule", "add", "all", "--all-hosts", "--item", "image=esxi-7")
    service = appliance.service
    service.host_script("52:54:00:00:0d:01", {"manufacturer": "Dell"}, "127.0.0.1", "http://x")
    run("rule", "add", "dell", "-p", "vendor=dell", "-i", "image=esxi-8", "--at", "0")
    test_out = run("rule", "test").output
    assert "52:54:00:00:0d:01" in test_out and "esxi-7" in test_out and "esxi-8" in test_out
    assert "repaired 1 host(s)" in run("rule", "repair", "--host", "52-54-00-00-0D-01").output
    assert "Every known host complies." in run("rule", "test").output
    explained = run("host", "rules", "52:54:00:00:0d:01").output
    assert "[0] dell: MATCH  -> wins image" in explained
    assert "yes  vendor=dell   host has vendor=Dell" in explained
    ad_hoc = run("host", "rules", "--attr", "vendor=HPE").output
    assert "[0] dell: no match" in ad_hoc and "[1] all: MATCH  -> wins image" in ad_hoc


def test_bad_input_is_a_one_line_error(cli) -> None:
    run, _ = cli
    result = run("rule", "add", "x", "-p", "colour=red", "-i", "image=esxi-7", ok=False)
    assert result.exit_code == 1
    assert "unknown attribute 'colour'" in result.output
    result = run("rule", "add", "x", "-p", "vendor=a", "-i", "image", ok=False)
    assert result.exit_code == 1 and "--item" in result.output
