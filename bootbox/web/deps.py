"""What a view needs from the app it runs in: the service, the servers' status, its request's basics.

``create_app`` puts one :class:`WebContext` in ``app.extensions["bootbox"]``; views read it only
through these functions, never from the app directly. This module imports neither
``bootbox.web`` nor a blueprint, so every blueprint can import it and the app factory can import
every blueprint without a cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import current_app, request

from bootbox.errors import ValidationError
from bootbox.service.bootservice import BootService

EXTENSION = "bootbox"


@dataclass(frozen=True)
class WebContext:
    """The app's dependencies: the service, the API-token check and the protocol servers' status."""

    service: BootService
    token_ok: Callable[[str | None], bool]
    """True for the presented ``Authorization: Bearer`` token (None when there was none)."""
    status: Callable[[], dict[str, Any]] = field(default=lambda: {})


def web_context() -> WebContext:
    return current_app.extensions[EXTENSION]


def get_service() -> BootService:
    """The service behind the current request: the one place views reach it."""
    return web_context().service


def server_status() -> dict[str, Any]:
    """The protocol servers' status (``/api/v1/status``), as the appliance reports it."""
    return web_context().status()


def base_url() -> str:
    """The base URL hosts are told to use: ``[http] public_url`` when set, else this request's."""
    return get_service().base_url(request.host_url)


def client_ip() -> str:
    return request.remote_addr or ""


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object (else a 400 naming ``body``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object (Content-Type: application/json)")
    return body


def report_body() -> dict[str, str]:
    """A host's report-in (``/booted``, ``/up``): a JSON object or a form, which is what an
    installer's wget can send; values as strings, a JSON null as absent."""
    if request.is_json:
        return {str(k): str(v) for k, v in json_object().items() if v is not None}
    return request.form.to_dict()


_WHOLE = re.compile(r"[0-9]{1,19}")  # 19: event IDs (``since``) are microsecond clocks, 16 digits
MAX_LIMIT = 1_000_000
"""The largest ``limit`` a read accepts (a bigger one would only cost memory)."""


def int_arg(name: str, *, minimum: int, maximum: int) -> int | None:
    """A whole-number query argument in ``minimum..maximum``, or None when absent; anything else
    (``²``, ``10^20``, ``-1``, a number too large) is a 422 naming the argument, never a 500.
    ASCII digits only: ``str.isdigit`` accepts ``²``, which ``int`` then refuses."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not _WHOLE.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ValidationError(name, f"expected a whole number from {minimum} to {maximum}")
    return int(raw)


def flag_arg(name: str, default: bool, body: dict[str, Any] | None = None) -> bool:
    """A true/false flag from the JSON body, else the query string, else ``default``; anything
    but true/false/1/0/yes/no is a 422 naming it."""
    value = (body or {}).get(name, request.args.get(name, default))
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValidationError(name, "expected true or false")
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ValidationError(name, "expected true or false")
    return value


def limit_arg() -> int | None:
    """The ``limit`` query argument: a whole number from 1 to :data:`MAX_LIMIT`, or None."""
    return int_arg("limit", minimum=1, maximum=MAX_LIMIT)
