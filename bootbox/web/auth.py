"""Who may write: the API token on every ``/api/`` write, and the views marked as exceptions.

Every POST, PUT, PATCH or DELETE under ``/api/`` — bootbox's own and plugins' — needs
``Authorization: Bearer <token>`` (the token lives mode 0600 in the state dir). A view skips the
check only when it carries one of two markers, set where the view is written:

* :func:`host_facing` — booting hosts call it, and they never hold the API token: the view
  is scoped to the asking host and checks what the host does hold (its up token), or changes
  nothing but that host's own report;
* :func:`read_only` — a POST that only computes an answer (``rules/explain``).

The marker is an attribute of the view function, not a list of blueprint names, so naming or
adding a blueprint cannot change which routes are open.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from flask import current_app, request

from bootbox.errors import Unauthorized
from bootbox.web.deps import web_context

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOST_FACING = "bootbox_host_facing"
_READ_ONLY = "bootbox_read_only"

View = TypeVar("View", bound=Callable[..., object])


def host_facing(view: View) -> View:
    """Mark a write that booting hosts call (the report-ins): no API token asked for."""
    setattr(view, _HOST_FACING, True)
    return view


def read_only(view: View) -> View:
    """Mark a POST endpoint that only computes an answer (no token needed), e.g. explain."""
    setattr(view, _READ_ONLY, True)
    return view


def is_exempt(view: object) -> bool:
    """Whether ``view`` carries a marker that lets it skip the API token."""
    return bool(getattr(view, _HOST_FACING, False) or getattr(view, _READ_ONLY, False))


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def require_token_for_writes() -> None:
    """The app's ``before_request``: refuse an unmarked ``/api/`` write without the API token."""
    if request.method not in _WRITE_METHODS or not request.path.startswith("/api/"):
        return
    if is_exempt(current_app.view_functions.get(request.endpoint or "")):
        return
    if not web_context().token_ok(bearer_token()):
        raise Unauthorized("this API write needs 'Authorization: Bearer <token>'; the token is in the state dir (api-token)")
