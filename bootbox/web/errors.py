"""One JSON error shape for the API: ``{"error": {"type", "message", "field"}}``.

Library code raises :class:`bootbox.BootboxError` subclasses; this is the one place they become
HTTP statuses. Boot endpoints answer iPXE, which shows the body on the console, so the message
is plain and says what to do.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from bootbox.errors import BootboxError, ValidationError

log = logging.getLogger("bootbox.http")


def error_response(status: int, kind: str, message: str, field: str | None = None) -> Response:
    body: dict[str, object] = {"type": kind, "message": message}
    if field:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BootboxError)
    def _bootbox_error(exc: BootboxError) -> Response:
        field = exc.field if isinstance(exc, ValidationError) else None
        return error_response(exc.http_status, type(exc).__name__, str(exc), field)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, type(exc).__name__, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in a request")
        return error_response(500, "InternalError", "internal error; see the appliance log")
