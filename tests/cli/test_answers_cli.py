"""The CLI verbs of issue 4 against a running appliance: hostprofile, answer, host render/push/list, lint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import bootbox_linux
from bootbox import hookimpl
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.testing import FakeHost, TestAppliance, bootbox_appliance, bootbox_config, bootbox_host, bootbox_push_policy

__all__ = ["bootbox_appliance", "bootbox_config", "bootbox_host", "bootbox_push_policy"]  # bootbox_plugins is below

SECRET = "cli-secret-pw-8d1"


class Greeter:
    """A push that always works, so ``host push`` and ``host list`` have something to show."""

    __name__ = "greeter"

    @hookimpl
    def bootbox_host_up(self, host: Any) -> str:
        return f"hello {host.mac}"


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [bootbox_linux, Greeter()]


def _cli(appliance: TestAppliance, *args: str, token: bool = True, input: str | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in ("BOOTBOX_TOKEN", "BOOTBOX_URL", "BOOTBOX_CONFIG")}
    if token:
        env["BOOTBOX_TOKEN"] = appliance.token
    app = build_cli(make_plugin_manager(load_entrypoints=False))
    return CliRunner().invoke(app, ["--url", appliance.url, *args], env=env, input=input)


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    (tmp_path / "user-data.j2").write_text(
        "#cloud-config\nhostname: {{ answers.hostname }}\nchpasswd:\n  users:\n"
        "  - {name: root, password: '{{ answers.root_password }}', type: hash}\n")
    path = tmp_path / "web.yaml"
    path.write_text(
        "name: web\nkind: cloud-init\ndescription: web servers\n"
        "inputs:\n  - {name: hostname, validation: hostname}\n  - {name: root_password, type: password}\n"
        "templates:\n  user-data: {file: user-data.j2}\n")
    return path


def test_host_profiles_answers_render_push_and_list(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, profile_file: Path, tmp_path: Path
) -> None:
    app = bootbox_appliance
    added = _cli(app, "hostprofile", "add", str(profile_file))
    assert added.exit_code == 0 and "added host profile web version 1 (cloud-init)" in added.output
    replaced = _cli(app, "hostprofile", "replace", str(profile_file))
    assert "version 2" in replaced.output
    assert "web   cloud-init  2" in _cli(app, "hostprofile", "list").output
    assert "root_password (password, required, secret)" in _cli(app, "hostprofile", "show", "web").output
    app.api.post("/rules", {"name": "web", "all_hosts": True, "items": {"host_profile": "web"}, "at": 0})

    host = bootbox_host
    assert "held" in host.boot()
    shown = _cli(app, "answer", "show", host.mac)
    assert "missing (the host is held until they are set): hostname, root_password" in shown.output
    set_ = _cli(app, "answer", "set", host.mac, "hostname=web01", "--prompt", "root_password",
                input=f"{SECRET}\n{SECRET}\n")
    assert set_.exit_code == 0, set_.output
    shown = _cli(app, "answer", "show", host.mac).output
    assert "web01" in shown and "********" in shown and SECRET not in shown
    csv = tmp_path / "answers.csv"
    csv.write_text("mac,hostname,root_password\n52:54:00:b0:07:02,web02,pw2\n")
    assert "set answers for 1 host(s)" in _cli(app, "answer", "import", str(csv)).output
    bad = _cli(app, "answer", "set", host.mac, "hostname=not a name")
    assert bad.exit_code == 1 and "hostname" in bad.output

    masked = _cli(app, "host", "render", host.mac, "cloud-init", "--file", "user-data")
    assert masked.output.startswith("#cloud-config\nhostname: web01\n") and "<masked>" in masked.output
    revealed = _cli(app, "host", "render", host.mac, "cloud-init", "--file", "user-data", "--reveal")
    assert "password: '$6$" in revealed.output and SECRET not in revealed.output
    no_token = _cli(app, "host", "render", host.mac, "cloud-init", "--reveal", token=False)
    assert no_token.exit_code == 1 and "token" in no_token.output
    both = _cli(app, "host", "render", host.mac, "cloud-init").output
    assert "--- meta-data (host profile web v2)" in both and "--- user-data" in both

    host.boot()
    host.report_up()
    host.wait_for_state("configured")
    listing = _cli(app, "host", "list").output
    assert "LAST PUSH" in listing and "greeter ok" in listing
    pushed = _cli(app, "host", "push", host.mac)
    assert pushed.exit_code == 0 and "pushing to" in pushed.output
    host.wait_for_state("configured")
    assert sum(1 for e in host.events() if e["kind"] == "push") == 2


def test_lint_files_and_the_appliance(bootbox_appliance: TestAppliance, tmp_path: Path) -> None:
    app = bootbox_appliance
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nkind: preseed\ntemplates:\n  preseed.cfg: |\n"
                    "    d-i netcfg/get_hostname string {{ answers.hostname }}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: preseed\ntemplates:\n  preseed.cfg: |\n"
                   "    d-i netcfg/get_hostname string web01\n    d-i netcfg/get_ipaddress string 198.18.0.7\n")
    clean = _cli(app, "lint", str(good), "--strict")
    assert clean.exit_code == 0 and "0 warning(s)" in clean.output
    dirty = _cli(app, "lint", str(good), str(bad), "--strict")
    assert dirty.exit_code == 1
    assert "bad/preseed.cfg:1: warning: hard-coded host name 'web01'" in dirty.output
    assert "bad/preseed.cfg:2: warning: hard-coded address 198.18.0.7" in dirty.output
    added = _cli(app, "hostprofile", "add", str(bad))
    assert added.exit_code == 0 and "warning: bad/preseed.cfg:1" in added.output
    assert "2 warning(s)" in _cli(app, "lint").output
    assert "preseed" in _cli(app, "hostprofile", "kinds").output
