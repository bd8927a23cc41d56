"""The vCloud Director plugin: config, VIB injection, its answers, and the vCloud API host extension.

The after-boot tests run the whole path over real HTTP on loopback: the appliance (waitress),
the fake host's report-in, and ``vcd_endpoint`` (the vCloud API stand-in, http.server), which
refuses anything but the published URLs, media types and XML.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
from typer.testing import CliRunner

from bootbox import ConfigError, Host, HostProfile, Profile, PushRefused, hookimpl
from bootbox.cli import build_cli
from bootbox.config import PushPolicy
from bootbox.hooks.manager import make_plugin_manager
from bootbox.testing import FakeHost, TestAppliance, bootbox_appliance, bootbox_host
from bootbox_vcd import VcdPlugin, vcloud
from bootbox_vcd.config import parse_config
from bootbox_vcd.tests import vcd_endpoint
from bootbox_vcd.tests.vcd_endpoint import FakeVcd, fake_vcd
from tests.support.lab_fixtures import lab_unavailable

__all__ = ["bootbox_appliance", "bootbox_host", "fake_vcd"]  # fixtures used by name; the others are defined below

SECRET = "vcd-host-pw-55"
API_USER, API_PASSWORD = "bootbox", "vcd-api-pw"
ADDRESS = "127.0.0.1"  # what the fake host reports in from


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"url": "ftp://vcd"}, "plugins.vcd.url"),
        ({"url": "https://vcd/x?y=1"}, "plugins.vcd.url"),
        ({"url": "https://vcd/cloud"}, "plugins.vcd.url"),
        ({"groups": "vcd"}, "plugins.vcd.groups"),
        ({"timeout": 0}, "plugins.vcd.timeout"),
        ({"poll_seconds": 301}, "plugins.vcd.poll_seconds"),
        ({"org": ""}, "plugins.vcd.org"),
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
    config = parse_config({"url": "https://vcd.example/api/", "password_file": str(secret_file), "vib": "my-agent"})
    assert config.password == "s3cr3t" and config.url == "https://vcd.example" and config.vib == "my-agent"
    assert config.org == "System" and config.verify_tls and "s3cr3t" not in repr(config)


def test_version_choice_prefers_5_1_then_older() -> None:
    assert vcloud.choose_version(["1.5", "5.1", "5.5", "27.0"]) == "5.1"
    assert vcloud.choose_version(["1.5", "5.5"]) == "1.5"
    assert vcloud.choose_version(["5.5", "9.0", "31.0"]) == "5.5"  # nothing older: the oldest usable
    with pytest.raises(vcloud.VcdProtocolError, match="deprecated from 31.0"):
        vcloud.choose_version(["31.0", "33.0"])


def test_the_names_vcd_is_asked_for_come_from_the_host_profile_then_the_address() -> None:
    plugin = VcdPlugin()
    plugin.bootbox_configure(settings=type("S", (), {"plugins": {"vcd": {"url": "https://vcd"}}})())
    host = Host(mac="52:54:00:00:00:01", attrs={"ipv4": "198.18.0.7"})
    assert plugin.vcd_names(host, None, {"hostname": "esx01", "domain": "lab.example"}) == \
        ["esx01.lab.example", "esx01", "198.18.0.7"]
    assert plugin.vcd_names(host, None, {"hostname": "esx01.lab"}) == ["esx01.lab", "198.18.0.7"]
    assert plugin.vcd_names(host, None, {"hostname": "bad,name"}) == ["198.18.0.7"]  # never into a FIQL filter


def test_unconfigured_the_plugin_does_nothing() -> None:
    plugin = VcdPlugin()
    plugin.bootbox_configure(settings=type("S", (), {"plugins": {}})())
    host = Host(mac="52:54:00:00:00:01", associations={"group": "vcd"})
    assert plugin.bootbox_image_inject(image_kind="esxi", host=host) is None
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
        assert pm.hook.bootbox_image_inject(image_kind="esxi", image_name=esxi.name, host=host) == expected
    linux = Host(mac="52:54:00:00:00:01", associations={"group": "vcd"})
    assert pm.hook.bootbox_image_inject(image_kind="linux", image_name="deb", host=linux) == []
    assert pm.hook.bootbox_image_inject(image_kind="esxi", image_name=esxi.name, host=None) == []


# ------------------------------------------------------------------------------ the endpoint itself


def _raw(method: str, url: str, headers: Mapping[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, Mapping[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_the_endpoint_refuses_what_vcd_refuses(fake_vcd: FakeVcd) -> None:
    """The stand-in must not accept a sloppy client: every refusal with vCD's Error document."""
    base = fake_vcd.url
    assert _raw("GET", f"{base}/api/versions")[0] == 200
    login = {"Authorization": "Basic " + base64.b64encode(f"{API_USER}@System:{API_PASSWORD}".encode()).decode()}
    assert _raw("POST", f"{base}/api/sessions", login)[0] == 406  # no version in Accept
    v51 = {"Accept": "application/*+xml;version=5.1"}
    assert _raw("POST", f"{base}/api/sessions", {**v51, "Authorization": "Basic eDp5"})[0] == 401
    status, _, body = _raw("GET", f"{base}/api/query?type=host", v51)
    assert status == 401 and vcloud.error_document(body).startswith("This operation is denied")
    status, headers, _ = _raw("POST", f"{base}/api/sessions", {**login, **v51})
    auth = {**v51, "x-vcloud-authorization": headers["x-vcloud-authorization"]}
    assert _raw("GET", f"{base}/api/query?type=host", {"x-vcloud-authorization": auth["x-vcloud-authorization"]})[0] == 406
    assert _raw("GET", f"{base}/api/nothing", auth)[0] == 404
    assert _raw("PUT", f"{base}/api/query?type=host", auth)[0] == 405
    host = fake_vcd.add_host("esx01.lab")
    action = f"{base}/api/admin/extension/host/{host.id}/action"
    params = vcloud.prepare_params("root", "pw")
    assert _raw("POST", f"{action}/prepare", {**auth, "Content-Type": "application/json"}, params)[0] == 415
    typed = {**auth, "Content-Type": vcloud.PREPARE_PARAMS}
    assert _raw("POST", f"{action}/prepare", typed, b"<PrepareHostParams/>")[0] == 400  # wrong namespace
    assert _raw("POST", f"{action}/repair", auth)[0] == 400  # not prepared yet
    assert _raw("POST", f"{action}/repair", auth, b"x=1")[0] == 415  # an action without a body takes none
    status, _, body = _raw("POST", f"{action}/prepare", typed, params)
    assert status == 202 and vcloud.task(body, "prepare").status == "running"
    assert _raw("DELETE", f"{base}/api/session", auth)[0] == 204
    assert _raw("GET", f"{base}/api/query?type=host", auth)[0] == 401  # logged out


