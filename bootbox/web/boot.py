"""Endpoints that booting hosts use: iPXE scripts, profile files, loaders, the report-in.

All are read-only except the report-in, and each is scoped to the asking host: a host's script,
GRUB config, answer files and report-in are served only to a requester the network shows to be
that host (bootbox.service.identity; else 403 and an audit event), and its profile files only
through its own MAC's path (they hold nothing secret, so a caching proxy may fetch them).
Files go through ``send_file(conditional=True)`` so Range, ETag and Last-Modified work (and a
caching proxy can sit in front). No redirects anywhere: UEFI HTTP boot breaks on a 301.
"""

from __future__ import annotations

from flask import Blueprint, Response, request, send_file

from bootbox.core.caches import IMMUTABLE
from bootbox.errors import NotFound
from bootbox.service.caches import BLOBS
from bootbox.web.auth import host_facing, up_token
from bootbox.web.deps import base_url, client_ip, get_service, report_body

blueprint = Blueprint("boot", __name__)

IPXE_MIMETYPE = "text/plain; charset=utf-8"
ASSET_MAX_AGE = 300
IMMUTABLE_MAX_AGE = 31536000


def _script(text: str) -> Response:
    response = Response(text, mimetype=IPXE_MIMETYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/boot.ipxe")
def entry_script() -> Response:
    """The generic first script every iPXE client gets from DHCP: chains to its own script."""
    return _script(get_service().entry_script(base_url()))


@blueprint.get("/boot/hosts/<mac>/script.ipxe")
def host_script(mac: str) -> Response:
    """The per-host script; the query carries what iPXE knows about the host."""
    params = {key: value for key, value in request.args.items()}
    return _script(get_service().host_script(mac, params, client_ip(), base_url()))


def _wants_first_byte() -> bool:
    """Record a file fetch once: a full GET or the first Range chunk, not every chunk or HEAD."""
    if request.method != "GET":
        return False
    ranges = request.range
    return ranges is None or any(start == 0 for start, _ in ranges.ranges)


@blueprint.get("/boot/hosts/<mac>/assets/<name>")
def host_asset(mac: str, name: str) -> Response:
    path = get_service().host_asset(mac, name, client_ip(), record=_wants_first_byte())
    return send_file(path, conditional=True, etag=True, max_age=ASSET_MAX_AGE, mimetype="application/octet-stream",
                     download_name=name)


@blueprint.get("/boot/blobs/<digest>/<name>")
def blob(digest: str, name: str) -> Response:
    """A content-addressed boot file (kernel, initrd, root image), for HTTP caches and hosts
    alike: the SHA-256 in the URL never names other bytes, so caches may keep it for a year
    (docs/caching.md). Not host-bound, so nothing on a host's timeline."""
    path = BLOBS.resolve(digest, name)
    response = send_file(path, conditional=True, etag=digest, max_age=IMMUTABLE_MAX_AGE,
                         mimetype="application/octet-stream", download_name=name)
    response.headers["Cache-Control"] = IMMUTABLE
    if request.method == "GET" and response.status_code in (200, 206):
        BLOBS.count_sent(response.content_length or 0)
    return response


@blueprint.get("/boot/loaders/<name>")
def loader(name: str) -> Response:
    """First-stage loaders over HTTP, for UEFI HTTP boot (answers HEAD with Content-Length)."""
    path = get_service().loader_path(name, client_ip(), record=_wants_first_byte())
    return send_file(path, conditional=True, etag=True, max_age=ASSET_MAX_AGE, mimetype="application/efi")


@blueprint.get("/grub/grub.cfg")
@blueprint.get("/grub/hosts/<name>")
def grub_config(name: str = "") -> Response:
    """The files network GRUB reads when it came in over HTTP (docs/firmware.md): the one
    ``grub.cfg``, and each host's ``hosts/<mac>.cfg`` rendered from its profile now."""
    path = f"grub/hosts/{name}" if name else "grub/grub.cfg"
    text = get_service().grub_file(path, client_ip(), base_url())
    if text is None:
        raise NotFound(f"no GRUB file {path}")
    return _script(text)


@blueprint.post("/api/v1/hosts/<mac>/booted")
@host_facing
def booted(mac: str) -> Response:
    """The booted OS reports in (form or JSON body: ip, boot_id, kernel, hostname, message), with
    this boot's up token (``?token=``, as ``boot.callback_url`` carries it, or a bearer token)."""
    host = get_service().booted(mac, report_body(), client_ip(), up_token())
    return Response(f"ok {host.mac}\n", mimetype="text/plain")
