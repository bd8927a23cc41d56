"""The vCloud API's host extension as documents: namespaces, media types, and the XML read and written.

Only the documents the plugin exchanges, as the vCloud API 1.5–9.1 schema reference publishes
them (``versions.xsd``, ``queryRecordView.xsd``, ``task.xsd``, ``vmwextensions.xsd``):

* ``SupportedVersions`` (namespace ``http://www.vmware.com/vcloud/versions``): ``VersionInfo``
  with ``Version`` and ``LoginUrl``, answered by ``GET /api/versions`` without a login;
* ``QueryResultRecords`` with ``HostRecord`` elements (core namespace ``…/vcloud/v1.5``),
  attributes ``name``, ``href``, ``isPrepared``, ``isHung``, ``isBusy``, ``isEnabled``;
* ``Host`` (extension namespace ``…/vcloud/extension/v1.5``) with ``Ready``, ``Available``,
  ``Enabled``, ``Busy`` and core ``Link`` elements whose ``rel`` names the actions;
* ``PrepareHostParams`` (extension namespace) with ``Username`` and ``Password``;
* ``Task`` (core namespace) with ``status`` (queued, preRunning, running, success, error,
  canceled, aborted) and, when it failed, an ``Error`` child;
* ``Error`` (core namespace), vCD's answer to a refused request: ``message``,
  ``majorErrorCode``, ``minorErrorCode``.

Parsing is xml.etree on bounded bodies from a server the operator configured; a DOCTYPE is
refused outright (no entity expansion), since nothing in the vCloud API uses one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterable
from xml.sax.saxutils import escape

from bootbox import BootboxError

VERSIONS_NS = "http://www.vmware.com/vcloud/versions"
CORE_NS = "http://www.vmware.com/vcloud/v1.5"
EXT_NS = "http://www.vmware.com/vcloud/extension/v1.5"

PREPARE_PARAMS = "application/vnd.vmware.admin.prepareHostParams+xml"
HOST = "application/vnd.vmware.admin.host+xml"
TASK = "application/vnd.vmware.vcloud.task+xml"
SESSION = "application/vnd.vmware.vcloud.session+xml"
RECORDS = "application/vnd.vmware.vcloud.query.records+xml"
ERROR = "application/vnd.vmware.vcloud.error+xml"

PREFERRED = "5.1"
"""The version the plugin asks for when offered; older ones are used when it is not."""
OLDEST = "1.5"
"""The query service (``/api/query``) and ``HostRecord`` exist since 1.5."""
DEPRECATED_FROM = "31.0"
"""The host actions are deprecated from API 31.0 (vCD 9.5): newer vCD needs no host agent."""

TASK_DONE = ("success",)
TASK_FAILED = ("error", "canceled", "aborted")

MAX_BODY = 4 << 20


class VcdProtocolError(BootboxError):
    """vCD answered something that is not the documented XML."""


def _tag(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def parse(data: bytes, what: str) -> ET.Element:
    if b"<!DOCTYPE" in data[:4096].upper():
        raise VcdProtocolError(f"{what}: vCD's answer carries a DOCTYPE, which the vCloud API never sends")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise VcdProtocolError(f"{what}: vCD's answer is not XML ({exc})") from None


def _expect(root: ET.Element, ns: str, name: str, what: str) -> None:
    if root.tag != _tag(ns, name):
        raise VcdProtocolError(f"{what}: expected a {name} document in {ns}, got {root.tag}")


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


# ------------------------------------------------------------------------------ versions


def offered_versions(data: bytes) -> list[str]:
    """The ``Version`` of every ``VersionInfo`` in a ``SupportedVersions`` document."""
    root = parse(data, "GET /api/versions")
    _expect(root, VERSIONS_NS, "SupportedVersions", "GET /api/versions")
    found = []
    for info in root.findall(_tag(VERSIONS_NS, "VersionInfo")):
        version = (info.findtext(_tag(VERSIONS_NS, "Version")) or "").strip()
        if version:
            found.append(version)
    return found


def choose_version(offered: Iterable[str]) -> str:
    """5.1 where offered; else the newest offered that is older; else the oldest offered below
    31.0. Raises when vCD offers nothing the host actions exist in."""
    offered = sorted(set(offered), key=version_key)
    if PREFERRED in offered:
        return PREFERRED
    usable = [v for v in offered if version_key(OLDEST) <= version_key(v) < version_key(DEPRECATED_FROM)]
    older = [v for v in usable if version_key(v) < version_key(PREFERRED)]
    if older:
        return older[-1]
    if usable:
        return usable[0]
    raise VcdProtocolError(
        f"vCD offers API versions {', '.join(offered) or '(none)'}, none between {OLDEST} and {DEPRECATED_FROM}: "
        "its host actions are deprecated from 31.0, and newer vCD needs no host agent")


def accept(version: str) -> str:
    return f"application/*+xml;version={version}"


# ------------------------------------------------------------------------------ hosts


@dataclass(frozen=True)
class HostRecord:
    """One ``HostRecord`` of a ``type=host`` query."""

    name: str
    href: str
    prepared: bool
    hung: bool
    busy: bool
    enabled: bool


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def host_records(data: bytes) -> list[HostRecord]:
    root = parse(data, "GET /api/query?type=host")
    _expect(root, CORE_NS, "QueryResultRecords", "GET /api/query?type=host")
    records = []
    for element in root.findall(_tag(CORE_NS, "HostRecord")):
        href = element.get("href") or ""
        if not href:
            raise VcdProtocolError("GET /api/query?type=host: a HostRecord has no href")
        records.append(HostRecord(name=element.get("name") or "", href=href,
                                  prepared=_bool(element.get("isPrepared")), hung=_bool(element.get("isHung")),
                                  busy=_bool(element.get("isBusy")), enabled=_bool(element.get("isEnabled"))))
    return records


@dataclass(frozen=True)
class HostState:
    """What the ``Host`` document says, and where its actions are (``rel`` → href)."""

    name: str
    id: str
    ready: bool
    busy: bool
    links: dict[str, str]


def host(data: bytes) -> HostState:
    root = parse(data, "GET host")
    _expect(root, EXT_NS, "Host", "GET host")
    links = {link.get("rel", ""): link.get("href", "") for link in root.findall(_tag(CORE_NS, "Link"))}
    return HostState(name=root.get("name") or "", id=root.get("id") or "",
                     ready=_bool(root.findtext(_tag(EXT_NS, "Ready"))),
                     busy=_bool(root.findtext(_tag(EXT_NS, "Busy"))), links=links)


def prepare_params(username: str, password: str) -> bytes:
    """The ``PrepareHostParams`` body (the host's own account, sent in clear over vCD's TLS)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<PrepareHostParams xmlns="{EXT_NS}">'
            f"<Username>{escape(username)}</Username><Password>{escape(password)}</Password>"
            "</PrepareHostParams>").encode()


