"""One read transfer of the bootbox TFTP server: options, packets, block windows, retransmission.

Protocol references:

* RFC 1350 §5 (packet formats), §6 (a DATA block shorter than the block size ends the
  transfer), §4 (transfer IDs);
* RFC 2347 (OACK; error 8 ends a negotiation; option names are case-insensitive; options the
  server does not support are left out of the OACK, never answered with an error);
* RFC 2348 (blksize: 8..65464 octets; the server may answer a smaller value);
* RFC 2349 (timeout: 1..255 s, echoed unchanged; tsize: the client sends 0 in an RRQ and the
  server answers the real size);
* RFC 7440 (windowsize: send that many blocks, then wait for an ACK; an ACK for an earlier
  block means the blocks after it were lost, so continue from there);
* RFC 1123 §4.2.3.1 (the Sorcerer's Apprentice bug: in lock-step mode a duplicate ACK must not
  trigger a retransmission; the timer does that).

Nothing here owns a selector, a thread or the clock: the server in :mod:`bootbox.net.tftp.server`
feeds the client's packets and the time in, a :class:`Transfer` writes DATA and OACK packets
to its own socket and says when and how it ended (:class:`Ending`). Requests, OACKs and
errors go through tftpy's packet classes (ERROR decoding: see :func:`decode_error`). The two
packets a transfer repeats per block do not: a DATA block is a 4-byte header written in front of
file bytes copied from a per-transfer read-ahead window (one ``os.preadv`` per 64 KiB rather than
one per block), and an ACK is read as two integers. Allocating tftpy's packet objects, building a
struct format per block, copying the payload twice and a read per block cost about a third of the
per-block time, which in lock-step mode is the throughput.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping, Sequence

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketERR, TftpPacketOACK

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6

ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_ILLEGAL = 4
ERR_OPTIONS = 8

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
"""RFC 2348's upper bound (tftpy allows 65536, which no RFC client may ask for)."""

MAX_WINDOWSIZE = 64
"""RFC 7440 allows 65535. A window is sent as one burst, and 64 × 1468 bytes (94 KB) still fits
a default Linux UDP receive buffer (208 KiB); EDK2 asks for 4."""

MIN_TIMEOUT, MAX_TIMEOUT = 1, 255

MAX_BACKOFF = 8
"""The longest wait before a resend, in timeouts: resends in a row wait 2, 4, 8, 8 ... timeouts."""


def backoff(resends: int) -> int:
    """How many timeouts to wait after the ``resends``-th resend in a row (1 before any)."""
    return min(MAX_BACKOFF, 1 << max(0, min(resends, 8)))

CLIENT_ABORTED_OPTIONS = "client aborted (option negotiation)"

_HEADERS = 20 + 8 + 4
"""IPv4 header without options, UDP header, TFTP DATA header."""
_IPV6_EXTRA = 40 - 20
"""An IPv6 header is 40 bytes (no extension headers)."""

_MAX_OPTION_DIGITS = 10
_SIOCGIFMTU = 0x8921
_ERROR_OPCODE = OP_ERROR.to_bytes(2, "big")
_ACK_OPCODE = OP_ACK.to_bytes(2, "big")
_FACTORY = TftpPacketFactory()  # stateless: a table of packet classes
_DATA_HEADER = struct.Struct("!HH")
_RETRY_LATER = frozenset({errno.ENOBUFS, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                          errno.ENETDOWN, errno.EMSGSIZE})
EngineRun = Callable[..., tuple[Any, ...]]
"""The signature of ``bootbox.net.tftp._tftpengine.run`` (see :meth:`Transfer.run_steady`)."""
READ_AHEAD = 64 * 1024
"""Bytes a transfer reads from its file at a time (rounded down to whole blocks, at least one,
never more than the file): 128 blocks of 512 per system call. 512 transfers of large files at
once hold 32 MiB this way; a 70 KB undionly.kpxe needs 70 KB."""


class OptionError(ValueError):
    """A known option carries a value that is not a decimal number: the request is malformed
    and is answered with error 8 (RFC 2347)."""


