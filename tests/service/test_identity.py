"""Who may act for a host (bootbox.service.identity), per-boot tokens, adoption and conflicts.

In-process, through the Flask app: the requester's address is the WSGI ``REMOTE_ADDR`` and the
neighbour table is a table the test gives (the real kernel table is exercised on a bridge in
tests/scenarios/test_host_trust.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient

import bootbox_linux
from bootbox.config import HostsSettings
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.service.identity import Identity, NeighbourTable, canonical_ip, read_arp
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from bootbox.web import create_app
from tests.conftest import test_settings

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
B, ATTACKER = "52:54:00:00:00:0b", "52:54:00:00:00:66"
B_IP, ATTACKER_IP = "198.18.7.11", "198.18.7.66"
SECRET = "hunter2-api-key"


# ------------------------------------------------------------------ the neighbour table and the verdicts


def test_the_arp_table_is_read_for_complete_entries_only(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "198.18.7.11      0x1         0x2         52:54:00:00:00:0b     *        br0\n"
        "198.18.7.12      0x1         0x0         00:00:00:00:00:00     *        br0\n"
        "198.18.7.13      0x1         0x6         52:54:00:00:00:0d     *        br0\n")
    assert read_arp(arp) == {"198.18.7.11": B, "198.18.7.13": "52:54:00:00:00:0d"}
    assert canonical_ip("::ffff:198.18.7.11") == B_IP and canonical_ip("nonsense") == ""


def test_a_miss_reads_the_table_again_but_a_flood_of_misses_does_not() -> None:
    now = [100.0]
    reads: list[int] = []
    table: dict[str, str] = {}

    def read() -> dict[str, str]:
        reads.append(1)
        return dict(table)

    neighbours = NeighbourTable(max_age=1.0, read_v4=read, read_v6=dict, clock=lambda: now[0])
    assert neighbours.mac_of(B_IP) is None and len(reads) == 1
    for _ in range(100):  # strangers within 50 ms: answered from the last read
        assert neighbours.mac_of("198.18.7.99") is None
    assert len(reads) == 1
    table[B_IP] = B  # the host's ARP reply arrives
    now[0] += 0.06
    assert neighbours.mac_of(B_IP) == B and len(reads) == 2
    now[0] += 0.5
    assert neighbours.mac_of(B_IP) == B and len(reads) == 2  # a hit within max_age reads nothing


def test_a_host_asking_just_after_another_new_host_is_checked_on_a_newer_read() -> None:
    """Boot storm: B's first request comes 10 ms after another new host's made the appliance
    read the table, before B's ARP entry existed. B is answered from a read made after it
    asked (waiting out the re-read interval), never refused on the older copy; a claim that
    the cached entry contradicts is checked on a newer read too; attributing a finished
    transfer never waits."""
    now = [100.0]
    slept: list[float] = []
    table: dict[str, str] = {"198.18.7.20": "52:54:00:00:00:20"}

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    neighbours = NeighbourTable(max_age=1.0, read_v4=lambda: dict(table), read_v6=dict,
                                clock=lambda: now[0], sleep=sleep)
    assert neighbours.mac_of("198.18.7.20") == "52:54:00:00:00:20"  # the other host: one read
    table[B_IP] = B  # B's ARP entry appears
    now[0] += 0.01
    assert neighbours.mac_of(B_IP, wait=False) is None  # attribution: the last read, no wait
    assert neighbours.mac_of(B_IP) == B  # the check: a newer read
    assert slept and abs(slept[0] - 0.04) < 1e-9
    table[B_IP] = ATTACKER  # the address moved to another machine...
    now[0] += 0.1
    assert neighbours.mac_of(B_IP) == B  # ...a plain lookup may answer from the young cache
    assert neighbours.mac_of(B_IP, unless=ATTACKER) == ATTACKER  # a claim it contradicts: read again
    assert Identity(HostsSettings(), neighbours).check(B, B_IP).ok is False


@pytest.mark.parametrize(("settings", "mac", "ip", "ok", "why"), [
    (HostsSettings(), B, B_IP, True, "neighbour entry of 198.18.7.11 is"),
    (HostsSettings(), B, ATTACKER_IP, False, f"is {ATTACKER}, not {B}"),
    (HostsSettings(), B, "198.18.9.9", False, "no neighbour entry"),
    (HostsSettings(trusted_networks=("198.18.9.0/24",)), B, "198.18.9.9", True, "trusted_networks"),
    # a trusted network never covers an on-link machine that answers with another MAC
    (HostsSettings(trusted_networks=("198.18.7.0/24",)), B, ATTACKER_IP, False, "not"),
    (HostsSettings(), B, "127.0.0.1", True, "trust_loopback"),
    (HostsSettings(trust_loopback=False), B, "127.0.0.1", False, "trust_loopback = false"),
    (HostsSettings(trust_loopback=False), B, "::1", False, "trust_loopback = false"),
    (HostsSettings(), B, "not-an-address", False, "not an address"),
])
def test_verdicts(settings: HostsSettings, mac: str, ip: str, ok: bool, why: str) -> None:
    identity = Identity(settings, NeighbourTable(read_v4=lambda: {B_IP: B, ATTACKER_IP: ATTACKER}, read_v6=dict))
    verdict = identity.check(mac, ip)
    assert verdict.ok is ok and why in verdict.reason
    assert identity.refused == (0 if ok else 1)


# ------------------------------------------------------------------ through the app


def _service(tmp_path: Path, **hosts: object) -> BootService:
    settings = test_settings(tmp_path, hosts={"trusted_networks": [], "trust_loopback": False, **hosts})
    journal = Journal(None)
    journal.start()
    service = BootService(settings, MemoryStore(), journal,
                          make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux]))
    service.start()
    service.identity.neighbours = NeighbourTable(read_v4=lambda: {B_IP: B, ATTACKER_IP: ATTACKER}, read_v6=dict)
    return service


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[BootService, FlaskClient]]:
    service = _service(tmp_path)
    yield service, _configure(service, tmp_path)
    service.close()


def _configure(service: BootService, tmp_path: Path) -> FlaskClient:
    client = create_app(service, token=TOKEN).test_client()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    spec = {"kernel": str(kernel), "cmdline": "ds=nocloud-net;s={answers} cb={callback}"}
    assert client.post("/api/v1/profiles", json={"name": "deb", "kind": "linux", "spec": spec},
                       headers=AUTH).status_code == 201
    profile = {"name": "web", "kind": "cloud-init", "inputs": [{"name": "api_key", "secret": True}],
               "templates": {"user-data": "#cloud-config\napi_key: {{ answers.api_key }}\n"}}
    assert client.post("/api/v1/hostprofiles", json=profile, headers=AUTH).status_code == 201
    for name, patterns in (("dell", ["vendor=Dell"]), ("all", [])):
        rule = {"name": name, "items": {"image": "deb", "host_profile": "web", "group": name}}
        rule.update({"patterns": patterns} if patterns else {"all_hosts": True})
        assert client.post("/api/v1/rules", json=rule, headers=AUTH).status_code == 201
    assert client.patch(f"/api/v1/hosts/{B}/answers", json={"values": {"api_key": SECRET}},
                        headers=AUTH).status_code == 200
    return client


def _get(client: FlaskClient, path: str, ip: str) -> tuple[int, str]:
    response = client.get(path, environ_base={"REMOTE_ADDR": ip})
    return response.status_code, response.text


def _urls(script: str) -> tuple[str, str]:
    answers = re.search(r";s=http://localhost(/boot/hosts/\w+/answers/[\w-]+/)", script)
    callback = re.search(r"cb=http://localhost(\S+)", script)
    assert answers and callback, script
    return answers.group(1), callback.group(1)


def test_a_stranger_gets_403_and_changes_nothing(site: tuple[BootService, FlaskClient]) -> None:
    service, client = site
    status, script = _get(client, f"/boot/hosts/{B}/script.ipxe?manufacturer=HPE", B_IP)
    assert status == 200
    answers, callback = _urls(script)
    before = service.host(B)
    # The attacker asks for B's script (pinning a vendor), answers, GRUB config, and reports in for B.
    for path in (f"/boot/hosts/{B}/script.ipxe?manufacturer=Dell&hostname=vcenter",
                 answers + "user-data", f"/grub/hosts/{B.replace(':', '')}.cfg"):
        assert _get(client, path, ATTACKER_IP)[0] == 403, path
    up = client.post(callback, data={"ip": "6.6.6.6", "boot_id": "evil1"}, environ_base={"REMOTE_ADDR": ATTACKER_IP})
    assert up.status_code == 403
    after = service.host(B)
    assert after == replace(before, last_seen=after.last_seen)
    audits = [e for e in service.host_events(B) if e.kind == "audit"]
    assert len(audits) == 4 and all(ATTACKER_IP in e.message for e in audits)
    assert service.counts().refused["identity"] == 4
    # An unknown MAC asked for by a stranger leaves no host record at all.
    assert _get(client, "/boot/hosts/52:54:00:00:00:99/script.ipxe", ATTACKER_IP)[0] == 403
    assert service.hosts.get("52:54:00:00:00:99") is None
    # B itself still gets everything of its boot.
    status, text = _get(client, answers + "user-data", B_IP)
    assert status == 200 and SECRET in text
    assert after.associations["group"] == "all"  # HPE, not the stranger's Dell


def test_every_boot_has_new_tokens_and_report_ins_need_them(site: tuple[BootService, FlaskClient]) -> None:
    service, client = site
    first = _get(client, f"/boot/hosts/{B}/script.ipxe", B_IP)[1]
    assert _get(client, f"/boot/hosts/{B}/script.ipxe", B_IP)[1] == first  # an iPXE retry: the same boot
    answers, callback = _urls(first)
    bare = callback.split("?")[0]
    assert client.post(bare, data={"boot_id": "b1"}, environ_base={"REMOTE_ADDR": B_IP}).status_code == 401
    assert client.post(callback, data={"boot_id": "b1"}, environ_base={"REMOTE_ADDR": B_IP}).status_code == 200
    second = _get(client, f"/boot/hosts/{B}/script.ipxe", B_IP)[1]  # after its report-in: a new boot
    answers2, callback2 = _urls(second)
    assert answers2 != answers and callback2 != callback
    assert _get(client, answers + "user-data", B_IP)[0] == 403  # the first boot's tokens are void
    up_old = client.post(callback.replace("/booted", "/up"), json={"boot_id": "b2"}, environ_base={"REMOTE_ADDR": B_IP})
    assert up_old.status_code == 401
    assert client.post(callback2, data={"boot_id": "b2"}, environ_base={"REMOTE_ADDR": B_IP}).status_code == 200


def test_manual_adoption_gives_a_new_mac_no_secrets_until_adopted(tmp_path: Path) -> None:
    service = _service(tmp_path, adopt="manual")
    try:
        client = _configure(service, tmp_path)
        status, script = _get(client, f"/boot/hosts/{B}/script.ipxe?manufacturer=Dell", B_IP)
        assert status == 200 and "awaits adoption" in script and "answers" not in script
        host = service.host(B)
        assert host.state == "discovered" and not host.associations and not host.adopted
        listed = client.get("/api/v1/hosts", headers=AUTH).get_json()
        assert listed[0]["state"] == "discovered" and "boot_nonce" not in listed[0]
        assert client.post(f"/api/v1/hosts/{B}/adopt", json={"hostname": "web01"}).status_code == 401
        adopted = client.post(f"/api/v1/hosts/{B}/adopt", json={"hostname": "web01"}, headers=AUTH)
        assert adopted.status_code == 200 and adopted.get_json()["adopted"] and adopted.get_json()["name"] == "web01"
        bad = client.post(f"/api/v1/hosts/{B}/adopt", json={"hostname": "no_such name"}, headers=AUTH)
        assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "hostname"
        answers, _ = _urls(_get(client, f"/boot/hosts/{B}/script.ipxe?manufacturer=Dell", B_IP)[1])
        status, text = _get(client, answers + "user-data", B_IP)
        assert status == 200 and SECRET in text and service.host(B).associations["group"] == "dell"
    finally:
        service.close()


def test_a_second_machine_claiming_a_mac_is_a_conflict_until_resolved(site: tuple[BootService, FlaskClient]) -> None:
    service, client = site
    uuid1, uuid2 = "11111111-0000-0000-0000-000000000001", "22222222-0000-0000-0000-000000000002"
    answers, callback = _urls(_get(client, f"/boot/hosts/{B}/script.ipxe?uuid={uuid1}", B_IP)[1])
    status, script = _get(client, f"/boot/hosts/{B}/script.ipxe?uuid={uuid2}", B_IP)
    assert status == 200 and "two machines claim" in script and "answers" not in script
    assert service.host(B).state == "conflict"
    assert _get(client, answers + "user-data", B_IP)[0] == 403  # secrets stop
    assert client.post(callback, data={"boot_id": "c1"}, environ_base={"REMOTE_ADDR": B_IP}).status_code == 401
    assert any(e.kind == "audit" and "conflict" in e.message for e in service.host_events(B))
    assert client.post(f"/api/v1/hosts/{B}/resolve", headers=AUTH).status_code == 200
    assert service.host(B).state == "discovered"
    again = _get(client, f"/boot/hosts/{B}/script.ipxe?uuid={uuid2}", B_IP)[1]
    assert "answers/" in again and service.host(B).verified["uuid"] == uuid2
    assert client.post(f"/api/v1/hosts/{B}/resolve", headers=AUTH).status_code == 409  # nothing to resolve


def test_the_read_token_guards_reads_but_not_boots(tmp_path: Path) -> None:
    service = _service(tmp_path, trust_loopback=True)
    try:
        service.settings = replace(service.settings, http=replace(service.settings.http, read_token="r3ad"))
        client = create_app(service, token=TOKEN).test_client()
        for path in ("/api/v1/hosts", "/api/v1/status"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer r3ad"}).status_code == 200, path
            assert client.get(path, headers=AUTH).status_code == 200, path  # the API token reads too
        # The console sends a browser without a credential to its login page instead of a bare 401.
        unauthenticated = client.get("/")
        assert unauthenticated.status_code == 303 and "/login" in unauthenticated.headers["Location"]
        assert client.get("/api/v1/hosts", headers={"Authorization": "Basic OnIzYWQ="}).status_code == 200
        assert client.get(f"/boot/hosts/{B}/script.ipxe").status_code == 200  # hosts hold no read token
    finally:
        service.close()