# ------------------------------------------------------------------------------ after boot, for real


class HostnameKind:
    """A host-profile kind with no files, so a test host can carry a ``hostname`` answer."""

    __name__ = "hostname-kind"

    @hookimpl
    def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
        register("names", files=("names.txt",), description="test: per-host names only")

    @hookimpl
    def bootbox_render_answer_file(self, kind: str, host: Host, profile: HostProfile, answers: Mapping[str, Any],
                                   env: Any) -> dict[str, str] | None:
        return {"names.txt": f"{answers['hostname']}\n"} if kind == "names" else None


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [VcdPlugin(), HostnameKind()]


@pytest.fixture
def bootbox_config(fake_vcd: FakeVcd) -> dict[str, Any]:
    return {"plugins": {"vcd": {"url": fake_vcd.url, "username": API_USER, "password": API_PASSWORD, "timeout": 2,
                                "poll_seconds": 0.02}}}


@pytest.fixture
def bootbox_push_policy() -> PushPolicy:
    return PushPolicy(attempts=2, timeout=5.0, first_delay=0.05, step_min=0.01, step_max=0.02, max_delay=0.1)


def _setup(appliance: TestAppliance, host: FakeHost, mode: str = "stateless", hostname: str = "") -> None:
    api = appliance.api
    api.put("/profiles/fake", {"name": "fake", "kind": "fake", "spec": {"mode": mode}})
    items = {"group": "vcd"}
    if hostname:
        api.post("/hostprofiles", {"name": "esx", "kind": "names", "inputs": [{"name": "hostname"}],
                                   "templates": {"names.txt": "{{ answers.hostname }}"}})
        items["host_profile"] = "esx"
    api.post("/rules", {"name": "vcd-group", "all_hosts": True, "items": items, "at": 0})
    values = {"vcd_host_password": SECRET, **({"hostname": hostname} if hostname else {})}
    api.request("PATCH", f"/hosts/{host.mac}/answers", {"values": values})


def _pushes(host: FakeHost) -> list[dict[str, Any]]:
    return [e for e in host.events() if e["kind"] == "push"]


