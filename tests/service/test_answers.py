"""Answers and host profiles through the API on a real BootService: holds, masking, import, versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from bootbox.store.secretbox import is_encrypted
from bootbox.service.bootservice import BootService
from bootbox.web import create_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAC = "52:54:00:aa:cc:01"
SECRET = "Tr0ub4dor&3-horse"

PROFILE: dict[str, Any] = {
    "name": "web",
    "kind": "cloud-init",
    "description": "web servers",
    "inputs": [{"name": "hostname", "validation": "hostname"},
               {"name": "ip", "validation": "ipv4", "required": False},
               {"name": "root_password", "type": "password"},
               {"name": "api_key", "secret": True, "required": False}],
    "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\n"
                               "password: {{ answers.root_password }}\nkey: {{ answers.api_key }}\n"},
}


@pytest.fixture
def client(service: BootService, tmp_path: Path) -> FlaskClient:
    app = create_app(service, token=TOKEN)
    client = app.test_client()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    spec = {"kernel": str(kernel), "cmdline": "ds=nocloud-net;s={answers} up={up}"}
    assert client.post("/api/v1/profiles", json={"name": "deb", "kind": "linux", "spec": spec}, headers=AUTH).status_code == 201
    assert client.post("/api/v1/hostprofiles", json=PROFILE, headers=AUTH).status_code == 201
    rule = {"name": "all", "all_hosts": True, "items": {"image": "deb", "host_profile": "web"}}
    assert client.post("/api/v1/rules", json=rule, headers=AUTH).status_code == 201
    return client


def _set(client: FlaskClient, mac: str = MAC, **values: Any) -> Any:
    return client.patch(f"/api/v1/hosts/{mac}/answers", json={"values": values}, headers=AUTH)


def test_a_host_missing_answers_is_held_with_a_console_message(client: FlaskClient, service: BootService) -> None:
    script = client.get(f"/boot/hosts/{MAC}/script.ipxe").text
    assert "held: answers are missing: hostname, root_password" in script
    assert "kernel" not in script and "chain --replace --autofree" in script  # it retries
    host = service.host(MAC)
    assert host.state == "needs-answers" and "hostname" in host.reason
    assert client.get(f"/api/v1/hosts/{MAC}/answers").json["missing"] == ["hostname", "root_password"]
    assert _set(client, hostname="web01", root_password=SECRET).status_code == 200
    script = client.get(f"/boot/hosts/{MAC}/script.ipxe").text
    assert re.search(r"ds=nocloud-net;s=http://localhost/boot/hosts/525400aacc01/answers/[\w-]+/ ", script)
    assert service.host(MAC).state == "booting" and service.host(MAC).reason == ""


def test_secrets_are_encrypted_at_rest_and_masked_everywhere(client: FlaskClient, service: BootService) -> None:
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    shown = _set(client, hostname="web01", root_password=SECRET, api_key="k-123").json
    assert shown["answers"] == {"hostname": "web01", "root_password": "********", "api_key": "********"}
    stored = service.store.get("answers", MAC)["values"]
    assert stored["hostname"] == "web01"
    assert is_encrypted(stored["root_password"]) and SECRET not in str(stored)
    assert client.get(f"/api/v1/hosts/{MAC}/answers").json["answers"]["root_password"] == "********"
    preview = client.get(f"/api/v1/hosts/{MAC}/render/cloud-init").json
    assert preview["masked"] and "password: <masked>" in preview["files"]["user-data"]
    assert "k-123" not in str(preview) and SECRET not in str(preview)


def test_revealing_a_render_needs_the_token(client: FlaskClient) -> None:
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    _set(client, hostname="web01", root_password=SECRET, api_key="k-123")
    assert client.post(f"/api/v1/hosts/{MAC}/render/cloud-init").status_code == 401
    revealed = client.post(f"/api/v1/hosts/{MAC}/render/cloud-init", headers=AUTH).json
    text = revealed["files"]["user-data"]
    assert "key: k-123" in text and re.search(r"password: \$6\$[./\w]{16}\$[./\w]{86}\n", text)
    assert SECRET not in text  # the target accepts a hash, so it never gets the password
    assert client.get(f"/api/v1/hosts/{MAC}/render/preseed").status_code == 422  # not its kind


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"hostname": "web 01"}, "hostname"),
        ({"ip": "10.0.0.300"}, "ip"),
        ({"hostnam": "x"}, "hostnam"),
        ({}, "values"),
    ],
)
def test_bad_answers_are_refused_naming_the_field(client: FlaskClient, values: dict[str, Any], field: str) -> None:
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    response = _set(client, **values)
    assert response.status_code == 422 and response.json["error"]["field"] == field
    assert client.get(f"/api/v1/hosts/{MAC}/answers").json["answers"] == {}


def test_answer_writes_need_the_api_token(client: FlaskClient) -> None:
    assert client.patch(f"/api/v1/hosts/{MAC}/answers", json={"values": {"hostname": "a"}}).status_code == 401
    assert client.post("/api/v1/answers/import", json={"csv": "mac,hostname\n"}).status_code == 401


def test_answers_can_wait_for_a_host_that_has_not_booted(client: FlaskClient, service: BootService) -> None:
    other = "52:54:00:aa:cc:02"
    assert _set(client, other, hostname="db01", root_password=SECRET).status_code == 200
    doc = client.get(f"/api/v1/hosts/{other}/answers").json
    assert not doc["known_host"] and doc["answers"]["root_password"] == "********"
    script = client.get(f"/boot/hosts/{other}/script.ipxe").text
    assert "held" not in script and service.host(other).state == "booting"


def test_csv_import_is_all_or_nothing(client: FlaskClient, service: BootService) -> None:
    good = f"mac,hostname,root_password,ip\n{MAC},web01,{SECRET},\n52-54-00-AA-CC-03,web03,pw3,198.18.0.3\n"
    bad = good + "52:54:00:aa:cc:04,web04,pw4,198.18.0.999\n"
    response = client.post("/api/v1/answers/import", json={"csv": bad}, headers=AUTH)
    assert response.status_code == 422 and response.json["error"]["field"] == "row 4: ip"
    assert service.store.all("answers") == {}
    response = client.post("/api/v1/answers/import", json={"csv": good}, headers=AUTH)
    assert response.json == {"hosts": [MAC, "52:54:00:aa:cc:03"]}
    assert service.hostconfig.answers.values("52:54:00:aa:cc:03") == {"hostname": "web03", "root_password": "pw3",
                                                                       "ip": "198.18.0.3"}
    assert "ip" not in service.hostconfig.answers.values(MAC)  # an empty cell sets nothing


def test_host_profiles_are_versioned_and_in_use_ones_are_kept(client: FlaskClient) -> None:
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    changed = {**PROFILE, "description": "v2"}
    assert client.post("/api/v1/hostprofiles", json=changed, headers=AUTH).status_code == 409
    replaced = client.put("/api/v1/hostprofiles/web", json=changed, headers=AUTH).json
    assert replaced["version"] == 2
    assert client.get("/api/v1/hostprofiles/web?version=1").json["description"] == "web servers"
    assert client.get("/api/v1/hostprofiles/web").json["description"] == "v2"
    assert client.get("/api/v1/hostprofiles/web?version=7").status_code == 404
    response = client.delete("/api/v1/hostprofiles/web", headers=AUTH)
    assert response.status_code == 409 and MAC in response.json["error"]["message"]


def test_adding_a_profile_reports_lint_warnings(client: FlaskClient) -> None:
    doc = {"name": "fixed", "kind": "preseed",
           "templates": {"preseed.cfg": "d-i netcfg/get_hostname string web01\nd-i netcfg/get_ipaddress string 198.18.0.7\n"}}
    saved = client.post("/api/v1/hostprofiles", json=doc, headers=AUTH).json
    assert [w.split(": ", 1)[1].split(":")[0] for w in saved["warnings"]] == [
        "hard-coded host name 'web01'", "hard-coded address 198.18.0.7"]
    assert len(client.get("/api/v1/lint").json) == 2
    kinds = {k["kind"]: k for k in client.get("/api/v1/answer-kinds").json}
    assert kinds["cloud-init"]["plugin"] == "bootbox_linux" and kinds["preseed"]["files"] == ["preseed.cfg"]


def test_a_missing_host_profile_holds_the_host(client: FlaskClient, service: BootService) -> None:
    rule = {"name": "ghost", "all_hosts": True, "items": {"host_profile": "ghost"}}
    client.post("/api/v1/rules", json={**rule, "at": 0}, headers=AUTH)
    script = client.get(f"/boot/hosts/{MAC}/script.ipxe").text
    assert "its host profile 'ghost' does not exist" in script
    assert service.host(MAC).state == "needs-answers"


def test_removing_a_host_keeps_its_answers_unless_asked_to_delete_them(client: FlaskClient, service: BootService) -> None:
    assert _set(client, hostname="web01", root_password=SECRET).status_code == 200
    client.get(f"/boot/hosts/{MAC}/script.ipxe")  # the host is known now
    assert client.delete(f"/api/v1/hosts/{MAC}", headers=AUTH).json == {"deleted": MAC, "answers_deleted": False}
    assert service.hostconfig.answers.values(MAC)["hostname"] == "web01"  # ready for its next boot
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    bad = client.delete(f"/api/v1/hosts/{MAC}?answers=maybe", headers=AUTH)
    assert bad.status_code == 422 and bad.json["error"]["field"] == "answers"
    assert service.host(MAC)  # a refused request removed nothing
    assert client.delete(f"/api/v1/hosts/{MAC}?answers=true", headers=AUTH).json["answers_deleted"] is True
    assert service.hostconfig.answers.stored(MAC) == {} and MAC not in service.store.all("answers")
