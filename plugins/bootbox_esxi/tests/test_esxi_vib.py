"""VIB parsing and verification: the ar container, the descriptor, checksums, hostile input.

Real data first (the vibauthor-built ghettoVCB VIB from ../shared/data/esxi), then VIBs from the
test builder broken on purpose, one way each.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox_esxi import EsxiPlugin
from bootbox_esxi.ar import ArReader
from bootbox_esxi.image import name_modules
from bootbox_esxi.vib import Vib, parse_descriptor
from bootbox_esxi.vibread import read_vib
from bootbox_esxi.xmlutil import DepotError
from bootbox_esxi.tests.esxi_builder import PayloadSpec, VibSpec, ar_member, build_vib, descriptor_xml, driver, esx_base
from tests.support.lab_fixtures import lab_unavailable

SHARED = Path("/work/shared/data/esxi")
REAL_VIB = "ghettoVCB-1.0.0-0.0.0-2020-12-29.vib"
LIMIT = 1 << 30


@pytest.fixture
def real_vib(tmp_path: Path) -> Path:
    if not (SHARED / REAL_VIB).is_file():
        lab_unavailable("the shared real VIB is not present")
    target = tmp_path / REAL_VIB
    shutil.copyfile(SHARED / REAL_VIB, target)
    return target


def _read(data: bytes, **kwargs: object) -> Vib:
    return read_vib(io.BytesIO(data), "test VIB", limit=kwargs.pop("limit", LIMIT), **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- real data


def test_real_vib_parses_and_verifies_with_its_quirks(real_vib: Path) -> None:
    with real_vib.open("rb") as stream:
        vib = read_vib(stream, REAL_VIB, limit=LIMIT)
    assert vib.id == "virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0"
    assert (vib.name, vib.version, vib.vendor, vib.type) == ("ghettoVCB", "1.0.0-0.0.0", "virtuallyGhetto", "bootbank")
    assert vib.summary == "[Fling] ghettoVCB VM backup and restore script"
    assert vib.acceptance == "community" and vib.stateless_ready and not vib.overlay
    assert vib.signed is False  # the sig.pkcs7 member is present but empty
    assert vib.files == 6 and vib.depends == vib.conflicts == vib.replaces == vib.provides == ()
    assert vib.sha256 == "50a5032cb0411e0deba52477c649a240b6575777dc48d8ec28eacc4798ae7454"
    assert vib.size == real_vib.stat().st_size == 36976
    (payload,) = vib.payloads
    assert (payload.name, payload.type, payload.size, payload.vfatname) == ("payload1", "vgz", 35315, None)
    assert payload.sha256 == "f93d9901a98b35cbe5b7ccb55934c41f4f69704dafc5d20c70a5fc694893bb33"
    assert {(c.kind, c.gunzip) for c in payload.checksums} == {("sha-256", False), ("sha-1", True)}
    assert [m.name for m in vib.members] == ["descriptor.xml", "sig.pkcs7", "payload1"]
    # No vfatname: the module name is derived from the payload name and type.
    assert [m.name for m in name_modules([vib])] == ["payload1.v00"]
    assert Vib.from_doc(vib.to_doc()) == vib


def test_real_vib_with_one_flipped_payload_byte_is_refused(real_vib: Path) -> None:
    data = bytearray(real_vib.read_bytes())
    data[-100] ^= 0xFF
    with pytest.raises(DepotError, match="payload payload1 has sha-256 .* its descriptor says f93d99"):
        _read(bytes(data))


def test_vib_show_prints_a_local_file_without_an_appliance(real_vib: Path) -> None:
    app = build_cli(make_plugin_manager(load_entrypoints=False, extra_plugins=[EsxiPlugin()]))
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "vib", "show", str(real_vib)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "VIB ID:          virtuallyGhetto_bootbank_ghettoVCB_1.0.0-0.0.0" in lines
    assert "acceptance:      CommunitySupported (community)" in lines
    assert "stateless-ready: yes" in lines
    assert "signature:       none (empty or absent sig.pkcs7)" in lines
    assert any(line.startswith("payload1  vgz   35315  payload1.v00  sha-256 f93d9901a98b35cb") for line in lines)
    as_json = CliRunner().invoke(app, ["vib", "show", str(real_vib), "--json"])
    assert '"stateless_ready": true' in as_json.output


# ------------------------------------------------------------------------------- descriptors


def test_descriptor_fields_relationships_and_payload_attributes() -> None:
    spec = VibSpec("net-x", version="2.0.1-1OEM.700.1.0", vendor="ACME", acceptance="VMwareAccepted",
                   depends=[("esx-base", ">=", "7.0.0"), ("vmkapi_2_9_0_0", "", "")],
                   conflicts=[("net-old", "<<", "1.0")], replaces=[("net-legacy", "", "")],
                   provides=[("net-api", "2.0")],
                   payloads=[PayloadSpec("netx", "vgz", b"x", vfatname="netx.v00", bootorder=7)])
    vib = parse_descriptor(descriptor_xml(spec), "net-x")
    assert vib.id == "ACME_bootbank_net-x_2.0.1-1OEM.700.1.0"
    assert vib.acceptance == "accepted"
    assert [str(r) for r in vib.depends] == ["esx-base >= 7.0.0", "vmkapi_2_9_0_0"]
    assert [str(r) for r in vib.conflicts] == ["net-old << 1.0"]
    assert [r.name for r in vib.replaces] == ["net-legacy"]
    assert [(p.name, p.version) for p in vib.provides] == [("net-api", "2.0")]
    (payload,) = vib.payloads
    assert (payload.vfatname, payload.bootorder) == ("netx.v00", 7)


def test_unknown_xml_elements_are_tolerated() -> None:
    spec = driver("net-new", extra_xml="<future-thing a='1'><nested/></future-thing><another>x</another>")
    vib = _read(build_vib(spec))
    assert vib.name == "net-new"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x: x.replace(b"<name>", b"<nom>").replace(b"</name>", b"</nom>"), "has no <name>"),
        (lambda x: x.replace(b"partner", b"superb"), "not an acceptance level"),
        (lambda x: b'<?xml version="1.0"?><!DOCTYPE vib [<!ENTITY a "aaaa">]>' + x, "DTD or entities"),
        (lambda x: x[:-10], "not well-formed"),
        (lambda x: x.replace(b"<vib ", b"<package ").replace(b"</vib>", b"</package>"), "expected <vib>"),
        (lambda x: x.replace(b'name="drv"', b'name="../evil"'), "not a plain file name"),
        (lambda x: x.replace(b'checksum-type="sha-256"', b'checksum-type="crc"').replace(
            b'checksum-type="sha-1"', b'checksum-type="crc"'), "no sha-256 or sha-1 checksum"),
        (lambda x: x.replace(b"<version>1.0.0-1.0.0</version>", b"<version>1 0</version>"), "spaces or slashes"),
    ],
    ids=["no-name", "bad-level", "dtd", "truncated-xml", "wrong-root", "hostile-payload-name", "no-checksum",
         "space-in-version"],
)
def test_bad_descriptors_are_refused_with_a_reason(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    spec = driver("drv")
    with pytest.raises(DepotError, match=message):
        _read(build_vib(spec, members=[("descriptor.xml", mutate(descriptor_xml(spec))),
                                       ("sig.pkcs7", b""), ("drv", spec.payloads[0].packed())]))


# ------------------------------------------------------------------------------- ar and payloads


def test_payload_checksum_mismatch_names_the_vib_and_payload() -> None:
    spec = driver("drv")
    spec.payloads[0].wrong_sha256 = True
    with pytest.raises(DepotError, match="test VIB is corrupt: payload drv has sha-256"):
        _read(build_vib(spec))


def test_gunzip_checksum_is_verified_too() -> None:
    spec = driver("drv")
    spec.payloads[0].checksums = ("sha-256", "sha-256-gunzip", "sha-1-gunzip")
    descriptor = descriptor_xml(spec)
    good_sha1 = descriptor.split(b'verify-process="gunzip">')[2].split(b"<")[0]
    bad = descriptor.replace(good_sha1, b"0" * 40)
    with pytest.raises(DepotError, match="sha-1 after gunzip"):
        _read(build_vib(spec, members=[("descriptor.xml", bad), ("sig.pkcs7", b""),
                                       ("drv", spec.payloads[0].packed())]))
    assert _read(build_vib(spec)).name == "drv"


def test_payload_that_does_not_gunzip_is_refused_when_a_gunzip_checksum_is_declared() -> None:
    spec = driver("drv")
    garbage = b"\x1f\x8b\x08\x00" + b"\x00" * 40
    desc = descriptor_xml(spec)
    desc = desc.replace(hashlib.sha256(spec.payloads[0].packed()).hexdigest().encode(),
                        hashlib.sha256(garbage).hexdigest().encode())
    desc = desc.replace(f'size="{len(spec.payloads[0].packed())}"'.encode(), f'size="{len(garbage)}"'.encode())
    with pytest.raises(DepotError, match="payload drv"):
        _read(build_vib(spec, members=[("descriptor.xml", desc), ("sig.pkcs7", b""), ("drv", garbage)]))


def test_truncated_ar_is_reported_with_member_and_byte_counts() -> None:
    data = build_vib(esx_base())
    with pytest.raises(DepotError, match=r"truncated: member 's' declares \d+ bytes, only \d+ are present"):
        _read(data[:-5])
    with pytest.raises(DepotError, match="a member header has only 30 of 60 bytes"):
        _read(b"!<arch>\n" + ar_member("descriptor.xml", b"x")[:30])


def test_huge_declared_member_size_is_refused_before_reading() -> None:
    data = b"!<arch>\n" + ar_member("payload1", b"", declared_size=9_999_999_999)
    with pytest.raises(DepotError, match="declares 9999999999 bytes, more than the"):
        _read(data)


def test_payload_size_must_match_the_descriptor() -> None:
    spec = driver("drv")
    spec.payloads[0].declared_size = 3
    with pytest.raises(DepotError, match="payload drv is \\d+ bytes, its descriptor says 3"):
        _read(build_vib(spec))


@pytest.mark.parametrize("name", ["../etc/passw", "/abs", "a b", ".hidden"])
def test_hostile_member_names_are_refused(name: str) -> None:
    data = b"!<arch>\n" + ar_member(name, b"x")
    with pytest.raises(DepotError, match="not a plain file name"):
        _read(data)


def test_missing_and_undeclared_members_are_refused() -> None:
    spec = driver("drv")
    with pytest.raises(DepotError, match="missing payload member 'drv'"):
        _read(build_vib(spec, members=[("descriptor.xml", descriptor_xml(spec)), ("sig.pkcs7", b"")]))
    with pytest.raises(DepotError, match="member 'extra' that its descriptor does not declare"):
        _read(build_vib(spec, members=[("descriptor.xml", descriptor_xml(spec)), ("sig.pkcs7", b""),
                                       ("drv", spec.payloads[0].packed()), ("extra", b"x")]))
    with pytest.raises(DepotError, match="no descriptor.xml"):
        _read(build_vib(spec, members=[("drv", spec.payloads[0].packed())]))
    with pytest.raises(DepotError, match="not an ar archive"):
        _read(b"PK\x03\x04 this is a zip")


def test_payload_before_descriptor_is_still_verified() -> None:
    spec = driver("drv")
    members = [("drv", spec.payloads[0].packed()), ("descriptor.xml", descriptor_xml(spec))]
    assert _read(build_vib(spec, members=members)).payloads[0].sha256
    spec.payloads[0].wrong_sha256 = True
    with pytest.raises(DepotError, match="corrupt"):
        _read(build_vib(spec, members=[("drv", spec.payloads[0].packed()), ("descriptor.xml", descriptor_xml(spec))]))


def test_absent_signature_member_is_accepted_and_a_real_one_is_reported() -> None:
    spec = driver("drv", signature=b"-----PKCS7-----")
    assert _read(build_vib(spec)).signed is True
    assert _read(build_vib(spec, members=[("descriptor.xml", descriptor_xml(spec)),
                                          ("drv", spec.payloads[0].packed())])).signed is False


def test_a_whole_vib_over_the_limit_is_refused() -> None:
    spec = driver("drv")
    spec.payloads[0].content = b"z" * 200_000
    spec.payloads[0].gzip = False
    with pytest.raises(DepotError, match="limit"):
        _read(build_vib(spec), limit=100_000)


def test_ar_reader_handles_odd_sizes_and_gnu_names() -> None:
    data = b"!<arch>\n" + ar_member("odd/", b"abc") + ar_member("even", b"abcd")
    reader = ArReader(io.BytesIO(data), "t", 100)
    seen = []
    for header in reader:
        seen.append((header.name, reader.read_all(100)))
    assert seen == [("odd", b"abc"), ("even", b"abcd")]
