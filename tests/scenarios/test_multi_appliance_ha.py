"""The HA pair (issue 20): two appliances in proxy mode on one segment, sharing one PostgreSQL,
answer a host consistently, and the host boots through either when the other is killed.

Real parts: two ``bootbox serve`` processes, each in its own network namespace on one lab
bridge (198.18.0.0/24, namespaces named ``...-pga``/``-pgb``/``-pgclient``), a real PostgreSQL
(reached over its unix socket, which network namespaces do not hide), and a client namespace
that broadcasts the DHCPDISCOVER iPXE sends (bench.pxeclient, the option set captured from real
firmware) and fetches its script and reports in over HTTP, with its own interface's MAC so each
appliance's identity check sees the same machine a real host would be.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.pxeclient import (
    PxeClient,
    discover,
    drain_timestamped,
    offer_boot_file,
    open_reply_socket,
)
from bootbox.assets.demo import MARKER_OK, DemoAssets
from bootbox.lab.netns import LabError, Member, Segment, run_in_netns
from tests.scenarios.test_multi_appliance import RestartablePostgres, pg  # noqa: F401  (the module's PostgreSQL)
from tests.support.e2e_bootbox import start_bootbox
from tests.support.lab_fixtures import (
    BOOT_TIMEOUT,
    CLIENT_ADDR,
    SERVER_ADDR,
    SITE_ADDR,
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    require_qemu,
    require_tools,
)

pytestmark = pytest.mark.netns
__all__ = ["demo_assets_fixture", "demo_cache_fixture", "pg"]  # fixtures this module uses

HTTP_PORT = 8080


class Box:
    """One ``bootbox serve`` in a namespace, started and killed by its PID."""

    def __init__(self, net: Segment, member: Member, workdir: Path, name: str, dsn: str, key: Path) -> None:
        self.net, self.member, self.name = net, member, name
        self.state = workdir / f"state-{name}"
        self.log = workdir / f"{name}.log"
        config = workdir / f"{name}.toml"
        config.write_text(
            f'state_dir = "{self.state}"\nsecrets_key_file = "{key}"\nlog_level = "debug"\n'
            f'[appliance]\nname = "{name}"\n'
            f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\nreconnect_max = 0.5\n'
            f'[demo]\nenabled = false\n'
            f'[dhcp]\ninterface = "{member.ifname}"\n'
            f'[http]\nport = {HTTP_PORT}\n')
        with self.log.open("wb") as out:
            self.proc = net.spawn(member, [sys.executable, "-m", "bootbox", "--config", str(config), "serve"],
                                  stdout=out, stderr=subprocess.STDOUT)
        self.config = config
        deadline = time.monotonic() + 60
        while self.cli("status", check=False).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bootbox {name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"http://{self.member.ip}:{HTTP_PORT}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "bootbox", "--config", str(self.config), "--url", self.url,
                "--state-dir", str(self.state), *args]
        return self.net.run(self.member, argv, check=check, timeout=60)

    def api(self, client: Member, path: str) -> Any:
        """GET an operator API path with this appliance's token."""
        token = (self.state / "api-token").read_text().strip()
        status, text = get(client, self.url + path, headers={"Authorization": f"Bearer {token}"})
        assert status == 200, text
        return json.loads(text)

    def kill(self) -> None:
        """As a power cut looks to the host: SIGKILL, no goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def pair(pg: RestartablePostgres, tmp_path: Path) -> Iterator[tuple[Segment, Member, Box, Box]]:  # noqa: F811
    require_tools("ip")
    dsn = pg.dsn(f"ha{os.getpid()}")
    key = tmp_path / "shared-secrets.key"  # one key by configuration: tokens minted by one validate on the other
    boxes: list[Box] = []
    with Segment() as net:
        a_ns = net.add_namespace("pga", "198.18.0.1/24")
        b_ns = net.add_namespace("pgb", "198.18.0.4/24")
        client = net.add_namespace("pgclient", "198.18.0.3/24")
        try:
            boxes.append(Box(net, a_ns, tmp_path, "pair-a", dsn, key))
            boxes.append(Box(net, b_ns, tmp_path, "pair-b", dsn, key))
            yield net, client, boxes[0], boxes[1]
        finally:
            for box in boxes:
                box.kill()


def offers(net: Segment, client: Member, pxe: PxeClient, xid: int) -> dict[str, str]:
    """Broadcast iPXE's DISCOVER from ``client``; ``{server address: boot file}`` of every OFFER."""

    def exchange() -> dict[str, str]:
        sock = open_reply_socket(device=client.ifname)
        try:
            sock.sendto(discover(pxe, xid, ipxe=True), ("255.255.255.255", 67))
            return {reply.source[0]: offer_boot_file(reply.packet) for reply in drain_timestamped(sock, 1.5)
                    if reply.packet.xid == xid}
        finally:
            sock.close()

    return run_in_netns(client.netns, exchange)


