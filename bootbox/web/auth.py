"""Who may write: the API token on every ``/api/`` write, and the views marked as exceptions.

Every POST, PUT, PATCH or DELETE under ``/api/`` — bootbox's own and plugins' — needs
``Authorization: Bearer <token>`` (the token lives mode 0600 in the state dir). A view skips the
check only when it carries one of two markers, set where the view is written:

* :func:`host_facing` — booting hosts call it, and they never hold the API token: the view
  is scoped to the asking host, served only to a requester the network shows to be that host
  (:mod:`bootbox.service.identity`), and checks what the host does hold (its boot's up token);
* :func:`read_only` — a POST that only computes an answer (``rules/explain``).

The marker is an attribute of the view function, not a list of blueprint names, so naming or
adding a blueprint cannot change which routes are open.

Two more checks run before every request (:func:`guard_reads_and_host_paths`):

* with ``[http] read_token`` set, every other request outside the host-facing paths (``/boot/``,
  ``/grub/``, the report-ins) — the read API, the console, any route a plugin adds — needs that token or the
  API token, as ``Authorization: Bearer`` (or as the password of HTTP Basic: ``curl -u :TOKEN``),
  or a console login's session cookie; views marked :func:`public` (the console's login page) excepted;
* a route a plugin adds under ``/boot/<plugin>/hosts/<mac>/`` (ESXi's boot.cfg and call-in
  module) is served only to a requester that may act for that MAC
  (:mod:`bootbox.service.identity`), exactly as the core's own host routes are.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import base64
import re

from flask import current_app, request

from bootbox.errors import Unauthorized
from bootbox.web.deps import web_context

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOST_FACING = "bootbox_host_facing"
_READ_ONLY = "bootbox_read_only"
_PUBLIC = "bootbox_public"
SESSION_CHECK = "bootbox.session_check"
"""``app.extensions`` key of a callable saying whether the request has a valid console login
(:mod:`bootbox.web.console.session` installs it): a login counts as a read credential."""

View = TypeVar("View", bound=Callable[..., object])


def host_facing(view: View) -> View:
    """Mark a write that booting hosts call (the report-ins): no API token asked for."""
    setattr(view, _HOST_FACING, True)
    return view


def read_only(view: View) -> View:
    """Mark a POST endpoint that only computes an answer (no token needed), e.g. explain."""
    setattr(view, _READ_ONLY, True)
    return view


def public(view: View) -> View:
    """Mark a page anyone may load even with ``read_token`` set: the console's login page, its
    stylesheet and script (nothing there reads bootbox's data)."""
    setattr(view, _PUBLIC, True)
    return view


def is_exempt(view: object) -> bool:
    """Whether ``view`` carries a marker that lets it skip the API token."""
    return bool(getattr(view, _HOST_FACING, False) or getattr(view, _READ_ONLY, False))


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def up_token() -> str | None:
    """The boot's up token a report-in presents: a bearer token, else ``?token=`` (how
    ``boot.callback_url`` carries it, for a host that can only fetch a URL)."""
    presented = bearer_token()
    return presented if presented is not None else request.args.get("token")


def require_token_for_writes() -> None:
    """The app's ``before_request``: refuse an unmarked ``/api/`` write without the API token."""
    if request.method not in _WRITE_METHODS or not request.path.startswith("/api/"):
        return
    if is_exempt(current_app.view_functions.get(request.endpoint or "")):
        return
    if not web_context().token_ok(bearer_token()):
        raise Unauthorized("this API write needs 'Authorization: Bearer <token>'; the token is in the state dir (api-token)")


_PLUGIN_HOST_PATH = re.compile(r"^/boot/(?!hosts/)[A-Za-z0-9_-]+/hosts/([^/]+)/(.+)$")
_HOST_FACING_PREFIXES = ("/boot/", "/grub/", "/boot.ipxe")


def presented_token() -> str | None:
    """A bearer token, or the password of HTTP Basic (what a browser can send), or None."""
    bearer = bearer_token()
    if bearer is not None:
        return bearer
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def guard_reads_and_host_paths() -> None:
    """The app's second ``before_request``: the read token (when set) and plugins' host paths."""
    match = _PLUGIN_HOST_PATH.match(request.path)
    if match:
        service = web_context().service
        service.verify_requester(match.group(1), request.remote_addr or "", f"{match.group(2)[-40:]} (plugin route)")
        return
    if request.path.startswith(_HOST_FACING_PREFIXES):
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if is_exempt(view) or getattr(view, _PUBLIC, False):
        return
    context = web_context()
    read_token = context.service.settings.http.read_token
    if not read_token:
        return
    presented = presented_token()
    if context.token_ok(presented) or context.service.api_token_matches(read_token, presented):
        return
    signed_in = current_app.extensions.get(SESSION_CHECK)
    if signed_in is not None and signed_in():
        return
    raise ReadUnauthorized("reading needs 'Authorization: Bearer <token>' ([http] read_token, or the API token)")


class ReadUnauthorized(Unauthorized):
    """401 for a read without the read token."""
