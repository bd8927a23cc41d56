"""What every console view shares: the blueprint, the menu, rendering a page, redirecting back
with a message, and the HTML error pages."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from bootbox.errors import BootboxError, Unauthorized
from bootbox.model import EventKind
from bootbox.version import __version__
from bootbox.web.console import session
from bootbox.web.deps import get_service

blueprint = Blueprint("console", __name__, url_prefix="/ui")

BUILT_IN_SECTIONS = (("console.hosts", "Hosts"), ("console.rules_page", "Rules"), ("console.profiles", "Profiles"),
                     ("console.health", "Health"))


def sections() -> list[tuple[str, str]]:
    """The menu: the built-in sections, then those plugins' blueprints declare (see above)."""
    extra = [(f"{name}.console", str(bp.console_section))
             for name, bp in current_app.blueprints.items()
             if getattr(bp, "console_section", None) and f"{name}.console" in current_app.view_functions]
    return [*BUILT_IN_SECTIONS, *extra]


_SECTION_OF = (("console.host_profile", "Profiles"), ("console.host", "Hosts"), ("pages.index", "Hosts"),
               ("console.rule", "Rules"), ("console.profile", "Profiles"), ("console.health", "Health"))


def _section() -> str:
    """The menu entry of the page being shown (its title)."""
    endpoint = request.endpoint or ""
    return next((title for prefix, title in _SECTION_OF if endpoint.startswith(prefix)), "")


def clock(ts: float | None) -> str:
    """A timestamp as the operator reads it (the appliance's local time), "-" for never."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def page(template: str, **values: Any) -> str:
    """Render a console page with what the layout needs (menu, who is logged in, the CSRF token)."""
    login = session.current_login()
    feed = get_service().event_feed()
    return render_template(
        template, version=__version__, sections=sections(), section=_section(), login=login,
        csrf=login.csrf if login else "", can_write=session.can_write(), clock=clock,
        message=request.args.get("msg", "")[:300], error=request.args.get("err", "")[:300],
        live_kinds=" ".join(sorted({*map(str, EventKind), *values.pop("extra_kinds", ())})), live_since=feed.last_id,
        **values)


def back(endpoint: str, *, msg: str = "", err: str = "", **params: Any) -> Response:
    """Redirect to a console page after a post, with its message in the query (no session state)."""
    query = {k: v for k, v in (("msg", msg), ("err", err)) if v}
    target = url_for(endpoint, **params)
    return redirect(f"{target}?{urlencode(query)}" if query else target, code=303)


@blueprint.errorhandler(BootboxError)
def _bootbox_error(exc: BootboxError) -> Response | tuple[str, int]:
    if isinstance(exc, Unauthorized) and request.method == "GET":
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")), code=303)
    return page("console/error.html", title=type(exc).__name__, detail=str(exc)), exc.http_status


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return page("console/error.html", title=exc.name, detail=exc.description or ""), exc.code or 500

