"""A vCloud API session over HTTP(S): negotiate the version, log in, query, act, follow tasks, log out.

Standard library only (urllib; XML in :mod:`bootbox_vcd.vcloud`). One :class:`VcdSession` lives
for one push attempt and never outlives its deadline: every request gets the smaller of
``plugins.vcd.timeout`` and the time the attempt has left.

Where requests go: always to the configured ``plugins.vcd.url``. vCD writes absolute hrefs with
its own public address (``HostRecord``, ``Link``, ``Task``); the plugin keeps only their path and
query and sends them to the configured origin, so the session token and the host's password
never travel to an address the operator did not configure.

What is retried and what is not (the push pool retries a :class:`bootbox.BootboxError` and ends
at once on :class:`bootbox.PushRefused`): unreachable, timeouts, HTTP 5xx/408/409/429, an
expired token and a failed task are retried; a refused login (401), a forbidden request (403),
any other 4xx, an untrusted certificate and a vCD that offers no usable API version are not, because repeating them
cannot help and repeated bad logins can lock vCD's account. Messages name the request and vCD's
``Error`` text, never a credential or the token.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Iterator, Mapping

from bootbox import BootboxError, PushRefused
from bootbox_vcd import vcloud
from bootbox_vcd.config import VcdConfig

TOKEN_HEADER = "x-vcloud-authorization"
RETRYABLE_4XX = (408, 409, 429)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """vCD does not redirect API calls; following one could carry the token elsewhere."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class VcdSession:
    """One login to vCD, bounded by ``deadline`` (``time.monotonic()`` seconds)."""

    def __init__(self, config: VcdConfig, deadline: float) -> None:
        self.config = config
        self.deadline = deadline
        parts = urllib.parse.urlsplit(config.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.version = ""
        self._token = ""
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if parts.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(context=self._tls()))
        self._opener = urllib.request.build_opener(*handlers)

    def _tls(self) -> ssl.SSLContext:
        if not self.config.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.config.ca_file or None)

    # ------------------------------------------------------------------ requests

    def url(self, ref: str) -> str:
        """``ref`` (a path, or an href vCD wrote) on the configured origin."""
        parts = urllib.parse.urlsplit(ref)
        path = parts.path if parts.path.startswith("/") else "/" + parts.path
        return self.origin + path + (f"?{parts.query}" if parts.query else "")

    def _remaining(self, what: str) -> float:
        left = min(self.config.timeout, self.deadline - time.monotonic())
        if left <= 0:
            raise BootboxError(f"vCD: out of time before {what} (the attempt's timeout); it is tried again")
        return left

    def request(self, method: str, ref: str, *, body: bytes | None = None, content_type: str = "",
                headers: Mapping[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        url = self.url(ref)
        what = f"{method} {urllib.parse.urlsplit(url).path}"
        request = urllib.request.Request(url, data=body, method=method)
        if self.version:
            request.add_header("Accept", vcloud.accept(self.version))
        if content_type:
            request.add_header("Content-Type", content_type)
        if self._token:
            request.add_header(TOKEN_HEADER, self._token)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with self._opener.open(request, timeout=self._remaining(what)) as reply:
                return reply.status, reply.headers, reply.read(vcloud.MAX_BODY)
        except urllib.error.HTTPError as exc:
            detail = vcloud.error_document(exc.read(65536)) or (exc.reason or "")
            raise self._refusal(what, exc.code, str(detail)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise PushRefused(f"vCD's certificate at {self.origin} is not trusted ({reason.verify_message}); set "
                                  "plugins.vcd.ca_file to the CA that signed it") from None
            raise BootboxError(f"vCD at {self.origin} unreachable ({what}): {reason}") from None

    def _refusal(self, what: str, code: int, detail: str) -> BootboxError:
        said = f"vCD answered HTTP {code} to {what}" + (f": {detail}" if detail else "")
        if code == 401 and not self._token:
            return PushRefused(f"{said}; check plugins.vcd.username/org/password (not retried: repeated bad logins "
                               "can lock the account)")
        if code == 401:
            return BootboxError(f"{said} (the session ended; a new one is opened on the next try)")
        if code == 403:
            return PushRefused(f"{said}; the host actions need a system administrator of vCD (org System)")
        if code >= 500 or code in RETRYABLE_4XX:
            return BootboxError(said)
        return PushRefused(said)

    # ------------------------------------------------------------------ the session

    def negotiate(self) -> str:
        _, _, data = self.request("GET", "/api/versions")
        self.version = vcloud.choose_version(vcloud.offered_versions(data))
        return self.version

    def login(self) -> None:
        user = self.config.username if "@" in self.config.username else f"{self.config.username}@{self.config.org}"
        pair = base64.b64encode(f"{user}:{self.config.password}".encode()).decode("ascii")
        _, headers, _ = self.request("POST", "/api/sessions", headers={"Authorization": f"Basic {pair}"})
        token = headers.get(TOKEN_HEADER, "")
        if not token:
            raise vcloud.VcdProtocolError(f"vCD accepted the login but sent no {TOKEN_HEADER} header")
        self._token = token

    def logout(self) -> None:
        """Best effort: a session vCD keeps expires on its own."""
        if not self._token:
            return
        try:
            self.request("DELETE", "/api/session")
        except BootboxError:
            pass
        finally:
            self._token = ""

    # ------------------------------------------------------------------ hosts and tasks

    def find_host(self, names: list[str]) -> vcloud.HostRecord | None:
        """The first of ``names`` (in order) that vCD has a host record for."""
        if not names:
            return None
        fiql = ",".join(f"name=={name}" for name in names)
        query = urllib.parse.urlencode({"type": "host", "format": "records", "filter": f"({fiql})"})
        _, _, data = self.request("GET", f"/api/query?{query}")
        records = {r.name.lower(): r for r in vcloud.host_records(data)}
        return next((records[n.lower()] for n in names if n.lower() in records), None)

    def host(self, href: str) -> vcloud.HostState:
        _, _, data = self.request("GET", href)
        return vcloud.host(data)

    def action(self, state: vcloud.HostState, host_href: str, verb: str, body: bytes | None = None,
               content_type: str = "") -> vcloud.Task:
        """``POST {host}/action/{verb}``, at the href of the Host's link of that rel when it has one."""
        href = state.links.get(verb) or f"{self.url(host_href)}/action/{verb}"
        _, _, data = self.request("POST", href, body=body, content_type=content_type)  # no body: no Content-Type
        return vcloud.task(data, f"POST …/action/{verb}")

    def wait(self, task: vcloud.Task) -> vcloud.Task:
        """Poll the task until it succeeds or fails (or the attempt runs out of time)."""
        while not (task.done or task.failed):
            pause = min(self.config.poll_seconds, self.deadline - time.monotonic())
            if pause <= 0:
                raise BootboxError(f"vCD task {task.operation or task.href} still {task.status} when the attempt's "
                                   "time ran out; it is checked again on the next try")
            time.sleep(pause)
            _, _, data = self.request("GET", task.href)
            task = vcloud.task(data, "GET task")
        return task


@contextmanager
def session(config: VcdConfig, timeout: float) -> Iterator[VcdSession]:
    """Negotiated and logged in for ``timeout`` seconds; logged out at the end."""
    vcd = VcdSession(config, time.monotonic() + timeout)
    vcd.negotiate()
    vcd.login()
    try:
        yield vcd
    finally:
        vcd.logout()
