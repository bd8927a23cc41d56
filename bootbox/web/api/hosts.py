"""``/api/v1/hosts``: the hosts bootbox has seen, their boot timelines, and forgetting one.

A host's answers, renders and pushes are in :mod:`bootbox.web.api.hostprofiles`, its rules in
:mod:`bootbox.web.api.rules`; the report-ins booting hosts make are host-facing endpoints
(:mod:`bootbox.web.boot`, :mod:`bootbox.web.api.hostprofiles`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from bootbox.web.deps import get_service, limit_arg

blueprint = Blueprint("hosts", __name__, url_prefix="/api/v1")


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
    return jsonify([event.to_dict() for event in service.host_events(mac, limit=limit_arg())])
