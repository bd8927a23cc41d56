"""HTTP endpoints of the esxi plugin: the operator API and the files booting hosts fetch.

``/api/v1/esxi/...`` (JSON; the core's app-wide check makes writes need the API token): depots
(import, ``replace``, remove), import jobs, the hosts a VIB rebuild left non-compliant, VIBs,
depot image profiles, profile views/plans/diffs/bundles, ``hosts/<mac>/image``.

``/boot/esxi/...`` (read-only): per host and boot, ``hosts/<mac>/<call-in key>/<answer token>/``
``boot.cfg`` and ``pxelinux.cfg``, reached only through the host's own MAC and only for an
``esxi`` profile it was given (they echo what their URL carries and reveal nothing else), and
``hosts/<mac>/<call-in key>/bbcallin.tgz``, the stateless call-in module, served only with the
key of the host's current boot (403 and an ``audit`` event otherwise: it carries the host's up
token and its TLS key from the appliance's CA). The kickstart is not here: install-mode hosts fetch it from the core's single-use
answer URL. Per image, the module tree behind the caches (``images/<image id>/<module>``,
immutable per URL, so caches may keep it); and ``health``, which caches pass through uncached so
the boot script can tell a live cache from a dead one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from bootbox import (BootContext, EventKind, Forbidden, NotFound, Profile, ValidationError, group_cache_urls,
                     normalize_mac)
from bootbox_esxi import api_views, bootcfg, callin, housekeeping
from bootbox_esxi.config import LOADER_NAMES
from bootbox_esxi.kind import KIND
from bootbox_esxi.state import ServedPlugin

IMAGE_MAX_AGE = 31536000
IMMUTABLE = "public, max-age=31536000, immutable"
"""An image id is a digest of every module's SHA-256: a URL under it never changes (docs/caching.md)."""
TEXT = "text/plain; charset=utf-8"


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object (Content-Type: application/json)")
    return body


def _text(text: str) -> Response:
    response = Response(text, mimetype=TEXT)
    response.headers["Cache-Control"] = "no-store"
    return response


def make_blueprints(plugin: ServedPlugin) -> list[Blueprint]:
    """Fresh blueprints bound to ``plugin`` (one set per web app)."""
    return [_api(plugin), _boot(plugin)]


def _api(plugin: ServedPlugin) -> Blueprint:
    bp = Blueprint("esxi_api", __name__, url_prefix="/api/v1/esxi")
    views = api_views.Views(plugin)

    @bp.get("/depots")
    def depots() -> Response:
        return jsonify(views.depots())

    @bp.post("/depots")
    def add_depot() -> tuple[Response, int]:
        body = _body()
        source, replace = body.get("source"), body.get("replace", False)
        if not isinstance(source, str) or not source:
            raise ValidationError("source", "expected an absolute path on the appliance or an http(s) URL")
        if not isinstance(replace, bool):
            raise ValidationError("replace", "expected true or false")
        work = functools.partial(housekeeping.import_replacing, plugin) if replace else None
        return jsonify(plugin.state.jobs.start(source, work).to_doc()), 202

    @bp.delete("/depots/<depot_id>")
    def remove_depot(depot_id: str) -> Response:
        return jsonify(housekeeping.remove_depot(plugin, depot_id))

    @bp.get("/compliance")
    def compliance() -> Response:
        return jsonify(housekeeping.compliance(plugin))

    @bp.get("/jobs/<job_id>")
    def job(job_id: str) -> Response:
        return jsonify(plugin.state.jobs.get(job_id).to_doc())

    @bp.get("/depot-profiles")
    def depot_profiles() -> Response:
        return jsonify(views.depot_profiles(request.args.get("depot")))

    @bp.get("/vibs")
    def vibs() -> Response:
        return jsonify(views.vibs({k: v for k, v in request.args.items() if v}))

    @bp.get("/vibs/<vib_id>")
    def vib(vib_id: str) -> Response:
        return jsonify(views.vib(vib_id))

    @bp.get("/profiles/<path:name>")
    def profile(name: str) -> Response:
        return jsonify(views.profile(name))

    @bp.post("/plans/<action>")
    def plan(action: str) -> Response:
        return jsonify(views.plan(action, _body()))

    @bp.get("/diff")
    def diff() -> Response:
        return jsonify(views.diff(request.args.get("a", ""), request.args.get("b", "")))

    @bp.get("/bundles/<path:name>")
    def bundle(name: str) -> Response:
        path = views.bundle(name)
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name=f"{name.replace('/', '-')}.zip", conditional=True)

    @bp.get("/hosts/<mac>/image")
    def host_image(mac: str) -> Response:
        return jsonify(views.host_image(mac))

    return bp


def _base_url(plugin: ServedPlugin) -> str:
    return (plugin.public_url or request.host_url).rstrip("/")


def _host_profile(plugin: ServedPlugin, mac: str) -> tuple[Any, Profile]:
    """The host behind ``mac`` and its esxi profile; 404 for anything else."""
    host = plugin.state.context.host(normalize_mac(mac))
    name = host.profile
    if not name:
        raise NotFound(f"host {host.mac} has no profile yet; it fetches its script first")
    profile = plugin.state.context.profile(name)
    if profile.kind != KIND:
        raise NotFound(f"host {host.mac} boots profile {name} of kind {profile.kind}, not an ESXi image")
    return host, profile


