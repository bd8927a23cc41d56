"""``/metrics`` on a live appliance: a boot through its real sockets (DHCP DISCOVER, TFTP with
curl, the script and the report-in over HTTP), then a scrape that ``promtool check metrics``
accepts and whose counters say exactly what the test did."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bootbox import BootEvent, Host, hookimpl
from bootbox.net.dhcp.packet import BOOTREQUEST, DhcpPacket, Opt, build, parse
from bootbox.service.bootmetrics import BootTally, firmware_of
from bootbox.testing import TestAppliance, free_port, http, start_test_appliance
from bootbox.web.metrics import route_class
from tests.support.lab_fixtures import lab_unavailable

MAC = "52:54:00:b0:07:19"
READ_TOKEN = "metrics-read-token-0123456789"


class PushOk:
    """A plugin whose after-boot push succeeds, so the scrape has a push outcome to count."""

    __name__ = "test-metrics-push"

    @hookimpl
    def bootbox_host_up(self, host: Host, event: BootEvent, answers: Any, timeout: float) -> str | None:
        return "pushed"


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[TestAppliance]:
    loaders = tmp_path / "loaders"
    loaders.mkdir()
    for name in ("undionly.kpxe", "snponly.efi"):
        (loaders / name).write_bytes(os.urandom(20_000))
    config = {
        "http": {"read_token": READ_TOKEN},
        "tftp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "root": str(loaders)},
        "dhcp": {"enabled": True, "bind_address": "127.0.0.1", "port": free_port(), "boot_server_port": free_port(),
                 "client_port": free_port()},
        "hosts": {"trusted_networks": ["198.18.0.0/15"]},
    }
    running = start_test_appliance(tmp_path / "state", [PushOk()], config, None)
    try:
        yield running
    finally:
        running.appliance.stop()


def _discover(settings: Any) -> DhcpPacket:
    """A BIOS PXE ROM's DISCOVER to the proxy's port, from the client port, and its OFFER."""
    options = {Opt.MESSAGE_TYPE: b"\x01", Opt.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00"}
    packet = DhcpPacket(op=BOOTREQUEST, xid=0x1919, chaddr=bytes.fromhex(MAC.replace(":", "")), ciaddr="127.0.0.1",
                        options=options)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", settings.dhcp.client_port))
        sock.settimeout(5)
        sock.sendto(build(packet), ("127.0.0.1", settings.dhcp.port))
        return parse(sock.recvfrom(4096)[0])


def _scrape(running: TestAppliance, token: str | None = READ_TOKEN) -> tuple[int, str]:
    reply = http("GET", f"{running.url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else None)
    return reply.status, reply.text


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_boot_through_real_sockets_shows_in_metrics_that_promtool_accepts(appliance: TestAppliance,
                                                                            tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        lab_unavailable("promtool is not installed (Debian package prometheus)")
    settings = appliance.settings
    before = _samples(_scrape(appliance)[1])

    offer = _discover(settings)
    assert offer.options[67].rstrip(b"\0") == b"undionly.kpxe"
    got = tmp_path / "got.kpxe"
    subprocess.run(["curl", "-sS", "-o", str(got), f"tftp://127.0.0.1:{settings.tftp.port}/undionly.kpxe"],
                   check=True, timeout=30)
    appliance.add_fake_profile()
    host = appliance.host(MAC)
    host.boot(platform="pcbios")
    assert host.report_up() in (200, 503)
    host.wait_for_state("configured")

    assert _scrape(appliance, token=None)[0] == 401  # [http] read_token guards /metrics
    assert _scrape(appliance, token="wrong")[0] == 401
    deadline = time.monotonic() + 10  # the TFTP server counts a transfer when its last ACK arrives
    while True:
        status, text = _scrape(appliance)
        assert status == 200
        after = _samples(text)
        if _value(after, "bootbox_tftp_transfers_completed_total", server="tftp") >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("bootbox_dhcp_packets_received_total", server="dhcp") == 1
    assert grew("bootbox_dhcp_answers_total", server="dhcp") == 1
    assert grew("bootbox_tftp_transfers_completed_total", server="tftp") == 1
    assert grew("bootbox_tftp_sent_bytes_total") == 20_000
    assert grew("bootbox_boots_started_total", firmware="bios") == 1  # DHCP said BIOS before iPXE said pcbios
    assert grew("bootbox_boots_reported_total", firmware="bios") == 1
    assert grew("bootbox_boot_duration_seconds_count", firmware="bios") == 1
    assert grew("bootbox_boot_duration_seconds_bucket", firmware="bios", le="+Inf") == 1
    assert grew("bootbox_push_attempts_total", outcome="ok") == 1
    assert _value(after, "bootbox_hosts", state="configured") == 1
    assert _value(after, "bootbox_rules", set="active") == 1
    assert grew("bootbox_boot_events_total", kind="booted") == 1
    # The script and the report-in went to boot routes; the profile, rule and scrapes to others.
    assert grew("bootbox_http_requests_total", route="boot", code="2xx") == 1  # the script (the /up POST is 503 or 200)
    assert grew("bootbox_http_requests_total", route="other", code="4xx") == 2  # the two refused scrapes
    assert grew("bootbox_http_response_bytes_total", route="boot") > 0
    assert not any(MAC in name or any(MAC in v for _, v in labels) for name, labels in after)  # no label per host
    # The shipped Grafana dashboard asks only for series this scrape has.
    dashboard = (Path(__file__).parents[2] / "appliance" / "grafana-dashboard.json").read_text()
    wanted = set(re.findall(r"\b(bootbox_[a-z_]+)", dashboard)) - {"bootbox_appliance"}
    assert wanted and wanted <= {name for name, _ in after}, wanted - {name for name, _ in after}


def test_route_classes_and_firmware_labels_stay_bounded() -> None:
    assert [route_class(p) for p in ("/boot.ipxe", "/boot/hosts/x/script.ipxe", "/grub/grub.cfg", "/api/v1/hosts",
                                     "/metrics", "/")] == ["boot", "boot", "boot", "api", "other", "other"]
    assert firmware_of(Host(mac=MAC, attrs={"firmware": "bios"})) == "bios"
    assert firmware_of(Host(mac=MAC, attrs={"platform": "efi"})) == "efi"
    assert firmware_of(Host(mac=MAC, attrs={"firmware": "x" * 40})) == "other"
    assert firmware_of(None) == "unknown"
    tally = BootTally(lambda mac: None)
    for n in range(100):
        tally.observe(BootEvent(mac=f"52:54:00:00:00:{n:02x}", kind=f"plugin.kind{n}", message=""))
        tally.observe(BootEvent(mac=MAC, kind="push", message="", data={"result": f"r{n}"}))
    snap = tally.snapshot()
    assert snap.events["other"] == 100 and snap.pushes["other"] == 100 and len(snap.pushes) == 5
