"""Console logins: a signed session cookie, its CSRF token, and who may change things.

A login (the API token, or a ``[ui.users]`` user and password) becomes a cookie signed with the
key in the state dir (``console-key``, :meth:`BootService.console_key`): ``HttpOnly`` (page
scripts cannot read it), ``SameSite=Strict`` (no other site's page sends it), ``Secure`` when the
login came over TLS, valid for ``[ui] session_ttl`` seconds. The cookie carries the user and a
random CSRF token; every console form posts that token back, and a post without it is refused
(403), so a page elsewhere cannot make a logged-in browser act. A client presenting the API token
as ``Authorization: Bearer`` is not a browser riding a cookie and needs no CSRF token.

Reads follow ``[http] read_token`` (:mod:`bootbox.web.auth`): without one, anyone may look at the
console read-only; with one, a login (or the token) is needed to see anything.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from bootbox.errors import BootboxError, Forbidden, Unauthorized
from bootbox.web.auth import SESSION_CHECK, bearer_token
from bootbox.web.deps import get_service, web_context

COOKIE = "bootbox_session"
CSRF_FIELD = "csrf"
TOKEN_USER = "(api token)"
"""The user name of a login made with the API token."""
EXTENSION = "bootbox.console"
_SALT = "bootbox-console-session"
_MAX_TRACKED = 10_000
"""Client addresses whose failed logins are remembered at once (the oldest are dropped first)."""


class TooManyLogins(BootboxError):
    """429: ``[ui] login_attempts`` failed logins from one address within a minute."""

    http_status = 429


@dataclass(frozen=True)
class Login:
    """Who the request's session cookie says is logged in, and the session's CSRF token."""

    user: str
    csrf: str


@dataclass
class LoginLimiter:
    """Failed logins per client address in the last minute, at most ``per_minute``."""

    per_minute: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, address: str, now: float) -> None:
        with self._lock:
            recent = self._recent(address, now)
            if len(recent) >= self.per_minute:
                raise TooManyLogins(f"too many failed logins from {address} ([ui] login_attempts = "
                                    f"{self.per_minute} a minute); wait a minute")

    def failed(self, address: str, now: float) -> None:
        with self._lock:
            self._recent(address, now).append(now)
            while len(self._failures) > _MAX_TRACKED:
                del self._failures[next(iter(self._failures))]

    def _recent(self, address: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(address, deque())
        while recent and recent[0] < now - 60:
            recent.popleft()
        return recent


@dataclass(frozen=True)
class ConsoleState:
    """What the console keeps per app: the cookie signer and the failed-login counts."""

    signer: URLSafeTimedSerializer
    limiter: LoginLimiter


def install(app: Flask) -> None:
    """Give ``app`` its console state; the signing key comes from the service (state dir)."""
    service = app.extensions["bootbox"].service
    app.extensions[EXTENSION] = ConsoleState(
        signer=URLSafeTimedSerializer(service.console_key(), salt=_SALT),
        limiter=LoginLimiter(service.settings.ui.login_attempts),
    )
    app.extensions[SESSION_CHECK] = signed_in


def _state() -> ConsoleState:
    return current_app.extensions[EXTENSION]


def current_login() -> Login | None:
    """The request's valid login, or None (no cookie, a bad signature, expired, user removed)."""
    if "bootbox_login" in g:
        return g.bootbox_login  # type: ignore[no-any-return]
    login = _read_cookie()
    g.bootbox_login = login
    return login


def _read_cookie() -> Login | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        doc = _state().signer.loads(raw, max_age=get_service().settings.ui.session_ttl)
    except BadSignature:  # SignatureExpired is one too
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("u"), str) or not isinstance(doc.get("c"), str):
        return None
    if doc["u"] != TOKEN_USER and doc["u"] not in get_service().settings.ui.users:
        return None  # the user was removed from the config: the session ends with it
    return Login(user=doc["u"], csrf=doc["c"])


def signed_in() -> bool:
    """Whether the request carries a valid console session (a read credential like the read token)."""
    return current_app.extensions.get(EXTENSION) is not None and current_login() is not None


def start_session(response: Response, user: str) -> None:
    """Set the session cookie for ``user`` on ``response``, with a fresh CSRF token."""
    value = _state().signer.dumps({"u": user, "c": secrets.token_urlsafe(24)})
    response.set_cookie(COOKIE, value, max_age=int(get_service().settings.ui.session_ttl), path="/",
                        httponly=True, samesite="Strict", secure=request.is_secure)


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)


def api_client() -> bool:
    """The request presents the API token as a bearer token (a script, not a browser session)."""
    return web_context().token_ok(bearer_token())


def can_write() -> bool:
    """Whether this request may change things: a login, or the API token."""
    return current_login() is not None or api_client()


def require_writer() -> str:
    """Who is writing (for the timeline), after the checks every console post passes:
    logged in with a matching CSRF token, or the API token as a bearer token."""
    if api_client():
        return TOKEN_USER
    login = current_login()
    if login is None:
        raise Unauthorized("log in to change things (the API token, or a [ui.users] user)")
    same_origin()
    presented = request.form.get(CSRF_FIELD, "")
    if not hmac.compare_digest(presented.encode(), login.csrf.encode()):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page and try again")
    return login.user


def same_origin() -> None:
    """Refuse a post whose ``Origin`` header names another site (browsers send it on posts)."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise Forbidden(f"a console form posted from another origin ({origin[:80]}) is refused")


def check_login_allowed() -> None:
    _state().limiter.check(request.remote_addr or "", time.monotonic())


def login_failed() -> None:
    _state().limiter.failed(request.remote_addr or "", time.monotonic())
