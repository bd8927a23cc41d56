"""Wiring: Settings → Store → plugins → BootService → servers, in one process.

``Appliance`` owns every thread and socket it starts and closes them all on ``stop()``, in the
reverse order, flushing hosts and events last. ``bootbox serve`` is a thin shell around it.
"""

from __future__ import annotations

import gc
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bootbox.assets.demo import build_demo_assets
from bootbox.config import Settings
from bootbox.errors import BootboxError, NotFound
from bootbox.service.dnsview import ZoneView
from bootbox.store.diskhealth import DiskHealth
from bootbox.store.hostlog import HostLog
from bootbox.service.hostindex import HOST_LOG
from bootbox.store.journal import Journal
from bootbox.runtime.fdlimit import descriptors_needed, raise_open_file_limit
from bootbox.runtime.pacing import BOOT_PATH, lower_priority
from bootbox.store.leases import LEASES_KEY, lease_callables
from bootbox.net.dhcp6.server import Dhcp6Server
from bootbox.net.dhcp.server import DhcpServer
from bootbox.net.dns.server import DnsServer
from bootbox.net.dhcp.proxy import ProxyDhcpServer
from bootbox.net.tftp.server import TftpServer
from bootbox.hooks.calls import demo_profile
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store import Store
from bootbox.store.tinydb import TinyDBStore

if TYPE_CHECKING:
    from bootbox.store.postgresql import PostgreSQLStore
from bootbox.store.apitoken import load_or_create_token
from bootbox.store.secretbox import KEY_FILE, require_key
from bootbox.web import create_app
from bootbox.web.limits import HttpLimits
from bootbox.web.server import HttpServer, tls_context

log = logging.getLogger("bootbox")

SWITCH_INTERVAL = 0.0001
"""Seconds between forced interpreter-lock hand-offs (Python's default is 0.005)."""


class Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def ensure_demo_profile(service: BootService, settings: Settings) -> None:
    """Create the demo profile (a Debian kernel + a busybox initramfs that reports in) once.

    Building it downloads Debian's kernel package the first time, so a failure is a warning:
    the appliance still runs, and hosts are told the profile is missing.
    """
    if not settings.demo.enabled:
        return
    try:
        service.profile(settings.demo.profile)
    except NotFound:
        _build_demo_profile(service, settings)
    if service.profile_or_none(settings.demo.profile) is not None and service.rules.is_empty():
        rule = service.rules.make_rule({"name": "demo", "all_hosts": True, "items": {"image": settings.demo.profile}})
        service.rules.add(rule)
        log.info("added the rule 'demo': every host boots the demo profile (bootbox rule list)")


def _build_demo_profile(service: BootService, settings: Settings) -> None:
    """Build the payload, then ask the plugins' kinds for a profile that boots it
    (``bootbox_demo_profile``: the shipped ``linux`` kind answers; the core names no kind)."""
    log.info("building the demo profile %r (first start only)", settings.demo.profile)
    try:
        assets = build_demo_assets(settings.state_path / "demo")
    except Exception as exc:
        log.warning("could not build the demo profile: %s", exc)
        return
    profile = demo_profile(
        service.pm,
        name=settings.demo.profile,
        kernel=assets.kernel,
        initrd=assets.initrd,
        cmdline=assets.cmdline,
        description=f"demo: Debian kernel {assets.kernel_version} + busybox initramfs that reports in",
    )
    if profile is None:
        log.warning("no plugin offers a profile for the demo payload (bootbox_demo_profile; the linux "
                    "plugin answers): there is no demo profile")
        return
    service.put_profile(profile)


def open_store(settings: Settings) -> TinyDBStore | PostgreSQLStore:
    """The store ``[store] backend`` names, holding the state-dir lock either way (the journal,
    host log and leases stay files there). Only the PostgreSQL backend imports psycopg."""
    if settings.store.backend == "postgresql":
        from bootbox.store.postgresql import PostgreSQLStore as Backend

        return Backend(settings.store.dsn, state_dir=settings.state_path,
                       connect_timeout=settings.store.connect_timeout, appliance=settings.appliance.effective_name)
    return TinyDBStore(settings.state_path)


