"""``/api/v1``: the operator's JSON API (the CLI is a client of it).

Reads are open; every write needs ``Authorization: Bearer <token>`` (the token lives mode 0600
in the state dir). Input is validated and errors name the field; nothing is half-applied.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from bootbox import __version__
from bootbox.errors import Unauthorized, ValidationError
from bootbox.model import Profile
from bootbox.store.apitoken import token_matches
from bootbox.web import get_service

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

_WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
HOST_BLUEPRINTS = {"boot", "hostconfig"}
"""Blueprints whose endpoints booting hosts call: read-only or host-scoped, never token-checked."""


def require_token_for_writes() -> None:
    """Every write under ``/api/v1`` — bootbox's own and plugins' — needs the API token."""
    if request.method not in _WRITE_METHODS or not request.path.startswith("/api/"):
        return
    if request.blueprint in HOST_BLUEPRINTS:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "bootbox_read_only", False):
        return
    header = request.headers.get("Authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else None
    if not token_matches(current_app.extensions["bootbox"]["token"], presented):
        raise Unauthorized("this API write needs 'Authorization: Bearer <token>'; the token is in the state dir (api-token)")


def read_only(view: Any) -> Any:
    """Mark a POST endpoint that only computes an answer (no token needed), e.g. explain."""
    view.bootbox_read_only = True
    return view


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object (Content-Type: application/json)")
    return body


def _limit() -> int | None:
    raw = request.args.get("limit")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValidationError("limit", "expected a positive whole number")
    return int(raw)


@blueprint.get("/status")
def status() -> Response:
    service = get_service()
    return jsonify(
        {
            "version": __version__,
            "hosts": len(service.hosts),
            "profiles": len(service.profiles()),
            "servers": current_app.extensions["bootbox"]["status"](),
            "journal": dict(service.journal.stats),
        }
    )


# ------------------------------------------------------------------ hosts


@blueprint.get("/hosts")
def list_hosts() -> Response:
    return jsonify([host.to_dict() for host in get_service().list_hosts()])


@blueprint.get("/hosts/<mac>")
def show_host(mac: str) -> Response:
    return jsonify(get_service().host(mac).to_dict())


@blueprint.delete("/hosts/<mac>")
def delete_host(mac: str) -> Response:
    get_service().remove_host(mac)
    return jsonify({"deleted": mac})


@blueprint.get("/hosts/<mac>/events")
def host_events(mac: str) -> Response:
    service = get_service()
    service.host(mac)
    return jsonify([event.to_dict() for event in service.host_events(mac, limit=_limit())])


@blueprint.get("/events")
def recent_events() -> Response:
    return jsonify([event.to_dict() for event in get_service().journal.recent(_limit() or 100)])


# ------------------------------------------------------------------ profiles


def _profile_from_body(body: dict[str, Any], name: str | None = None) -> Profile:
    name = name or body.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError("name", "required")
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValidationError("kind", "required")
    spec = body.get("spec", {})
    if not isinstance(spec, dict):
        raise ValidationError("spec", "expected an object")
    description = body.get("description", "")
    if not isinstance(description, str):
        raise ValidationError("description", "expected a string")
    return Profile(name=name, kind=kind, spec=spec, description=description)


@blueprint.get("/profiles")
def list_profiles() -> Response:
    return jsonify([profile.to_dict() for profile in get_service().profiles()])


@blueprint.post("/profiles")
def create_profile() -> Response:
    profile = get_service().put_profile(_profile_from_body(_json_object()))
    response = jsonify(profile.to_dict())
    response.status_code = 201
    return response


@blueprint.get("/profiles/<name>")
def show_profile(name: str) -> Response:
    return jsonify(get_service().profile(name).to_dict())


@blueprint.put("/profiles/<name>")
def replace_profile(name: str) -> Response:
    profile = get_service().put_profile(_profile_from_body(_json_object(), name), replace_existing=True)
    return jsonify(profile.to_dict())


@blueprint.delete("/profiles/<name>")
def delete_profile(name: str) -> Response:
    get_service().delete_profile(name)
    return jsonify({"deleted": name})


@blueprint.get("/profile-kinds")
def profile_kinds() -> Response:
    kinds = get_service().kinds.values()
    return jsonify([{"kind": k.name, "description": k.description, "plugin": k.plugin} for k in kinds])


@blueprint.get("/plugins")
def plugins() -> Response:
    return jsonify([info.to_dict() for info in get_service().plugins()])