def test_first_boot_prepares_and_a_stateless_reboot_repairs(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host, api = bootbox_host, bootbox_appliance.api
    _setup(bootbox_appliance, host, hostname="esx01")
    fake_vcd.add_host("esx01")  # registered in vCenter (and so vCD) under its host-profile hostname
    host.boot()
    host.report_up()
    shown = host.wait_for_state("configured", "failed")
    assert shown["state"] == "configured", host.events()
    assert "host esx01 prepared in vCD: task success (API 5.1" in shown["pushes"]["vcd"]["message"]
    vcd_host = fake_vcd.host("esx01")
    assert vcd_host.prepared and vcd_host.ready and vcd_host.prepared_with == ("root", SECRET)
    assert fake_vcd.requests() == [
        "GET /api/versions", "POST /api/sessions", "GET /api/query", f"GET /api/admin/extension/host/{vcd_host.id}",
        f"POST /api/admin/extension/host/{vcd_host.id}/action/prepare",
        *[f"GET /api/task/{next(iter(fake_vcd.tasks))}"] * 2, "DELETE /api/session"]
    prepare = next(r for r in fake_vcd.received if r.path.endswith("/action/prepare"))
    assert prepare.headers["Content-Type"] == vcloud.PREPARE_PARAMS
    assert prepare.headers["Accept"] == "application/*+xml;version=5.1"
    record = api.get("/vcd/hosts")[0]
    assert record["prepared"] and record["action"] == "prepare" and record["vcd_name"] == "esx01"

    # A stateless reboot: vCD (through vCenter) sees the host prepared but not Ready.
    fake_vcd.reboot("esx01")
    host.reboot()
    shown = host.wait_for_state("configured", "failed")
    assert "host esx01 repaired in vCD: task success" in shown["pushes"]["vcd"]["message"]
    assert fake_vcd.actions() == ["prepare", "repair"] and fake_vcd.host("esx01").ready

    # Booted again while vCD still has it Ready: nothing to do, and nothing done.
    host.reboot()
    shown = host.wait_for_state("configured", "failed")
    assert "prepared and ready in vCD already" in shown["pushes"]["vcd"]["message"]
    assert fake_vcd.actions() == ["prepare", "repair"]

    env = {**os.environ, "BOOTBOX_TOKEN": bootbox_appliance.token}
    cli = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[VcdPlugin()]))
    listed = CliRunner().invoke(cli, ["--url", bootbox_appliance.url, "vcd", "hosts", "--json"], env=env)
    assert listed.exit_code == 0 and '"vcd_name": "esx01"' in listed.output
    # The password went to vCD, and nowhere else.
    assert SECRET not in str(host.events()) + str(api.get("/hosts")) + str(api.get("/vcd/hosts"))


