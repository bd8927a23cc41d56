"""Deploy rules wired into the service, the API and the CLI: associations, compliance, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient

from bootbox.service.bootservice import BootService
from bootbox.web import create_app

TOKEN = "t"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DELL = "52:54:00:00:0d:01"
HPE = "52:54:00:00:0e:01"


@pytest.fixture
def client(service: BootService, tmp_path: Path) -> FlaskClient:
    client = create_app(service, token=TOKEN).test_client()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    for name in ("esxi-7", "esxi-8", "rescue"):
        body = {"name": name, "kind": "linux", "spec": {"kernel": str(kernel)}}
        assert client.post("/api/v1/profiles", json=body, headers=AUTH).status_code == 201
    return client


def _boot(client: FlaskClient, mac: str, **attrs: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in attrs.items())
    return client.get(f"/boot/hosts/{mac}/script.ipxe?{query}").text


def _add(client: FlaskClient, **rule: object) -> dict:
    response = client.post("/api/v1/rules", json=rule, headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json


def test_waiting_host_boots_once_a_rule_appears(client: FlaskClient, service: BootService) -> None:
    assert "asking again" in _boot(client, DELL, manufacturer="Dell%20Inc.")
    assert service.host(DELL).state == "waiting"
    assert service.host(DELL).associations == {}
    _add(client, name="dell", patterns=["vendor=dell inc."], items={"image": "esxi-8", "group": "lab"})
    script = _boot(client, DELL, manufacturer="Dell%20Inc.")
    assert "boots profile esxi-8" in script
    host = service.host(DELL)
    assert host.associations == {"image": "esxi-8", "group": "lab"} and host.profile == "esxi-8"


def test_per_item_type_precedence(client: FlaskClient, service: BootService) -> None:
    _add(client, name="narrow", patterns=["serial=ABC123"], items={"host_profile": "rack7"})
    _add(client, name="broad", all_hosts=True, items={"image": "esxi-7", "group": "unsorted"})
    _boot(client, DELL, serial="ABC123")
    assert service.host(DELL).associations == {"host_profile": "rack7", "image": "esxi-7", "group": "unsorted"}


def test_associations_are_cached_until_repair(client: FlaskClient, service: BootService) -> None:
    _add(client, name="all", all_hosts=True, items={"image": "esxi-7"})
    _boot(client, DELL, manufacturer="Dell")
    _boot(client, HPE, manufacturer="HPE")
    # A new, earlier rule changes nothing for known hosts ...
    _add(client, name="dell", patterns=["vendor=Dell"], items={"image": "esxi-8"}, at=0)
    assert "boots profile esxi-7" in _boot(client, DELL, manufacturer="Dell")
    # ... until compliance shows the drift and repair rewrites it.
    drift = client.get("/api/v1/compliance").json
    assert drift == [{"host": DELL, "expected": {"image": "esxi-8"},
                      "items": [{"item": "image", "stored": "esxi-7", "expected": "esxi-8", "rule": "dell", "change": "changes"}]}]
    repaired = client.post("/api/v1/compliance/repair", json={"hosts": [DELL]}, headers=AUTH).json
    assert [d["host"] for d in repaired] == [DELL]
    assert client.get("/api/v1/compliance").json == []
    assert "boots profile esxi-8" in _boot(client, DELL, manufacturer="Dell")
    assert "boots profile esxi-7" in _boot(client, HPE, manufacturer="HPE")


def test_no_activate_keeps_boots_on_the_active_set_until_activate(client: FlaskClient, service: BootService) -> None:
    _add(client, name="all", all_hosts=True, items={"image": "esxi-7"})
    _add(client, name="dell", patterns=["vendor=Dell"], items={"image": "esxi-8"}, at=0, activate=False)
    assert [c["change"] for c in client.get("/api/v1/rulesets/diff").json] == ["added"]
    assert "boots profile esxi-7" in _boot(client, DELL, manufacturer="Dell")
    # The working set would change the host: `rule test --working` says so.
    assert client.get("/api/v1/compliance?set=working").json[0]["host"] == DELL
    assert client.post("/api/v1/rulesets/activate", json={}, headers=AUTH).status_code == 200
    assert client.get("/api/v1/rulesets/diff").json == []
    assert "boots profile esxi-8" in _boot(client, HPE.replace("0e", "0f"), manufacturer="Dell")


def test_rollback_restores_the_previous_active_set(client: FlaskClient) -> None:
    _add(client, name="a", all_hosts=True, items={"image": "esxi-7"})
    _add(client, name="b", patterns=["vendor=Dell"], items={"image": "esxi-8"})
    client.post("/api/v1/rulesets/rollback", json={}, headers=AUTH)
    assert [r["name"] for r in client.get("/api/v1/rules?set=active").json] == ["a"]
    client.post("/api/v1/rulesets/rollback", json={}, headers=AUTH)
    assert [r["name"] for r in client.get("/api/v1/rules?set=active").json] == ["a", "b"]


def test_edits_move_replace_remove(client: FlaskClient) -> None:
    _add(client, name="a", all_hosts=True, items={"image": "esxi-7"})
    _add(client, name="b", patterns=["model==R640, rev 2"], items={"image": "esxi-8"})
    moved = client.post("/api/v1/rules/b/move", json={"at": 0}, headers=AUTH).json
    assert [r["name"] for r in moved] == ["b", "a"]
    replaced = client.put("/api/v1/rules/a", json={"all_hosts": True, "items": {"image": "rescue"}}, headers=AUTH).json
    assert replaced["version"] == 2 and replaced["position"] == 1
    assert client.delete("/api/v1/rules/b", headers=AUTH).status_code == 200
    assert [r["name"] for r in client.get("/api/v1/rules").json] == ["a"]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"name": "x", "patterns": ["colour=red"], "items": {"image": "esxi-7"}}, "pattern"),
        ({"name": "x", "patterns": ["ipv4=198.18.0.9-198.18.0.1"], "items": {"image": "esxi-7"}}, "pattern"),
        ({"name": "x", "patterns": ["vendor=Dell"], "items": {"image": "nope"}}, "items.image"),
        ({"name": "x", "patterns": ["vendor=Dell"], "items": {"flavour": "a"}}, "item"),
        ({"name": "x", "patterns": ["vendor=Dell"], "items": {}}, "items"),
        ({"name": "bad name", "all_hosts": True, "items": {"image": "esxi-7"}}, "name"),
        ({"name": "x", "patterns": "vendor=Dell", "items": {"image": "esxi-7"}}, "patterns"),
    ],
)
def test_bad_rules_name_the_field_and_change_nothing(client: FlaskClient, rule: dict, field: str) -> None:
    response = client.post("/api/v1/rules", json=rule, headers=AUTH)
    assert response.status_code == 422, response.json
    assert response.json["error"]["field"] == field
    assert client.get("/api/v1/rules").json == [] and client.get("/api/v1/rules?set=active").json == []


def test_duplicate_rule_is_409(client: FlaskClient) -> None:
    _add(client, name="a", all_hosts=True, items={"image": "esxi-7"})
    assert client.post("/api/v1/rules", json={"name": "a", "all_hosts": True, "items": {"image": "esxi-7"}},
                       headers=AUTH).status_code == 409


def test_export_import_round_trip_is_all_or_nothing(client: FlaskClient) -> None:
    _add(client, name="a", patterns=["vendor=Dell,HPE", "ipv4=198.18.0.0/24"], items={"image": "esxi-7"})
    exported = client.get("/api/v1/rulesets/active").json
    text = yaml.safe_dump(exported)
    broken = yaml.safe_load(text)
    broken["rules"].append({"name": "b", "patterns": ["vendor=X"], "items": {"image": "missing"}})
    assert client.put("/api/v1/rulesets/working", json=broken, headers=AUTH).status_code == 422
    assert client.get("/api/v1/rulesets/working").json == exported
    assert client.put("/api/v1/rulesets/working", json=yaml.safe_load(text), headers=AUTH).status_code == 200
    assert client.get("/api/v1/rulesets/active").json == exported


def test_explain_for_a_host_and_for_attributes(client: FlaskClient) -> None:
    _add(client, name="dell", patterns=["vendor=Dell", "serial=S1"], items={"image": "esxi-8"})
    _boot(client, DELL, manufacturer="Dell", serial="S2")
    explained = client.get(f"/api/v1/hosts/{DELL}/rules").json["rules"][0]
    assert explained["matched"] is False
    assert [(p["pattern"], p["matched"]) for p in explained["patterns"]] == [("vendor=Dell", True), ("serial=S1", False)]
    ad_hoc = client.post("/api/v1/rules/explain", json={"attrs": {"vendor": "DELL", "serial": "s1"}}).json
    assert ad_hoc[0]["matched"] is True and ad_hoc[0]["won"] == ["image"]


def test_rule_writes_need_the_token(client: FlaskClient) -> None:
    assert client.post("/api/v1/rules", json={"name": "a", "all_hosts": True, "items": {"image": "esxi-7"}}).status_code == 401
    assert client.post("/api/v1/rulesets/activate", json={}).status_code == 401
    assert client.post("/api/v1/compliance/repair", json={}).status_code == 401
