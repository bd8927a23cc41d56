"""``/api/v1/status``, ``/api/v1/events``, ``/api/v1/plugins``: the appliance as a whole."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from bootbox.version import __version__
from bootbox.web.deps import get_service, limit_arg, server_status

blueprint = Blueprint("status", __name__, url_prefix="/api/v1")


@blueprint.get("/status")
def status() -> Response:
    counts = get_service().counts()
    return jsonify(
        {
            "version": __version__,
            "hosts": counts.hosts,
            "profiles": counts.profiles,
            "servers": server_status(),
            "journal": counts.journal,
            "refused": counts.refused,
        }
    )


@blueprint.get("/events")
def recent_events() -> Response:
    return jsonify([event.to_dict() for event in get_service().recent_events(limit_arg() or 100)])


@blueprint.get("/plugins")
def plugins() -> Response:
    return jsonify([info.to_dict() for info in get_service().plugins()])
