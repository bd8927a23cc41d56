"""Tests for bootbox.net.dhcp.packet: golden parses of real captures, round trips, hostile input."""

from __future__ import annotations

import contextlib
import json
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootbox.model import Machine
from bootbox.net.dhcp.packet import (
    BUILD_MIN_SIZE,
    MAGIC_COOKIE,
    MAX_OPTION_LENGTH,
    DhcpPacket,
    MalformedPacket,
    PxeOpt,
    build,
    build_suboptions,
    client_arch,
    client_uuid,
    has_ipxe_options,
    is_ipxe,
    message_type,
    parse,
    parse_suboptions,
    pxe_boot_item,
    pxe_suboptions,
    to_machine,
    user_classes,
    vendor_class,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "dhcp"
GOLDEN: dict[str, dict] = json.loads((DATA / "golden.json").read_text())


def capture(name: str) -> bytes:
    return (DATA / f"{name}.bin").read_bytes()


def header(op: int = 1, hlen: int = 6, chaddr: bytes = b"\x52\x54\x00\x12\x34\x56") -> bytes:
    """A 236-byte BOOTP header with a fixed xid, for hand-made packets."""
    return struct.pack("!BBBBIHH16s16s64s128s", op, 1, hlen, 0, 0x01020304, 0, 0, bytes(16), chaddr, b"", b"")


def packet(*options: bytes, op: int = 1, hlen: int = 6) -> bytes:
    return header(op, hlen) + MAGIC_COOKIE + b"".join(options) + b"\xff"


def opt(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# --------------------------------------------------------------------------- golden captures
def test_every_capture_has_a_golden_entry_and_vice_versa() -> None:
    assert sorted(p.stem for p in DATA.glob("*.bin")) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_parse_of_captured_packet(name: str) -> None:
    want = GOLDEN[name]
    data = capture(name)
    pkt = parse(data)
    assert len(data) == want["size"]
    h = want["header"]
    assert (pkt.op, pkt.htype, pkt.hlen, pkt.hops, pkt.secs) == (h["op"], h["htype"], h["hlen"], h["hops"], h["secs"])
    assert (f"0x{pkt.xid:08x}", f"0x{pkt.flags:04x}") == (h["xid"], h["flags"])
    assert (pkt.ciaddr, pkt.yiaddr, pkt.siaddr, pkt.giaddr) == (h["ciaddr"], h["yiaddr"], h["siaddr"], h["giaddr"])
    assert pkt.mac == h["chaddr"]
    assert (pkt.sname.decode(), pkt.file.decode()) == (h["sname"], h["file"])
    assert [f"{code}:{value.hex()}" for code, value in pkt.options.items()] == want["options"]
    assert message_type(pkt) == want["message_type"]
    assert vendor_class(pkt) == want["vendor_class"]
    assert list(user_classes(pkt)) == want["user_classes"]
    assert has_ipxe_options(pkt) is want["ipxe_options"]
    assert is_ipxe(pkt) is want["is_ipxe"]
    assert client_arch(pkt) == want["arch"]
    assert client_uuid(pkt) == want["uuid"]
    assert {str(k): v.hex() for k, v in pxe_suboptions(pkt).items()} == want["pxe_suboptions"]
    assert ((pxe_boot_item(pkt) or b"").hex() or None) == want["boot_item"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_rebuilt_capture_parses_to_the_same_packet(name: str) -> None:
    pkt = parse(capture(name))
    assert parse(build(pkt)) == pkt


def test_edk2_discover_becomes_a_uefi_machine() -> None:
    machine = to_machine(parse(capture("ovmf-edk2-discover")), "198.18.0.1", 67)
    assert machine == Machine(
        mac="52:54:00:bb:00:02",
        arch=7,
        vendor_class="PXEClient:Arch:00007:UNDI:003000",
        user_class="",
        is_ipxe=False,
        uuid="8c3e4a52-6f1d-4b7a-9e2c-1d5f0a3b7c64",  # the -uuid QEMU was started with
        server_ip="198.18.0.1",
        client_ip=None,
        port=67,
    )
    assert machine.firmware == "uefi"


def test_ipxe_4011_request_becomes_an_ipxe_machine_with_its_address() -> None:
    machine = to_machine(parse(capture("ovmf-snponly-ipxe-request-4011")), "198.18.0.1", 4011)
    assert (machine.is_ipxe, machine.user_class, machine.arch) == (True, "iPXE", 7)
    assert (machine.client_ip, machine.port) == ("198.18.0.171", 4011)


def test_httpclient_discover_is_uefi_http() -> None:
    machine = to_machine(parse(capture("ovmf-httpclient-discover")), "198.18.0.1", 67)
    assert (machine.arch, machine.http_boot, machine.firmware) == (16, True, "uefi-http")


def test_linux_client_has_no_pxe_identity() -> None:
    pkt = parse(capture("udhcpc-discover"))
    machine = to_machine(pkt, "198.18.0.1", 67)
    assert (machine.arch, machine.uuid, machine.is_ipxe, machine.vendor_class) == (None, None, False, "udhcp 1.35.0")


# --------------------------------------------------------------------------- helpers
def test_user_class_reads_rfc3004_items() -> None:
    pkt = parse(packet(opt(77, b"\x04iPXE\x05extra")))
    assert user_classes(pkt) == ("iPXE", "extra")
    assert is_ipxe(pkt)


def test_user_class_reads_a_raw_string_when_items_do_not_fit() -> None:
    assert user_classes(parse(packet(opt(77, b"iPXE")))) == ("iPXE",)
    assert user_classes(parse(packet(opt(77, b"\x05ab")))) == ("\x05ab",)


def test_option_175_alone_marks_ipxe() -> None:
    assert is_ipxe(parse(packet(opt(175, b"\xeb\x03\x01\x00\x00"))))
    assert not is_ipxe(parse(packet(opt(77, b"pixiecore"))))


def test_arch_falls_back_to_the_vendor_class() -> None:
    assert client_arch(parse(packet(opt(60, b"PXEClient:Arch:00011:UNDI:003000")))) == 11
    assert client_arch(parse(packet(opt(60, b"HTTPClient:Arch:00019")))) == 19
    assert client_arch(parse(packet(opt(60, b"PXEClient:Arch:x")))) is None
    assert client_arch(parse(packet(opt(93, b"\x00"), opt(60, b"PXEClient:Arch:00009")))) == 9  # odd 93 ignored


def test_arch_takes_the_first_of_several_codes() -> None:
    assert client_arch(parse(packet(opt(93, b"\x00\x10\x00\x07")))) == 16


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00" + bytes(15), b"\x01" + bytes(range(16)), bytes(17), b"\x00" + b"\xff" * 16],
    ids=["empty", "short", "type-1", "all-zero", "all-ones"],
)
def test_unusable_uuids_are_absent(value: bytes) -> None:
    assert client_uuid(parse(packet(opt(97, value)))) is None


@given(st.binary(min_size=16, max_size=16).filter(lambda raw: raw not in (bytes(16), b"\xff" * 16)))
def test_uuid_text_is_what_the_uuid_module_gives_for_smbios_byte_order(raw: bytes) -> None:
    """client_uuid formats by hand for speed; it must agree with uuid.UUID(bytes_le=...)."""
    assert client_uuid(parse(packet(opt(97, b"\x00" + raw)))) == str(uuid.UUID(bytes_le=raw))


def test_pxe_suboptions_and_boot_item() -> None:
    pkt = parse(packet(opt(43, b"\x06\x01\x08\x47\x04\x80\x03\x00\x00\xff")))
    assert pxe_suboptions(pkt) == {6: b"\x08", 71: b"\x80\x03\x00\x00"}
    assert pxe_boot_item(pkt) == b"\x80\x03\x00\x00"


def test_broken_pxe_suboptions_raise_malformed() -> None:
    with pytest.raises(MalformedPacket):
        pxe_suboptions(parse(packet(opt(43, b"\x47\x09\x80"))))


def test_suboptions_round_trip_and_end_with_255() -> None:
    block = build_suboptions({PxeOpt.DISCOVERY_CONTROL: b"\x08", PxeOpt.BOOT_ITEM: b"\x80\x03\x00\x00"})
    assert block == b"\x06\x01\x08\x47\x04\x80\x03\x00\x00\xff"
    assert parse_suboptions(block) == {6: b"\x08", 71: b"\x80\x03\x00\x00"}


def test_non_ethernet_client_is_not_a_machine() -> None:
    with pytest.raises(MalformedPacket, match="not Ethernet"):
        to_machine(parse(packet(opt(53, b"\x01"), hlen=8)), "198.18.0.1", 67)


def test_message_type_must_be_one_byte() -> None:
    assert message_type(parse(packet(opt(53, b"\x01\x02")))) is None
    assert message_type(parse(packet())) is None


# --------------------------------------------------------------------------- options
def test_repeated_options_are_concatenated_rfc3396() -> None:
    pkt = parse(packet(opt(43, b"\x06\x01"), opt(60, b"PXE"), opt(43, b"\x08\xff"), opt(60, b"Client")))
    assert pkt.options[43] == b"\x06\x01\x08\xff"
    assert vendor_class(pkt) == "PXEClient"
    assert list(pkt.options) == [43, 60]


def test_pad_is_skipped_and_end_stops_parsing() -> None:
    pkt = parse(packet(b"\x00\x00", opt(53, b"\x01"), b"\x00", opt(60, b"PXEClient")) + opt(61, b"after-end"))
    assert list(pkt.options) == [53, 60]


def test_missing_end_is_tolerated() -> None:
    data = header() + MAGIC_COOKIE + opt(53, b"\x01")
    assert parse(data).options == {53: b"\x01"}


def test_overloaded_file_and_sname_carry_options_rfc2132_9_3() -> None:
    raw = bytearray(packet(opt(52, b"\x03"), opt(60, b"PXE")))
    raw[108:108 + 9] = opt(60, b"Client") + b"\xff"  # file field continues option 60
    raw[44:44 + 8] = opt(67, b"a.efi") + b"\xff"  # then sname
    pkt = parse(bytes(raw))
    assert vendor_class(pkt) == "PXEClient"
    assert pkt.options[67] == b"a.efi"
    assert (pkt.file, pkt.sname) == (b"", b"")


def test_sname_and_file_stop_at_nul() -> None:
    raw = bytearray(packet())
    raw[108:108 + 14] = b"snponly.efi\x00xy"
    assert parse(bytes(raw)).file == b"snponly.efi"


# --------------------------------------------------------------------------- build
def test_build_pads_to_300_bytes_and_round_trips() -> None:
    pkt = DhcpPacket(op=2, xid=7, chaddr=b"\x52\x54\x00\x00\x00\x01", flags=0x8000, siaddr="198.18.0.1",
                     file=b"undionly.kpxe", options={53: b"\x02", 60: b"PXEClient"})  # fmt: skip
    data = build(pkt)
    assert len(data) == BUILD_MIN_SIZE
    assert data[236:240] == MAGIC_COOKIE
    assert parse(data) == pkt


def test_build_splits_long_options_and_parse_joins_them() -> None:
    long_url = ("http://198.18.0.1:8080/boot.ipxe?" + "x" * 600).encode()
    pkt = DhcpPacket(op=2, xid=1, chaddr=bytes(6), options={67: long_url, 60: b"PXEClient"})
    data = build(pkt)
    assert data.count(b"\x43\xff") == 2  # two full 255-byte instances of option 67
    assert parse(data).options[67] == long_url


def test_build_keeps_empty_options() -> None:
    pkt = DhcpPacket(op=2, xid=1, chaddr=bytes(6), options={97: b""})
    assert parse(build(pkt)).options == {97: b""}


@pytest.mark.parametrize(
    "bad",
    [
        {"file": b"x" * 129},
        {"sname": b"x" * 65},
        {"chaddr": bytes(17)},
        {"siaddr": "not-an-ip"},
        {"options": {256: b"x"}},
    ],
    ids=["file", "sname", "chaddr", "siaddr", "code"],
)
def test_build_rejects_unencodable_values(bad: dict) -> None:
    fields = {"op": 2, "xid": 1, "chaddr": bytes(6), **bad}
    with pytest.raises(ValueError):
        build(DhcpPacket(**fields))


# --------------------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01" * 239,
        header() + b"\x63\x82\x53\x64" + b"\xff",
        header() + MAGIC_COOKIE + b"\x3c\x09PXEClie\xff",
        header() + MAGIC_COOKIE + b"\x3c\x20PXE",
        header() + MAGIC_COOKIE + b"\x35",
        packet(hlen=255),
        packet(opt(52, b"\x04")),
        packet(opt(52, b"\x01\x02")),
        b"\x00" * 70000,
    ],
    ids=[
        "empty", "short", "bad-cookie", "overrun-through-end", "overrun", "no-length",
        "hlen-255", "bad-overload", "long-overload", "larger-than-udp",
    ],
)  # fmt: skip
def test_malformed_packets_raise_malformed_packet(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse(data)


def test_huge_repeated_option_is_rejected() -> None:
    repeats = MAX_OPTION_LENGTH // 255 + 1
    with pytest.raises(MalformedPacket, match="repeated"):
        parse(packet(*[opt(43, b"A" * 255)] * repeats))


def test_repeated_option_up_to_the_limit_is_accepted() -> None:
    pkt = parse(packet(*[opt(43, b"A" * 255)] * (MAX_OPTION_LENGTH // 255)))
    assert len(pkt.options[43]) == MAX_OPTION_LENGTH // 255 * 255


def test_malformed_packet_is_a_value_error() -> None:
    assert issubclass(MalformedPacket, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_of_arbitrary_bytes_returns_or_raises_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        parse(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_parse_of_arbitrary_options_returns_or_raises_malformed(tail: bytes) -> None:
    """Random bytes after a valid header and cookie reach the option walker and the helpers."""
    try:
        pkt = parse(header() + MAGIC_COOKIE + tail)
    except MalformedPacket:
        return
    for helper in (message_type, vendor_class, user_classes, is_ipxe, client_arch, client_uuid):
        helper(pkt)
    with contextlib.suppress(MalformedPacket):
        pxe_suboptions(pkt)
    assert parse(build(pkt)).options == pkt.options