def _boot(plugin: ServedPlugin) -> Blueprint:
    bp = Blueprint("esxi_boot", __name__, url_prefix="/boot/esxi")

    def via(host: Any) -> str | None:
        """The cache the script found alive: an index into the host's caches, which are its
        group's (``[groups.NAME] cache_urls``) or else ``plugins.esxi.cache_urls``."""
        raw = request.args.get("via")
        if raw is None:
            return None
        caches = group_cache_urls(plugin.state.context.settings.groups, host.associations) or plugin.config.cache_urls
        if not raw.isdigit() or int(raw) >= len(caches):
            raise ValidationError("via", "not one of the configured cache URLs")
        return caches[int(raw)]

    def boot_of(mac: str, key: str, answer: str) -> tuple[BootContext, str, str]:
        """This boot's URLs, with the core's answer token from the URL (``-``: none), the
        call-in key, and the base of this boot's own files."""
        for part, value in (("key", key), ("answer", answer)):
            if value != "-" and not callin.KEY.fullmatch(value):
                raise NotFound(f"{part} in the URL is not one bootbox made; the host fetches its script again")
        boot = BootContext(base_url=_base_url(plugin), mac=normalize_mac(mac),
                           answer_token="" if answer == "-" else answer)
        files = f"{boot.base_url}/boot/esxi/hosts/{boot.mac.replace(':', '')}/{key}"
        return boot, "" if key == "-" else key, files

    @bp.get("/hosts/<mac>/<key>/<answer>/boot.cfg")
    def boot_cfg(mac: str, key: str, answer: str) -> Response:
        host, profile = _host_profile(plugin, mac)
        image = plugin.image_for(host, profile)
        boot, callin_key, files = boot_of(host.mac, key, answer)
        cache = via(host)
        prefix = f"{cache}/boot/esxi/images/{image.id}" if cache else boot.asset_url("").rstrip("/")
        plugin.state.context.record(host.mac, EventKind.HTTP_FILE,
                                    f"esxi boot.cfg of image {image.id[:12]} ({profile.name}, {image.mode})",
                                    file="boot.cfg", image=image.id, prefix=prefix)
        return _text(bootcfg.render_bootcfg(
            image, mac=host.mac, prefix=prefix, ks_url=boot.answer_url("ks.cfg") or None,
            callin_url=f"{files}/{callin.MODULE}" if callin_key else None))

    @bp.get("/hosts/<mac>/<key>/<answer>/pxelinux.cfg")
    def pxelinux_cfg(mac: str, key: str, answer: str) -> Response:
        host, profile = _host_profile(plugin, mac)
        boot, _, files = boot_of(host.mac, key, answer)
        suffix = f"?via={request.args['via']}" if via(host) else ""
        plugin.state.context.record(host.mac, EventKind.HTTP_FILE, f"esxi pxelinux.cfg ({profile.name})",
                                    file="pxelinux.cfg")
        return _text(bootcfg.render_pxelinux_cfg(mboot_c32_url=boot.asset_url("mboot.c32"),
                                                 bootcfg_url=f"{files}/{answer}/boot.cfg{suffix}"))

    @bp.get(f"/hosts/<mac>/<key>/{callin.MODULE}")
    def callin_module(mac: str, key: str) -> Response:
        """The host's call-in module, for the key of its current boot only (it holds the up token)."""
        context = plugin.state.context
        try:
            host_mac = normalize_mac(mac)
        except ValidationError:
            raise Forbidden("malformed host in the call-in module URL") from None
        try:
            up_token = plugin.state.callins.up_token(host_mac, key)
        except Forbidden as exc:
            client = request.remote_addr or ""
            context.record(host_mac, EventKind.AUDIT, f"refused {callin.MODULE} to {client}: {exc}",
                           file=callin.MODULE, ip=client, reason=str(exc))
            raise
        boot = BootContext(base_url=_base_url(plugin), mac=host_mac, up_token=up_token)
        steps_url = f"{_base_url(plugin)}/boot/esxi/hosts/{host_mac.replace(':', '')}/{key}/hostprofile-steps"
        certificate = plugin.host_certificate(host_mac, request.remote_addr or "", key)
        data = callin.build_module(boot.up_url, plugin.hostprofile_boot_script(host_mac, steps_url), certificate)
        context.record(host_mac, EventKind.HTTP_FILE, f"esxi {callin.MODULE} (call-in) served to {request.remote_addr}"
                       + (" with its TLS certificate and key" if certificate else ""),
                       file=callin.MODULE, ip=request.remote_addr or "")
        response = Response(data, mimetype="application/octet-stream")
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/images/<image_id>/<name>")
    def image_file(image_id: str, name: str) -> Response:
        if name in LOADER_NAMES.values():
            raise Forbidden("loaders are served per host, not from the image tree")
        image = plugin.image_by_id(image_id)
        path: Path | None = plugin.file_of(image, name)
        if path is None or not path.is_file():
            raise NotFound(f"image {image_id} has no file {name!r}")
        response = send_file(path, conditional=True, etag=True, max_age=IMAGE_MAX_AGE, download_name=name,
                             mimetype="application/octet-stream")
        response.headers["Cache-Control"] = IMMUTABLE
        return response

    @bp.get("/health")
    def health() -> Response:
        return _text("ok\n")

    return bp
