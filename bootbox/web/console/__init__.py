"""The operator's web console: hosts, rules, profiles and health, server-rendered.

Every page is plain HTML from Jinja templates (``bootbox/web/templates/console/``) with one
stylesheet and one small script (``bootbox/web/static/``), all shipped in the package: no build
step and nothing fetched from elsewhere, so it works on an air-gapped site, and every page and
action works without JavaScript. The script only adds live updates from
``/api/v1/events/stream``: a host's boot timeline fills in as it boots (boots split by
:mod:`~bootbox.web.console.timeline`, which the script mirrors), and the parts of a page that
an event may change are re-read from a fragment rendered by the page's own templates
(``/ui/hosts/live``, ``/ui/hosts/MAC/live``), so a live page and a reload never differ.

Views call only :class:`~bootbox.service.bootservice.BootService`'s public methods, like the API.
Changes are POST forms that pass :func:`~bootbox.web.console.session.require_writer` (a login and
its CSRF token, or the API token) and then redirect back (post/redirect/get) with a message.

Plugins add a section by registering (``bootbox_register_routes``) a blueprint that has a
``console_section`` attribute (the title in the menu) and a view named ``console``; its
templates may extend ``console/base.html``. That is the whole registry: :func:`~bootbox.web.console.common.sections`.
"""

from __future__ import annotations

from flask import Flask

from bootbox.web.console import (  # the views register on the blueprint
    health,
    hosts,
    login,
    profiles,
    rules,
    session,
    timeline,
)
from bootbox.web.console.common import blueprint

__all__ = ["health", "hosts", "install", "login", "profiles", "rules", "timeline"]


def install(app: Flask) -> None:
    """Serve the console on ``app`` (called once per app, when ``pages`` is registered)."""
    session.install(app)
    app.register_blueprint(blueprint)
