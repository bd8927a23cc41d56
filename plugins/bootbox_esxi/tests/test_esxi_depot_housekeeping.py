"""Depot housekeeping: ``depot remove`` and ``depot add --replace`` on real rebuilt VIBs.

The rebuilt VIB is made from the shared, real ghettoVCB VIB the way a community rebuild comes
out: the same VIB ID (name, vendor, version unchanged), a new release date in the descriptor and
its payload compressed again (other bytes, the same files inside), with the descriptor's size
and sha-256 updated so the rebuild verifies like any VIB. It is assembled with the test
builder's ``ar`` writer, never with the plugin's code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from bootbox import PluginStore
from bootbox.store.memory import MemoryStore
from bootbox_esxi.catalog import BlobStore, Catalog
from bootbox_esxi.depot import Importer, Limits
from bootbox_esxi.tests.esxi_builder import PayloadSpec, ar_member, depot_files, driver, esx_base, write_bundle
from bootbox_esxi.tests.test_esxi_appliance import MAC, Running, _parse_cfg, _said, http, start
from bootbox_esxi.xmlutil import DepotError
from tests.support.lab_fixtures import lab_unavailable

REAL_VIB = Path("/work/shared/data/esxi/ghettoVCB-1.0.0-0.0.0-2020-12-29.vib")
REAL_ID = "virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0"
REAL_PAYLOAD_SHA = "f93d9901a98b35cbe5b7ccb55934c41f4f69704dafc5d20c70a5fc694893bb33"


def _members(vib: bytes) -> list[tuple[str, bytes]]:
    """The members of an ``ar`` archive (the common format: 60-byte headers, even padding)."""
    assert vib.startswith(b"!<arch>\n")
    out, at = [], 8
    while at < len(vib):
        header = vib[at:at + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
        out.append((name, vib[at + 60:at + 60 + size]))
        at += 60 + size + (size % 2)
    return out


def rebuild(vib: bytes, release: str = "2021-03-01T10:00:00+00:00") -> bytes:
    """The same VIB ID, rebuilt: new release date, payloads compressed again (other bytes)."""
    members = dict(_members(vib))
    descriptor = members["descriptor.xml"].decode()
    descriptor = re.sub(r"<release-date>[^<]*</release-date>", f"<release-date>{release}</release-date>", descriptor)
    out = [("descriptor.xml", b""), ("sig.pkcs7", members.get("sig.pkcs7", b""))]
    for name, data in members.items():
        if name in ("descriptor.xml", "sig.pkcs7"):
            continue
        packed = gzip.compress(gzip.decompress(data), compresslevel=9, mtime=1614592800)
        assert packed != data
        old = hashlib.sha256(data).hexdigest()
        descriptor = descriptor.replace(f'name="{name}" type="vgz" size="{len(data)}"',
                                        f'name="{name}" type="vgz" size="{len(packed)}"')
        descriptor = descriptor.replace(old, hashlib.sha256(packed).hexdigest())
        out.append((name, packed))
    out[0] = ("descriptor.xml", descriptor.encode())
    return b"!<arch>\n" + b"".join(ar_member(name, body) for name, body in out)


@pytest.fixture
def real_vibs(tmp_path: Path) -> tuple[Path, Path]:
    """The real ghettoVCB VIB and a rebuild of it, each in its own folder (one depot each)."""
    if not REAL_VIB.is_file():
        lab_unavailable(f"the shared real VIB {REAL_VIB} is not present")
    original, rebuilt = tmp_path / "ghetto" / REAL_VIB.name, tmp_path / "ghetto-rebuilt" / REAL_VIB.name
    original.parent.mkdir()
    rebuilt.parent.mkdir()
    shutil.copyfile(REAL_VIB, original)
    rebuilt.write_bytes(rebuild(REAL_VIB.read_bytes()))
    return original, rebuilt


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(PluginStore(MemoryStore(), "esxi"), BlobStore(tmp_path / "state" / "plugins" / "esxi"))


def _importer(catalog: Catalog) -> Importer:
    return Importer(catalog, Limits(max_vib_bytes=1 << 30))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ the importer


def test_a_rebuilt_real_vib_is_refused_then_replaced_and_the_old_build_forgotten(
    catalog: Catalog, real_vibs: tuple[Path, Path]
) -> None:
    original, rebuilt = real_vibs
    importer = _importer(catalog)
    importer.run(str(original))
    assert catalog.vib(REAL_ID).sha256 == _sha(original) and catalog.blobs.has(REAL_PAYLOAD_SHA)
    old_members = {m.sha256 for m in catalog.vib(REAL_ID).members}

    with pytest.raises(DepotError, match="already imported with different content; .* --replace"):
        importer.run(str(rebuilt))
    assert catalog.vib(REAL_ID).sha256 == _sha(original)

    result = importer.run(str(rebuilt), replace=True)
    assert result["replaced"] == [{"vib": REAL_ID, "old_sha256": _sha(original), "new_sha256": _sha(rebuilt)}]
    vib = catalog.vib(REAL_ID)
    assert vib.sha256 == _sha(rebuilt) and vib.id == REAL_ID
    new_members = {m.sha256 for m in vib.members}
    assert all(catalog.blobs.has(sha) for sha in new_members)
    assert not any(catalog.blobs.has(sha) for sha in old_members - new_members)  # the old build's bytes are gone
    assert not catalog.blobs.has(REAL_PAYLOAD_SHA)
    assert "replaced" not in catalog.depot(result["id"])  # the report is not stored with the depot
    assert importer.run(str(rebuilt))["vibs"] == [REAL_ID]  # the same bytes again: nothing to refuse


def test_a_rebuilt_vib_in_a_bundle_is_refused_before_reading_and_replaced_with_replace(
    catalog: Catalog, tmp_path: Path
) -> None:
    importer = _importer(catalog)
    first = [esx_base(), driver("net-a")]
    importer.run(str(write_bundle(tmp_path / "lab.zip", depot_files(first))))
    again = driver("net-a")
    again.payloads = [PayloadSpec("net-a", content=b"net-a payload, rebuilt with a fix\n")]
    bundle = write_bundle(tmp_path / "lab-rebuilt.zip", depot_files([esx_base(), again]))
    with pytest.raises(DepotError, match=f"VIB {again.id} was already imported with sha-256 .*--replace"):
        importer.run(str(bundle))
    result = importer.run(str(bundle), replace=True)
    assert [r["vib"] for r in result["replaced"]] == [again.id]  # esx-base is identical: not replaced
    assert catalog.vib(again.id).payloads[0].size == len(again.payloads[0].packed())


def test_removing_a_depot_keeps_vibs_another_depot_brings(catalog: Catalog, tmp_path: Path) -> None:
    importer = _importer(catalog)
    a = importer.run(str(write_bundle(tmp_path / "a.zip", depot_files([esx_base(), driver("net-a")]))))
    b = importer.run(str(write_bundle(tmp_path / "b.zip", depot_files([esx_base(), driver("nvme-b")]))))
    nvme = catalog.vib(driver("nvme-b").id)
    gone = importer.remove(b["id"], [driver("nvme-b").id])
    assert [v.id for v in gone] == [nvme.id] and not catalog.has(nvme.id)
    assert catalog.has(esx_base().id) and [d["id"] for d in catalog.depots()] == [a["id"]]
    only_nvme = {m.sha256 for m in nvme.members} - catalog.referenced()  # (an empty sig.pkcs7 is shared)
    assert only_nvme and not any(catalog.blobs.has(sha) for sha in only_nvme)
    assert all(catalog.blobs.has(m.sha256) for m in catalog.vib(esx_base().id).members)


# ------------------------------------------------------------------------------ the appliance and the CLI


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path, inject={"backup": ["ghettoVCB"]})  # a group whose hosts get ghettoVCB injected
    try:
        yield run
    finally:
        run.appliance.stop()


def _boot(run: Running, boot_id: str) -> dict[str, str]:
    """Boot the host as ESXi does (script, boot.cfg, modules, call-in); return module → sha-256."""
    status, _, body = http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")
    assert status == 200, body
    chain = next(line for line in body.decode().splitlines() if line.startswith("chain --autofree"))
    cfg = _parse_cfg(http(chain.split()[4])[2].decode())
    *names, callin = [cfg["kernel"], *cfg["modules"].split(" --- ")]
    shas = {name: hashlib.sha256(http(f"{cfg['prefix']}/{name}")[2]).hexdigest() for name in names}
    with tarfile.open(fileobj=io.BytesIO(http(callin)[2]), mode="r:gz") as tar:
        local_sh = tar.extractfile("etc/rc.local.d/local.sh").read().decode()  # type: ignore[union-attr]
    up_url = next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'")
    assert http(up_url, "POST", {"boot_id": boot_id})[0] in (200, 503)  # 503: other plugins' pushes still run
    return shas


def test_replace_marks_hosts_until_they_boot_again_and_remove_is_refused_while_in_use(
    running: Running, real_vibs: tuple[Path, Path]
) -> None:
    original, rebuilt = real_vibs
    run = running
    run.import_depot(write_bundle(run.tmp / "lab-depot.zip", depot_files([esx_base(), driver("net-a")])))
    ghetto = run.import_depot(original.parent)
    run.api("POST", "/profiles", {"name": "esxi-lab", "kind": "esxi",
                                  "spec": {"vibs": [esx_base().id, "ghettoVCB"], "acceptance": "community"}})
    run.api("POST", "/rules", {"name": "lab", "all_hosts": True, "items": {"image": "esxi-lab"}})
    assert _boot(run, "b1")["payload1.v00"] == REAL_PAYLOAD_SHA

    original.write_bytes(rebuilt.read_bytes())  # the community folder now holds the rebuild
    refused = run.cli("depot", "add", str(original.parent))
    assert refused.exit_code != 0 and "--replace" in _said(refused)

    added = run.cli("depot", "add", "--replace", str(original.parent))
    assert added.exit_code == 0, _said(added)
    assert f"replaced {REAL_ID}: sha-256 {_sha(REAL_VIB)[:16]}… -> {_sha(rebuilt)[:16]}…" in added.output
    assert "image profiles that change: esxi-lab" in added.output
    assert f"hosts now non-compliant until they boot again: {MAC}" in added.output
    rows = json.loads(run.cli("depot", "compliance", "--json").output)
    assert [(r["mac"], r["profile"], r["vibs"], r["boot_id"]) for r in rows] == [(MAC, "esxi-lab", [REAL_ID], "b1")]
    events = run.api("GET", f"/hosts/{MAC}/events")
    assert any(f"VIB {REAL_ID} was rebuilt" in e["message"] and "non-compliant" in e["message"] for e in events)

    # Repaired by booting again: the host loads the rebuilt payload and is compliant.
    new_payload = _boot(run, "b2")["payload1.v00"]
    rebuilt_payload = next(body for name, body in _members(rebuilt.read_bytes()) if name == "payload1")
    assert new_payload == hashlib.sha256(rebuilt_payload).hexdigest() != REAL_PAYLOAD_SHA
    assert "Every host runs the current build" in run.cli("depot", "compliance").output

    # The depot cannot go while esxi-lab needs its VIB; once the profile lets go, it can.
    removing = run.cli("depot", "remove", ghetto["id"])
    assert removing.exit_code != 0 and f"image profile esxi-lab needs {REAL_ID}" in _said(removing)
    assert run.api("GET", f"/esxi/vibs/{REAL_ID}")["sha256"] == _sha(rebuilt)
    assert run.cli("profile", "remove-vib", "esxi-lab", "ghettoVCB").exit_code == 0
    removed = run.cli("depot", "remove", ghetto["id"], "--json")
    assert removed.exit_code == 0, _said(removed)
    assert json.loads(removed.output)["removed_vibs"] == [REAL_ID]
    assert json.loads(removed.output)["unresolved_injections"] == ["ghettoVCB"]  # said, not refused
    assert ghetto["id"] not in [d["id"] for d in run.api("GET", "/esxi/depots")]
    assert http(f"{run.url}/api/v1/esxi/vibs/{REAL_ID}", token=run.token)[0] == 404
    assert run.cli("depot", "remove", "no-such-depot").exit_code != 0
