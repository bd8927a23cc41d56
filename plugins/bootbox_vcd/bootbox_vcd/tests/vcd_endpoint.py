"""A stand-in for vCloud Director: the vCloud API host extension over real HTTP(S) on loopback.

It answers exactly the requests the plugin makes, with the URLs, media types and XML of the
published vCloud API 1.5–9.1 reference, and refuses everything else the way vCD does:

* ``GET /api/versions`` → ``SupportedVersions`` (``offered``, default 1.5, 5.1, 5.5), no login;
* ``POST /api/sessions`` with HTTP Basic ``user@org:password`` and ``Accept:
  application/*+xml;version=V`` → ``Session`` and the ``x-vcloud-authorization`` token;
  ``DELETE /api/session`` ends it;
* ``GET /api/query?type=host&format=records[&filter=(name==a,name==b)]`` →
  ``QueryResultRecords`` of ``HostRecord``;
* ``GET /api/admin/extension/host/{id}`` → ``vmext:Host`` with ``Ready``/``Busy`` and the action
  ``Link``s; ``POST …/action/prepare`` (a ``PrepareHostParams`` body,
  ``application/vnd.vmware.admin.prepareHostParams+xml``), ``…/action/repair`` and
  ``…/action/unprepare`` → 202 and a ``Task``;
* ``GET /api/task/{id}`` → the ``Task``, which completes after ``task_polls`` polls (or fails
  with an ``Error`` for a host given ``fail_with``).

Refusals: a missing or unknown version in ``Accept`` → 406; a wrong ``Content-Type`` (or any
body on ``repair``/``unprepare``, which take none) → 415; no
token or a stale one → 401; a wrong login → 401; a non-admin login → 403 (``forbidden``); an
unknown path → 404; another method → 405; an action on a host in the wrong state → 400; each
with vCD's ``Error`` document. ``faults`` makes the next requests fail (an HTTP status, or
``"timeout"`` to hold the answer longer than the client waits).

What is ours, not vCD's: the task timing (``task_polls``), ``reboot`` (what vCD notices through
vCenter when a stateless host restarts: still prepared, no longer ``Ready``), ``faults`` and
``fail_with``, and that a host's ``id`` is derived from its name. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import base64
import itertools
import ssl
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from xml.sax.saxutils import quoteattr

import pytest

from bootbox_vcd import vcloud

VERSIONS_NS, CORE, EXT = vcloud.VERSIONS_NS, vcloud.CORE_NS, vcloud.EXT_NS
HOST_PATH = "/api/admin/extension/host/"


@dataclass
class VcdHost:
    name: str
    id: str
    prepared: bool = False
    ready: bool = False
    busy: bool = False
    fail_with: str = ""
    """When set, this host's next tasks end in ``error`` with this message."""
    prepared_with: tuple[str, str] | None = None
    """The (Username, Password) its last prepare carried."""


@dataclass
class VcdTask:
    id: str
    operation: str
    host: VcdHost
    polls_left: int
    finish: str  # "prepare", "repair", "unprepare"
    status: str = "running"
    error: str = ""


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | str


@dataclass
class FakeVcd:
    server: ThreadingHTTPServer
    tls: bool = False
    offered: list[str] = field(default_factory=lambda: ["1.5", "5.1", "5.5"])
    users: dict[str, str] = field(default_factory=lambda: {"bootbox@System": "vcd-api-pw"})
    forbidden: set[str] = field(default_factory=set)
    hosts: dict[str, VcdHost] = field(default_factory=dict)
    tasks: dict[str, VcdTask] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    task_polls: int = 2
    faults: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: float = 3.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def add_host(self, name: str, *, prepared: bool = False, ready: bool | None = None) -> VcdHost:
        with self.lock:
            host = VcdHost(name=name, id=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), prepared=prepared,
                           ready=prepared if ready is None else ready)
            self.hosts[host.id] = host
            return host

    def host(self, name: str) -> VcdHost:
        with self.lock:
            return next(h for h in self.hosts.values() if h.name == name)

    def reboot(self, name: str) -> None:
        """A stateless reboot as vCD sees it through vCenter: prepared, but the agent is gone."""
        with self.lock:
            self.host(name).ready = False

    def requests(self, method: str | None = None) -> list[str]:
        """``"METHOD /path"`` of every request (queries without their arguments)."""
        with self.lock:
            return [f"{r.method} {r.path.split('?')[0]}" for r in self.received if method in (None, r.method)]

    def actions(self) -> list[str]:
        return [r.split("/action/")[1] for r in self.requests("POST") if "/action/" in r]