class SourceChanged(RuntimeError):
    """The file ended before the size measured when the transfer started."""


class MalformedPacket(ValueError):
    """A packet from the client that cannot be decoded; it is dropped and counted."""


class ClientGone(ConnectionError):
    """The client's port is closed: the kernel got ICMP port unreachable for a packet we sent
    to it (the client gave up, or crashed). Nobody is left to retransmit to."""


@dataclass(frozen=True)
class Ending:
    """How a transfer ended: ``reply`` is an error (code, message) to send the client first;
    ``aborted`` marks a client that ended option negotiation on purpose (EDK2's tsize probe)."""

    ok: bool
    error: str = ""
    aborted: bool = False
    reply: tuple[int, str] | None = None
    gave_up: bool = False
    """The client stopped answering and every retransmission went unanswered."""


COMPLETE = Ending(ok=True)
CLIENT_GONE = Ending(ok=False, error="the client's port is closed (ICMP port unreachable): it gave up")


@dataclass(frozen=True)
class RequestedOptions:
    """The options of an RRQ that this server understands, as the client asked for them."""

    blksize: int | None = None
    timeout: int | None = None
    windowsize: int | None = None
    tsize: bool = False


@dataclass(frozen=True)
class Negotiated:
    """What a transfer will use, and the OACK options to send (empty: send no OACK)."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    oack: Mapping[str, str] = field(default_factory=dict)


def parse_options(options: Mapping[str, str]) -> RequestedOptions:
    """Pick blksize, timeout, windowsize and tsize out of an RRQ's options; ignore the rest.

    Names are matched case-insensitively (RFC 2347). A value that is not a plain decimal
    number raises :class:`OptionError`; ``int()`` alone would accept ``" 8"``, ``"1_000"`` and
    non-ASCII digits, which no client sends on purpose.
    """
    values = {str(key).lower(): str(value) for key, value in options.items()}

    def number(key: str) -> int | None:
        text = values.get(key)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_OPTION_DIGITS):
            raise OptionError(f"option {key} has a non-numeric value {text[:20]!r}")
        return int(text)

    blksize, timeout, windowsize = number("blksize"), number("timeout"), number("windowsize")
    tsize = number("tsize") is not None
    return RequestedOptions(blksize=blksize, timeout=timeout, windowsize=windowsize, tsize=tsize)


def negotiate(requested: RequestedOptions, *, size: int, max_blksize: int, default_timeout: float) -> Negotiated:
    """Decide the transfer's parameters and the OACK, following each option's RFC.

    * blksize below 8 is left out of the OACK (512 applies, as tftpd-hpa does); larger than
      ``max_blksize`` is answered with ``max_blksize`` (RFC 2348 allows a smaller answer).
    * timeout outside 1..255 is left out (RFC 2349 has no way to answer another value).
    * windowsize 0 is left out; above :data:`MAX_WINDOWSIZE` it is answered with that.
    * tsize is answered with ``size``.
    """
    oack: dict[str, str] = {}
    blksize = DEFAULT_BLKSIZE
    if requested.blksize is not None and requested.blksize >= MIN_BLKSIZE:
        blksize = min(requested.blksize, max_blksize)
        oack["blksize"] = str(blksize)
    if requested.tsize:
        oack["tsize"] = str(size)
    timeout = default_timeout
    if requested.timeout is not None and MIN_TIMEOUT <= requested.timeout <= MAX_TIMEOUT:
        timeout = float(requested.timeout)
        oack["timeout"] = str(requested.timeout)
    windowsize = 1
    if requested.windowsize is not None and requested.windowsize >= 1:
        windowsize = min(requested.windowsize, MAX_WINDOWSIZE)
        oack["windowsize"] = str(windowsize)
    return Negotiated(blksize=blksize, windowsize=windowsize, timeout=timeout, oack=oack)


def max_blksize_for_mtu(mtu: int | None, *, ipv6: bool = False) -> int:
    """The largest block that fits one unfragmented IPv4 (or IPv6: a 20-byte larger header)
    datagram on a link with this MTU.

    A block larger than the MTU is sent as IP fragments and the loss of any fragment loses the
    whole block, so we never offer more than the link carries (1500 → 1468, the value EDK2 asks
    for). Unknown MTU: the RFC 2348 maximum.
    """
    if mtu is None or mtu <= 0:
        return MAX_BLKSIZE
    return max(MIN_BLKSIZE, min(MAX_BLKSIZE, mtu - _HEADERS - (_IPV6_EXTRA if ipv6 else 0)))


def interface_mtu(sock: socket.socket, ifindex: int | None) -> int | None:
    """The MTU of interface ``ifindex`` (Linux ``SIOCGIFMTU`` on any socket), None if unknown."""
    if not ifindex:
        return None
    try:
        name = socket.if_indextoname(ifindex).encode()
        answer = fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, struct.pack("16s24x", name))
    except OSError:
        return None
    return int(struct.unpack_from("i", answer, 16)[0])


def open_transfer_socket(addresses: Sequence[str], client: tuple[Any, ...] | None = None) -> socket.socket:
    """A non-blocking UDP socket on an ephemeral port of the first address that can be bound,
    ``connect()``ed to ``client`` when given.

    The server passes the address the request was sent to, then the receiving interface's own
    address (a broadcast destination cannot be bound). A transfer's socket is connected, as
    tftpd-hpa's is: the kernel then delivers only the client's packets, a packet from a wrong TID
    is answered by the kernel with ICMP port unreachable rather than by us with TFTP error 5 (RFC
    1350 §4 says "should"), a closed client port shows up as ``ECONNREFUSED`` instead of five
    silent retransmissions, and each packet skips a route lookup and an address conversion:
    about 15 % of the per-block cost with 20 clients at once (README, "Performance").
    """
    last_error: OSError = OSError(errno.EADDRNOTAVAIL, "no local address to reply from")
    for address in addresses:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 0))
            if client is not None:
                sock.connect(client)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.setblocking(False)
        return sock
    raise last_error


def encode_oack(options: Mapping[str, str]) -> bytes:
    """An OACK packet (RFC 2347) acknowledging ``options``."""
    packet = TftpPacketOACK()
    packet.options = dict(options)
    return bytes(packet.encode().buffer)


def encode_error(code: int, message: str) -> bytes:
    """An ERROR packet (RFC 1350 §5) with our own message.

    tftpy's encoder ignores ``errmsg`` and looks the text up in the instance's ``errmsgs``
    table (which has no entry for code 0), so we give the instance a one-entry table.
    """
    packet = TftpPacketERR()
    packet.errorcode = code
    packet.errmsgs = {code: message.replace("\x00", " ").encode("ascii", "replace")}
    return bytes(packet.encode().buffer)


def decode_error(packet: bytes) -> tuple[int, str]:
    """The code and message of an ERROR packet.

    Decoded here rather than with tftpy's ``TftpPacketERR.decode``, which logs every error
    packet at ERROR level: EDK2 sends one on every boot (the tsize probe), and a boot storm
    must not flood the log. Raises ``ValueError`` when shorter than 4 bytes.
    """
    if len(packet) < 4:
        raise ValueError("ERROR packet shorter than 4 bytes")
    (code,) = struct.unpack_from("!H", packet, 2)
    message = packet[4:].split(b"\x00", 1)[0].decode("ascii", "replace")
    return code, message


class BlockSource:
    """Random-access reads from what ``open_file`` returned: a real file or any binary stream.

    A real file (``io.FileIO`` or a buffered reader over one) is sized with ``os.fstat`` and
    read with ``os.pread``, which needs no seek and leaves the object's position alone. Anything
    else (``io.BytesIO``, a temporary-file wrapper) is sized with seek/tell and read with
    seek/read. ``fileno()`` alone is not trusted: ``gzip.GzipFile.fileno()`` returns the
    compressed file's descriptor.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._fd = _os_file_descriptor(stream)
        if self._fd is not None:
            self.size = os.fstat(self._fd).st_size
        else:
            stream.seek(0, io.SEEK_END)
            self.size = stream.tell()

    @property
    def fd(self) -> int | None:
        """The descriptor of a real file (read with ``pread``), None for any other stream."""
        return self._fd

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at end of file.

        Short reads are repeated: a raw stream may return less than asked for.
        """
        if self._fd is None:
            self._stream.seek(offset)
        chunks: list[bytes] = []
        got = 0
        while got < length:
            if self._fd is not None:
                chunk = os.pread(self._fd, length - got, offset + got)
            else:
                chunk = self._stream.read(length - got) or b""
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_into(self, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from ``offset``; return the bytes read (fewer only at end of file).

        A real file is read with ``os.preadv`` straight into ``buffer``: no intermediate bytes.
        """
        if self._fd is None:
            data = self.read_at(offset, len(buffer))
            buffer[: len(data)] = data
            return len(data)
        got = 0
        while got < len(buffer):
            n = os.preadv(self._fd, [buffer[got:]], offset + got)
            if n == 0:
                break
            got += n
        return got

    def close(self) -> None:
        self._stream.close()


