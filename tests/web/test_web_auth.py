"""Which ``/api/`` writes skip the API token: the views marked in bootbox.web.auth, and no others."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from bootbox import hookimpl
from bootbox.service.bootservice import BootService
from bootbox.web import create_app
from bootbox.web.auth import is_exempt

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAC = "52:54:00:aa:bb:07"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _open_writes(app: Flask) -> set[str]:
    """Endpoints of ``/api/`` writes that answer without the API token."""
    return {rule.endpoint for rule in app.url_map.iter_rules()
            if rule.rule.startswith("/api/") and (rule.methods or set()) & WRITES
            and is_exempt(app.view_functions[rule.endpoint])}


def test_only_the_marked_views_skip_the_token(service: BootService) -> None:
    """The two report-ins booting hosts make and the read-only explain: nothing else, so a
    renamed or new blueprint cannot open a write by accident."""
    app = create_app(service, token=TOKEN)
    assert _open_writes(app) == {"boot.booted", "hostconfig.host_up", "rules.explain_attrs"}


def test_a_plugin_blueprints_writes_need_the_token(service: BootService) -> None:
    class Notes:
        @hookimpl
        def bootbox_register_routes(self, register):
            blueprint = Blueprint("notes", __name__, url_prefix="/api/v1/notes")

            @blueprint.post("/hosts/<mac>/booted")
            def note(mac: str) -> Response:
                return jsonify({"noted": mac})

            register(blueprint)

    service.pm.register(Notes())
    client = create_app(service, token=TOKEN).test_client()
    assert client.post(f"/api/v1/notes/hosts/{MAC}/booted", json={}).status_code == 401
    assert client.post(f"/api/v1/notes/hosts/{MAC}/booted", json={}, headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.post(f"/api/v1/notes/hosts/{MAC}/booted", json={}, headers=AUTH).get_json() == {"noted": MAC}


def test_host_facing_writes_answer_without_the_token(service: BootService) -> None:
    client = create_app(service, token=TOKEN).test_client()
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    token = service.hostconfig.up_token(MAC)
    assert client.post(f"/api/v1/hosts/{MAC}/booted", json={"boot_id": "b1"}).status_code == 401  # its up token
    assert client.post(f"/api/v1/hosts/{MAC}/booted?token={token}", json={"boot_id": "b1"}).status_code == 200
    assert client.post(f"/api/v1/hosts/{MAC}/up", json={"boot_id": "b2"}).status_code == 401  # its up token, not ours
    assert client.post(f"/api/v1/hosts/{MAC}/up?token={token}", json={"boot_id": "b3"}).status_code in (200, 503)
    assert client.delete(f"/api/v1/hosts/{MAC}").status_code == 401
    assert client.delete(f"/api/v1/hosts/{MAC}", headers=AUTH).status_code == 200