def full_dhcp_server(settings: Settings, service: BootService, store: Store) -> DhcpServer:
    """The full-mode DHCP server (``[dhcp] mode = "full"``), wired to the service and store.

    Clients are given bootbox's own address as DNS server when its DNS server runs and no
    ``dns_servers`` are configured, and the DNS zone as domain when ``domain`` is empty.
    """
    dhcp = settings.dhcp
    dns = getattr(settings, "dns", None)
    dns_running = bool(getattr(dns, "enabled", False))
    # Appliances sharing a database keep a lease table each (full-DHCP pairs serve split ranges).
    key = f"leases@{settings.appliance.effective_name}" if settings.store.backend == "postgresql" else LEASES_KEY
    load_leases, save_leases = lease_callables(store, settings.state_path, key)
    return DhcpServer(
        decide=service.decide,
        on_answer=service.dhcp_answered,
        on_event=lambda mac, kind, message, data: service.record(mac, kind, message, **data),
        interface=dhcp.interface,
        range_start=dhcp.range_start,
        range_end=dhcp.range_end,
        load_leases=load_leases,
        save_leases=save_leases,
        server_address=settings.server_address,
        subnet_mask=dhcp.subnet_mask,
        router=dhcp.router,
        dns_servers=dhcp.dns_servers,
        dns_self=dns_running,
        domain=dhcp.domain or (str(getattr(dns, "domain", "") or "") if dns_running else ""),
        lease_seconds=dhcp.lease_seconds,
        rate_limit=dhcp.rate_limit,
        rate_burst=dhcp.rate_burst,
        reservations=dhcp.reservations,
        server_port=dhcp.port,
        boot_server_port=dhcp.boot_server_port,
        client_port=dhcp.client_port,
        ignore_other_servers=dhcp.ignore_other_servers,
    )


def dns_server(settings: Settings, service: BootService) -> DnsServer:
    """The authoritative DNS for managed hosts (forward and reverse), forwarding the rest."""
    zone = ZoneView(settings.dns, service.hosts, server_address=settings.server_address,
                    configured_name=service.configured_hostname)
    return DnsServer(
        lookup=zone.lookup,
        upstreams=settings.dns.upstreams,
        bind_address=settings.dns.bind_address,
        port=settings.dns.port,
        timeout=settings.dns.timeout,
    )


