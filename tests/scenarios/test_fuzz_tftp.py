"""Fuzzing the TFTP server over real sockets: requests on port 69 and packets inside transfers.

The server runs once per module (``TftpRig``: a root with files and a symlink pointing at a
secret outside it). Properties: the loop never dies or logs a traceback, no reply carries a
byte of the secret, a transfer that a stranger (another port) sprays with garbage completes
byte-exact, and one that its own client corrupts either completes byte-exact or ends with an
error packet, never with wrong data or silence.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz_targets import TftpRig, fuzz_settings, tftp_target

KNOWN_HARD = [  # what killed tftpy's listener or escaped its root (facts/libraries.md §1), and edges
    b"\x00\x01f\xe9.bin\x00octet\x00",  # non-ASCII name: killed tftpy's listener (facts/libraries.md §1)
    b"\x00\x01small.bin\x00octet\x00blksize\x00abc\x00",  # non-numeric blksize: same
    b"\x00\x01link\x00octet\x00",  # a symlink out of the root
    b"\x00\x01small.bin\x00octet\x00blksize\x00\x00",  # empty option value
    b"\x00\x01small.bin\x00octet\x00windowsize\x000\x00tsize\x000\x00",
    b"\x00\x01" + b"\x00" * 600,
]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TftpRig]:
    r = TftpRig.start(tmp_path_factory.mktemp("tftp-fuzz"))
    try:
        yield r
    finally:
        r.stop()


def test_known_hard_inputs(rig: TftpRig) -> None:
    for data in KNOWN_HARD:
        tftp_target(data, rig)
    assert rig.download("small.bin") == rig.files["small.bin"]


@fuzz_settings(300)
@given(st.binary(max_size=600))
def test_arbitrary_datagrams(rig: TftpRig, data: bytes) -> None:
    tftp_target(data, rig)


_NAMES = st.one_of(
    st.sampled_from(["small.bin", "sub/big.bin", "empty.bin", "link", "sub", "../secret.txt", "/small.bin",
                     "sub\\..\\..\\secret.txt", "sub/./big.bin", "nope"]),
    st.lists(st.sampled_from(["..", ".", "sub", "link", "small.bin", "", "\\", "%2e", "\u00e9", "\x01"]),
             max_size=6).map("/".join),
    st.text(max_size=40),
)
_OPTIONS = st.dictionaries(
    st.one_of(st.sampled_from(["blksize", "BLKSIZE", "tsize", "timeout", "windowsize", "multicast"]), st.text(max_size=8)),
    st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=12)),
    max_size=5,
)


@fuzz_settings(400)
@given(opcode=st.sampled_from([1, 1, 1, 2, 3, 4, 5, 6, 0, 9]), name=_NAMES,
       mode=st.sampled_from(["octet", "netascii", "OCTET", "mail", ""]), options=_OPTIONS)  # fmt: skip
def test_request_shaped_datagrams(rig: TftpRig, opcode: int, name: str, mode: str, options: dict[str, str]) -> None:
    fields = [name, mode, *[x for kv in options.items() for x in kv]]
    data = opcode.to_bytes(2, "big") + b"".join(f.encode("utf-8", "surrogateescape") + b"\0" for f in fields)
    tftp_target(data, rig)


_GARBAGE = st.lists(st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([3, 4, 5, 6]), st.integers(0, 0xFFFF)).map(lambda t: t[0].to_bytes(2, "big") + t[1].to_bytes(2, "big")),
), min_size=1, max_size=6)  # fmt: skip


@fuzz_settings(60)
@given(garbage=_GARBAGE, blksize=st.sampled_from([8, 512, 1468]), windowsize=st.integers(1, 8))
def test_strangers_cannot_disturb_a_transfer(rig: TftpRig, garbage: list[bytes], blksize: int, windowsize: int) -> None:
    """Garbage from another port (a wrong TID, RFC 1350 §4) never reaches the transfer (its socket is connected);
    the transfer completes byte-exact."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))

        def meddle(_: socket.socket, tid: tuple[str, int]) -> None:
            for packet in garbage:
                stranger.sendto(packet, tid)

        name = "small.bin" if blksize == 8 else "sub/big.bin"
        assert rig.download(name, blksize=blksize, windowsize=windowsize, meddle=meddle) == rig.files[name]
    assert rig.alive() and not rig.errors.records, rig.errors.messages()


class ClientAborted(Exception):
    """The meddling client sent its own transfer an error packet: the transfer is over."""


@fuzz_settings(80)
@given(garbage=_GARBAGE, windowsize=st.integers(1, 8))
def test_a_client_corrupting_its_own_transfer_gets_the_file_or_an_error(rig: TftpRig, garbage: list[bytes],
                                                                        windowsize: int) -> None:  # fmt: skip
    """Its own garbage may end the transfer (an error packet ends it silently, as an error is
    never answered with an error; a DATA or a request gets error 4), but never with wrong
    bytes, never a stall of a transfer that goes on, and never a transfer left running."""

    def meddle(sock: socket.socket, tid: tuple[str, int]) -> None:
        for packet in garbage:
            sock.sendto(packet, tid)
            if packet[:2] == b"\x00\x05" and len(packet) >= 4:
                raise ClientAborted

    name = "sub/big.bin"
    try:
        data = rig.download(name, windowsize=windowsize, meddle=meddle)
    except AssertionError as exc:  # the server ended the transfer with an error packet
        assert "server error" in str(exc)
    except ClientAborted:
        deadline = time.monotonic() + 3
        while rig.server.stats["active"] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert rig.server.stats["active"] == 0, "the server kept a transfer its client aborted"
    else:
        assert data == rig.files[name]
    assert rig.alive() and not rig.errors.records, rig.errors.messages()


def test_the_server_still_serves_every_file_afterwards(rig: TftpRig) -> None:
    for name, body in rig.files.items():
        assert rig.download(name, blksize=1468, windowsize=4) == body
    assert isinstance(rig.root, Path) and rig.alive()
