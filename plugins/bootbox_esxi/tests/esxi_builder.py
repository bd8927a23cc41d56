"""Build VIBs and ESXi depots for tests, in the real layout, independently of the plugin.

Real ESXi media cannot be downloaded here, so tests make their own: VIBs are ``ar`` archives
(``descriptor.xml``, ``sig.pkcs7``, payloads) with real descriptors and gzip payloads, and
offline bundles carry ``index.xml``, ``vendor-index.xml``, ``metadata.zip`` (``vmware.xml``,
``vibs/*.xml``, ``bulletins/*.xml``, ``profiles/*.xml``) and ``vib20/<name>/<id>.vib``, as
vibauthor and VMware's depots lay them out. Every knob that lets a test break a file on
purpose (a wrong checksum, a hostile name, a lying size) is explicit.

This module deliberately shares no code with ``bootbox_esxi``: a test that built its input with
the code under test could not catch that code's mistakes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape


def _e(value: str) -> str:
    return escape(value, {'"': "&quot;"})


@dataclass
class PayloadSpec:
    name: str
    type: str = "vgz"
    content: bytes = b""
    vfatname: str | None = None
    bootorder: int | None = None
    gzip: bool = True
    checksums: tuple[str, ...] = ("sha-256", "sha-1-gunzip")
    wrong_sha256: bool = False
    declared_size: int | None = None

    def packed(self) -> bytes:
        data = self.content or f"{self.name} payload\n".encode()
        key = (hashlib.sha256(data).digest(), self.gzip)
        if getattr(self, "_packed", (None, b""))[0] != key:  # building a big VIB packs it once
            self._packed = (key, gzip.compress(data, compresslevel=1, mtime=0) if self.gzip else data)
        return self._packed[1]


@dataclass
class VibSpec:
    name: str
    version: str = "1.0.0-1.0.0"
    vendor: str = "BootboxTest"
    type: str = "bootbank"
    acceptance: str = "partner"
    stateless: bool = True
    summary: str = ""
    depends: list[tuple[str, str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    replaces: list[tuple[str, str, str]] = field(default_factory=list)
    provides: list[tuple[str, str]] = field(default_factory=list)
    payloads: list[PayloadSpec] = field(default_factory=list)
    files: list[str] = field(default_factory=lambda: ["etc/example.conf"])
    extra_xml: str = ""
    signature: bytes = b""

    @property
    def id(self) -> str:
        return f"{self.vendor}_{self.type}_{self.name}_{self.version}"


def _relations(tag: str, items: Iterable[tuple[str, str, str]]) -> str:
    inner = "".join(f'<constraint name="{_e(n)}" relation="{_e(r)}" version="{_e(v)}"/>' for n, r, v in items)
    return f"<{tag}>{inner}</{tag}>"


def descriptor_xml(spec: VibSpec) -> bytes:
    """A descriptor.xml in the element order vibauthor writes."""
    payloads = []
    for p in spec.payloads:
        packed = p.packed()
        attrs = f'name="{_e(p.name)}" type="{_e(p.type)}" size="{p.declared_size or len(packed)}"'
        if p.vfatname:
            attrs += f' vfatname="{_e(p.vfatname)}"'
        if p.bootorder is not None:
            attrs += f' bootorder="{p.bootorder}"'
        sums = []
        if "sha-256" in p.checksums:
            digest = hashlib.sha256(packed).hexdigest()
            if p.wrong_sha256:
                digest = hashlib.sha256(b"not the payload").hexdigest()
            sums.append(f'<checksum checksum-type="sha-256">{digest}</checksum>')
        raw = gzip.decompress(packed) if p.gzip else packed
        if "sha-256-gunzip" in p.checksums:
            sums.append(f'<checksum checksum-type="sha-256" verify-process="gunzip">'
                        f'{hashlib.sha256(raw).hexdigest()}</checksum>')
        if "sha-1-gunzip" in p.checksums:
            sums.append(f'<checksum checksum-type="sha-1" verify-process="gunzip">{hashlib.sha1(raw).hexdigest()}'
                        "</checksum>")
        payloads.append(f"<payload {attrs}>{''.join(sums)}</payload>")
    provides = "".join(f'<provide name="{_e(n)}" version="{_e(v)}"/>' for n, v in spec.provides)
    files = "".join(f"<file>{_e(f)}</file>" for f in spec.files)
    xml = (
        f'<vib version="5.0"><type>{_e(spec.type)}</type><name>{_e(spec.name)}</name>'
        f"<version>{_e(spec.version)}</version><vendor>{_e(spec.vendor)}</vendor>"
        f"<summary>{_e(spec.summary or spec.name + ' for tests')}</summary><description>built by esxi_builder"
        f"</description><release-date>2024-01-01T00:00:00+00:00</release-date>"
        f"<relationships>{_relations('depends', spec.depends)}{_relations('conflicts', spec.conflicts)}"
        f"{_relations('replaces', spec.replaces)}<provides>{provides}</provides><compatibleWith/></relationships>"
        f"<software-tags/><system-requires><maintenance-mode>false</maintenance-mode></system-requires>"
        f"<file-list>{files}</file-list><acceptance-level>{_e(spec.acceptance)}</acceptance-level>"
        f"<live-install-allowed>false</live-install-allowed><live-remove-allowed>false</live-remove-allowed>"
        f"<cimom-restart>false</cimom-restart><stateless-ready>{str(spec.stateless).lower()}</stateless-ready>"
        f"<overlay>false</overlay>{spec.extra_xml}<payloads>{''.join(payloads)}</payloads></vib>"
    )
    return xml.encode()


def ar_member(name: str, data: bytes, declared_size: int | None = None) -> bytes:
    size = len(data) if declared_size is None else declared_size
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0:<8}{size:<10}".encode() + b"`\n"
    return header + data + (b"\n" if len(data) % 2 else b"")


def build_vib(spec: VibSpec, *, members: list[tuple[str, bytes]] | None = None, truncate: int | None = None) -> bytes:
    """The .vib bytes. ``members`` replaces the member list (to add, drop or rename members)."""
    if members is None:
        members = [("descriptor.xml", descriptor_xml(spec)), ("sig.pkcs7", spec.signature)]
        members += [(p.name, p.packed()) for p in spec.payloads]
    data = b"!<arch>\n" + b"".join(ar_member(name, body) for name, body in members)
    return data[:truncate] if truncate is not None else data


def esx_base(version: str = "7.0.3-0.0.1", *, extra_payloads: int = 0, size: int = 0) -> VibSpec:
    """A stand-in base VIB: kernel ``b`` and ``k`` (type boot), ``jumpstrt`` (gz), ``s`` (vgz)."""
    filler = os.urandom(size) if size else b""
    payloads = [
        PayloadSpec("b", "boot", b"kernel b " + filler[: size // 2], vfatname="b.b00", bootorder=1),
        PayloadSpec("jumpstrt", "gz", b"jumpstart"),
        PayloadSpec("k", "boot", b"vmkernel k", vfatname="k.b00", bootorder=2),
        PayloadSpec("s", "vgz", b"system s " + filler[size // 2:], vfatname="s.v00"),
    ]
    payloads += [PayloadSpec(f"extra{i}", "vgz", os.urandom(64)) for i in range(extra_payloads)]
    return VibSpec("esx-base", version=version, vendor="VMware", acceptance="certified", payloads=payloads,
                   provides=[("vmkapi_2_9_0_0", "")])


def driver(name: str, version: str = "1.0.0-1.0.0", **kwargs: object) -> VibSpec:
    """A driver-like VIB with one vgz payload named like the VIB (no vfatname, as vibauthor does)."""
    spec = VibSpec(name, version=version, payloads=[PayloadSpec(name.replace("-", "_"), "vgz", f"{name}".encode())])
    for key, value in kwargs.items():
        setattr(spec, key, value)
    return spec


@dataclass
class ProfileSpec:
    name: str
    vibs: list[str]
    acceptance: str = "partner"
    vendor: str = "BootboxTest"


def _vib_metadata(spec: VibSpec, vib: bytes, rel: str, sha: str | None = None, size: int | None = None) -> bytes:
    desc = descriptor_xml(spec).decode()
    extra = (f"<relative-path>{_e(rel)}</relative-path><packed-size>{len(vib) if size is None else size}"
             f"</packed-size><checksum checksum-type=\"sha-256\">{sha or hashlib.sha256(vib).hexdigest()}</checksum>")
    return desc.replace("<software-tags/>", "<software-tags/>" + extra).encode()


def _vmware_xml(vibs: list[tuple[VibSpec, bytes, str]], sha_override: dict[str, str]) -> bytes:
    """The bulletin's VIB list, describing each VIB as built (not as possibly corrupted)."""
    vibs = [(s, build_vib(s), rel) for s, _, rel in vibs]
    entries = "".join(
        f"<vib><vibVersion>1.4.5</vibVersion><vibID>{_e(s.id)}</vibID><name>{_e(s.name)}</name>"
        f"<version>{_e(s.version)}</version><vendor>{_e(s.vendor)}</vendor><vibType>{s.type}</vibType>"
        f"<vibFile><sourceUrl></sourceUrl><relativePath>{_e(rel)}</relativePath><packedSize>{len(v)}</packedSize>"
        f"<checksum><checksumType>sha-256</checksumType><checksum>"
        f"{sha_override.get(s.id, hashlib.sha256(v).hexdigest())}</checksum></checksum></vibFile></vib>"
        for s, v, rel in vibs
    )
    return (f"<metadataResponse><version>3.0</version><timestamp>2024-01-01T00:00:00</timestamp>"
            f"<bulletin><id>test-bulletin</id><vendor>BootboxTest</vendor><summary>test</summary>"
            f"<vibList>{entries}</vibList></bulletin></metadataResponse>").encode()