def get(client: Member, url: str, body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One HTTP request from the client namespace (POST when there is a body)."""

    def call() -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                         headers={**({"Content-Type": "application/json"} if data else {}),
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=20) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    return run_in_netns(client.netns, call)


def test_the_ha_pair_answers_a_host_alike_and_it_boots_through_either_when_the_other_is_killed(
        pair: tuple[Segment, Member, Box, Box], tmp_path: Path) -> None:
    net, client, a, b = pair
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel" * 1000)
    initrd.write_bytes(b"initrd" * 1000)
    a.cli("profile", "add", "ha", "--kernel", str(kernel), "--initrd", str(initrd), "--cmdline", "console=ttyS0 bootbox.up={up}")
    a.cli("rule", "add", "ha", "--all-hosts", "--item", "image=ha")
    pxe = PxeClient(bytes.fromhex(client.mac.replace(":", "")), os.urandom(16), "bios")

    # Both answer the same DISCOVER, each pointing the host at itself for the same script.
    deadline = time.monotonic() + 10
    while True:
        both = offers(net, client, pxe, 0x2001)
        if len(both) == 2 or time.monotonic() > deadline:
            break
    assert set(both) == {a.member.ip, b.member.ip}, both
    assert both[a.member.ip].replace(a.member.ip, "X") == both[b.member.ip].replace(b.member.ip, "X"), both
    script_path = f"/boot/hosts/{client.mac.replace(':', '-')}/script.ipxe"
    status, from_a = get(client, a.url + script_path)
    assert status == 200, from_a
    assert "ha" in from_a or "vmlinuz" in from_a or "kernel" in from_a, from_a
    # The host's boot (its nonce: its tokens) reaches the database and the other appliance behind
    # the boot path; then b serves the same loader, script, images and per-boot tokens.
    seen_by_a = a.api(client, f"/api/v1/hosts/{client.mac}")
    deadline = time.monotonic() + 10
    while b.api(client, f"/api/v1/hosts/{client.mac}")["state"] != seen_by_a["state"]:
        assert time.monotonic() < deadline, (seen_by_a, b.api(client, f"/api/v1/hosts/{client.mac}"))
        time.sleep(0.2)
    status, from_b = get(client, b.url + script_path)
    assert status == 200, from_b
    assert from_b.replace(b.url, a.url) == from_a

    # a dies; the host's next DISCOVER is answered by b alone, and it boots and reports in through b
    # with the up token a gave it.
    a.kill()
    alone = offers(net, client, pxe, 0x2002)
    assert set(alone) == {b.member.ip}, alone
    up = re.search(r"bootbox\.up=(\S+)", from_a)
    assert up is not None, from_a
    status, text = get(client, up.group(1).replace(a.url, b.url), {"boot_id": "ha-1"})
    assert status in (200, 503), text  # accepted (503: after-boot work still running)
    status, text = get(client, up.group(1).replace(a.url, b.url).replace("token=", "token=0"), {"boot_id": "ha-1"})
    assert status in (401, 403), text  # and a token a did not mint is not
    events = json.loads(b.cli("host", "events", client.mac, "--json").stdout)
    assert {"pair-a", "pair-b"} <= {e["data"].get("appliance") for e in events}, events
    table = b.cli("host", "events", client.mac).stdout
    assert "pair-a" in table and "pair-b" in table


# -- two sites, one database: a rule added at one site boots a real firmware at the other ---------


def _site(net: Segment, workdir: Path) -> LabSegment:
    """A lab segment like tests/support's ``segment``, its namespaces named for this helper (pg…)."""
    workdir.mkdir()
    return LabSegment(net=net, server=net.add_namespace("pgserver", SERVER_ADDR, ipv6=True),
                      site=net.add_namespace("pgsite", SITE_ADDR), client=net.add_namespace("pgclient", CLIENT_ADDR),
                      workdir=workdir)


@pytest.mark.qemu
def test_a_rule_added_at_one_site_boots_a_real_firmware_at_the_other(
        pg: RestartablePostgres, demo_assets: DemoAssets, tmp_path: Path) -> None:  # noqa: F811
    require_qemu()
    dsn = pg.dsn(f"sites{os.getpid()}")
    key = tmp_path / "shared-secrets.key"

    def store(name: str) -> str:
        return f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n[appliance]\nname = "{name}"\n'

    with Segment() as one, Segment() as two:
        first, second = _site(one, tmp_path / "one"), _site(two, tmp_path / "two")
        second.start_site_dhcp()
        second.start_ra()
        a = start_bootbox(first, top_toml=f'secrets_key_file = "{key}"\n', extra_toml=store("site-one"))
        b = start_bootbox(second, top_toml=f'secrets_key_file = "{key}"\n', extra_toml=store("site-two"))
        try:
            a.add_demo_profile(demo_assets)  # the profile and the rule, through site one's appliance only
            vm = second.boot("bios")
            try:
                events = b.wait_for_event(vm.mac, "booted", BOOT_TIMEOUT)
                vm.wait_for(MARKER_OK, 60)
            except (TimeoutError, LabError) as exc:
                pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nsite two's log:\n{b.log_tail(60)}")
            assert {e["data"].get("appliance") for e in events} == {"site-two"}, events
            assert any(e["kind"] == "rules" and "rule demo" in e["message"] for e in events), events
            deadline = time.monotonic() + 10  # the host, as site two wrote it, reaches site one too
            while (shown := a.cli("host", "show", vm.mac, "--json", check=False)).returncode or \
                    json.loads(shown.stdout)["state"] not in ("up", "configuring", "configured"):
                assert time.monotonic() < deadline, shown.stdout + shown.stderr
                time.sleep(0.5)
        finally:
            for box in (a, b):
                if box.proc.poll() is None:
                    box.proc.send_signal(signal.SIGTERM)
                    box.proc.wait(30)
