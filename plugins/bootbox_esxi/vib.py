"""VIBs: the descriptor's meaning, and reading a VIB stream while verifying every payload.

A VIB (facts §5) is an ``ar`` archive: ``descriptor.xml``, ``sig.pkcs7`` (empty or absent for
community VIBs), then one member per payload. :func:`parse_descriptor` turns the descriptor into
a :class:`Vib`; :func:`read_vib` reads a whole VIB from a stream in one pass, checks each
payload's size and checksums (of the packed bytes, and after gunzip where the descriptor asks
for it), and hands each member to a blob writer so the payload lands in the content-addressed
store without ever being held in memory.

Real files differ from the textbook and are accepted as they are: no ``vfatname`` (the module
name is then derived, see ``image.py``), an empty signature, checksums only of some kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bootbox import ValidationError
from bootbox_esxi import xmlutil as X
from bootbox_esxi.versions import normalize_level
from bootbox_esxi.xmlutil import DepotError

DESCRIPTOR = "descriptor.xml"
SIGNATURE = "sig.pkcs7"
MAX_DESCRIPTOR_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 1 << 20
HASHES = {"sha-256": "sha256", "sha-1": "sha1", "sha-512": "sha512", "md5": "md5"}
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Checksum:
    """One ``<checksum>``: ``gunzip`` means it is of the payload's uncompressed bytes."""

    kind: str
    value: str
    gunzip: bool = False


@dataclass(frozen=True)
class Payload:
    """One payload: what it is, how big, its checksums and the boot module name it asks for."""

    name: str
    type: str
    size: int
    install_size: int | None = None
    vfatname: str | None = None
    bootorder: int | None = None
    checksums: tuple[Checksum, ...] = ()
    sha256: str = ""
    """sha-256 of the packed bytes as read (the content address), set when the VIB was read."""


@dataclass(frozen=True)
class Relation:
    """A ``depends``/``conflicts``/``replaces`` constraint or a ``provides`` entry."""

    name: str
    relation: str = ""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.relation} {self.version}".strip() if self.relation else self.name


@dataclass(frozen=True)
class Member:
    """An ``ar`` member as it was in the file: name, exact header, content address."""

    name: str
    header_hex: str
    sha256: str


