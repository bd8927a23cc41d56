"""Reading a whole VIB from a stream in one pass, verifying every payload on the way.

Each ``ar`` member goes to a blob writer (the content-addressed store) chunk by chunk while the
digests the descriptor declares are computed: of the packed bytes and, for checksums with
``verify-process="gunzip"``, of the inflated bytes. Nothing is held in memory beyond a chunk,
so a 400 MB VIB costs the same memory as a small one. The whole file's sha-256 is computed too,
for the depot metadata's check.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from bootbox_esxi.ar import ArReader, Readable
from bootbox_esxi.vib import (
    DESCRIPTOR,
    HASHES,
    MAX_DESCRIPTOR_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    Member,
    Payload,
    Vib,
    parse_descriptor,
)
from bootbox_esxi.xmlutil import DepotError


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    def commit(self, sha256: str) -> None: ...
    def abort(self) -> None: ...


class _Hashes:
    """The digests one payload needs, of the packed bytes and (if asked) after gunzip.

    A stream that does not gunzip is not an error here: it is recorded in ``broken`` and fails
    verification only if the descriptor declares a gunzip checksum, after the packed checksums
    (which name the more precise fault) were compared. When the descriptor is not known yet (a
    payload before the descriptor), gunzip digests are computed speculatively for that reason.
    """

    def __init__(self, kinds: set[str], gunzip_kinds: set[str], what: str, inflate_limit: int) -> None:
        self.packed = {k: hashlib.new(HASHES[k]) for k in kinds | {"sha-256"} if k in HASHES}
        self.unpacked = {k: hashlib.new(HASHES[k]) for k in gunzip_kinds if k in HASHES}
        self.broken = ""
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.unpacked else None
        self._what = what
        self._inflated = 0
        self._limit = inflate_limit

    def update(self, data: bytes) -> None:
        for h in self.packed.values():
            h.update(data)
        while self._inflate is not None and data:
            try:
                out = self._inflate.decompress(data, 1 << 20)
            except zlib.error as exc:
                self._fail(f"does not gunzip ({exc})")
                return
            self._feed(out)
            data = self._inflate.unconsumed_tail
            if self._inflate.eof and self._inflate.unused_data:  # a multi-member gzip stream
                data = self._inflate.unused_data
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _fail(self, reason: str) -> None:
        self.broken = reason
        self.unpacked = {}
        self._inflate = None

    def _feed(self, out: bytes) -> None:
        self._inflated += len(out)
        if self._inflated > self._limit:
            raise DepotError(f"{self._what} inflates past {self._limit} bytes; refusing it")
        for h in self.unpacked.values():
            h.update(out)

    def finish(self) -> None:
        if self._inflate is not None:
            self._feed(self._inflate.flush())
            if not self._inflate.eof:
                self._fail("is a truncated gzip stream")


def read_vib(
    stream: Readable,
    what: str,
    *,
    limit: int,
    new_blob: Callable[[], BlobWriter] | None = None,
    expected: Vib | None = None,
    progress: Callable[[int], None] | None = None,
) -> Vib:
    """Read a whole VIB from ``stream``, verify it, and return its :class:`Vib`.

    :param what: how to name the VIB in errors (its ID or file name).
    :param limit: the largest member (and VIB) size accepted.
    :param new_blob: where members go (the payload store); None only verifies.
    :param expected: the descriptor from depot metadata, used to pick the digests to compute
        before the VIB's own descriptor has been read.
    :param progress: called with the number of bytes read, chunk by chunk.
    """
    counting = _CountingReader(stream, limit, what, on_bytes=progress)
    reader = ArReader(counting, what, limit)
    descriptor: Vib | None = None
    signature = b""
    members: list[Member] = []
    digests: dict[str, _Hashes] = {}
    sizes: dict[str, int] = {}
    writers: list[BlobWriter] = []
    try:
        for header in reader:
            plan = descriptor or expected
            if header.name == DESCRIPTOR:
                data = reader.read_all(MAX_DESCRIPTOR_BYTES)
                descriptor = parse_descriptor(data, what)
                sha = _store_bytes(new_blob, writers, data)
            elif header.name == SIGNATURE:
                signature = reader.read_all(MAX_SIGNATURE_BYTES)
                sha = _store_bytes(new_blob, writers, signature)
            else:
                payload = {p.name: p for p in plan.payloads}.get(header.name) if plan else None
                if payload is not None:
                    kinds = {c.kind for c in payload.checksums if not c.gunzip}
                    gunzip = {c.kind for c in payload.checksums if c.gunzip}
                else:
                    kinds, gunzip = set(HASHES), {"sha-256", "sha-1"}
                hashes = _Hashes(kinds, gunzip, f"{what} payload {header.name}", max(64 * header.size, 1 << 26))
                writer = new_blob() if new_blob else None
                if writer is not None:
                    writers.append(writer)
                while chunk := reader.read():
                    hashes.update(chunk)
                    if writer is not None:
                        writer.write(chunk)
                hashes.finish()
                sha = hashes.packed["sha-256"].hexdigest()
                if writer is not None:
                    writer.commit(sha)
                digests[header.name] = hashes
                sizes[header.name] = header.size
            members.append(Member(name=header.name, header_hex=header.raw.hex(), sha256=sha))
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    if descriptor is None:
        raise DepotError(f"{what} has no descriptor.xml member; it is not a VIB")
    payloads = tuple(_verify_payload(what, p, sizes, digests) for p in descriptor.payloads)
    extra = sorted(set(sizes) - {p.name for p in descriptor.payloads})
    if extra:
        raise DepotError(f"{what} has member {extra[0]!r} that its descriptor does not declare; refusing it")
    return replace(
        descriptor,
        payloads=payloads,
        sha256=counting.sha256.hexdigest(),
        size=counting.count,
        signed=bool(signature.strip()),
        members=tuple(members),
    )


def _store_bytes(new_blob: Callable[[], BlobWriter] | None, writers: list[BlobWriter], data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    if new_blob is not None:
        writer = new_blob()
        writers.append(writer)
        writer.write(data)
        writer.commit(sha)
    return sha


def _verify_payload(what: str, payload: Payload, sizes: dict[str, int], digests: dict[str, _Hashes]) -> Payload:
    if payload.name not in sizes:
        raise DepotError(f"{what} is missing payload member {payload.name!r} that its descriptor declares")
    if sizes[payload.name] != payload.size:
        raise DepotError(
            f"{what}: payload {payload.name} is {sizes[payload.name]} bytes, its descriptor says {payload.size}"
        )
    hashes = digests[payload.name]
    verified = 0
    for checksum in sorted(payload.checksums, key=lambda c: c.gunzip):  # packed ones first
        table = hashes.unpacked if checksum.gunzip else hashes.packed
        if checksum.gunzip and hashes.broken:
            raise DepotError(f"{what} payload {payload.name} {hashes.broken}; the payload is corrupt")
        if checksum.kind not in table:
            continue
        verified += 1
        actual = table[checksum.kind].hexdigest()
        if actual != checksum.value:
            after = " after gunzip" if checksum.gunzip else ""
            raise DepotError(
                f"{what} is corrupt: payload {payload.name} has {checksum.kind}{after} {actual}, "
                f"its descriptor says {checksum.value}"
            )
    if not verified:
        raise DepotError(f"{what}: none of payload {payload.name}'s checksums could be verified")
    return replace(payload, sha256=hashes.packed["sha-256"].hexdigest())


@dataclass
class _CountingReader:
    """Counts and hashes every byte read, and stops a stream that runs past the limit."""

    stream: Readable
    limit: int
    what: str
    count: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    on_bytes: Callable[[int], None] | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))
        if self.count > self.limit + 4096:
            raise DepotError(f"{self.what} is larger than the {self.limit}-byte limit; refusing it")
        self.sha256.update(data)
        return data
