"""The HTTP boot endpoints and the API, through Flask's test client on a real BootService."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from bootbox import hookimpl
from bootbox.service.bootservice import BootService
from bootbox.web import create_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAC = "52:54:00:aa:bb:01"


@pytest.fixture
def client(service: BootService) -> FlaskClient:
    app = create_app(service, token=TOKEN)
    return app.test_client()


@pytest.fixture
def demo_files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.gz"
    kernel.write_bytes(os.urandom(300_000))
    initrd.write_bytes(os.urandom(100_000))
    return kernel, initrd


def _add_profile(client: FlaskClient, files: tuple[Path, Path], name: str = "demo") -> None:
    body = {"name": name, "kind": "linux", "spec": {"kernel": str(files[0]), "initrd": [str(files[1])],
                                                     "cmdline": "bootbox.callback={callback}"}}
    response = client.post("/api/v1/profiles", json=body, headers=AUTH)
    assert response.status_code == 201, response.json
    rule = {"name": f"all-{name}", "all_hosts": True, "items": {"image": name}}
    response = client.post("/api/v1/rules", json=rule, headers=AUTH)
    assert response.status_code == 201, response.json


def test_entry_script_chains_to_the_per_host_url(client: FlaskClient) -> None:
    response = client.get("/boot.ipxe", base_url="http://198.18.0.1:8080")
    assert response.status_code == 200
    assert response.text.startswith("#!ipxe\n")
    assert "http://198.18.0.1:8080/boot/hosts/${netX/mac:hexhyp}/script.ipxe?" in response.text


def test_host_without_profile_waits_and_is_shown_waiting(client: FlaskClient, service: BootService) -> None:
    response = client.get(f"/boot/hosts/{MAC.replace(':', '-')}/script.ipxe?manufacturer=QEMU&serial=S1")
    assert response.status_code == 200
    assert "no rule in the active rule set gives it an image profile" in response.text
    assert "echo   vendor=QEMU" in response.text
    host = service.host(MAC)
    assert host.state == "waiting"
    assert host.attrs["serial"] == "S1"


def test_full_boot_timeline(client: FlaskClient, service: BootService, demo_files: tuple[Path, Path]) -> None:
    _add_profile(client, demo_files)
    script = client.get(f"/boot/hosts/{MAC}/script.ipxe?uuid=564D0000-0000-0000-0000-000000000001&ip=198.18.0.50"
                        "&product=Standard%20PC&buildarch=x86_64&platform=pcbios").text
    assert "kernel --name kernel http://localhost/boot/hosts/525400aabb01/assets/kernel" in script
    callback = re.search(r"bootbox\.callback=http://localhost(/api/v1/hosts/52:54:00:aa:bb:01/booted\?token=\w+)", script)
    assert callback, script
    kernel = client.get("/boot/hosts/525400aabb01/assets/kernel")
    assert kernel.status_code == 200
    assert hashlib.sha256(kernel.data).digest() == hashlib.sha256(demo_files[0].read_bytes()).digest()
    assert client.get("/boot/hosts/525400aabb01/assets/initrd-0").data == demo_files[1].read_bytes()
    assert client.post(f"/api/v1/hosts/{MAC}/booted", data={"boot_id": "b0"}).status_code == 401  # no token
    response = client.post(callback.group(1), data={"ip": "198.18.0.50", "boot_id": "b1"})
    assert response.status_code == 200
    host = service.host(MAC)
    assert host.state == "configured" and host.boot_id == "b1"  # nothing to push: up -> configured
    assert host.attrs["model"] == "Standard PC" and host.attrs["uuid"] == "564d0000-0000-0000-0000-000000000001"
    events = client.get(f"/api/v1/hosts/{MAC}/events").json
    assert [e["kind"] for e in events] == ["rules", "http.script", "http.file", "http.file", "audit", "booted"]
    assert client.get("/api/v1/hosts").json[0]["state"] == "configured"


def test_range_etag_and_conditional_requests(client: FlaskClient, demo_files: tuple[Path, Path]) -> None:
    _add_profile(client, demo_files)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    url = "/boot/hosts/525400aabb01/assets/kernel"
    data = demo_files[0].read_bytes()
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.data == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    full = client.get(url)
    assert full.headers["Accept-Ranges"] == "bytes" and full.headers["ETag"] and full.headers["Last-Modified"]
    assert client.get(url, headers={"If-None-Match": full.headers["ETag"]}).status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)


def test_files_are_scoped_to_the_host_and_its_profile(client: FlaskClient, demo_files: tuple[Path, Path]) -> None:
    _add_profile(client, demo_files)
    # A host that never fetched its script has no profile: nothing to serve.
    assert client.get("/boot/hosts/525400aabb02/assets/kernel").status_code == 404
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    for name in ("../kernel", "..%2F..%2Fetc%2Fpasswd", "initrd-7", "nothing"):
        assert client.get(f"/boot/hosts/525400aabb01/assets/{name}").status_code == 404
    assert client.get("/boot/hosts/not-a-mac/assets/kernel").status_code == 422


def test_loaders_over_http_answer_head_with_length_and_never_redirect(client: FlaskClient, service: BootService) -> None:
    size = (Path(service.settings.tftp.root) / "snponly.efi").stat().st_size
    head = client.head("/boot/loaders/snponly.efi")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
    assert client.get("/boot/loaders/..%2F..%2Fetc%2Fpasswd").status_code in (403, 404)
    assert client.get("/boot//loaders/snponly.efi").status_code == 200  # served, not redirected


def test_report_in_from_unknown_host_is_404(client: FlaskClient) -> None:
    assert client.post("/api/v1/hosts/52:54:00:00:00:99/booted", data={}).status_code == 404


def test_api_writes_need_the_token(client: FlaskClient, demo_files: tuple[Path, Path]) -> None:
    body = {"name": "p", "kind": "linux", "spec": {"kernel": str(demo_files[0])}}
    assert client.post("/api/v1/profiles", json=body).status_code == 401
    assert client.post("/api/v1/profiles", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/v1/profiles", json=body, headers=AUTH).status_code == 201
    assert client.delete("/api/v1/profiles/p").status_code == 401
    assert client.get("/api/v1/profiles/p").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"kind": "linux", "spec": {}}, 422, "name"),
        ({"name": "p", "spec": {}}, 422, "kind"),
        ({"name": "p", "kind": "nope", "spec": {}}, 422, "kind"),
        ({"name": "p q", "kind": "linux", "spec": {}}, 422, "name"),
        ({"name": "p", "kind": "linux", "spec": {"kernel": "relative"}}, 422, "spec.kernel"),
        ({"name": "p", "kind": "linux", "spec": []}, 422, "spec"),
        ([1, 2], 422, "body"),
    ],
)
def test_api_validation_names_the_field(client: FlaskClient, body: object, status: int, field: str) -> None:
    response = client.post("/api/v1/profiles", json=body, headers=AUTH)
    assert response.status_code == status
    assert response.json["error"]["field"] == field
    assert client.get("/api/v1/profiles").json == []  # nothing half-applied


def test_duplicate_profile_is_409(client: FlaskClient, demo_files: tuple[Path, Path]) -> None:
    _add_profile(client, demo_files)
    body = {"name": "demo", "kind": "linux", "spec": {"kernel": str(demo_files[0])}}
    assert client.post("/api/v1/profiles", json=body, headers=AUTH).status_code == 409
    assert client.put("/api/v1/profiles/demo", json=body, headers=AUTH).status_code == 200


def test_a_failing_plugin_does_not_break_the_boot(client: FlaskClient, service: BootService, demo_files) -> None:
    class Broken:
        @hookimpl(tryfirst=True)
        def bootbox_boot_script(self, host, profile, boot):
            raise RuntimeError("boom")

    _add_profile(client, demo_files)
    service.pm.register(Broken())
    response = client.get(f"/boot/hosts/{MAC}/script.ipxe")
    assert response.status_code == 200
    assert "retrying" in response.text or "asking again" in response.text
    kinds = [e.kind for e in service.host_events(MAC)]
    assert "state" in kinds  # the failure is on the host's timeline


def test_after_boot_hooks_run_and_failures_are_isolated(client: FlaskClient, service: BootService, demo_files) -> None:
    import threading

    seen: list[str] = []
    done = threading.Event()

    class Broken:
        @hookimpl
        def bootbox_host_booted(self, host, event):
            raise RuntimeError("push failed")

    class Recorder:
        @hookimpl
        def bootbox_host_booted(self, host, event):
            seen.append(event.data["boot_id"])
            done.set()

    service.pm.register(Broken())
    service.pm.register(Recorder())
    _add_profile(client, demo_files)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    client.post(f"/api/v1/hosts/{MAC}/booted?token={service.hostconfig.up_token(MAC)}", json={"boot_id": "b7"})
    assert done.wait(10)
    assert seen == ["b7"]


def test_web_page_lists_hosts(client: FlaskClient) -> None:
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    page = client.get("/")
    assert page.status_code == 200 and MAC in page.text and "waiting" in page.text