@dataclass(frozen=True)
class Vib:
    """Everything bootbox knows about one VIB (descriptor fields plus what reading it found)."""

    name: str
    version: str
    vendor: str
    type: str = "bootbank"
    summary: str = ""
    description: str = ""
    release_date: str = ""
    acceptance: str = "community"
    stateless_ready: bool = False
    overlay: bool = False
    live_install: bool = False
    live_remove: bool = False
    maintenance_mode: bool = False
    depends: tuple[Relation, ...] = ()
    conflicts: tuple[Relation, ...] = ()
    replaces: tuple[Relation, ...] = ()
    provides: tuple[Relation, ...] = ()
    tags: tuple[str, ...] = ()
    files: int = 0
    payloads: tuple[Payload, ...] = ()
    sha256: str = ""
    """sha-256 of the whole .vib file as read."""
    size: int = 0
    signed: bool = False
    members: tuple[Member, ...] = ()

    @property
    def id(self) -> str:
        """``<vendor>_<type>_<name>_<version>``, the ID depots and image profiles use."""
        return f"{self.vendor}_{self.type}_{self.name}_{self.version}"

    @property
    def descriptor_sha256(self) -> str:
        return next((m.sha256 for m in self.members if m.name == DESCRIPTOR), "")

    def to_doc(self) -> dict[str, Any]:
        """A JSON document for the store (tuples become lists)."""
        return _to_json(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Vib":
        rel = lambda items: tuple(Relation(**r) for r in items)  # noqa: E731
        return cls(
            **{k: v for k, v in doc.items() if k not in ("depends", "conflicts", "replaces", "provides",
                                                          "payloads", "members", "tags", "id")},
            depends=rel(doc.get("depends", [])),
            conflicts=rel(doc.get("conflicts", [])),
            replaces=rel(doc.get("replaces", [])),
            provides=rel(doc.get("provides", [])),
            tags=tuple(doc.get("tags", [])),
            payloads=tuple(
                Payload(**{**p, "checksums": tuple(Checksum(**c) for c in p.get("checksums", []))})
                for p in doc.get("payloads", [])
            ),
            members=tuple(Member(**m) for m in doc.get("members", [])),
        )


def _to_json(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        doc = {name: _to_json(getattr(value, name)) for name in value.__dataclass_fields__}
        if isinstance(value, Vib):
            doc["id"] = value.id
        return doc
    if isinstance(value, (tuple, list)):
        return [_to_json(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# descriptor.xml
# ---------------------------------------------------------------------------------------------


def _relations(group: Any) -> tuple[Relation, ...]:
    found = []
    for node in group if group is not None else ():
        name = X.attr(node, "name")
        if name:
            found.append(Relation(name=name, relation=X.attr(node, "relation"), version=X.attr(node, "version")))
    return tuple(found)


def _int_attr(node: Any, name: str, what: str) -> int | None:
    raw = X.attr(node, name)
    if raw == "":
        return None
    if not raw.isdigit():
        raise DepotError(f"{what}: payload attribute {name}={raw!r} is not a whole number")
    return int(raw)


def parse_descriptor(data: bytes, what: str) -> Vib:
    """Parse a VIB descriptor; ``what`` names the VIB or file in errors."""
    root = X.parse_xml(data, f"{what} descriptor.xml", MAX_DESCRIPTOR_BYTES)
    if X.local(root.tag) != "vib":
        raise DepotError(f"{what}: descriptor.xml has root <{X.local(root.tag)}>, expected <vib>")
    fields = {key: X.text(root, key) for key in ("name", "version", "vendor")}
    for key, value in fields.items():
        if not value:
            raise DepotError(f"{what}: descriptor.xml has no <{key}>")
        if any(ch.isspace() or ch in "/\\" for ch in value):
            raise DepotError(f"{what}: descriptor <{key}> {value!r} contains spaces or slashes")
    try:
        acceptance = normalize_level(X.text(root, "acceptance-level"), "acceptance-level")
    except ValidationError as exc:
        raise DepotError(f"{what}: descriptor {exc}") from None
    rels = X.child(root, "relationships")
    payloads = []
    for node in X.children(X.child(root, "payloads"), "payload"):
        payloads.append(_payload(node, what))
    names = [p.name for p in payloads]
    if len(set(names)) != len(names):
        raise DepotError(f"{what}: descriptor lists a payload name twice")
    vib_type = X.text(root, "type") or "bootbank"
    if not re.match(r"^[A-Za-z0-9_.-]+$", vib_type):
        raise DepotError(f"{what}: descriptor <type> {vib_type!r} is not a plain word")
    return Vib(
        name=fields["name"],
        version=fields["version"],
        vendor=fields["vendor"],
        type=vib_type,
        summary=X.text(root, "summary"),
        description=X.text(root, "description"),
        release_date=X.text(root, "release-date"),
        acceptance=acceptance,
        stateless_ready=X.flag(root, "stateless-ready"),
        overlay=X.flag(root, "overlay"),
        live_install=X.flag(root, "live-install-allowed"),
        live_remove=X.flag(root, "live-remove-allowed"),
        maintenance_mode=X.flag(X.child(root, "system-requires"), "maintenance-mode"),
        depends=_relations(X.child(rels, "depends")),
        conflicts=_relations(X.child(rels, "conflicts")),
        replaces=_relations(X.child(rels, "replaces")),
        provides=_relations(X.child(rels, "provides")),
        tags=tuple(X.text(t) for t in X.children(X.child(root, "software-tags"), "tag") if X.text(t)),
        files=sum(1 for _ in X.children(X.child(root, "file-list"), "file")),
        payloads=tuple(payloads),
    )


def _payload(node: Any, what: str) -> Payload:
    name = X.attr(node, "name")
    if not _MODULE_NAME.match(name):
        raise DepotError(f"{what}: payload name {name!r} is not a plain file name")
    size = _int_attr(node, "size", what)
    if size is None:
        raise DepotError(f"{what}: payload {name} has no size")
    vfatname = X.attr(node, "vfatname") or None
    if vfatname is not None and not _MODULE_NAME.match(vfatname):
        raise DepotError(f"{what}: payload {name} has vfatname {vfatname!r}, which is not a plain file name")
    checksums = []
    for c in X.children(node, "checksum"):
        kind = X.attr(c, "checksum-type").lower()
        value = X.text(c).lower()
        if kind and value:
            checksums.append(Checksum(kind=kind, value=value, gunzip=X.attr(c, "verify-process").lower() == "gunzip"))
    if not any(c.kind in HASHES for c in checksums):
        raise DepotError(f"{what}: payload {name} carries no sha-256 or sha-1 checksum, so it cannot be verified")
    return Payload(
        name=name,
        type=(X.attr(node, "type") or "").lower(),
        size=size,
        install_size=_int_attr(node, "installsize", what),
        vfatname=vfatname,
        bootorder=_int_attr(node, "bootorder", what),
        checksums=tuple(checksums),
    )
