"""``/api/v1/hosts``: the hosts bootbox has seen, their boot timelines, and forgetting one.

A host's answers, renders and pushes are in :mod:`bootbox.web.api.hostprofiles`, its rules in
:mod:`bootbox.web.api.rules`; the report-ins booting hosts make are host-facing endpoints
(:mod:`bootbox.web.boot`, :mod:`bootbox.web.api.hostprofiles`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from bootbox.errors import ValidationError
from bootbox.model import Host
from bootbox.web.deps import flag_arg, get_service, limit_arg

blueprint = Blueprint("hosts", __name__, url_prefix="/api/v1")


def _public(host: Host) -> dict[str, Any]:
    """A host as the API shows it: without its boot nonce (harmless without the secrets key, but
    nothing a reader needs)."""
    doc = host.to_dict()
    doc.pop("boot_nonce", None)
    return doc


@blueprint.get("/hosts")
def list_hosts() -> Response:
    return jsonify([_public(host) for host in get_service().list_hosts()])


@blueprint.get("/hosts/<mac>")
def show_host(mac: str) -> Response:
    return jsonify(_public(get_service().host(mac)))


@blueprint.post("/hosts/<mac>/adopt")
def adopt_host(mac: str) -> Response:
    """An operator vouches for a MAC (``[hosts] adopt = "manual"``); body ``{"hostname": NAME}`` optional."""
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object (or no body)")
    hostname = body.get("hostname", "")
    if not isinstance(hostname, str):
        raise ValidationError("hostname", "expected a host name")
    return jsonify(_public(get_service().adopt(mac, hostname)))


@blueprint.post("/hosts/<mac>/resolve")
def resolve_host(mac: str) -> Response:
    """Clear a host's ``conflict``: its next verified boot binds its SMBIOS UUID afresh."""
    return jsonify(_public(get_service().resolve(mac)))


@blueprint.delete("/hosts/<mac>")
def delete_host(mac: str) -> Response:
    """Forget a host; ``?answers=true`` deletes its answers (secrets included) too."""
    answers = flag_arg("answers", False)
    get_service().remove_host(mac, answers=answers)
    return jsonify({"deleted": mac, "answers_deleted": answers})


@blueprint.get("/hosts/<mac>/events")
def host_events(mac: str) -> Response:
    service = get_service()
    service.host(mac)
    return jsonify([event.to_dict() for event in service.host_events(mac, limit=limit_arg())])
