"""A small JSON client for the appliance's API: how the CLI talks to a running bootbox.

Standard library only (urllib), so the CLI adds no dependency. Errors come back as
:class:`bootbox.BootboxError` carrying the server's message, so the CLI shows one line.

:class:`CliState` (the CLI's global options, which decide the URL and token) lives here too,
beside the client it builds: the public API's ``bootbox.api_client(ctx)`` and the CLI both use it,
so the public API never imports :mod:`bootbox.cli`. This module imports only the settings, the
API token file and the errors.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bootbox.config import Settings, load_settings
from bootbox.errors import BootboxError, Conflict, NotFound, Unauthorized, ValidationError
from bootbox.store.apitoken import read_token


class ApiClient:
    """JSON over HTTP(S) to ``base_url``. An ``https://`` appliance's certificate is verified
    against ``ca`` (a PEM file: the site's CA or the appliance's own certificate) when given, else
    against the system's trust store; never skipped."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, ca: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca = ca
        self._context: ssl.SSLContext | None = None
        if self.base_url.lower().startswith("https:"):
            try:
                self._context = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise BootboxError(f"cannot use {ca!r} as the CA to verify the appliance with (--ca / BOOTBOX_CA): "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _error_from(exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise BootboxError(
                    f"the appliance at {self.base_url} presented a certificate that is not trusted "
                    f"({reason.verify_message}); give its CA with --ca FILE or BOOTBOX_CA"
                    + (f" (now {self.ca})" if self.ca else "")
                ) from None
            raise BootboxError(
                f"cannot reach the appliance at {self.base_url} ({reason}). "
                "Is `bootbox serve` running? Point --url or BOOTBOX_URL at it."
            ) from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _error_from(exc: urllib.error.HTTPError) -> BootboxError:
    try:
        error = json.loads(exc.read() or b"{}").get("error", {})
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") or f"HTTP {exc.code} {exc.reason}"
    if exc.code == 404:
        return NotFound(message)
    if exc.code == 401:
        return Unauthorized(message + " (run as root so the CLI can read the token, or set BOOTBOX_TOKEN)")
    if exc.code == 409:
        return Conflict(message)
    if exc.code == 422 and error.get("field"):
        return ValidationError(error["field"], message.split(": ", 1)[-1])
    return BootboxError(message)


@dataclass
class CliState:
    """The CLI's global options, resolved lazily so `--help` works without a config file."""

    config: Path | None = None
    url: str | None = None
    state_dir: Path | None = None
    ca: Path | None = None
    """PEM file to verify an ``https://`` appliance with (``--ca``; else ``BOOTBOX_CA``, else the
    system's trust store)."""

    def settings(self, **overrides: Any) -> Settings:
        extra: dict[str, Any] = dict(overrides)
        if self.state_dir is not None:
            extra["state_dir"] = str(self.state_dir)
        return load_settings(self.config, overrides=extra)

    def client(self) -> ApiClient:
        settings = self.settings()
        url = self.url or os.environ.get("BOOTBOX_URL") or f"http://127.0.0.1:{settings.http.port}"
        token = os.environ.get("BOOTBOX_TOKEN") or read_token(settings.state_path)
        ca = str(self.ca) if self.ca else os.environ.get("BOOTBOX_CA") or None
        return ApiClient(url, token, ca=ca)


class CommandContext(Protocol):
    """What :func:`cli_state` needs of a click/typer context (so this module needs no typer)."""

    obj: Any

    def find_root(self) -> CommandContext: ...


def cli_state(ctx: CommandContext) -> CliState:
    """The :class:`CliState` of a command's root context, made (with defaults) if there is none."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj
