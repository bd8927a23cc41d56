"""``bootbox profile export --bundle FILE.zip``: an offline bundle other tools can import.

The bundle has the real layout (facts §5): ``index.xml`` → ``vendor-index.xml`` →
``metadata.zip`` (``vmware.xml`` in the 3.0 format vibauthor writes, ``vibs/*.xml`` with each
VIB's relative path, packed size and sha-256, one bulletin, and the image profile under
``profiles/``) and the VIBs under ``vib20/<name>/``. Each VIB is reassembled from the blob store
with its original ``ar`` headers, so it is byte-for-byte the file that was imported; its sha-256
is checked while it is written, so a damaged blob can never leave the appliance as a VIB.

An export is a "thin" bundle in Broadcom's sense (no base image or add-on metadata): vLCM 9
rejects those (KB 424708), while Image Builder, ``esxcli`` and bootbox import them.
"""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Iterable

from bootbox_esxi import xmlutil as X
from bootbox_esxi.ar import CHUNK, MAGIC
from bootbox_esxi.catalog import Catalog
from bootbox_esxi.imgdb import vib_file_name
from bootbox_esxi.metadata import profile_xml
from bootbox_esxi.vib import MAX_DESCRIPTOR_BYTES, Vib
from bootbox_esxi.xmlutil import DepotError


def vib_path(vib: Vib) -> str:
    return f"vib20/{vib.name}/{vib.id}.vib"


def vib_chunks(vib: Vib, catalog: Catalog) -> Iterable[bytes]:
    """The original .vib bytes, rebuilt from blobs and checked against the recorded sha-256."""
    digest = hashlib.sha256()
    digest.update(MAGIC)
    yield MAGIC
    for member in vib.members:
        header = bytes.fromhex(member.header_hex)
        digest.update(header)
        yield header
        size = 0
        with catalog.blobs.path(member.sha256).open("rb") as blob:
            while chunk := blob.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                yield chunk
        if size & 1:
            digest.update(b"\n")
            yield b"\n"
    if digest.hexdigest() != vib.sha256:
        raise DepotError(f"VIB {vib.id} no longer matches its sha-256 in the blob store; re-import its depot")


def _index_xml(vendor: str) -> bytes:
    root = ET.Element("vendorList")
    node = ET.SubElement(root, "vendor")
    for key, value in (("name", vendor), ("code", vendor[:3].lower() or "bbx"), ("indexfile", "vendor-index.xml"),
                       ("patchUrl", ""), ("relativePath", "")):
        ET.SubElement(node, key).text = value
    content = ET.SubElement(node, "content")
    ET.SubElement(content, "name").text = "VMware ESX"
    ET.SubElement(content, "type").text = "http://www.vmware.com/depotmanagement/esx"
    return X.to_bytes(root)


def _vendor_index_xml() -> bytes:
    root = ET.Element("metaList")
    meta = ET.SubElement(root, "metadata")
    for key, value in (("productId", "embeddedEsx"), ("version", ""), ("locale", ""), ("url", "metadata.zip"),
                       ("channelName", "default")):
        ET.SubElement(meta, key).text = value
    return X.to_bytes(root)


def _vib_metadata_xml(vib: Vib, catalog: Catalog) -> bytes:
    root = X.parse_xml(catalog.descriptor(vib), f"VIB {vib.id} descriptor", MAX_DESCRIPTOR_BYTES)
    extra = []
    for key, value in (("relative-path", vib_path(vib)), ("packed-size", str(vib.size))):
        node = ET.Element(key)
        node.text = value
        extra.append(node)
    checksum = ET.Element("checksum", {"checksum-type": "sha-256"})
    checksum.text = vib.sha256
    extra.append(checksum)
    position = next((i + 1 for i, c in enumerate(root) if X.local(c.tag) == "software-tags"), len(root))
    for offset, node in enumerate(extra):
        root.insert(position + offset, node)
    return X.to_bytes(root)


def _vmware_xml(bulletin_id: str, vendor: str, summary: str, vibs: list[Vib]) -> bytes:
    root = ET.Element("metadataResponse")
    ET.SubElement(root, "version").text = "3.0"
    ET.SubElement(root, "timestamp").text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    bulletin = ET.SubElement(root, "bulletin")
    for key, value in (("id", bulletin_id), ("vendor", vendor), ("summary", summary), ("severity", "general"),
                       ("category", "general"), ("releaseType", "extension")):
        ET.SubElement(bulletin, key).text = value
    vib_list = ET.SubElement(bulletin, "vibList")
    for vib in vibs:
        node = ET.SubElement(vib_list, "vib")
        for key, value in (("vibID", vib.id), ("name", vib.name), ("version", vib.version), ("vendor", vib.vendor),
                           ("vibType", vib.type), ("summary", vib.summary)):
            ET.SubElement(node, key).text = value
        vib_file = ET.SubElement(node, "vibFile")
        ET.SubElement(vib_file, "sourceUrl").text = ""
        ET.SubElement(vib_file, "relativePath").text = vib_path(vib)
        ET.SubElement(vib_file, "packedSize").text = str(vib.size)
        checksum = ET.SubElement(vib_file, "checksum")
        ET.SubElement(checksum, "checksumType").text = "sha-256"
        ET.SubElement(checksum, "checksum").text = vib.sha256
    return X.to_bytes(root)


def _bulletin_xml(bulletin_id: str, vendor: str, summary: str, vibs: list[Vib]) -> bytes:
    root = ET.Element("bulletin")
    for key, value in (("id", bulletin_id), ("vendor", vendor), ("summary", summary)):
        ET.SubElement(root, key).text = value
    vib_list = ET.SubElement(root, "vibList")
    for vib in vibs:
        ET.SubElement(vib_list, "vibID").text = vib.id
    return X.to_bytes(root)


def write_bundle(path: Path, *, name: str, vendor: str, description: str, acceptance: str, vibs: list[Vib],
                 catalog: Catalog) -> None:
    """Write the offline bundle of one image profile to ``path`` (a temp file the caller owns)."""
    bulletin_id = f"{vendor}-{name}"
    summary = description or f"image profile {name}"
    meta_path = path.with_suffix(".metadata.zip")
    with zipfile.ZipFile(meta_path, "w", zipfile.ZIP_DEFLATED) as meta:
        meta.writestr("vmware.xml", _vmware_xml(bulletin_id, vendor, summary, vibs))
        meta.writestr("vendor-index.xml", _vendor_index_xml())
        for vib in vibs:
            meta.writestr(f"vibs/{vib_file_name(vib.name, vib.id)}", _vib_metadata_xml(vib, catalog))
        meta.writestr(f"bulletins/{bulletin_id}.xml", _bulletin_xml(bulletin_id, vendor, summary, vibs))
        meta.writestr(f"profiles/{name}.xml", profile_xml(name, vendor, description, acceptance, [v.id for v in vibs]))
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.write(meta_path, "metadata.zip")
            bundle.writestr("vendor-index.xml", _vendor_index_xml())
            bundle.writestr("index.xml", _index_xml(vendor))
            for vib in vibs:
                info = zipfile.ZipInfo(vib_path(vib), date_time=time.gmtime()[:6])
                info.compress_type = zipfile.ZIP_STORED  # payloads are gzip already
                with bundle.open(info, "w", force_zip64=vib.size > (1 << 31)) as out:
                    for chunk in vib_chunks(vib, catalog):
                        out.write(chunk)
    finally:
        meta_path.unlink(missing_ok=True)
