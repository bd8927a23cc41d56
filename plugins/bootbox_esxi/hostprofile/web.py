"""``/api/v1/esxi/hosts/<mac>/hostprofile/...``: host-profile compliance over HTTP.

``POST …/compliance`` checks the host now (it contacts the host, so it is a write and needs the
API token, like every write); ``GET …/compliance`` is the last known result, and
``GET /api/v1/esxi/hostprofile/compliance`` every host's, which never contacts a host.
"""

from __future__ import annotations

from typing import Protocol

from flask import Blueprint, Response, jsonify, request

from bootbox import NotFound, ValidationError, normalize_mac
from bootbox_esxi.hostprofile.runner import HostProfiles


STEPS_MAX = 64 * 1024


class HasHostProfiles(Protocol):
    @property
    def hostprofiles(self) -> HostProfiles: ...

    def hostprofile_steps(self, mac: str, key: str, text: str, client: str) -> int: ...


def make_blueprint(plugin: HasHostProfiles) -> Blueprint:
    bp = Blueprint("esxi_hostprofile_api", __name__, url_prefix="/api/v1/esxi")

    @bp.post("/hosts/<mac>/hostprofile/compliance")
    def check(mac: str) -> Response:
        return jsonify(plugin.hostprofiles.compliance(normalize_mac(mac)))

    @bp.get("/hosts/<mac>/hostprofile/compliance")
    def last(mac: str) -> Response:
        mac = normalize_mac(mac)
        found = plugin.hostprofiles.last_compliance().get(mac)
        if found is None:
            raise NotFound(f"no host-profile compliance is known for {mac} yet (POST to check it now)")
        return jsonify(found)

    @bp.get("/hostprofile/compliance")
    def every() -> Response:
        return jsonify(sorted(plugin.hostprofiles.last_compliance().values(), key=lambda doc: doc["mac"]))

    return bp


def make_host_blueprint(plugin: HasHostProfiles) -> Blueprint:
    """``POST /boot/esxi/hosts/<mac>/<call-in key>/hostprofile-steps``: the boot-module script's
    report (text, one line per step), accepted only with the key of the host's current boot."""
    bp = Blueprint("esxi_hostprofile_host", __name__, url_prefix="/boot/esxi")

    @bp.post("/hosts/<mac>/<key>/hostprofile-steps")
    def steps(mac: str, key: str) -> Response:
        data = request.get_data(cache=False)
        if len(data) > STEPS_MAX:
            raise ValidationError("body", f"a step report is at most {STEPS_MAX} bytes")
        count = plugin.hostprofile_steps(normalize_mac(mac), key, data.decode("utf-8", "replace"),
                                         request.remote_addr or "")
        return jsonify({"steps": count})

    return bp
