"""Depot import: offline bundles, online depots over HTTP, unpacked trees, loose VIBs.

Each hostile input the issue lists is fed in one way at a time; every refusal must name what
was wrong, leave the catalog as it was, remove the blobs the failed import wrote, and never
create a file outside the state directory.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import threading
import tracemalloc
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from bootbox import PluginStore
from bootbox.store.memory import MemoryStore
from bootbox_esxi.catalog import BlobStore, Catalog
from bootbox_esxi.depot import Importer, Limits, Progress
from bootbox_esxi.xmlutil import DepotError
from bootbox_esxi.tests.esxi_builder import (
    PayloadSpec,
    ProfileSpec,
    build_vib,
    depot_files,
    driver,
    esx_base,
    with_declared_size,
    write_bundle,
    write_tree,
)
from tests.support.lab_fixtures import lab_unavailable

SHARED = Path("/work/shared/data/esxi")
REAL_BUNDLE = "ghettoVCB-offline-bundle-2020-12-29.zip"
REAL_ID = "virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0"


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(PluginStore(MemoryStore(), "esxi"), BlobStore(tmp_path / "state" / "plugins" / "esxi"))


def _run(catalog: Catalog, source: str | Path, progress: Progress | None = None) -> dict:  # type: ignore[type-arg]
    return Importer(catalog, Limits(max_vib_bytes=1 << 30)).run(str(source), progress)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _blobs(catalog: Catalog) -> set[Path]:
    return {p for p in catalog.blobs.blobs.rglob("*") if p.is_file()}


@pytest.fixture
def standard(tmp_path: Path) -> Path:
    """A bundle with a base VIB, two drivers and an image profile."""
    vibs = [esx_base(), driver("net-a"), driver("nvme-b", acceptance="accepted")]
    profile = ProfileSpec("ESXi-test-standard", [v.id for v in vibs], acceptance="partner")
    return write_bundle(tmp_path / "ESXi-test-depot.zip", depot_files(vibs, [profile]))


# ------------------------------------------------------------------------------- real data


def test_real_offline_bundle_imports_and_verifies(catalog: Catalog, tmp_path: Path) -> None:
    if not (SHARED / REAL_BUNDLE).is_file():
        lab_unavailable(f"the shared real bundle {SHARED / REAL_BUNDLE} is not present")
    bundle = tmp_path / REAL_BUNDLE
    shutil.copyfile(SHARED / REAL_BUNDLE, bundle)
    progress = Progress()
    depot = _run(catalog, bundle, progress)
    assert depot["id"] == "ghettovcb-offline-bundle-2020-12-29"
    assert depot["vibs"] == [REAL_ID] and depot["profiles"] == []  # the bundle declares no image profile
    assert depot["bulletins"] == {"ghettoVCB": [REAL_ID]}
    assert progress.snapshot() == {"total": 36976, "done": 36976, "phase": "done", "current": REAL_ID}
    vib = catalog.vib(REAL_ID)
    assert vib.sha256 == "50a5032cb0411e0deba52477c649a240b6575777dc48d8ec28eacc4798ae7454"
    payload = catalog.payload_path(vib.payloads[0].sha256)
    assert payload.stat().st_size == 35315
    assert b"<name>ghettoVCB</name>" in catalog.descriptor(vib)


# ------------------------------------------------------------------------------- builder bundles


def test_bundle_with_profile_imports_and_payloads_are_content_addressed(catalog: Catalog, standard: Path) -> None:
    depot = _run(catalog, standard)
    assert depot["kind"] == "bundle" and len(depot["vibs"]) == 3
    assert depot["profiles"] == ["ESXi-test-standard"]
    (profile,) = catalog.depot_profiles()
    assert profile.key == "esxi-test-depot/ESXi-test-standard" and len(profile.vibs) == 3
    for vib in catalog.vibs():
        for payload in vib.payloads:
            path = catalog.payload_path(payload.sha256)
            assert path.name == payload.sha256 and path.parent.name == payload.sha256[:2]
    assert list(catalog.blobs.tmp.iterdir()) == []  # no temp file left behind


def test_each_payload_is_stored_once_across_depots(catalog: Catalog, tmp_path: Path) -> None:
    base = esx_base()
    first = write_bundle(tmp_path / "one.zip", depot_files([base, driver("net-a")]))
    second = write_bundle(tmp_path / "two.zip", depot_files([base, driver("net-c")]))
    _run(catalog, first)
    before = _blobs(catalog)
    _run(catalog, second)
    added = _blobs(catalog) - before
    # Only net-c's descriptor and payload are new; the base VIB's blobs and the shared empty
    # signature are reused.
    assert len(added) == 2
    assert catalog.depots_of(base.id) == ["one", "two"]


def test_reimport_updates_the_same_depot_and_skips_known_vibs(catalog: Catalog, standard: Path) -> None:
    first = _run(catalog, standard)
    progress = Progress()
    again = _run(catalog, standard, progress)
    assert again["id"] == first["id"] and len(catalog.depots()) == 1
    assert progress.done == progress.total > 0


def test_corrupt_vib_is_refused_by_name_and_nothing_is_kept(catalog: Catalog, tmp_path: Path) -> None:
    good, bad = driver("net-a"), driver("net-bad")
    data = bytearray(build_vib(bad))
    data[-3] ^= 0x01
    bundle = write_bundle(tmp_path / "bad.zip", depot_files([esx_base(), good, bad], vib_bytes={bad.id: bytes(data)}))
    with pytest.raises(DepotError, match=f"VIB {bad.id} is corrupt"):
        _run(catalog, bundle)
    assert catalog.vibs() == [] and catalog.depots() == []
    assert _blobs(catalog) == set()  # the blobs of the VIBs that did verify were rolled back too


def _set_compression(bundle: Path, member: str, method: int) -> None:
    """Rewrite ``member``'s compression method in its local header and central directory entry,
    as a bundle made by a zip tool with a method Python's zipfile cannot read would have it."""
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as zf:
        local = zf.getinfo(member).header_offset
    data[local + 8 : local + 10] = method.to_bytes(2, "little")  # local file header: method at 8
    central = data.find(b"PK\x01\x02")  # central directory entries
    while central != -1:
        name_length = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_length] == member.encode():
            data[central + 10 : central + 12] = method.to_bytes(2, "little")  # central entry: method at 10
            break
        central = data.find(b"PK\x01\x02", central + 4)
    bundle.write_bytes(bytes(data))