class Appliance:
    """One bootbox: store, plugins, service and the DHCP, TFTP and HTTP servers."""

    def __init__(self, settings: Settings, *, load_entrypoints: bool = True, extra_plugins: tuple[object, ...] = ()) -> None:
        self.settings = settings
        self._load_entrypoints = load_entrypoints
        self._extra_plugins = extra_plugins
        self.service: BootService | None = None
        self.servers: dict[str, Server] = {}
        self._closers: list[Any] = []
        self._stopped = threading.Event()
        self._disk_health: dict[str, DiskHealth] = {}
        self._writer: Any = None  # bootbox.store.pg.bootwriter.BootWriter with the PostgreSQL backend
        self._feed: Any = None  # bootbox.store.pg.changefeed.ChangeFeed with the PostgreSQL backend

    def start(self) -> None:
        """Open the store (taking the state-dir lock), load plugins, start every server."""
        settings = self.settings
        # A thread that wakes for a DHCP packet waits for the interpreter lock until the thread
        # holding it yields, by default up to 5 ms: that wait was most of the OFFER tail in the
        # boot-storm benchmark. Handing the lock over every 0.1 ms bounds it (0.5 ms left a
        # p99 of 0.5-0.7 ms; 0.05 ms measured no better).
        sys.setswitchinterval(SWITCH_INTERVAL)
        raise_open_file_limit(descriptors_needed(max_transfers=settings.tftp.max_transfers,
                                                 connection_limit=settings.http.connection_limit), log)
        try:
            settings.state_path.mkdir(parents=True, exist_ok=True, mode=0o700)
            store = open_store(settings)
            self._closers.append(store.close)
            require_key(Path(settings.secrets_key_file or settings.state_path / KEY_FILE), store)
            if settings.store.backend == "postgresql":  # hosts and events in the database too (bootbox.store.pg)
                journal, host_log = self._database_logs(settings, store)
            else:
                journal, host_log = Journal(settings.state_path / "events.jsonl"), HostLog(settings.state_path / HOST_LOG)
            journal.start()
            self._closers.append(journal.close)
            pm = make_plugin_manager(
                load_entrypoints=self._load_entrypoints,
                blocked=settings.disable_plugins,
                extra_plugins=self._extra_plugins,
            )
            service = BootService(settings, store, journal, pm, host_log=host_log,
                                  appliance_name=settings.appliance.effective_name)
            self._disk_health = {"store": store.disk, "journal": journal.disk, "host log": host_log.disk}
            service.start()
            self._closers.append(service.close)
            self.service = service
            if settings.store.backend == "postgresql":  # other appliances' changes, within moments
                from bootbox.service.replication import start_replication

                writer = self._writer
                self._feed = start_replication(service, store, reconnect_max=settings.store.reconnect_max,  # type: ignore[arg-type]
                                               ready=lambda: writer.available and not len(writer.outbox))
                self._closers.append(self._feed.close)
            ensure_demo_profile(service, settings)
            token = load_or_create_token(settings.state_path)
            app = create_app(service, token=token, status=self.status)
            self._start_server(
                "http",
                HttpServer(
                    app,
                    host=settings.http.bind_address,
                    port=settings.http.port,
                    threads=settings.http.threads + settings.http.event_streams,
                    connection_limit=settings.http.connection_limit,
                    limits=HttpLimits.of(settings.http),
                    send_threads=settings.http.send_threads,
                ),
            )
            if settings.http.tls_cert:  # the API and the console over HTTPS too; firmware stays on plain HTTP
                self._start_server("https", HttpServer(
                    app, host=settings.http.bind_address, port=settings.http.tls_port, threads=settings.http.threads + settings.http.event_streams,
                    connection_limit=settings.http.connection_limit, limits=HttpLimits.of(settings.http),
                    tls=tls_context(settings.http.tls_cert, settings.http.tls_key)))
            if settings.tftp.enabled:
                self._start_server(
                    "tftp",
                    TftpServer(
                        open_file=service.open_tftp,
                        on_transfer=service.tftp_done,
                        bind_address=settings.tftp.bind_address,
                        port=settings.tftp.port,
                        timeout=settings.tftp.timeout,
                        retries=settings.tftp.retries,
                        engine=settings.tftp.engine,
                        max_transfers=settings.tftp.max_transfers,
                        per_address_transfers=settings.tftp.per_address_transfers,
                        engine_threads=settings.tftp.engine_threads,
                    ),
                )
            if settings.dhcp.enabled and settings.dhcp.mode == "full":
                self._start_server("dhcp", full_dhcp_server(settings, service, store))
            elif settings.dhcp.enabled:
                self._start_server(
                    "dhcp",
                    ProxyDhcpServer(
                        decide=service.decide,
                        on_answer=service.dhcp_answered,
                        bind_address=settings.dhcp.bind_address,
                        interface=settings.dhcp.interface or None,
                        server_port=settings.dhcp.port,
                        boot_server_port=settings.dhcp.boot_server_port,
                        client_port=settings.dhcp.client_port,
                        rate_limit=settings.dhcp.rate_limit,
                        rate_burst=settings.dhcp.rate_burst,
                    ),
                )
            if settings.dns.enabled:
                self._start_server("dns", dns_server(settings, service))
            if settings.dhcp6.enabled:
                self._start_ipv6(settings, service, app)
        except BaseException:
            self.stop()
            raise
        # Everything loaded so far (plugins, Flask, the indexes) lives as long as the process:
        # freezing it keeps the collector's full passes from walking it again. Measured, a full
        # collection during a DHCP storm went from 35 ms to under 2 ms.
        gc.collect()
        gc.freeze()
        log.info("bootbox is up: %s", ", ".join(f"{name} {self._describe(name)}" for name in self.servers))

    def _database_logs(self, settings: Settings, store: Any) -> tuple[Journal, HostLog]:
        """The journal and host log in PostgreSQL, behind one writer that queues in the state
        directory's outbox while the database is away (docs/postgresql.md)."""
        from bootbox.store.outbox import OUTBOX_FILE, Outbox
        from bootbox.store.pg.bootwriter import BootWriter
        from bootbox.store.pg.hostlog import PgHostLog
        from bootbox.store.pg.journal import PgJournal

        outbox = Outbox(settings.state_path / OUTBOX_FILE, max_bytes=settings.store.outbox_max_bytes)
        writer = BootWriter(store, outbox, reconnect_max=settings.store.reconnect_max)
        writer.start()
        self._writer = writer
        self._closers.append(writer.close)  # closed after the journal and the service have flushed into it
        return PgJournal(writer), PgHostLog(writer)

    def _start_ipv6(self, settings: Settings, service: BootService, app: Any) -> None:
        """DHCPv6 PXE plus TFTP and HTTP on ``::`` (each IPv6-only beside its IPv4 twin)."""
        dhcp6 = settings.dhcp6
        self._start_server("http6", HttpServer(app, host="::", port=settings.http.port, threads=settings.http.threads + settings.http.event_streams,
                                               connection_limit=settings.http.connection_limit,
                                               limits=HttpLimits.of(settings.http),
                                               send_threads=settings.http.send_threads))
        if settings.tftp.enabled:
            self._start_server("tftp6", TftpServer(open_file=service.open_tftp, on_transfer=service.tftp_done,
                                                   bind_address="::", port=settings.tftp.port,
                                                   timeout=settings.tftp.timeout, retries=settings.tftp.retries,
                                                   engine=settings.tftp.engine,
                                                   max_transfers=settings.tftp.max_transfers,
                                                   per_address_transfers=settings.tftp.per_address_transfers,
                                                   engine_threads=settings.tftp.engine_threads))
        self._start_server("dhcp6", Dhcp6Server(decide=service.decide, on_answer=service.dhcp_answered,
                                                interface=dhcp6.interface, server_address=dhcp6.server_address,
                                                address_pool=dhcp6.address_pool, port=dhcp6.port,
                                                client_port=dhcp6.client_port))

    def _start_server(self, name: str, server: Server) -> None:
        try:
            server.start()
        except PermissionError as exc:
            raise BootboxError(f"{exc}. Run as root, or grant CAP_NET_BIND_SERVICE, or use ports above 1023") from exc
        except OSError as exc:
            raise BootboxError(str(exc)) from exc
        self.servers[name] = server

    def _describe(self, name: str) -> str:
        server = self.servers[name]
        if name == "dhcp":
            return f"udp/{getattr(server, 'port', '?')}+{getattr(server, 'boot_server_port', '?')}"
        if name in ("tftp", "tftp6", "dhcp6"):
            return f"udp/{getattr(server, 'port', '?')}"
        if name == "dns":
            return f"udp+tcp/{getattr(server, 'port', '?')}"
        return f"tcp/{getattr(server, 'port', '?')}"

    def status(self) -> dict[str, Any]:
        """Per-server counters for ``/api/v1/status``, and ``disk``: whether state writes work."""
        found = {name: dict(getattr(server, "stats", {}) or {}) for name, server in self.servers.items()}
        found["disk"] = self.disk_status()
        if self.service is not None:
            found["boot"] = self.service.boot_stats()  # loader_missing: requests not offered a missing loader
        if self._writer is not None:
            found["database"] = self.database_status()
        return found

    def database_status(self) -> dict[str, Any]:
        """The PostgreSQL backend's health: ``state`` (``connected`` or ``unavailable``), the
        records queued in the outbox, and the change feed (``listening``, ``reconnecting``)."""
        result = dict(self._writer.status()) if self._writer is not None else {}
        if self._feed is not None:
            result["changes"] = self._feed.status()
        return result

    def disk_status(self) -> dict[str, Any]:
        """``state``: ``ok``, ``full`` (no space for the store, host log or journal) or ``failing``
        (another write error); which writers fail, the error, and the events the journal dropped."""
        writers = {name: health.snapshot() for name, health in self._disk_health.items()}
        failing = {name: snap for name, snap in writers.items() if not snap["ok"]}
        state = "ok" if not failing else "full" if any(s["disk_full"] for s in failing.values()) else "failing"
        result: dict[str, Any] = {"state": state}
        if failing:
            result["failing"] = ", ".join(sorted(failing))
            result["error"] = next(iter(failing.values()))["error"]
        if self.service is not None:
            result["events_dropped"] = self.service.journal.stats["dropped"]
        return result

    def ports(self) -> dict[str, int]:
        return {name: int(getattr(server, "port", 0)) for name, server in self.servers.items()}

    def stop(self) -> None:
        """Stop servers (newest first), then flush and close the service, journal and store."""
        for name in reversed(list(self.servers)):
            try:
                self.servers[name].stop()
            except Exception:
                log.exception("stopping the %s server failed", name)
        self.servers.clear()
        for close in reversed(self._closers):
            try:
                close()
            except (BootboxError, OSError) as exc:  # already explained (e.g. a full disk): no traceback
                log.warning("closing %s: %s", getattr(close, "__qualname__", close), exc)
            except Exception:
                log.exception("closing %s failed", getattr(close, "__qualname__", close))
        self._closers.clear()
        gc.unfreeze()  # what start() froze may be garbage now (tests start many appliances)
        self._stopped.set()

    def serve_forever(self) -> None:
        """Start, run until SIGINT or SIGTERM, then stop cleanly (``bootbox serve``).

        The handlers go in before the start, so a signal while starting stops it cleanly too;
        once stopped, the process ignores both signals (``bootbox serve`` exits next): a second
        signal — ``timeout`` and process-group kills deliver two, an operator presses Ctrl-C
        twice — must not hit the default action and kill the process before hosts, events and
        the last log lines are written.
        """
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            if stop.is_set():
                log.info("received %s, already stopping", signal.Signals(signum).name)
                return
            log.info("received %s, stopping", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        try:
            self.start()
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()
            log.info("bootbox stopped (pid %d)", os.getpid())
            # Python resets its own handlers to the default while the interpreter shuts down;
            # an ignored signal stays ignored, so a late one cannot cut the last log lines off.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


class _BackgroundListener(logging.handlers.QueueListener):
    """A log listener whose thread the scheduler ranks below the servers' (bootbox.runtime.pacing)."""

    def _monitor(self) -> None:
        lower_priority()
        super()._monitor()

    def handle(self, record: logging.LogRecord) -> None:
        # Defer to a DHCP storm like the other writers (bootbox.runtime.pacing), counted from the
        # moment the line was logged, so no line waits longer than MAX_DEFER.
        BOOT_PATH.defer(time.monotonic() - max(0.0, time.time() - record.created))
        super().handle(record)


class EscapingFormatter(logging.Formatter):
    """Writes each message's control characters escaped (``\\n``, ``\\x1b``, ``\\u2028``).

    Log messages quote what clients send (TFTP file names, URLs, DHCP options): a newline in a
    file name must not start a line that looks like bootbox's own, and an escape sequence must not
    reach the operator's terminal. One formatter for every logger, so no call site can forget it;
    tracebacks (added after the message) keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character except the space written as its escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def configure_logging(level: str) -> logging.handlers.QueueListener:
    """One line per event on stderr, written by a listener thread.

    The DHCP, TFTP and HTTP threads log every boot step; with a queue between them and stderr
    they never wait on a slow terminal or journald pipe. Call ``.stop()`` on the returned
    listener at exit to flush the last lines.
    """
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    output = logging.StreamHandler()
    output.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    listener = _BackgroundListener(records, output, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    listener.start()
    return listener