def _error(code: int, minor: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error xmlns="{CORE}" majorErrorCode="{code}" '
            f'minorErrorCode="{minor}" message={quoteattr(message)}/>').encode()


class _Refusal(Exception):
    def __init__(self, code: int, minor: str, message: str) -> None:
        super().__init__(message)
        self.code, self.minor, self.message = code, minor, message


def _handler(vcd: FakeVcd) -> type[BaseHTTPRequestHandler]:
    ids = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

        # -------------------------------------------------------------- plumbing

        def _send(self, status: int, body: bytes = b"", content_type: str = "",
                  headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up waiting (the timeout fault)
                pass

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with vcd.lock:
                fault = vcd.faults.pop(0) if vcd.faults else None
                vcd.received.append(Received(method, self.path, dict(self.headers.items()), body, fault or 0))
            if fault == "timeout":
                vcd.released.wait(vcd.hold)
                fault = None
            if fault is not None:
                self._send(int(fault), _error(int(fault), "INTERNAL_SERVER_ERROR", "injected fault"), vcloud.ERROR)
                return
            try:
                status, doc, content_type, headers = self._route(method, body)
            except _Refusal as refusal:
                self._send(refusal.code, _error(refusal.code, refusal.minor, refusal.message),
                           f"{vcloud.ERROR};version=5.1")
                return
            self._send(status, doc, content_type, headers)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._handle("DELETE")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        # -------------------------------------------------------------- checks

        def _version(self) -> str:
            accept = self.headers.get("Accept", "")
            media, _, params = accept.partition(";")
            version = dict(p.strip().split("=", 1) for p in params.split(";") if "=" in p).get("version", "")
            if media.strip() not in ("application/*+xml", "application/*") or version not in vcd.offered:
                raise _Refusal(406, "NOT_ACCEPTABLE", f"The request has invalid accept header: {accept!r}; send "
                                                      "application/*+xml;version=V with an offered version")
            return version

        def _session(self) -> str:
            token = self.headers.get("x-vcloud-authorization", "")
            with vcd.lock:
                if token not in vcd.tokens:
                    raise _Refusal(401, "UNAUTHORIZED", "This operation is denied: no valid session")
                return vcd.tokens[token]

        def _host(self, host_id: str) -> VcdHost:
            with vcd.lock:
                if host_id not in vcd.hosts:
                    raise _Refusal(404, "RESOURCE_NOT_FOUND", f"No host with id {host_id}")
                return vcd.hosts[host_id]

        # -------------------------------------------------------------- routes

        def _route(self, method: str, body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
            parts = urllib.parse.urlsplit(self.path)
            path, query = parts.path, urllib.parse.parse_qs(parts.query)
            if path == "/api/versions":
                self._method(method, "GET")
                return 200, self._versions(), "application/*+xml;version=5.1", {}
            if path == "/api/sessions":
                self._method(method, "POST")
                version = self._version()
                return self._login(version)
            version = self._version()
            user = self._session()
            if path == "/api/session":
                self._method(method, "DELETE")
                with vcd.lock:
                    vcd.tokens.pop(self.headers.get("x-vcloud-authorization", ""), None)
                return 204, b"", "", {}
            if path == "/api/query":
                self._method(method, "GET")
                return 200, self._query(query), f"{vcloud.RECORDS};version={version}", {}
            if path.startswith("/api/task/"):
                self._method(method, "GET")
                return 200, self._poll(path.removeprefix("/api/task/")), f"{vcloud.TASK};version={version}", {}
            if path.startswith(HOST_PATH):
                rest = path.removeprefix(HOST_PATH).split("/")
                host = self._host(rest[0])
                if len(rest) == 1:
                    self._method(method, "GET")
                    return 200, self._host_doc(host), f"{vcloud.HOST};version={version}", {}
                if len(rest) == 3 and rest[1] == "action" and rest[2] in ("prepare", "repair", "unprepare"):
                    self._method(method, "POST")
                    if user in vcd.forbidden:
                        raise _Refusal(403, "ACCESS_TO_RESOURCE_IS_FORBIDDEN", "Either you need some or all of the "
                                       "following rights [Host: Prepare/Repair] to perform operations")
                    return 202, self._action(host, rest[2], body), f"{vcloud.TASK};version={version}", {}
            raise _Refusal(404, "RESOURCE_NOT_FOUND", f"Resource not found: {path}")

        def _method(self, method: str, allowed: str) -> None:
            if method != allowed:
                raise _Refusal(405, "METHOD_NOT_ALLOWED", f"{method} is not supported here")

        def _versions(self) -> bytes:
            base = vcd.url
            infos = "".join(f"<VersionInfo><Version>{v}</Version><LoginUrl>{base}/api/sessions</LoginUrl></VersionInfo>"
                            for v in vcd.offered)
            return f'<?xml version="1.0" encoding="UTF-8"?>\n<SupportedVersions xmlns="{VERSIONS_NS}">{infos}' \
                   f"</SupportedVersions>".encode()

        def _login(self, version: str) -> tuple[int, bytes, str, dict[str, str]]:
            auth = self.headers.get("Authorization", "")
            scheme, _, encoded = auth.partition(" ")
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                user = password = ""
            if scheme != "Basic" or vcd.users.get(user) != password or not password:
                raise _Refusal(401, "UNAUTHORIZED", "Invalid username or password")
            token = base64.b64encode(uuid.uuid4().bytes).decode()
            with vcd.lock:
                vcd.tokens[token] = user
            name, _, org = user.partition("@")
            doc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Session xmlns="{CORE}" user="{name}" org="{org}" '
                   f'type="{vcloud.SESSION}" href="{vcd.url}/api/session/"><Link rel="down" '
                   f'type="application/vnd.vmware.vcloud.query.queryList+xml" href="{vcd.url}/api/query"/></Session>')
            return 200, doc.encode(), f"{vcloud.SESSION};version={version}", {"x-vcloud-authorization": token}

        def _query(self, query: dict[str, list[str]]) -> bytes:
            if query.get("type") != ["host"]:
                raise _Refusal(400, "BAD_REQUEST", f"unsupported query type {query.get('type')}")
            if query.get("format", ["records"]) != ["records"]:
                raise _Refusal(400, "BAD_REQUEST", "only format=records is served here")
            names: set[str] | None = None
            if "filter" in query:
                fiql = query["filter"][0].strip()
                inner = fiql[1:-1] if fiql.startswith("(") and fiql.endswith(")") else fiql
                terms = inner.split(",")
                if not all(t.startswith("name==") and len(t) > 6 for t in terms):
                    raise _Refusal(400, "BAD_REQUEST", f"unsupported filter {fiql!r}")
                names = {t.removeprefix("name==") for t in terms}
            with vcd.lock:
                hosts = [h for h in vcd.hosts.values() if names is None or h.name in names]
                records = "".join(
                    f'<HostRecord name="{h.name}" href="{vcd.url}{HOST_PATH}{h.id}" isEnabled="true" '
                    f'isBusy="{str(h.busy).lower()}" isPrepared="{str(h.prepared).lower()}" isHung="false" '
                    f'isDeleted="false" state="{1 if h.prepared else 0}" osVersion="7.0.3" isCrossHostEnabled="false" '
                    f'isSupported="true" isPendingUpgrade="false" numberOfVMs="0" isInMaintenanceMode="false" '
                    f'vc="{vcd.url}/api/admin/extension/vimServer/1" vcName="vcenter"/>' for h in hosts)
            return (f'<?xml version="1.0" encoding="UTF-8"?>\n<QueryResultRecords xmlns="{CORE}" total="{len(hosts)}" '
                    f'pageSize="25" page="1" name="host" type="{vcloud.RECORDS}" href="{vcd.url}/api/query?type=host">'
                    f"{records}</QueryResultRecords>").encode()

        def _host_doc(self, host: VcdHost) -> bytes:
            href = f"{vcd.url}{HOST_PATH}{host.id}"
            links = (f'<vcloud:Link rel="up" type="application/vnd.vmware.admin.vmwvirtualcenter+xml" '
                     f'href="{vcd.url}/api/admin/extension/vimServer/1"/>')
            if host.prepared:
                links += f'<vcloud:Link rel="unprepare" href="{href}/action/unprepare"/>'
                links += f'<vcloud:Link rel="repair" href="{href}/action/repair"/>'
            else:
                links += f'<vcloud:Link rel="prepare" type="{vcloud.PREPARE_PARAMS}" href="{href}/action/prepare"/>'
            flag = lambda value: str(value).lower()  # noqa: E731
            return (f'<?xml version="1.0" encoding="UTF-8"?>\n<vmext:Host xmlns:vmext="{EXT}" xmlns:vcloud="{CORE}" '
                    f'name="{host.name}" id="urn:vcloud:host:{host.id}" type="{vcloud.HOST}" href="{href}">{links}'
                    f"<vmext:Ready>{flag(host.ready)}</vmext:Ready><vmext:Available>true</vmext:Available>"
                    f"<vmext:Enabled>true</vmext:Enabled><vmext:Busy>{flag(host.busy)}</vmext:Busy>"
                    f"<vmext:EnableHostForHostSpanning>false</vmext:EnableHostForHostSpanning>"
                    f"<vmext:CpuType>Intel(R) Xeon(R)</vmext:CpuType><vmext:NumOfCpusPackages>1</vmext:NumOfCpusPackages>"
                    f"<vmext:NumOfCpusLogical>2</vmext:NumOfCpusLogical><vmext:CpuTotal>4000</vmext:CpuTotal>"
                    f"<vmext:MemUsed>1024</vmext:MemUsed><vmext:MemTotal>8192</vmext:MemTotal>"
                    f"<vmext:HostOsName>VMware ESXi</vmext:HostOsName><vmext:HostOsVersion>7.0.3</vmext:HostOsVersion>"
                    f"<vmext:VmMoRef>host-1</vmext:VmMoRef></vmext:Host>").encode()

        def _action(self, host: VcdHost, verb: str, body: bytes) -> bytes:
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            if verb == "prepare":
                if content_type != vcloud.PREPARE_PARAMS:
                    raise _Refusal(415, "UNSUPPORTED_MEDIA_TYPE", f"prepare takes {vcloud.PREPARE_PARAMS}, "
                                                                  f"not {content_type or '(none)'}")
                try:
                    root = ET.fromstring(body)
                except ET.ParseError:
                    raise _Refusal(400, "BAD_REQUEST", "the body is not XML") from None
                if root.tag != f"{{{EXT}}}PrepareHostParams":
                    raise _Refusal(400, "BAD_REQUEST", f"expected PrepareHostParams in {EXT}, got {root.tag}")
                username = root.findtext(f"{{{EXT}}}Username")
                password = root.findtext(f"{{{EXT}}}Password")
                if not username or password is None:
                    raise _Refusal(400, "BAD_REQUEST", "PrepareHostParams needs Username and Password")
                if host.prepared:
                    raise _Refusal(400, "BAD_REQUEST", f"Host {host.name} is already prepared")
                host.prepared_with = (username, password)
            elif content_type or body:
                raise _Refusal(415, "UNSUPPORTED_MEDIA_TYPE", f"{verb} takes no body, not {content_type or 'bytes'}")
            elif host.busy:
                raise _Refusal(400, "BUSY_ENTITY", f"Host {host.name} is busy")
            elif not host.prepared:
                raise _Refusal(400, "BAD_REQUEST", f"Host {host.name} is not prepared")
            with vcd.lock:
                task = VcdTask(id=str(uuid.UUID(int=next(ids))), operation=f"host{verb.capitalize()}", host=host,
                               polls_left=vcd.task_polls, finish=verb)
                host.busy = True
                vcd.tasks[task.id] = task
            return self._task_doc(task)

        def _poll(self, task_id: str) -> bytes:
            with vcd.lock:
                task = vcd.tasks.get(task_id)
                if task is None:
                    raise _Refusal(404, "RESOURCE_NOT_FOUND", f"No task {task_id}")
                if task.status == "running":
                    task.polls_left -= 1
                    if task.polls_left <= 0:
                        host = task.host
                        host.busy = False
                        if host.fail_with:
                            task.status, task.error = "error", host.fail_with
                        else:
                            task.status = "success"
                            host.prepared = task.finish != "unprepare"
                            host.ready = host.prepared
                return self._task_doc(task)

        def _task_doc(self, task: VcdTask) -> bytes:
            error = f'<Error majorErrorCode="500" minorErrorCode="INTERNAL_SERVER_ERROR" ' \
                    f'message={quoteattr(task.error)}/>' if task.status == "error" else ""
            href = f"{vcd.url}{HOST_PATH}{task.host.id}"
            return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Task xmlns="{CORE}" status="{task.status}" '
                    f'operationName="{task.operation}" operation="{task.operation} {task.host.name}" '
                    f'id="urn:vcloud:task:{task.id}" type="{vcloud.TASK}" href="{vcd.url}/api/task/{task.id}">'
                    f'<Owner type="{vcloud.HOST}" name="{task.host.name}" href="{href}"/>{error}</Task>').encode()

    return Handler


def start(tls: ssl.SSLContext | None = None) -> tuple[FakeVcd, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    vcd = FakeVcd(server, tls=tls is not None)
    server.RequestHandlerClass = _handler(vcd)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-vcd", daemon=True)
    thread.start()
    return vcd, thread


def stop(vcd: FakeVcd, thread: threading.Thread) -> None:
    vcd.released.set()
    vcd.server.shutdown()
    vcd.server.server_close()
    thread.join(5)


@pytest.fixture
def fake_vcd() -> Iterator[FakeVcd]:
    vcd, thread = start()
    try:
        yield vcd
    finally:
        stop(vcd, thread)
