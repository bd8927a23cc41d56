"""``imgdb.tgz``: the image database module, rebuilt for each image a host boots.

ESXi reads its image database (the image profile and the descriptor of every VIB it runs) from
this boot module; ``esxcli software vib list`` and the host's acceptance checks use it. A VIB
that is loaded (in ``modules=``) but missing here runs, yet is invisible and inconsistent, so
every image, including the VIBs plugins inject, gets its own imgdb.tgz (facts §5).

Layout written: a gzip'd tar holding ``var/db/esximg/profiles/<profile name>`` (an
``<imageProfile>`` listing every VIB ID, injected ones included) and
``var/db/esximg/vibs/<name>-<n>.xml`` (each VIB's descriptor exactly as it was in the VIB).

What is verified and what is not: the archive is a valid tar.gz whose members parse back to the
profile and the descriptors (tests do this). That the layout matches what ESXi's own
``vmware.esximage`` database reader expects is **not verified**: no real ESXi image or host was
available; the layout (``/var/db/esximg/{profiles,vibs}``) follows community descriptions of
the ESXi filesystem [I]. The output is deterministic (fixed timestamps and owners), so the same
image always gets the same bytes and the same ETag, and caches keep it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile

from bootbox_esxi.catalog import Catalog
from bootbox_esxi.image import Image
from bootbox_esxi.metadata import profile_xml

ROOT = "var/db/esximg"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    info.uname = info.gname = "root"
    tar.addfile(info)


def vib_file_name(name: str, vib_id: str) -> str:
    """``<name>-<number>.xml`` like the ``vibs/`` entries of real metadata (number: from the ID)."""
    number = int(hashlib.sha256(vib_id.encode()).hexdigest()[:15], 16)
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{number}.xml"


def build(image: Image, catalog: Catalog) -> bytes:
    """The imgdb.tgz bytes for ``image`` (deterministic)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for part in ("var", "var/db", ROOT, f"{ROOT}/profiles", f"{ROOT}/vibs"):
                _dir(tar, part)
            profile = profile_xml(
                name=image.profile,
                vendor=image.vendor,
                description=f"built by bootbox for image {image.id}",
                acceptance=image.acceptance,
                vib_ids=[v.id for v in image.vibs],
            )
            _add(tar, f"{ROOT}/profiles/{re.sub(r'[^A-Za-z0-9._-]', '_', image.profile)}", profile)
            for vib in sorted(image.vibs, key=lambda v: v.id):
                _add(tar, f"{ROOT}/vibs/{vib_file_name(vib.name, vib.id)}", catalog.descriptor(vib))
    return raw.getvalue()