def _profile_xml(p: ProfileSpec) -> bytes:
    vibs = "".join(f"<vib><vibid>{_e(v)}</vibid></vib>" for v in p.vibs)
    return (f"<imageProfile><name>{_e(p.name)}</name><creator>{_e(p.vendor)}</creator><description>test profile"
            f"</description><acceptancelevel>{p.acceptance}</acceptancelevel><readonly>true</readonly>"
            f"<vibList>{vibs}</vibList></imageProfile>").encode()


INDEX_XML = (b"<vendorList><vendor><name>BootboxTest</name><code>BBT</code><indexfile>vendor-index.xml</indexfile>"
             b"<patchUrl></patchUrl><relativePath></relativePath><content><name>VMware ESX</name>"
             b"<type>http://www.vmware.com/depotmanagement/esx</type></content></vendor></vendorList>")
VENDOR_INDEX_XML = (b"<metaList><metadata><productId>embeddedEsx</productId><version>7.*</version><locale></locale>"
                    b"<url>metadata.zip</url><channelName>default</channelName></metadata></metaList>")


def depot_files(
    vibs: list[VibSpec],
    profiles: Iterable[ProfileSpec] = (),
    *,
    vib_bytes: dict[str, bytes] | None = None,
    paths: dict[str, str] | None = None,
    sha_override: dict[str, str] | None = None,
    metadata_extra: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """Every file of a depot tree, by relative path (the same tree an offline bundle zips).

    ``vib_bytes`` replaces a VIB's file (to corrupt it), ``paths`` its relative path (to make it
    hostile), ``sha_override`` the sha-256 the metadata declares.
    """
    vib_bytes = vib_bytes or {}
    paths = paths or {}
    sha_override = sha_override or {}
    built = []
    for spec in vibs:
        data = vib_bytes.get(spec.id) or build_vib(spec)
        built.append((spec, data, paths.get(spec.id, f"vib20/{spec.name}/{spec.id}.vib")))
    meta = io.BytesIO()
    with zipfile.ZipFile(meta, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vmware.xml", _vmware_xml(built, sha_override))
        zf.writestr("vendor-index.xml", VENDOR_INDEX_XML)
        for spec, data, rel in built:
            real = build_vib(spec)
            zf.writestr(f"vibs/{spec.name}-{int(hashlib.sha256(spec.id.encode()).hexdigest()[:12], 16)}.xml",
                        _vib_metadata(spec, real, rel, sha_override.get(spec.id), len(real)))
        zf.writestr("bulletins/test-bulletin.xml", b"<bulletin><id>test-bulletin</id></bulletin>")
        for profile in profiles:
            zf.writestr(f"profiles/{profile.name}.xml", _profile_xml(profile))
        for name, data in (metadata_extra or {}).items():
            zf.writestr(name, data)
    files = {"index.xml": INDEX_XML, "vendor-index.xml": VENDOR_INDEX_XML, "metadata.zip": meta.getvalue()}
    for spec, data, rel in built:
        files[rel] = data
    return files


def write_bundle(path: Path, files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    """Zip a depot tree as an offline bundle; ``symlinks`` adds members with Unix mode S_IFLNK."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            # VIB payloads are gzip already: store them, as deflating again gains nothing.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".vib") else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write a depot tree to a directory (to serve it as an online depot)."""
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def with_declared_size(zip_bytes: bytes, member: str, size: int) -> bytes:
    """Rewrite a stored zip member's declared uncompressed size in the central directory."""
    data = bytearray(zip_bytes)
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
        if bytes(data[pos + 46:pos + 46 + name_len]) == name:
            data[pos + 24:pos + 28] = size.to_bytes(4, "little")
            return bytes(data)
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise KeyError(member)
