"""Logging in and out, and the console's own static files (open even with ``read_token``)."""

from __future__ import annotations

from pathlib import Path

from flask import (
    Response,
    make_response,
    redirect,
    request,
    send_from_directory,
    url_for,
)

from bootbox.web.auth import public
from bootbox.web.console import session
from bootbox.web.console.common import blueprint, page
from bootbox.web.console.passwords import verify_password
from bootbox.web.deps import get_service, web_context

STATIC = Path(__file__).resolve().parent.parent / "static"


@blueprint.get("/static/<path:name>")
@public
def static(name: str) -> Response:
    """The console's stylesheet and script (no secrets: open to a browser not yet logged in)."""
    response = send_from_directory(STATIC, name, max_age=300)
    return response


def _next_page() -> str:
    """Where to go after logging in: a console path only (never another site)."""
    target = request.values.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else url_for("console.hosts")


@blueprint.get("/login")
@public
def login() -> str:
    return page("console/login.html", next=_next_page(), users=bool(get_service().settings.ui.users))


@blueprint.post("/login")
@public
def login_post() -> Response | tuple[str, int]:
    """Check the API token or a user's password; on success set the session cookie."""
    session.check_login_allowed()
    session.same_origin()
    user = request.form.get("user", "").strip()
    password = request.form.get("password", "")
    users = get_service().settings.ui.users
    if user:
        ok = user in users and verify_password(password, users[user])
    else:
        ok = web_context().token_ok(password or None)
        user = session.TOKEN_USER
    if not ok:
        session.login_failed()
        return page("console/login.html", next=_next_page(), users=bool(users),
                    failed="wrong user name or password" if request.form.get("user") else "wrong API token"), 401
    response = make_response(redirect(_next_page(), code=303))
    session.start_session(response, user)
    return response


@blueprint.post("/logout")
@public
def logout() -> Response:
    response = make_response(redirect(url_for("console.login"), code=303))
    session.end_session(response)
    return response