def test_a_host_vcd_does_not_know_is_one_timeline_entry_and_no_retries(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host = bootbox_host
    _setup(bootbox_appliance, host)
    fake_vcd.add_host("other-host")
    host.boot()
    host.report_up()
    failed = host.wait_for_state("failed")
    pushes = _pushes(host)
    assert len(pushes) == 1 and pushes[0]["data"]["result"] == "refused"
    assert "not in vCD; is it in vCenter?" in pushes[0]["message"] and ADDRESS in pushes[0]["message"]
    assert "not in vCD" in failed["reason"]
    assert fake_vcd.requests().count("GET /api/query") == 1 and fake_vcd.actions() == []

    # Once vCenter (and so vCD) has it, the operator pushes again.
    fake_vcd.add_host(ADDRESS)
    bootbox_appliance.api.post(f"/hosts/{host.mac}/push", {})
    shown = host.wait_for_state("configured", "failed")
    assert shown["state"] == "configured" and fake_vcd.actions() == ["prepare"]


def test_a_failed_task_fails_the_push_with_vcds_message(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host = bootbox_host
    _setup(bootbox_appliance, host)
    fake_vcd.add_host(ADDRESS).fail_with = "Unable to install the vCloud agent on the host: login failed"
    host.boot()
    host.report_up()
    failed = host.wait_for_state("failed")
    assert failed["pushes"]["vcd"]["result"] == "failed" and failed["pushes"]["vcd"]["attempts"] == 2
    assert "prepare task for host 127.0.0.1 ended error: Unable to install the vCloud agent" in failed["reason"]
    assert not fake_vcd.host(ADDRESS).prepared


@pytest.mark.parametrize(("who", "status", "says"), [
    ("wrong-password", 401, "check plugins.vcd.username/org/password"),
    ("not-admin", 403, "need a system administrator"),
])
def test_refused_logins_and_rights_are_clear_and_not_retried(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd, who: str, status: int, says: str
) -> None:
    host = bootbox_host
    _setup(bootbox_appliance, host)
    fake_vcd.add_host(ADDRESS)
    if who == "wrong-password":
        fake_vcd.users[f"{API_USER}@System"] = "changed"
    else:
        fake_vcd.forbidden.add(f"{API_USER}@System")
    host.boot()
    host.report_up()
    failed = host.wait_for_state("failed")
    assert failed["pushes"]["vcd"]["result"] == "refused" and failed["pushes"]["vcd"]["attempts"] == 1
    assert f"HTTP {status}" in failed["reason"] and says in failed["reason"]
    assert API_PASSWORD not in str(host.events())


def test_an_endpoint_offering_only_1_5_is_spoken_to_in_1_5(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host = bootbox_host
    fake_vcd.offered = ["1.5"]
    _setup(bootbox_appliance, host)
    fake_vcd.add_host(ADDRESS)
    host.boot()
    host.report_up()
    shown = host.wait_for_state("configured", "failed")
    assert "(API 1.5" in shown["pushes"]["vcd"]["message"], shown
    accepts = {r.headers.get("Accept") for r in fake_vcd.received if r.path != "/api/versions"}
    assert accepts == {"application/*+xml;version=1.5"}


def test_a_stateful_host_must_be_unprepared_before_it_boots_stateless(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host, api = bootbox_host, bootbox_appliance.api
    _setup(bootbox_appliance, host, "install")
    fake_vcd.add_host(ADDRESS)
    host.boot()
    host.report_up()
    host.wait_for_state("configured")
    assert api.get("/vcd/hosts")[0]["mode"] == "stateful"

    api.put("/profiles/fake", {"name": "fake", "kind": "fake", "spec": {"mode": "stateless"}})
    assert host.reboot() in (409, 503)
    failed = host.wait_for_state("failed")
    assert "unprepare it first" in failed["reason"] and failed["pushes"]["vcd"]["result"] == "refused"
    assert fake_vcd.actions() == ["prepare"]  # refused before anything was sent
    assert host.report_up() == 409

    env = {**os.environ, "BOOTBOX_TOKEN": bootbox_appliance.token}
    cli = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[VcdPlugin()]))
    result = CliRunner().invoke(cli, ["--url", bootbox_appliance.url, "vcd", "unprepare", host.mac], env=env)
    assert result.exit_code == 0, result.output
    assert fake_vcd.actions() == ["prepare", "unprepare"] and not fake_vcd.host(ADDRESS).prepared
    assert api.get("/vcd/hosts") == []

    api.post(f"/hosts/{host.mac}/push", {})
    host.wait_for_state("configured")
    assert fake_vcd.actions() == ["prepare", "unprepare", "prepare"]
    hosts = CliRunner().invoke(cli, ["--url", bootbox_appliance.url, "vcd", "hosts"], env=env)
    assert f"{host.mac}  stateless  {ADDRESS}  prepare success" in hosts.output


def test_hosts_outside_vcd_groups_are_not_asked_and_not_pushed(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    host = bootbox_host
    assert "held" not in host.boot()
    assert host.report_up() in (200, 503)
    shown = host.wait_for_state("configured")
    assert shown["pushes"] == {} and fake_vcd.received == []
    assert [e["kind"] for e in host.events()][-1] == "booted"  # nothing to push: no more events


# ------------------------------------------------------------------------------ over TLS


@pytest.fixture
def tls_vcd(tmp_path: Path) -> Iterator[tuple[FakeVcd, Path]]:
    """The endpoint over HTTPS with a self-signed certificate for 127.0.0.1 (openssl)."""
    if shutil.which("openssl") is None:
        lab_unavailable("openssl is not installed (it makes the test endpoint's certificate)")
    cert, key = tmp_path / "vcd.pem", tmp_path / "vcd.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    vcd, thread = vcd_endpoint.start(context)
    try:
        yield vcd, cert
    finally:
        vcd_endpoint.stop(vcd, thread)


def test_tls_is_verified_by_default_and_trusts_the_configured_ca(tls_vcd: tuple[FakeVcd, Path]) -> None:
    from bootbox_vcd.client import session

    vcd, cert = tls_vcd
    vcd.add_host("esx01")
    base = {"url": vcd.url, "username": API_USER, "password": API_PASSWORD, "timeout": 2}
    with pytest.raises(PushRefused, match="certificate at .* is not trusted .*plugins.vcd.ca_file"):
        with session(parse_config(base), 5):
            pass
    with session(parse_config({**base, "ca_file": str(cert)}), 5) as s:
        assert s.version == "5.1" and s.find_host(["nope", "esx01"]).name == "esx01"  # type: ignore[union-attr]
