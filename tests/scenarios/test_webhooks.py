"""Webhooks on a live appliance: a host boots over real proxyDHCP, TFTP (curl) and HTTP on
loopback, and a real receiver gets every boot step, in order, signed, with the IDs the event
stream gives them; a receiver that is down gets them once it is back, also across a restart of
the appliance; a receiver that hangs never holds up a boot request. The CLI (``bootbox
webhook list | test | deliveries``), the API's token check and ``/metrics`` are checked on the
same appliance."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.net.dhcp.packet import BOOTREQUEST, DhcpPacket, Opt, build, parse
from bootbox.testing import TestAppliance, free_port, http, start_test_appliance
from tests.scenarios.test_events_out import Stream
from tests.service.test_webhooks_dispatch import SECRET, Receiver, receiver  # noqa: F401  (the fixture)
from tests.support.lab_fixtures import lab_unavailable

MAC = "52:54:00:de:19:01"
OTHER = "52:54:00:de:19:02"
BIOS = b"PXEClient:Arch:00000:UNDI:002001"




def config_for(tmp_path: Path, receiver: Receiver, **hook: Any) -> dict[str, Any]:
    """An appliance with proxyDHCP and TFTP on loopback, and one hook for ``MAC``'s events."""
    loaders = tmp_path / "loaders"
    loaders.mkdir(exist_ok=True)
    (loaders / "undionly.kpxe").write_bytes(os.urandom(8192))
    return {
        "dhcp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "boot_server_port": free_port(),
                 "client_port": free_port()},
        "tftp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "root": str(loaders)},
        "webhook": {"first_delay": 0.1, "max_delay": 0.5, "timeout": 5.0},
        "webhooks": [{"name": "ops", "url": receiver.url, "secret": SECRET, "hosts": [MAC], **hook}],
    }


@pytest.fixture
def appliance(tmp_path: Path, receiver: Receiver) -> Iterator[TestAppliance]:
    running = start_test_appliance(tmp_path / "state", [], config_for(tmp_path, receiver), None)
    try:
        yield running
    finally:
        running.appliance.stop()


def _packet(msg: int, user_class: bytes | None = None, mac: str = MAC) -> bytes:
    options: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([msg]), Opt.VENDOR_CLASS: BIOS, 93: b"\x00\x00"}
    if user_class:
        options[77] = user_class
    return build(DhcpPacket(op=BOOTREQUEST, xid=0x1919, chaddr=bytes.fromhex(mac.replace(":", "")),
                            ciaddr="127.0.0.1", options=options))


def _ask(port: int, client_port: int, payload: bytes) -> DhcpPacket:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", client_port))
        sock.settimeout(10)
        sock.sendto(payload, ("127.0.0.1", port))
        return parse(sock.recvfrom(4096)[0])


def boot_over_the_wire(appliance: TestAppliance, tmp_path: Path, mac: str = MAC) -> None:
    """What a BIOS PXE client does: proxyDHCP offer, the loader over TFTP, iPXE's DHCP request
    to the boot server, the entry script and the host's script over HTTP, then the report-in.
    Every request must succeed on its own, whatever the webhook receiver does."""
    settings = appliance.settings
    offer = _ask(settings.dhcp.port, settings.dhcp.client_port, _packet(1, mac=mac))
    assert offer.options[67].rstrip(b"\0") == b"undionly.kpxe"
    if shutil.which("curl") is None:
        lab_unavailable("curl is not installed (apt-get install curl)")
    out = tmp_path / f"{mac.replace(':', '')}.kpxe"
    subprocess.run(["curl", "-sS", "--max-time", "20", "-o", str(out),
                    f"tftp://127.0.0.1:{settings.tftp.port}/undionly.kpxe"], check=True, timeout=30)
    assert out.read_bytes() == (Path(settings.tftp.root) / "undionly.kpxe").read_bytes()
    # The server records the transfer when the last ACK is in; curl has exited by then or not.
    # A real loader starts (and asks DHCP again) only later, so wait for the record here too.
    deadline = time.monotonic() + 10
    while not any(e.kind == "tftp.sent" for e in appliance.service.host_events(mac)):
        assert time.monotonic() < deadline, "no tftp.sent event"
        time.sleep(0.02)
    ack = _ask(settings.dhcp.boot_server_port, free_port(), _packet(3, user_class=b"iPXE", mac=mac))
    assert ack.options[67].rstrip(b"\0").decode().endswith("/boot.ipxe")
    assert http("GET", f"{appliance.url}/boot.ipxe", timeout=20).status == 200
    host = appliance.host(mac)
    host.boot()
    assert host.report_up() == 200


def timeline(appliance: TestAppliance, count: int) -> list[dict[str, Any]]:
    """The host's events as the SSE stream numbers them (``?since=0``: from the ring's start)."""
    stream = Stream(appliance, f"?host={MAC}&since=0")
    try:
        return stream.events(count)
    finally:
        stream.close()


def settle(appliance: TestAppliance, receiver: Receiver) -> int:
    """Wait until the receiver has one delivery per event of the host's timeline and the hook
    has nothing pending; how many deliveries the receiver has."""
    deadline = time.monotonic() + 30
    while (len(receiver.got) < len(appliance.service.host_events(MAC))
           or appliance.api.get("/webhooks/ops/deliveries")["pending"]):
        assert time.monotonic() < deadline, appliance.api.get("/webhooks/ops/deliveries")
        time.sleep(0.05)
    return len(receiver.got)


def cli(appliance: TestAppliance, *args: str, token: bool = True) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in ("BOOTBOX_TOKEN", "BOOTBOX_URL", "BOOTBOX_CONFIG")}
    if token:
        env["BOOTBOX_TOKEN"] = appliance.token
    return CliRunner().invoke(build_cli(make_plugin_manager(load_entrypoints=False)), ["--url", appliance.url, *args],
                              env=env)


