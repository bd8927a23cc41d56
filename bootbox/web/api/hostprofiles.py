"""Host profiles, answers, renders, pushes and lint over HTTP; and the two host-facing endpoints.

``blueprint`` (``/api/v1``, operators): reads are open unless ``[http] read_token`` is set, and
never show a secret (masked); writes and the one read that reveals secrets (``POST
…/render/<kind>``) need the API token, like every ``/api/v1`` write.

``host_blueprint``: what booting hosts call, served only to the host itself (docs/security.md).
``GET /boot/hosts/<mac>/answers/<token>/<file>`` serves an answer file of the host's current boot,
once per boot (403 and an audit event otherwise), and ``POST /api/v1/hosts/<mac>/up`` is the
report-in, marked :func:`~bootbox.web.auth.host_facing` (it checks the boot's up token, not the
API token), with Auto Deploy's status codes: 200 configured, 503 pushes still running (retry
later), 404 unknown host, 401 bad token, 403 not that host, 409 a push gave up.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from bootbox.errors import ValidationError
from bootbox.core.lint import lint
from bootbox.model import normalize_mac
from bootbox.web.auth import host_facing, up_token
from bootbox.web.deps import base_url, client_ip, get_service, int_arg, json_object, report_body

blueprint = Blueprint("hostprofiles", __name__, url_prefix="/api/v1")
host_blueprint = Blueprint("hostconfig", __name__)

RETRY_AFTER_SECONDS = 10
"""What a host told 503 waits before asking again (the ESXi waiter's first backoff, facts §3)."""


def _summary(profile: Any) -> dict[str, Any]:
    return {"name": profile.name, "kind": profile.kind, "version": profile.version, "description": profile.description,
            "inputs": [spec.name for spec in profile.inputs], "files": sorted(profile.templates)}


# ------------------------------------------------------------------ host profiles


@blueprint.get("/hostprofiles")
def list_hostprofiles() -> Response:
    return jsonify([_summary(p) for p in get_service().host_profiles()])


@blueprint.get("/hostprofiles/<name>")
def show_hostprofile(name: str) -> Response:
    version = int_arg("version", minimum=1, maximum=10**9)
    return jsonify(get_service().host_profile(name, version).to_dict())


def _saved(profile: Any, status: int) -> Response:
    response = jsonify({**profile.to_dict(), "warnings": [str(w) for w in lint(profile)]})
    response.status_code = status
    return response


@blueprint.post("/hostprofiles")
def create_hostprofile() -> Response:
    return _saved(get_service().put_host_profile(json_object(), replace_existing=False), 201)


@blueprint.put("/hostprofiles/<name>")
def replace_hostprofile(name: str) -> Response:
    body = {**json_object(), "name": name}
    return _saved(get_service().put_host_profile(body, replace_existing=True), 200)


@blueprint.delete("/hostprofiles/<name>")
def delete_hostprofile(name: str) -> Response:
    get_service().delete_host_profile(name)
    return jsonify({"deleted": name})


@blueprint.get("/answer-kinds")
def answer_kinds() -> Response:
    return jsonify([kind.to_dict() for kind in get_service().answer_kinds()])


@blueprint.get("/lint")
def lint_all() -> Response:
    profiles = get_service().host_profiles()
    return jsonify([w.to_dict() for profile in profiles for w in lint(profile)])


# ------------------------------------------------------------------ answers


@blueprint.get("/hosts/<mac>/answers")
def show_answers(mac: str) -> Response:
    return jsonify(get_service().host_answers(normalize_mac(mac)))


@blueprint.patch("/hosts/<mac>/answers")
def set_answers(mac: str) -> Response:
    mac = normalize_mac(mac)
    values = json_object().get("values")
    if not isinstance(values, dict):
        raise ValidationError("values", "expected an object of input name: value")
    return jsonify(get_service().set_answers(mac, values))


@blueprint.delete("/hosts/<mac>/answers/<key>")
def unset_answer(mac: str, key: str) -> Response:
    mac = normalize_mac(mac)
    return jsonify(get_service().unset_answer(mac, key))


@blueprint.post("/answers/import")
def import_answers() -> Response:
    text = json_object().get("csv")
    if not isinstance(text, str):
        raise ValidationError("csv", "expected the CSV text")
    written = get_service().import_answers(text)
    return jsonify({"hosts": written})


# ------------------------------------------------------------------ render, push


def _render(mac: str, kind: str, masked: bool) -> Response:
    service = get_service()
    host = service.host(mac)
    profile_name = request.args.get("profile") or None
    profile, files = service.render_answer_files(host, base_url=base_url(), kind=kind, profile_name=profile_name,
                                                 masked=masked)
    return jsonify({"host": host.mac, "host_profile": profile.name, "version": profile.version, "kind": profile.kind,
                    "masked": masked, "files": files})


@blueprint.get("/hosts/<mac>/render/<kind>")
def render_masked(mac: str, kind: str) -> Response:
    """What the host would get, secrets (and hashes made from them) masked: open to read."""
    return _render(mac, kind, masked=True)


@blueprint.post("/hosts/<mac>/render/<kind>")
def render_revealed(mac: str, kind: str) -> Response:
    """The same with secrets, for an operator holding the API token (a POST: token-checked)."""
    return _render(mac, kind, masked=False)


@blueprint.post("/hosts/<mac>/push")
def push(mac: str) -> Response:
    host = get_service().push(mac)
    response = jsonify(host.to_dict())
    response.status_code = 202
    return response


# ------------------------------------------------------------------ host-facing


@host_blueprint.get("/boot/hosts/<mac>/answers/<token>/<name>")
def answer_file(mac: str, token: str, name: str) -> Response:
    text = get_service().answer_file(mac, token, name, client_ip(), base_url())
    response = Response(text, mimetype="text/plain; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@host_blueprint.post("/api/v1/hosts/<mac>/up")
@host_facing
def host_up(mac: str) -> Response:
    host, status = get_service().host_up(mac, report_body(), client_ip(), up_token())
    if status == "busy":
        response = jsonify({"state": str(host.state), "message": "configuration pushes are running; retry later"})
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if status == "failed":
        response = jsonify({"state": str(host.state), "message": f"could not apply: {host.reason}"})
        response.status_code = 409
        return response
    return jsonify({"state": str(host.state), "message": "done"})
