"""``/api/v1/profiles`` and ``/api/v1/profile-kinds``: the image profiles hosts boot.

A profile's ``spec`` is validated by the plugin that registered its kind before it is stored;
the profile is written through to the store before the answer goes out.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from bootbox.errors import ValidationError
from bootbox.model import Profile
from bootbox.web.deps import get_service, json_object

blueprint = Blueprint("profiles", __name__, url_prefix="/api/v1")


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
    profile = get_service().put_profile(_profile_from_body(json_object()))
    response = jsonify(profile.to_dict())
    response.status_code = 201
    return response


@blueprint.get("/profiles/<name>")
def show_profile(name: str) -> Response:
    return jsonify(get_service().profile(name).to_dict())


@blueprint.put("/profiles/<name>")
def replace_profile(name: str) -> Response:
    profile = get_service().put_profile(_profile_from_body(json_object(), name), replace_existing=True)
    return jsonify(profile.to_dict())


@blueprint.delete("/profiles/<name>")
def delete_profile(name: str) -> Response:
    get_service().delete_profile(name)
    return jsonify({"deleted": name})


@blueprint.get("/profile-kinds")
def profile_kinds() -> Response:
    kinds = get_service().profile_kinds()
    return jsonify([{"kind": k.name, "description": k.description, "plugin": k.plugin} for k in kinds])
