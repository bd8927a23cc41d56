"""Issue 4's end-to-end check: a host boots, reports up, and the vCD plugin makes vCloud Director
prepare it through the vCloud API — vCD fails twice (HTTP 500, then a timeout) before it answers;
the host "reboots" (a new boot ID, and vCD sees it no longer Ready) and the plugin repairs it;
the timeline shows all of it, and the host's secret appears in no log, no event and no API answer.

Everything runs over real HTTP on loopback: the appliance (waitress), the fake host's requests,
and the vCD stand-in (``bootbox_vcd.tests.vcd_endpoint``, http.server).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from bootbox.config import PushPolicy
from bootbox.testing import (
    FakeHost,
    TestAppliance,
    bootbox_appliance,
    bootbox_host,
    http,
)
from bootbox_vcd import VcdPlugin
from bootbox_vcd.tests.vcd_endpoint import FakeVcd, fake_vcd

__all__ = ["bootbox_appliance", "bootbox_host", "fake_vcd"]  # the other fixtures are defined below

SECRET = "vcd-host-pw-7f3a"
API_PASSWORD = "vcd-api-pw-19c2"
ADDRESS = "127.0.0.1"  # the fake host reports in from loopback: vCenter knows it by that address


@pytest.fixture
def bootbox_plugins() -> list[object]:
    return [VcdPlugin()]


@pytest.fixture
def bootbox_config(fake_vcd: FakeVcd) -> dict[str, Any]:
    fake_vcd.users = {"bootbox@System": API_PASSWORD}
    fake_vcd.add_host(ADDRESS)
    return {"plugins": {"vcd": {"url": fake_vcd.url, "username": "bootbox", "password": API_PASSWORD,
                                "groups": ["vcd"], "timeout": 0.5, "poll_seconds": 0.02}}}


@pytest.fixture
def bootbox_push_policy() -> PushPolicy:
    return PushPolicy(attempts=4, timeout=5.0, first_delay=0.05, step_min=0.02, step_max=0.05, max_delay=0.3)


def _pushes(host: FakeHost) -> list[dict[str, Any]]:
    return [e for e in host.events() if e["kind"] == "push"]


def test_pushes_after_every_boot_with_retries(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = bootbox_appliance.api
    api.post("/rules", {"name": "vcd-group", "all_hosts": True, "items": {"group": "vcd"}, "at": 0})
    host = bootbox_host

    # Its vCD credentials are missing: the host is held, and its console says which answer.
    script = host.boot()
    assert "held: answers are missing: vcd_host_password" in script
    assert host.state == "needs-answers"
    api.request("PATCH", f"/hosts/{host.mac}/answers", {"values": {"vcd_host_password": SECRET}})

    # First boot: vCD fails twice, then prepares the host.
    fake_vcd.faults[:] = [500, "timeout"]
    host.boot()
    assert host.report_up() in (200, 503)
    shown = host.wait_for_state("configured")
    assert shown["pushes"]["vcd"]["result"] == "ok" and shown["pushes"]["vcd"]["attempts"] == 3
    assert host.report_up() == 200  # the same boot again: done
    assert fake_vcd.actions() == ["prepare"] and fake_vcd.host(ADDRESS).prepared_with == ("root", SECRET)
    login = next(r for r in fake_vcd.received if r.path == "/api/sessions" and not r.answered)
    assert base64.b64decode(login.headers["Authorization"].split()[1]).decode() == f"bootbox@System:{API_PASSWORD}"
    results = [(p["data"]["attempt"], p["data"]["result"]) for p in _pushes(host)]
    assert results == [(1, "retry"), (2, "retry"), (3, "ok")]
    assert "HTTP 500" in _pushes(host)[0]["message"] and "timed out" in _pushes(host)[1]["message"]
    assert "prepared in vCD" in _pushes(host)[2]["message"]

    # A reboot (new boot ID): vCD sees the stateless host prepared but not Ready, so it is repaired.
    first_boot_id = host.boot_id
    fake_vcd.reboot(ADDRESS)
    assert host.reboot() in (200, 503)
    shown = host.wait_for_state("configured")
    assert fake_vcd.actions() == ["prepare", "repair"] and shown["pushes"]["vcd"]["boot_id"] == host.boot_id != first_boot_id

    # The timeline tells the whole story, in order.
    story = [(e["kind"], e["data"].get("result") or e["data"].get("state") or "") for e in host.events()
             if e["kind"] in ("booted", "push", "answers") or (e["kind"] == "state" and e["data"].get("state"))]
    assert story == [
        ("answers", ""),  # held for the missing answer
        ("booted", ""), ("push", "retry"), ("push", "retry"), ("push", "ok"), ("state", "configured"),
        ("booted", ""), ("push", "ok"), ("state", "configured"),
    ]
    listing = {h["mac"]: h for h in api.get("/hosts")}
    assert listing[host.mac]["state"] == "configured" and listing[host.mac]["pushes"]["vcd"]["boot_id"] == host.boot_id

    # The operator re-runs the push by hand: vCD has the host Ready, so nothing is asked of it.
    api.post(f"/hosts/{host.mac}/push", {})
    shown = host.wait_for_state("configured")
    assert fake_vcd.actions() == ["prepare", "repair"] and "ready in vCD already" in shown["pushes"]["vcd"]["message"]

    # The secret went to vCD, and nowhere else.
    everything = caplog.text + json.dumps(host.events()) + json.dumps(api.get("/hosts")) + \
        json.dumps(api.get(f"/hosts/{host.mac}/answers"))
    assert SECRET not in everything and API_PASSWORD not in everything


def test_up_answers_with_auto_deploys_status_codes(
    bootbox_appliance: TestAppliance, bootbox_host: FakeHost, fake_vcd: FakeVcd
) -> None:
    api = bootbox_appliance.api
    api.post("/rules", {"name": "vcd-group", "all_hosts": True, "items": {"group": "vcd"}, "at": 0})
    api.request("PATCH", f"/hosts/{bootbox_host.mac}/answers", {"values": {"vcd_host_password": SECRET}})
    host = bootbox_host
    host.boot()
    unknown = http("POST", host.up_url.replace(host.mac, "52:54:00:99:99:99"), {"boot_id": "x"})
    assert unknown.status == 404
    assert http("POST", host.up_url.split("?")[0], {"boot_id": "x"}).status == 401
    assert http("POST", host.up_url.replace("token=", "token=0"), {"boot_id": "x"}).status == 401
    fake_vcd.faults[:] = [500] * 10  # vCD never recovers: the push gives up
    assert host.report_up() == 503  # pushes running: retry later
    failed = host.wait_for_state("failed")
    assert "HTTP 500" in failed["reason"]
    reply = http("POST", host.up_url, {"boot_id": host.boot_id})
    assert reply.status == 409 and "could not apply" in reply.json()["message"]