def test_every_boot_step_reaches_the_receiver_in_order_and_signed(
        appliance: TestAppliance, receiver: Receiver, tmp_path: Path) -> None:
    appliance.add_fake_profile()
    boot_over_the_wire(appliance, tmp_path, OTHER)  # another host: not this hook's
    boot_over_the_wire(appliance, tmp_path)
    count = settle(appliance, receiver)
    steps = timeline(appliance, count)
    docs = receiver.wait_for(count)
    # Exactly the host's timeline, step for step, with the event stream's IDs.
    assert [(d["event"]["id"], d["event"]["kind"]) for d in docs] == [(int(e["id"]), e["event"]) for e in steps]
    kinds = [d["event"]["kind"] for d in docs]
    for step in ("dhcp.offer", "tftp.sent", "dhcp.ack", "http.script", "booted"):
        assert step in kinds, kinds
    assert kinds.index("dhcp.offer") < kinds.index("tftp.sent") < kinds.index("dhcp.ack") \
        < kinds.index("http.script") < kinds.index("booted")
    assert {d["event"]["mac"] for d in docs} == {MAC}
    assert [int(e["id"]) for e in steps] == sorted(int(e["id"]) for e in steps)

    # The CLI: the hook with its secret masked, its log, a test delivery.
    listed = cli(appliance, "webhook", "list", "--json")
    assert listed.exit_code == 0, listed.output
    hooks = json.loads(listed.output)
    assert hooks[0]["name"] == "ops" and hooks[0]["secret"] == "***" and hooks[0]["counts"]["ok"] == count
    assert SECRET not in listed.output and SECRET not in cli(appliance, "webhook", "list").output
    log = json.loads(cli(appliance, "webhook", "deliveries", "ops", "--json").output)
    assert log["pending"] == [] and [e["kind"] for e in reversed(log["log"])] == kinds
    tested = cli(appliance, "webhook", "test", "ops")
    assert tested.exit_code == 0 and "ok (HTTP 200)" in tested.output, tested.output
    assert receiver.kinds()[-1] == "webhook.test"
    refused = cli(appliance, "webhook", "test", "ops", token=False)  # a write: the API token is needed
    assert refused.exit_code == 1 and "Bearer" in refused.output
    assert cli(appliance, "webhook", "deliveries", "nope").exit_code == 1
    # /metrics: tries by hook and outcome (a hook name, never a MAC).
    metrics = http("GET", f"{appliance.url}/metrics").text
    assert f'bootbox_webhook_deliveries_total{{hook="ops",outcome="ok"}} {count + 1}.0' in metrics
    assert 'bootbox_webhook_pending{hook="ops"} 0.0' in metrics
    assert MAC not in "".join(line for line in metrics.splitlines() if line.startswith("bootbox_webhook"))
    promtool = shutil.which("promtool")
    if promtool is None:
        lab_unavailable("promtool is not installed (Debian package prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_receiver_that_was_down_gets_the_boot_after_it_comes_back(
        appliance: TestAppliance, receiver: Receiver, tmp_path: Path) -> None:
    receiver.stop()
    appliance.add_fake_profile()
    boot_over_the_wire(appliance, tmp_path)
    deadline = time.monotonic() + 20
    while not any(e["outcome"] == "retry" for e in appliance.api.get("/webhooks/ops/deliveries")["log"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = appliance.api.get("/webhooks/ops/deliveries")["pending"]
    assert waiting and receiver.got == []
    receiver.start()
    count = settle(appliance, receiver)
    docs = receiver.wait_for(count)
    assert [d["event"]["id"] for d in docs] == [int(e["id"]) for e in timeline(appliance, count)]
    assert [d["event"]["id"] for d in docs[:len(waiting)]] == [p["event_id"] for p in waiting]


def test_deliveries_pending_at_a_restart_are_sent_after_it(receiver: Receiver, tmp_path: Path) -> None:
    receiver.stop()
    config = config_for(tmp_path, receiver)
    first = start_test_appliance(tmp_path / "state", [], config, None)
    try:
        first.add_fake_profile()
        boot_over_the_wire(first, tmp_path)
        deadline = time.monotonic() + 20
        while not any(e["outcome"] == "retry" for e in first.api.get("/webhooks/ops/deliveries")["log"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        expected = [int(e["id"]) for e in timeline(first, len(first.service.host_events(MAC)))]
    finally:
        first.appliance.stop()
    assert receiver.got == []
    receiver.start()
    second = start_test_appliance(tmp_path / "state", [], config, None)
    try:
        count = settle(second, receiver)
        docs = receiver.wait_for(count)
        assert [d["event"]["id"] for d in docs] == expected  # each once, in order
        assert len(second.api.get("/webhooks/ops/deliveries")["log"]) > count  # the tries before the restart too
    finally:
        second.appliance.stop()


def test_a_receiver_that_hangs_never_holds_up_a_boot(
        appliance: TestAppliance, receiver: Receiver, tmp_path: Path) -> None:
    receiver.hold.clear()  # every delivery waits until the test lets it go
    appliance.add_fake_profile()
    boot_over_the_wire(appliance, tmp_path)  # every request answered on its own
    receiver.wait_until(lambda r: r.waiting >= 1)
    assert receiver.got == []  # the whole boot happened while the first delivery hung
    assert appliance.host(MAC).state in ("up", "configuring", "configured")  # reported in
    receiver.hold.set()
    count = settle(appliance, receiver)
    docs = receiver.wait_for(count)
    assert [d["event"]["id"] for d in docs] == [int(e["id"]) for e in timeline(appliance, count)]