def test_a_member_in_an_unsupported_compression_is_refused_clearly(catalog: Catalog, tmp_path: Path) -> None:
    """zipfile raises NotImplementedError for methods it lacks (PPMd, 98, here): that must be a
    DepotError naming the member, not a crash of the import."""
    vib = driver("net-a")
    bundle = write_bundle(tmp_path / "ppmd.zip", depot_files([esx_base(), vib]))
    member = f"vib20/net-a/{vib.id}.vib"
    _set_compression(bundle, member, 98)
    with zipfile.ZipFile(bundle) as zf, pytest.raises(NotImplementedError):
        zf.open(member)  # the premise: Python's zipfile cannot read it
    with pytest.raises(DepotError, match=f"cannot read {member} from the zip"):
        _run(catalog, bundle)
    assert catalog.vibs() == [] and _blobs(catalog) == set()


def test_metadata_checksum_mismatch_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    bundle = write_bundle(tmp_path / "b.zip", depot_files([esx_base(), vib], sha_override={vib.id: "ab" * 32}))
    with pytest.raises(DepotError, match=f"VIB {vib.id}.*sha-256"):
        _run(catalog, bundle)


def test_missing_vib_file_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    files = depot_files([esx_base(), vib])
    del files[f"vib20/net-a/{vib.id}.vib"]
    with pytest.raises(DepotError, match="vib20/net-a/.* is missing from the bundle"):
        _run(catalog, write_bundle(tmp_path / "b.zip", files))


def test_truncated_vib_in_a_bundle_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    bundle = write_bundle(tmp_path / "b.zip", depot_files([esx_base(), vib],
                                                         vib_bytes={vib.id: build_vib(vib, truncate=150)}))
    with pytest.raises(DepotError, match=f"VIB {vib.id}"):
        _run(catalog, bundle)


