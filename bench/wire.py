"""Kernel timestamps of DHCP frames on the client's interface, the way a pcap would take them.

A latency taken with a user-space clock before ``send()`` includes the client's own system call
and Python's overhead — the same for every server, so it pulls every ratio towards 1. This module
opens a packet socket on the client's interface (an ``AF_PACKET`` tap on every protocol, what tcpdump uses) with
``SO_TIMESTAMPNS``: the kernel stamps each frame as it passes the device, outgoing DISCOVERs
(``PACKET_OUTGOING``) and incoming OFFERs alike, with one clock. A server's latency is then
the time from its request leaving the client's interface to its answer arriving there: the two
veth pairs and the bridge, and the server.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.pxeclient import SO_RCVBUFFORCE, SO_TIMESTAMPNS
from bootbox.net.dhcp.packet import MalformedPacket, parse

ETH_P_ALL = 0x0003
"""Outgoing frames reach only taps on every protocol (``ptype_all``), as tcpdump's."""
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class WireFrame:
    """One DHCP frame seen on the interface: direction, kernel time (``time.time_ns`` units),
    IPv4 source, UDP ports, BOOTP op, xid and message type (option 53)."""

    outgoing: bool
    stamp_ns: int
    source_ip: str
    sport: int
    dport: int
    op: int
    xid: int
    kind: int | None


def open_capture(iface: str, rcvbuf: int = 64 * 2**20) -> socket.socket:
    """A packet socket on ``iface`` (call it in the namespace): IPv4 frames both ways, kernel
    timestamps, a buffer large enough to hold a whole storm until it is read."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((iface, ETH_P_ALL))
    return sock


def drain_capture(sock: socket.socket, quiet: float = 0.2) -> Iterator[WireFrame]:
    """Every DHCP frame queued on the capture socket, until it has been silent ``quiet`` s."""
    while True:
        sock.settimeout(quiet)
        try:
            frame, ancdata, _, address = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except (socket.timeout, BlockingIOError):
            return
        stamp = time.time_ns()
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanos = struct.unpack("qq", value[:16])
                stamp = seconds * 1_000_000_000 + nanos
        parsed = _parse(frame, address[2] == PACKET_OUTGOING, stamp)
        if parsed is not None:
            yield parsed


def _parse(frame: bytes, outgoing: bool, stamp: int) -> WireFrame | None:
    """The DHCP fields of an Ethernet/IPv4/UDP frame, or None for anything else."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[udp : udp + 4])
    if not {sport, dport} & {67, 68, 4011}:
        return None
    payload = frame[udp + 8 :]
    try:
        packet = parse(payload)
    except MalformedPacket:
        return None
    kind = packet.options.get(53)
    return WireFrame(outgoing, stamp, socket.inet_ntoa(frame[26:30]), sport, dport, packet.op, packet.xid,
                     kind[0] if kind and len(kind) == 1 else None)  # fmt: skip


def wire_latencies_ms(frames: list[WireFrame], *, request_port: int, answer_kind: int, server_ip: str) -> dict[int, float]:
    """xid → ms from the first request of that xid leaving (to udp/``request_port``) to the
    first answer of ``answer_kind`` from ``server_ip`` arriving, both by kernel timestamp."""
    sent: dict[int, int] = {}
    latencies: dict[int, float] = {}
    for frame in frames:
        if frame.outgoing and frame.op == 1 and frame.dport == request_port:
            sent.setdefault(frame.xid, frame.stamp_ns)
        elif (not frame.outgoing and frame.op == 2 and frame.kind == answer_kind and frame.source_ip == server_ip
              and frame.xid in sent and frame.xid not in latencies):  # fmt: skip
            latencies[frame.xid] = (frame.stamp_ns - sent[frame.xid]) / 1e6
    return latencies


SO_ATTACH_FILTER = 26
"""Linux's socket option for a classic BPF program (not in Python's ``socket`` module)."""
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_XID_OFFSET = 8 + 4
"""A UDP socket's filter sees the datagram from its UDP header (8 bytes); the BOOTP xid follows
op, htype, hlen and hops (4 bytes)."""


def accept_only_xid(sock: socket.socket, xid: int) -> None:
    """Let the kernel drop every datagram on ``sock`` but BOOTP/DHCP ones with transaction id
    ``xid`` (a classic BPF program, ``SO_ATTACH_FILTER``). Why: broadcast OFFERs reach every
    udp/68 socket of a namespace, so a simulated host with a socket of its own would otherwise
    wake (and parse in Python) for every other host's OFFER — with many hosts in one process,
    that queueing, not the server, would decide when a host sees its answer. Attach it before
    ``bind`` so nothing unfiltered is queued."""
    program = [
        (_BPF_LD_W_ABS, 0, 0, _XID_OFFSET),  # A = the 32-bit word at the xid, network order
        (_BPF_JEQ_K, 0, 1, xid & 0xFFFFFFFF),  # A == xid: next; else skip one
        (_BPF_RET_K, 0, 0, 0xFFFF),  # keep up to 64 KiB: the whole datagram
        (_BPF_RET_K, 0, 0, 0),  # drop
    ]
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HP", len(program), ctypes.addressof(buffer)))  # fmt: skip
