"""``/api/v1/linux/…``: Linux images over the API (writes need the API token, as every
``/api/v1`` write does).

    GET    /api/v1/linux/images                 every built image (summary)
    POST   /api/v1/linux/images                 {"name", "suite", "packages": [...], "mirror"?}: 202 + a job
    GET    /api/v1/linux/jobs/<id>              a build's state and progress
    GET    /api/v1/linux/images/<name>          one image: packages with versions, injected ones, users
    GET    /api/v1/linux/images/<name>/log      its last build's log ({"log": text})
    GET    /api/v1/linux/diff?a=NAME&b=NAME     packages added / removed / changed (b may be NAME@previous)
    DELETE /api/v1/linux/images/<name>          remove (409 while a profile boots it)
    GET    /api/v1/linux/compliance             hosts and the image digest they run against the current one
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from bootbox import NotFound, ValidationError
from bootbox_linux import served as _served


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object (Content-Type: application/json)")
    return body


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(key, "expected a list of strings")
    return value


def blueprint() -> Blueprint:
    bp = Blueprint("linux", __name__, url_prefix="/api/v1/linux")

    @bp.get("/images")
    def images() -> Response:
        return jsonify(_served.served().images.list())

    @bp.post("/images")
    def build() -> tuple[Response, int]:
        body = _body()
        name, suite, mirror = body.get("name"), body.get("suite"), body.get("mirror", "")
        if not isinstance(name, str):
            raise ValidationError("name", "required: the image's name")
        if not isinstance(suite, str):  # required, so no half-formed request starts a build
            raise ValidationError("suite", "required: the Debian suite, e.g. bookworm")
        if not isinstance(mirror, str):
            raise ValidationError("mirror", "expected an archive URL")
        job = _served.served().images.start_build(name, suite, _strings(body, "packages"), mirror)
        return jsonify(job.to_doc()), 202

    @bp.get("/jobs/<job_id>")
    def job(job_id: str) -> Response:
        return jsonify(_served.served().images.job(job_id).to_doc())

    @bp.get("/images/<name>")
    def show(name: str) -> Response:
        return jsonify(_served.served().images.show(name))

    @bp.get("/images/<name>/log")
    def log(name: str) -> Response:
        path = _served.served().store.log_path(name)
        if not path.is_file():
            raise NotFound(f"no build log for image {name!r}")
        return jsonify({"name": name, "path": str(path), "log": path.read_text(errors="replace")})

    @bp.get("/diff")
    def diff() -> Response:
        a, b = request.args.get("a", ""), request.args.get("b", "")
        if not a or not b:
            raise ValidationError("a", "give two images: ?a=NAME&b=NAME (or b=NAME@previous)")
        return jsonify(_served.served().images.diff(a, b))

    @bp.delete("/images/<name>")
    def remove(name: str) -> Response:
        return jsonify(_served.served().images.remove(name))

    @bp.get("/compliance")
    def compliance() -> Response:
        return jsonify(_served.served().compliance())

    return bp