# ------------------------------------------------------------------------------ tasks and errors


@dataclass(frozen=True)
class Task:
    href: str
    status: str
    operation: str
    error: str

    @property
    def done(self) -> bool:
        return self.status in TASK_DONE

    @property
    def failed(self) -> bool:
        return self.status in TASK_FAILED


def task(data: bytes, what: str) -> Task:
    root = parse(data, what)
    _expect(root, CORE_NS, "Task", what)
    error = root.find(_tag(CORE_NS, "Error"))
    message = error_text(error) if error is not None else ""
    href = root.get("href") or ""
    if not href:
        raise VcdProtocolError(f"{what}: the Task has no href to follow")
    return Task(href=href, status=root.get("status") or "", operation=root.get("operationName") or
                root.get("operation") or "", error=message)


def error_text(element: ET.Element) -> str:
    message = (element.get("message") or "").strip()
    minor = element.get("minorErrorCode") or ""
    major = element.get("majorErrorCode") or ""
    codes = "/".join(c for c in (major, minor) if c)
    return f"{message} ({codes})" if codes and message else (message or codes or "no message")


def error_document(data: bytes) -> str:
    """The message of an ``Error`` document, or "" when the body is not one."""
    try:
        root = ET.fromstring(data) if b"<!DOCTYPE" not in data[:4096].upper() else None
    except ET.ParseError:
        return ""
    if root is None or root.tag != _tag(CORE_NS, "Error"):
        return ""
    return error_text(root)
