"""Depot metadata: ``index.xml`` → ``vendor-index.xml`` → ``metadata.zip`` (facts §5).

An offline bundle and an online depot share this tree; only how files are fetched differs
(``depot.py``). Inside ``metadata.zip``:

* ``vibs/*.xml``: each VIB's descriptor plus ``relative-path``, ``packed-size`` and the sha-256
  of the whole .vib file (what a VIB is verified against);
* ``vmware.xml``: bulletins listing VIB IDs, with ``vibFile`` (``relativePath``,
  ``packedSize``, ``checksum``) in the 3.0 format vibauthor writes;
* ``profiles/*``: image profiles (``<imageProfile>`` with a name, creator, acceptance level and
  the VIB IDs). Real bundles may carry none (the shared ghettoVCB bundle does not).

Both VIB sources are merged by VIB ID; where both give a checksum they must agree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field, replace

from bootbox import ValidationError
from bootbox_esxi import xmlutil as X
from bootbox_esxi import zipsafe
from bootbox_esxi.catalog import DepotProfile
from bootbox_esxi.versions import normalize_level
from bootbox_esxi.vib import Vib, parse_descriptor
from bootbox_esxi.xmlutil import DepotError

MAX_XML = 32 << 20
MAX_METADATA_ZIP = 512 << 20
MAX_MEMBERS = 20000


@dataclass(frozen=True)
class VibEntry:
    """Where a VIB is in the depot and what its whole file must hash to."""

    id: str
    relative_path: str = ""
    source_url: str = ""
    packed_size: int | None = None
    sha256: str = ""
    descriptor: Vib | None = None


@dataclass
class DepotMetadata:
    vibs: dict[str, VibEntry] = field(default_factory=dict)
    profiles: list[DepotProfile] = field(default_factory=list)
    bulletins: dict[str, list[str]] = field(default_factory=dict)

    def add(self, entry: VibEntry, what: str) -> None:
        old = self.vibs.get(entry.id)
        if old is None:
            self.vibs[entry.id] = entry
            return
        if old.sha256 and entry.sha256 and old.sha256 != entry.sha256:
            raise DepotError(f"{what}: the metadata gives VIB {entry.id} two different sha-256 checksums")
        if old.packed_size is not None and entry.packed_size is not None and old.packed_size != entry.packed_size:
            raise DepotError(f"{what}: the metadata gives VIB {entry.id} two different sizes")
        self.vibs[entry.id] = replace(
            old,
            relative_path=old.relative_path or entry.relative_path,
            source_url=old.source_url or entry.source_url,
            packed_size=old.packed_size if old.packed_size is not None else entry.packed_size,
            sha256=old.sha256 or entry.sha256,
            descriptor=old.descriptor or entry.descriptor,
        )


def parse_index(data: bytes, what: str) -> list[str]:
    """``index.xml`` → the vendor index paths (``relativePath`` + ``indexfile``), in order."""
    root = X.parse_xml(data, what, MAX_XML)
    paths = []
    for vendor in X.descendants(root, "vendor"):
        index = X.text(vendor, "indexfile")
        if index:
            rel = X.text(vendor, "relativePath")
            paths.append(f"{rel.rstrip('/')}/{index}" if rel else index)
    if not paths:
        raise DepotError(f"{what} names no vendor index (<vendor><indexfile>)")
    return paths


def parse_vendor_index(data: bytes, what: str) -> list[str]:
    """``vendor-index.xml`` → the metadata zip URLs (relative to the vendor index)."""
    root = X.parse_xml(data, what, MAX_XML)
    urls = [X.text(meta, "url") for meta in X.descendants(root, "metadata") if X.text(meta, "url")]
    if not urls:
        raise DepotError(f"{what} names no metadata zip (<metadata><url>)")
    return urls


def _int(value: str, what: str) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise DepotError(f"{what}: packed size {value!r} is not a whole number")
    return int(value)


def _sha256_of(node: ET.Element | None) -> str:
    """The sha-256 from either checksum spelling (attribute or nested elements)."""
    if node is None:
        return ""
    for c in X.descendants(node, "checksum"):
        kind = X.attr(c, "checksum-type") or X.text(c, "checksumType")
        value = X.text(c, "checksum") if X.child(c, "checksum") is not None else X.text(c)
        if kind.lower() == "sha-256" and value:
            return value.lower()
    return ""


def parse_metadata_zip(zf: zipfile.ZipFile, what: str) -> DepotMetadata:
    """Everything a ``metadata.zip`` says about VIBs, bulletins and image profiles."""
    names = zipsafe.names(zf)
    if len(names) > MAX_MEMBERS:
        raise DepotError(f"{what} has {len(names)} members, more than {MAX_MEMBERS}")
    meta = DepotMetadata()
    for name in names:
        if name.startswith("vibs/") and name.endswith(".xml"):
            data = zipsafe.read(zf, name, what, MAX_XML)
            _vib_xml(meta, data, f"{what}:{name}")
    if zipsafe.has(zf, "vmware.xml"):
        root = X.parse_xml(zipsafe.read(zf, "vmware.xml", what, MAX_XML), f"{what}:vmware.xml", MAX_XML)
        _vmware_xml(meta, root, f"{what}:vmware.xml")
        for node in X.descendants(root, "imageProfile"):
            meta.profiles.append(parse_profile(node, f"{what}:vmware.xml"))
    for name in names:
        if name.startswith("profiles/") and not name.endswith("/"):
            data = zipsafe.read(zf, name, what, MAX_XML)
            root = X.parse_xml(data, f"{what}:{name}", MAX_XML)
            nodes = [root] if X.local(root.tag) == "imageprofile" else list(X.descendants(root, "imageProfile"))
            meta.profiles += [parse_profile(node, f"{what}:{name}") for node in nodes]
    unique: dict[str, DepotProfile] = {}
    for profile in meta.profiles:
        unique.setdefault(profile.name, profile)
    meta.profiles = list(unique.values())
    return meta


def _vib_xml(meta: DepotMetadata, data: bytes, what: str) -> None:
    descriptor = parse_descriptor(data, what)
    root = X.parse_xml(data, what, MAX_XML)
    sha = next((X.text(c).lower() for c in X.children(root, "checksum")
                if X.attr(c, "checksum-type").lower() == "sha-256"), "")
    meta.add(
        VibEntry(
            id=descriptor.id,
            relative_path=X.text(root, "relative-path"),
            source_url=X.text(root, "source-url"),
            packed_size=_int(X.text(root, "packed-size"), what),
            sha256=sha,
            descriptor=descriptor,
        ),
        what,
    )


def _vmware_xml(meta: DepotMetadata, root: ET.Element, what: str) -> None:
    for bulletin in X.descendants(root, "bulletin"):
        ids = []
        for vib in X.descendants(bulletin, "vib"):
            vib_id = X.text(vib, "vibID")
            if not vib_id:
                continue
            ids.append(vib_id)
            vib_file = X.child(vib, "vibFile")
            meta.add(
                VibEntry(
                    id=vib_id,
                    relative_path=X.text(vib_file, "relativePath"),
                    source_url=X.text(vib_file, "sourceUrl"),
                    packed_size=_int(X.text(vib_file, "packedSize"), what),
                    sha256=_sha256_of(vib_file),
                ),
                what,
            )
        ids += [X.text(node) for node in X.children(X.child(bulletin, "vibList"), "vibID") if X.text(node)]
        bulletin_id = X.text(bulletin, "id")
        if bulletin_id:
            meta.bulletins[bulletin_id] = sorted(set(ids))


def parse_profile(node: ET.Element, what: str, depot: str = "") -> DepotProfile:
    """One ``<imageProfile>``: tolerant of the element spellings seen in VMware metadata."""
    name = X.text(node, "name")
    if not name:
        raise DepotError(f"{what}: an <imageProfile> has no <name>")
    raw_level = X.text(node, "acceptancelevel", "acceptance-level", "acceptanceLevel") or "partner"
    try:
        level = normalize_level(raw_level, "acceptancelevel")
    except ValidationError as exc:
        raise DepotError(f"{what}: image profile {name}: {exc}") from None
    vib_ids = [X.text(v) for v in X.descendants(node, "vibid") if X.text(v)]
    return DepotProfile(
        depot=depot,
        name=name,
        vendor=X.text(node, "creator", "vendor"),
        description=X.text(node, "description"),
        acceptance=level,
        vibs=tuple(dict.fromkeys(vib_ids)),
    )


def profile_xml(name: str, vendor: str, description: str, acceptance: str, vib_ids: list[str]) -> bytes:
    """The ``<imageProfile>`` bootbox writes (in exported bundles and in imgdb.tgz)."""
    root = ET.Element("imageProfile")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "creator").text = vendor
    ET.SubElement(root, "description").text = description
    ET.SubElement(root, "acceptancelevel").text = acceptance
    ET.SubElement(root, "readonly").text = "false"
    vib_list = ET.SubElement(root, "vibList")
    for vib_id in vib_ids:
        ET.SubElement(ET.SubElement(vib_list, "vib"), "vibid").text = vib_id
    return X.to_bytes(root)