@pytest.mark.parametrize("path", ["../../../evil.vib", "/tmp/evil.vib", "vib20/../../evil.vib", "C:\\evil.vib"])
def test_hostile_paths_in_metadata_are_refused_and_nothing_escapes(catalog: Catalog, tmp_path: Path,
                                                                   path: str) -> None:
    vib = driver("net-a")
    files = depot_files([esx_base(), vib], paths={vib.id: path})
    bundle = write_bundle(tmp_path / "b.zip", files)
    before = _files(tmp_path)
    with pytest.raises(DepotError, match="(outside the bundle|not a relative path)"):
        _run(catalog, bundle)
    assert {p for p in _files(tmp_path) - before if not p.is_relative_to(tmp_path / "state")} == set()
    assert not (tmp_path.parent / "evil.vib").exists() and not Path("/tmp/evil.vib").exists()


def test_hostile_member_names_in_the_zip_are_never_written(catalog: Catalog, tmp_path: Path) -> None:
    files = depot_files([esx_base(), driver("net-a")])
    files["../../escaped.txt"] = b"should never be written"
    files["/abs/escaped.txt"] = b"nor this"
    bundle = write_bundle(tmp_path / "b.zip", files)
    before = _files(tmp_path)
    _run(catalog, bundle)
    new = _files(tmp_path) - before
    assert new and all(p.is_relative_to(tmp_path / "state") for p in new)
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_symlink_member_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    files = depot_files([esx_base(), vib])
    rel = f"vib20/net-a/{vib.id}.vib"
    del files[rel]
    bundle = write_bundle(tmp_path / "b.zip", files, symlinks={rel: "/etc/passwd"})
    with pytest.raises(DepotError, match="symbolic link"):
        _run(catalog, bundle)


