"""The HTTP side of bootbox: a Flask application factory and nothing global.

``create_app`` returns a fresh app bound to one :class:`~bootbox.service.bootservice.BootService`,
kept in ``app.extensions["bootbox"]`` (:mod:`bootbox.web.deps`); the blueprints read it from there
through ``deps``, call only the service's public methods and never call plugins directly. Which
``/api/`` writes skip the API token is marked on the views (:mod:`bootbox.web.auth`). The
appliance serves the app with waitress (see ``bootbox.appliance``).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from bootbox.service.bootservice import BootService
from bootbox.web import boot, events, metrics, pages
from bootbox.web.api import hostprofiles, hosts, profiles, rules, status as api_status
from bootbox.web.api import webhooks as api_webhooks
from bootbox.web.auth import guard_reads_and_host_paths, require_token_for_writes
from bootbox.web.deps import EXTENSION, WebContext
from bootbox.web.errors import register_error_handlers


def create_app(service: BootService, *, token: str, status: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """Build the app: boot endpoints for hosts, ``/api/v1`` for operators, ``/`` for people.

    ``token`` is the API token every unmarked ``/api/`` write must present; the service compares
    it (the web app does not touch the store, where the token lives). ``status`` reports the
    protocol servers for ``/api/v1/status``.
    """
    app = Flask("bootbox.web")
    app.json = _JsonProvider(app)
    app.url_map.merge_slashes = False
    app.wsgi_app = _collapse_slashes(app.wsgi_app)  # type: ignore[method-assign]
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = 4 * 2**20
    app.extensions[EXTENSION] = WebContext(
        service=service,
        token_ok=functools.partial(service.api_token_matches, token),
        status=status or (lambda: {}),
    )
    for blueprint in (boot.blueprint, api_status.blueprint, hosts.blueprint, profiles.blueprint, rules.blueprint,
                      hostprofiles.blueprint, hostprofiles.host_blueprint, pages.blueprint, api_webhooks.blueprint):
        app.register_blueprint(blueprint)
    for blueprint in service.plugin_blueprints():
        app.register_blueprint(blueprint)
    metrics.install(app, service, status or (lambda: {}))  # /metrics, and HTTP responses counted
    events.install(app, service.settings.http.event_streams)  # /api/v1/events/stream
    app.before_request(require_token_for_writes)
    app.before_request(guard_reads_and_host_paths)  # [http] read_token; plugins' /boot/<p>/hosts/<mac>/
    register_error_handlers(app)
    return app


class _JsonProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested deeper than the parser can recurse is invalid
    JSON like any other (``get_json(silent=True)`` gives None, so the API answers 4xx), instead
    of a RecursionError that became a 500 and a logged traceback (found by tests/test_fuzz_api.py)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def _collapse_slashes(wsgi_app: Any) -> Any:
    """Serve ``/boot//x`` as ``/boot/x`` directly: a redirect breaks UEFI HTTP boot (facts §6)."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = re.sub("/{2,}", "/", path)
        return wsgi_app(environ, start_response)

    return middleware
