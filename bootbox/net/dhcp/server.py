"""Full-DHCP mode: bootbox as the only DHCP server of an isolated network (opt-in).

One thread, one ``selectors`` loop over two sockets bound to the served interface
(``SO_BINDTODEVICE``, so no other network ever sees an address offer):

* udp/67: DISCOVER → OFFER, REQUEST → ACK/NAK, RELEASE, DECLINE, INFORM, through the pure
  :func:`bootbox.net.dhcp.answer.answer` over a :class:`~bootbox.net.dhcp.leases.LeasePool`;
* udp/4011: the PXE boot-server exchange, answered exactly as the proxy answers it
  (:func:`bootbox.net.dhcp.proxy.respond`), for firmware that asks there anyway.

Before binding, unless told otherwise, it sends one DISCOVER and listens (:mod:`~bootbox.net.dhcp.probe`):
if another server answers, it refuses to start, because two address servers on one network
hand clients conflicting leases. Leases are loaded at start and saved after every change
through two callables (``load_leases``/``save_leases``); the server never sees the store.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bootbox.errors import BootboxError
from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import DhcpPacket, MalformedPacket, MessageType, build, parse
from bootbox.net.dhcp.answer import Answer, FullDhcpOptions, LeaseChange, answer, dns_list
from bootbox.net.dhcp.probe import HeardServer, probe
from bootbox.net.dhcp.leases import Lease, LeasePool
from bootbox.net.dhcp.proxy import RATE_BURST, RATE_PER_SECOND, ClientRateLimiter, Failed, Ignored, Role, respond
from bootbox.net.interface import interface_ipv4
from bootbox.net.loop import SelectorLoop

__all__ = ["DhcpServer", "OtherDhcpServer"]

log = logging.getLogger("bootbox.dhcp")

Decide = Callable[[Machine], BootSpec | None]
OnAnswer = Callable[[Machine, BootSpec, int], None]
OnEvent = Callable[[str, str, str, dict[str, Any]], object]
"""``(mac, kind, message, data)``: a lease changed (``dhcp.lease``, ``dhcp.nak``, …); any return
value is ignored."""

IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")
_EVENT_KIND = {MessageType.RELEASE: "dhcp.release", MessageType.DECLINE: "dhcp.decline"}


class OtherDhcpServer(BootboxError):
    """Full mode heard another DHCP server on its interface and will not compete with it."""


class DhcpServer:
    """The full-mode DHCP server on one interface. ``start()`` probes, loads leases and binds."""

    def __init__(
        self,
        *,
        decide: Decide,
        interface: str,
        range_start: str,
        range_end: str,
        load_leases: Callable[[], Mapping[str, Any]],
        save_leases: Callable[[dict[str, Any]], None],
        on_answer: OnAnswer | None = None,
        on_event: OnEvent | None = None,
        server_address: str = "",
        subnet_mask: str = "",
        router: str = "",
        dns_servers: Sequence[str] = (),
        dns_self: bool = False,
        domain: str = "",
        lease_seconds: int = 3600,
        reservations: Mapping[str, str] | None = None,
        server_port: int = 67,
        boot_server_port: int = 4011,
        client_port: int = 68,
        ignore_other_servers: bool = False,
        probe_seconds: float = 2.0,
        rate_limit: float = RATE_PER_SECOND,
        rate_burst: int = RATE_BURST,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._decide, self._on_answer, self._on_event = decide, on_answer, on_event
        self.interface = interface
        self._range = (range_start, range_end)
        self._load, self._save = load_leases, save_leases
        self._config = dict(server_address=server_address, subnet_mask=subnet_mask, router=router,
                            domain=domain)  # fmt: skip
        self._dns_servers, self._dns_self = tuple(dns_servers), dns_self
        self._lease_seconds = lease_seconds
        self._reservations = dict(reservations or {})
        self._ports = {Role.SERVER: server_port, Role.BOOT_SERVER: boot_server_port}
        self._client_port = client_port
        self._ignore_others, self._probe_seconds = ignore_other_servers, probe_seconds
        self._clock = clock
        self._limiter = ClientRateLimiter(rate_limit, rate_burst)
        self._lock = threading.Lock()
        self._socks: dict[Role, socket.socket] = {}
        self._loop = SelectorLoop("bootbox-dhcp-full", self._drain, idle=self._expire)
        self.pool: LeasePool | None = None
        self.options: FullDhcpOptions | None = None
        self.heard: list[HeardServer] = []
        self._stats = dict.fromkeys(("received", "offers", "acks", "naks", "releases", "declines", "ignored",
                                     "malformed", "errors"), 0)  # fmt: skip

    # ------------------------------------------------------------------ public surface
    @property
    def port(self) -> int:
        return self._ports[Role.SERVER]

    @property
    def boot_server_port(self) -> int:
        return self._ports[Role.BOOT_SERVER]

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            active = self.pool.active_count() if self.pool is not None else 0
        return {**self._stats, "leases": active, "rate_limited": self._limiter.dropped}

    def leases(self) -> list[Lease]:
        """A snapshot of every lease record, by address."""
        with self._lock:
            return self.pool.leases() if self.pool is not None else []

    def start(self) -> None:
        """Resolve the subnet, refuse to compete with another server, load leases, bind, run.

        :raises BootboxError: the interface has no address, the range is outside its subnet,
            another DHCP server answered (:class:`OtherDhcpServer`), or a port cannot be bound.
        """
        if self._loop.running:
            raise RuntimeError("DhcpServer is already started")
        self.options, self.pool = self._make_pool()
        if not self._ignore_others:
            self._refuse_other_servers()
        with self._lock:
            for problem in self.pool.load(self._load() or {}):
                log.warning("dhcp leases: %s", problem)
        try:
            for role in Role:
                self._socks[role] = self._open(self._ports[role])
        except OSError as exc:
            self._close_sockets()
            raise BootboxError(f"full DHCP on {self.interface}: {exc}") from exc
        for role, sock in self._socks.items():
            self._ports[role] = sock.getsockname()[1]
        self._loop.start(self._socks)
        log.info("full DHCP on %s (%s): leasing %s-%s, udp/%d and udp/%d", self.interface,
                 self.options.server_ip, *self._range, self.port, self.boot_server_port)  # fmt: skip

    def stop(self) -> None:
        """Stop the thread, save the leases one last time, close the sockets. Idempotent."""
        if self._loop.stop():
            self._persist()
        self._close_sockets()

    # ------------------------------------------------------------------ start-up
    def _make_pool(self) -> tuple[FullDhcpOptions, LeasePool]:
        local = interface_ipv4(self.interface)
        if local is None:
            raise BootboxError(f"dhcp.interface {self.interface!r} does not exist or has no IPv4 address; "
                               "full mode serves the subnet of that address")  # fmt: skip
        mask = self._config["subnet_mask"]
        network = ipaddress.IPv4Network(f"{local.ip}/{mask}", strict=False) if mask else local.network
        server_ip = self._config["server_address"] or str(local.ip)
        for key, value in zip(("dhcp.range_start", "dhcp.range_end"), self._range):
            if ipaddress.IPv4Address(value) not in network:
                raise BootboxError(f"{key} {value} is outside {self.interface}'s subnet {network}")
        excluded = [str(local.ip), server_ip] + ([self._config["router"]] if self._config["router"] else [])
        try:
            pool = LeasePool(network=network, range_start=self._range[0], range_end=self._range[1],
                             lease_seconds=self._lease_seconds, reservations=self._reservations,
                             excluded=excluded)  # fmt: skip
        except ValueError as exc:
            raise BootboxError(f"dhcp: {exc}") from None
        options = FullDhcpOptions(
            server_ip=server_ip,
            network=network,
            router=self._config["router"],
            dns_servers=dns_list(self._dns_servers, server_ip, self._dns_self),
            domain=self._config["domain"],
        )
        return options, pool

    def _refuse_other_servers(self) -> None:
        self.heard = probe(self.interface, timeout=self._probe_seconds, server_port=self._ports[Role.SERVER] or 67,
                           client_port=self._client_port)  # fmt: skip
        if self.heard:
            names = ", ".join(f"{s.server_id} (offered {s.offered})" for s in self.heard)
            raise OtherDhcpServer(
                f"another DHCP server answers on {self.interface}: {names}. Full mode would hand out "
                "conflicting addresses: stop that server, or use dhcp.mode = \"proxy\" beside it, or set "
                "dhcp.ignore_other_servers = true if you are sure"
            )

    def _open(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.bind(("0.0.0.0", port))  # broadcasts reach only a wildcard bind
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind udp/{port} on {self.interface}: {exc.strerror}. "
                          "Needs root or CAP_NET_BIND_SERVICE + CAP_NET_RAW; is another DHCP server "
                          "running on this machine?") from exc  # fmt: skip
        sock.setblocking(False)
        return sock

    def _close_sockets(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    # ------------------------------------------------------------------ loop
    def _expire(self) -> None:
        with self._lock:
            assert self.pool is not None
            ended = self.pool.expire(self._clock())
        for lease in ended:
            self._event(lease.mac, "dhcp.expired", f"lease of {lease.ip} expired", ip=lease.ip)
        if ended:
            self._persist()

    def _drain(self, sock: socket.socket, role: Role) -> None:
        while not self._loop.stopping.is_set():
            try:
                data, ancdata, _, source = sock.recvmsg(65535, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("dhcp recv on udp/%d: %s", self._ports[role], exc)
                return
            self._stats["received"] += 1
            if not self._limiter.check(data, source, log):
                self._stats["ignored"] += 1
                continue
            try:
                pkt = parse(data)
            except MalformedPacket as exc:
                self._stats["malformed"] += 1
                log.debug("dropped a malformed packet from %s:%d: %s", *source, exc)
                continue
            try:
                if role is Role.SERVER:
                    self._handle(sock, pkt, ancdata)
                else:
                    self._handle_boot_server(sock, pkt, ancdata, source)
            except Exception:  # one packet must never stop the DHCP thread
                self._stats["errors"] += 1
                log.exception("mac %s: unexpected error handling a packet from %s:%d", pkt.mac, *source)

    def _handle(self, sock: socket.socket, pkt: DhcpPacket, ancdata: list[tuple[int, int, bytes]]) -> None:
        assert self.pool is not None and self.options is not None
        with self._lock:
            outcome = answer(pkt, pool=self.pool, options=self.options, now=self._clock(), decide=self._decide,
                             server_port=self.port, client_port=self._client_port)  # fmt: skip
        if isinstance(outcome, LeaseChange):
            self._stats["releases" if outcome.kind == MessageType.RELEASE else "declines"] += 1
            verb = "released" if outcome.kind == MessageType.RELEASE else "declined (quarantined)"
            self._event(pkt.mac, _EVENT_KIND[outcome.kind], f"{outcome.lease.ip} {verb}", ip=outcome.lease.ip)
            self._persist()
        elif isinstance(outcome, Answer):
            if self._send(sock, outcome.packet.xid, build(outcome.packet), outcome.address, ancdata, pkt.mac):
                self._answered(pkt.mac, outcome)
        else:
            self._stats["ignored"] += 1
            log.debug("mac %s: no answer: %s", pkt.mac, outcome.reason)

    def _answered(self, mac: str, sent: Answer) -> None:
        boot = f", boot {sent.spec.boot_file} from {sent.packet.siaddr}" if sent.spec else ""
        if sent.reason:
            log.warning("mac %s: no boot information: %s", mac, sent.reason)
        if sent.kind == MessageType.NAK:
            self._stats["naks"] += 1
            self._event(mac, "dhcp.nak", f"NAK: {sent.reason}", reason=sent.reason)
        elif sent.kind == MessageType.OFFER:
            self._stats["offers"] += 1
            log.info("mac %s: OFFER %s%s", mac, sent.packet.yiaddr, boot)
            if sent.machine is not None and sent.spec is not None and self._on_answer is not None:
                self._call(self._on_answer, sent.machine, sent.spec, self.port)
        else:
            self._stats["acks"] += 1
            data: dict[str, Any] = {"ip": sent.packet.yiaddr if sent.lease else sent.packet.ciaddr}
            if sent.spec is not None:
                data["boot_file"] = sent.spec.boot_file
            what = f"leased {sent.lease.ip} for {self._lease_seconds} s" if sent.lease else f"INFORM from {data['ip']}"
            self._event(mac, "dhcp.lease", f"{what}{boot}", **data)
            if sent.lease is not None:
                self._persist()

    def _handle_boot_server(self, sock: socket.socket, pkt: DhcpPacket, ancdata: list[tuple[int, int, bytes]],
                            source: tuple[str, int]) -> None:  # fmt: skip
        assert self.options is not None
        outcome = respond(pkt, role=Role.BOOT_SERVER, source=source, server_ip=self.options.server_ip,
                          local_port=self.boot_server_port, decide=self._decide,
                          client_port=self._client_port)  # fmt: skip
        if isinstance(outcome, Ignored):
            self._stats["ignored"] += 1
            log.debug("mac %s: boot-server request ignored: %s", outcome.mac, outcome.reason)
        elif isinstance(outcome, Failed):
            self._stats["errors"] += 1
            log.error("mac %s: %s: %r", outcome.mac, outcome.reason, outcome.error)
        elif self._send(sock, pkt.xid, outcome.data, outcome.address, ancdata, pkt.mac):
            self._stats["acks"] += 1
            if self._on_answer is not None:
                self._call(self._on_answer, outcome.machine, outcome.spec, self.boot_server_port)

    def _send(self, sock: socket.socket, xid: int, data: bytes, address: tuple[str, int],
              ancdata: list[tuple[int, int, bytes]], mac: str) -> bool:  # fmt: skip
        """Send out of the interface the request came in on (IP_PKTINFO), from our address."""
        assert self.options is not None
        ancillary = []
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _PKTINFO.size:
                ifindex = _PKTINFO.unpack_from(value)[0]
                info = _PKTINFO.pack(ifindex, socket.inet_aton(self.options.server_ip), bytes(4))
                ancillary = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        try:
            sock.sendmsg([data], ancillary, 0, address)
        except OSError as exc:
            self._stats["errors"] += 1
            log.error("mac %s: cannot send to %s:%d (xid %08x): %s", mac, *address, xid, exc)
            return False
        return True

    # ------------------------------------------------------------------ callbacks
    def _event(self, mac: str, kind: str, message: str, **data: Any) -> None:
        log.info("mac %s: %s", mac, message)
        if self._on_event is not None:
            self._call(self._on_event, mac, kind, message, data)

    def _persist(self) -> None:
        if self.pool is None:
            return
        with self._lock:
            snapshot = self.pool.to_dict()
        try:
            self._save(snapshot)
        except Exception:  # a full disk must not stop address service; the next change retries
            self._stats["errors"] += 1
            log.exception("could not save the DHCP leases")

    @staticmethod
    def _call(callback: Callable[..., object], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("DHCP callback %s failed", getattr(callback, "__qualname__", callback))