def test_huge_declared_sizes_are_refused_before_reading(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    rel = f"vib20/net-a/{vib.id}.vib"
    bundle = write_bundle(tmp_path / "b.zip", depot_files([esx_base(), vib]))
    lying = tmp_path / "lying.zip"
    lying.write_bytes(with_declared_size(bundle.read_bytes(), rel, 0xFFFFFFF0))
    with pytest.raises(DepotError, match="declares 4294967280 bytes, more than the"):
        Importer(catalog, Limits(max_vib_bytes=1 << 30)).run(str(lying))
    # A metadata packed-size beyond the limit is refused as well, without opening the VIB.
    files = depot_files([esx_base(), vib])
    with zipfile.ZipFile(tmp_path / "meta.zip", "w") as zf:
        with zipfile.ZipFile(io.BytesIO(files["metadata.zip"])) as old:
            for item in old.infolist():
                data = old.read(item)
                data = data.replace(f"<packedSize>{len(files[rel])}</packedSize>".encode(),
                                    b"<packedSize>99999999999999</packedSize>")
                data = data.replace(f"<packed-size>{len(files[rel])}</packed-size>".encode(),
                                    b"<packed-size>99999999999999</packed-size>")
                zf.writestr(item, data)
    files["metadata.zip"] = (tmp_path / "meta.zip").read_bytes()
    big = write_bundle(tmp_path / "big.zip", files)
    with pytest.raises(DepotError, match=f"VIB {vib.id} declares 99999999999999 bytes, more than the"):
        _run(catalog, big)


def test_unknown_xml_is_tolerated_and_dtds_are_refused(catalog: Catalog, tmp_path: Path) -> None:
    extra = {"extensions/new.xml": b"<whatever/>", "vibs/notes.txt": b"ignored"}
    files = depot_files([esx_base(), driver("net-a", extra_xml="<newElement>v</newElement>")], metadata_extra=extra)
    files["index.xml"] = files["index.xml"].replace(b"<vendor>", b"<vendor><futureField>1</futureField>")
    assert len(_run(catalog, write_bundle(tmp_path / "ok.zip", files))["vibs"]) == 2
    files["index.xml"] = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + files["index.xml"]
    with pytest.raises(DepotError, match="DTD or entities"):
        _run(catalog, write_bundle(tmp_path / "dtd.zip", files))


def test_not_a_bundle_is_refused_clearly(catalog: Catalog, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(DepotError, match="not a readable zip"):
        _run(catalog, junk)
    empty = write_bundle(tmp_path / "empty.zip", {"readme.txt": b"hi"})
    with pytest.raises(DepotError, match="neither index.xml nor metadata.zip"):
        _run(catalog, empty)
    with pytest.raises(DepotError, match="absolute path"):
        _run(catalog, "relative/path.zip")


def test_bundle_without_indexes_still_imports(catalog: Catalog, tmp_path: Path) -> None:
    files = depot_files([esx_base()])
    del files["index.xml"], files["vendor-index.xml"]
    assert _run(catalog, write_bundle(tmp_path / "noindex.zip", files))["vibs"] == [esx_base().id]


def test_vib_already_imported_with_other_content_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    vib = driver("net-a")
    _run(catalog, write_bundle(tmp_path / "a.zip", depot_files([esx_base(), vib])))
    other = driver("net-a")
    other.payloads[0].content = b"different bytes, same VIB ID"
    with pytest.raises(DepotError, match="already imported"):
        _run(catalog, write_bundle(tmp_path / "b.zip", depot_files([esx_base(), other])))


# ------------------------------------------------------------------------------- other sources


@pytest.fixture
def http_tree(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_online_depot_over_http(catalog: Catalog, http_tree: tuple[str, Path]) -> None:
    url, root = http_tree
    vibs = [esx_base(), driver("net-a")]
    write_tree(root / "depot", depot_files(vibs, [ProfileSpec("online-profile", [v.id for v in vibs])]))
    progress = Progress()
    depot = _run(catalog, f"{url}/depot/index.xml", progress)
    assert depot["kind"] == "online" and depot["id"] == "depot"
    assert depot["profiles"] == ["online-profile"] and len(depot["vibs"]) == 2
    assert progress.done == progress.total > 0


def test_online_depot_cannot_point_outside_http(catalog: Catalog, http_tree: tuple[str, Path]) -> None:
    url, root = http_tree
    vib = driver("net-a")
    write_tree(root / "d", depot_files([esx_base(), vib], paths={vib.id: "file:///etc/passwd"}))
    with pytest.raises(DepotError, match="not an http"):
        _run(catalog, f"{url}/d/index.xml")
    with pytest.raises(DepotError, match="HTTP 404"):
        _run(catalog, f"{url}/nothing/index.xml")


def test_bundle_url_is_downloaded_into_the_state_dir_and_imported(catalog: Catalog, http_tree: tuple[str, Path],
                                                                  tmp_path: Path) -> None:
    url, root = http_tree
    write_bundle(root / "remote-bundle.zip", depot_files([esx_base()]))
    depot = _run(catalog, f"{url}/remote-bundle.zip")
    assert depot["id"] == "remote-bundle" and depot["source"].startswith("http://")
    assert list(catalog.blobs.tmp.iterdir()) == []


def test_unpacked_depot_directory_and_loose_vibs(catalog: Catalog, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "unpacked", depot_files([esx_base()]))
    assert _run(catalog, tree)["kind"] == "directory"
    loose = tmp_path / "loose"
    loose.mkdir()
    for spec in (driver("net-a"), driver("net-b")):
        (loose / f"{spec.name}.vib").write_bytes(build_vib(spec))
    (loose / "README").write_text("not a vib")
    depot = _run(catalog, loose)
    assert depot["kind"] == "vibs" and len(depot["vibs"]) == 2
    single = _run(catalog, loose / "net-a.vib")
    assert single["vibs"] == [driver("net-a").id]


def test_a_big_bundle_is_streamed_not_loaded(catalog: Catalog, tmp_path: Path) -> None:
    """48 MB of incompressible payload imports with a small, bounded Python heap."""
    big = esx_base(size=48 << 20)
    bundle = write_bundle(tmp_path / "big.zip", depot_files([big]))
    del big
    tracemalloc.start()
    try:
        _run(catalog, bundle)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"peak Python heap {peak / 1e6:.1f} MB while importing a 48 MB bundle"


def test_payload_checksum_in_bundle_names_the_payload(catalog: Catalog, tmp_path: Path) -> None:
    bad = driver("net-a")
    bad.payloads = [PayloadSpec("net_a", "vgz", b"x", wrong_sha256=True)]
    with pytest.raises(DepotError, match=f"VIB {bad.id} is corrupt: payload net_a has sha-256"):
        _run(catalog, write_bundle(tmp_path / "b.zip", depot_files([esx_base(), bad])))