def _os_file_descriptor(stream: BinaryIO) -> int | None:
    raw = getattr(stream, "raw", stream)
    if not isinstance(raw, io.FileIO):
        return None
    fd = raw.fileno()
    return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None


class Transfer:
    """The state of one RRQ: which blocks are in flight, when to retransmit, how it ended.

    Blocks are counted from 1 without limit and block 0 stands for the OACK, so "waiting for
    ACK 0" is simply the first window. The wire carries the low 16 bits: numbers wrap from
    65535 to 0, as tftpd-hpa, curl, iPXE and EDK2 expect (RFC 1350 leaves this open).

    The last block is ``size // blksize + 1``: it is shorter than ``blksize``, and empty when the
    size is a multiple of ``blksize``, because a short block is what ends a transfer (RFC 1350 §6).
    """

    def __init__(
        self,
        *,
        sock: socket.socket,
        client: tuple[str, int],
        filename: str,
        request: bytes,
        source: BlockSource,
        negotiated: Negotiated,
        retries: int,
        now: float,
    ) -> None:
        self.sock = sock
        self.client = client
        self.filename = filename
        self.request = request
        self.source = source
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        self.timeout = negotiated.timeout
        self.started = now
        self.last_block = source.size // self.blksize + 1
        self._oack = encode_oack(negotiated.oack) if negotiated.oack else None
        self._block_buffer = bytearray(_DATA_HEADER.size + self.blksize)  # reused for every DATA packet
        self._block_view = memoryview(self._block_buffer)
        whole_file = -(-source.size // self.blksize) * self.blksize  # rounded up to whole blocks
        self._ahead = memoryview(bytearray(max(self.blksize, min(READ_AHEAD - READ_AHEAD % self.blksize, whole_file))))
        self._ahead_start = 0  # file offset of self._ahead[0]
        self._ahead_length = 0  # valid bytes in self._ahead
        self._retries = retries
        self._retries_left = retries
        self._resent_on_duplicate = False
        first = 0 if self._oack is not None else 1
        self.sent_up_to = first - 1
        """The highest block ever sent. A resend after a timeout rewinds :attr:`next_block`, but the
        blocks sent before it were sent: the client's ACK of the last one, crossing the resend,
        ends the transfer (under load it used to be taken for a stale packet, and the transfer for
        failed, though the client had the whole file)."""
        self._rewind(first)
        self.deadline = now + self.timeout
        self.want_write = False
        self.write_registered = False
        self.done = False
        self.slow_acks = 0
        """ACKs in a row too slow for the server to poll for (bootbox.net.tftp.server)."""
        self.away = False
        """True while the C engine serves the transfer on another thread (bootbox.net.tftp.engine):
        nothing else may touch it then."""
        self.strays = 0
        """Packets other than ACKs that sent the transfer back from the C engine."""
        self.timer_queued = False
        """Whether the server's timer heap holds this transfer's one entry."""

    @property
    def awaiting_oack_ack(self) -> bool:
        """True until the client acknowledged the OACK (RFC 2347: with ACK 0)."""
        return self._oack is not None and self.base == 0

    @property
    def bytes_acked(self) -> int:
        """File bytes the client has acknowledged (retransmissions not counted)."""
        return min(max(self.base - 1, 0) * self.blksize, self.source.size)

    def receive(self, data: bytes, now: float, send: bool = True) -> Ending | None:
        """Act on a packet from the client; return how the transfer ended, or None to go on.
        ``send=False``: the client's port is closed; only a last ACK or an error still counts.

        :raises MalformedPacket: the packet cannot be decoded (the transfer goes on).
        """
        opcode = data[:2]
        if opcode == _ACK_OPCODE:  # nearly every packet: two integers, no packet object
            if len(data) < _DATA_HEADER.size:
                raise MalformedPacket(f"undecodable packet (short ACK, {len(data)} bytes)")
            return COMPLETE if self.on_ack((data[2] << 8) | data[3], now, send) else None
        if opcode == _ERROR_OPCODE:
            try:
                code, message = decode_error(data)
            except ValueError as exc:
                raise MalformedPacket(str(exc)) from None
            if code == ERR_OPTIONS and self.awaiting_oack_ack:
                return Ending(ok=False, error=CLIENT_ABORTED_OPTIONS, aborted=True)
            return Ending(ok=False, error=f"client error {code}: {message[:80]}")
        unexpected = type(_decode_client_packet(data)).__name__.removeprefix("TftpPacket")
        return Ending(ok=False, error=f"client sent {unexpected}", reply=(ERR_ILLEGAL, "expected ACK"))

    @property
    def steady(self) -> bool:
        """True between ACKs: the OACK is acknowledged, the window went out whole, the file is a real
        file. The moment the C engine can take over (bootbox.net.tftp.engine)."""
        return (self.base >= 1 and self.next_block > self.window_end and not self.want_write
                and not self.done and self.source.fd is not None)

    def run_steady(self, run: EngineRun, recall: int, *, read_ahead: int, spin: float,
                   slow_ack_limit: int) -> tuple[str, bytes | None, int]:
        """Serve the transfer with ``run`` (``bootbox.net.tftp._tftpengine.run``) until something other than a
        routine ACK happens; adopt the state it returns; return (outcome, packet, errno) as
        documented in ``_tftpengine.c``. Only from a :attr:`steady` state."""
        assert self.steady and self.source.fd is not None
        (outcome, self.base, self.next_block, self.window_end, self.sent_up_to, self._retries_left,
         self._resent_on_duplicate, self.slow_acks, self.deadline, packet, error) = run(
            self.sock.fileno(), self.source.fd, recall, self.source.size, self.blksize, self.windowsize,
            self._retries, self.timeout, spin, slow_ack_limit, read_ahead, self.base, self.next_block,
            self.window_end, self.sent_up_to, self._retries_left, self._resent_on_duplicate, self.slow_acks,
            self.deadline)
        # Forget what this object read ahead before the hand-over: the engine may have come back
        # because the file shrank (a short read), and stale bytes here would hide that.
        self._ahead_length = 0
        return outcome, packet, error

    def on_ack(self, wire_block: int, now: float, send: bool = True) -> bool:
        """Handle an ACK; return True when it acknowledges the last block.

        Only ACKs from the last acknowledged block to the highest block actually sent count (a
        window cut short by a full socket buffer has not been sent whole; a window being resent
        was sent before); anything else is a stale or delayed packet and is ignored. An ACK inside the window moves the window
        there (RFC 7440 §4: the blocks after it were lost). A repeat of the previous ACK in
        lock-step mode is ignored (RFC 1123 §4.2.3.1); with a window it signals that the
        window's first block was lost, so the window is resent once, then the timer takes over.
        """
        previous = self.base - 1
        delta = (wire_block - previous) & 0xFFFF
        if delta > self.sent_up_to - previous:
            return False
        acked = previous + delta
        if acked == self.last_block:
            self.base = acked + 1
            return True
        if not send:  # the client's port is closed: only a last ACK still means something
            return False
        if delta == 0:
            if self.windowsize == 1 or self._resent_on_duplicate:
                return False
            self._resent_on_duplicate = True
        else:
            self._resent_on_duplicate = False
            self._retries_left = self._retries
        self._rewind(acked + 1)
        self.pump(now)
        return False

    def on_timeout(self, now: float) -> Ending | None:
        """Resend the unacknowledged window, or end the transfer once the retries are used up.

        Each resend in a row waits twice as long as the one before (at most
        :data:`MAX_BACKOFF` times the timeout): a client that stopped answering is sent
        ``1 + retries`` windows in all, ever more slowly, not one a second until the end. An ACK
        that moves the window starts again from the plain timeout (:meth:`on_ack`).
        """
        if self._retries_left <= 0:
            return Ending(ok=False, error=f"timed out after {self._retries} retransmissions", gave_up=True)
        self._retries_left -= 1
        self._rewind(self.base)
        self.pump(now)
        self.deadline = now + self.timeout * backoff(self._retries - self._retries_left)
        return None

    def pump(self, now: float) -> None:
        """Send the rest of the current window; stop early when the socket buffer is full.

        A full buffer (EAGAIN) sets :attr:`want_write` so the server waits for the socket to
        drain instead of spinning. ENOBUFS, and the ICMP errors a connected socket reports for an
        earlier packet (host or network unreachable: a powered-off client's ARP failed; message
        too big: a smaller path MTU), are treated as a lost packet for the timer to repair.

        :raises ClientGone: the client's port is closed.
        """
        self.deadline = now + self.timeout
        send = self.sock.send
        try:
            while self.next_block <= self.window_end:
                try:
                    send(self._packet(self.next_block))
                except (BlockingIOError, InterruptedError):
                    self.want_write = True
                    return
                except ConnectionRefusedError:
                    raise ClientGone() from None
                except OSError as exc:
                    if exc.errno in _RETRY_LATER:
                        break
                    raise
                self.next_block += 1
            self.want_write = False
        finally:
            if self.next_block - 1 > self.sent_up_to:
                self.sent_up_to = self.next_block - 1

    def _rewind(self, first: int) -> None:
        """Make ``first`` the next block to send and the start of the window (block 0: the OACK,
        a window of its own)."""
        self.base = self.next_block = first
        end = first + self.windowsize - 1 if first else 0
        self.window_end = end if end < self.last_block else self.last_block

    def _packet(self, block: int) -> bytes | memoryview:
        """The OACK, or DATA ``block`` in the transfer's reused buffer (valid until the next call:
        ``send`` copies it into the kernel before returning)."""
        if block == 0:
            assert self._oack is not None
            return self._oack
        offset = (block - 1) * self.blksize
        length = min(self.blksize, self.source.size - offset)
        start = offset - self._ahead_start
        if start < 0 or start + length > self._ahead_length:  # outside the window: read the next one
            self._ahead_start, start = offset, 0
            self._ahead_length = self.source.read_into(offset, self._ahead[: self.source.size - offset])
            if self._ahead_length < length:
                raise SourceChanged(f"file shrank while being sent (block {block})")
        header = _DATA_HEADER.size
        self._block_view[header : header + length] = self._ahead[start : start + length]
        _DATA_HEADER.pack_into(self._block_buffer, 0, OP_DATA, block & 0xFFFF)
        return self._block_view[: header + length]


def _decode_client_packet(data: bytes) -> object:
    """Decode a packet other than an ACK (see :meth:`Transfer.receive`) with tftpy's classes.

    :raises MalformedPacket: tftpy could not decode it.
    """
    try:
        return _FACTORY.parse(data)
    except Exception as exc:  # tftpy raises TftpException, struct.error, UnicodeDecodeError...
        raise MalformedPacket(f"undecodable packet ({type(exc).__name__}, {len(data)} bytes)") from None

