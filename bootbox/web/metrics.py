"""``GET /metrics``: the appliance's counters in Prometheus's text format (prometheus_client).

Nothing is counted here on the boot path that is counted elsewhere already. A custom collector
(:class:`ApplianceCollector`) reads, at scrape time, what exists: each server's ``stats`` (through
the appliance's ``status``), the service's counts and :class:`~bootbox.service.bootmetrics.BootTally`,
the journal's counters and the host index. The one thing nobody counted, HTTP requests and bytes,
is counted by :class:`HttpTally`, a WSGI wrapper that adds two integers per response.

Labels are bounded: a route class (``boot``, ``api``, ``other``), a status class (``2xx`` …), a
server name, a reason from a fixed list, a firmware from a fixed list, a host state. Never a MAC,
an address or a path. ``[http] read_token`` guards ``/metrics`` like every other read
(``bootbox.web.auth``): Prometheus sends it with ``authorization: {credentials: ...}``.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Callable, Iterable, Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from bootbox.model import HostState
from bootbox.service.bootmetrics import DURATION_BUCKETS
from bootbox.service.bootservice import BootService
from bootbox.service.caches import BLOBS
from bootbox.web.api.webhooks import webhook_metrics
from bootbox.version import __version__
blueprint = Blueprint("metrics", __name__)
REGISTRY = "bootbox.metrics"

ROUTE_CLASSES = ("boot", "api", "other")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BOOT_PREFIXES = ("/boot/", "/boot.ipxe", "/grub/")

_TFTP_COUNTERS = {  # stats key → (metric, help); the rest of TFTP's keys are refusals by reason
    "requests": ("bootbox_tftp_requests_total", "Well-formed TFTP read requests."),
    "completed": ("bootbox_tftp_transfers_completed_total", "TFTP transfers that delivered their file."),
    "failed": ("bootbox_tftp_transfers_failed_total", "TFTP transfers that did not deliver their file."),
    "aborted": ("bootbox_tftp_transfers_aborted_total", "TFTP transfers the client ended (tsize probes)."),
    "malformed": ("bootbox_tftp_malformed_packets_total", "TFTP packets that could not be understood."),
}


def route_class(path: str) -> str:
    """``boot`` (what booting hosts fetch), ``api`` (``/api/``) or ``other``."""
    if path.startswith(_BOOT_PREFIXES):
        return "boot"
    if path.startswith("/api/"):
        return "api"
    return "other"


class HttpTally:
    """HTTP responses and their bytes by route class and status class, counted in the WSGI layer.

    The byte count is the response's ``Content-Length`` (every file and JSON answer has one:
    the body is not touched, so waitress still sends files with ``sendfile``); a response
    without one (a stream) has its body counted as it passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = {(r, s): 0 for r in ROUTE_CLASSES for s in STATUS_CLASSES}
        self.bytes = dict.fromkeys(ROUTE_CLASSES, 0)

    def wrap(self, wsgi_app: Any) -> Any:
        """``wsgi_app`` counted."""

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            route = route_class(environ.get("PATH_INFO", ""))
            streamed: list[bool] = []

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                length = next((v for k, v in headers if k.lower() == "content-length"), None)
                klass = f"{status[:1]}xx" if status[:1] in "12345" else "5xx"
                with self._lock:
                    self.requests[(route, klass)] = self.requests.get((route, klass), 0) + 1
                    if length is not None and length.isdigit():
                        self.bytes[route] += int(length)
                    else:
                        streamed.append(True)
                return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            body = wsgi_app(environ, start)
            return self._count_body(route, body) if streamed else body

        return counted

    def _count_body(self, route: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self._lock:
                    self.bytes[route] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        with self._lock:
            return dict(self.requests), dict(self.bytes)


class ApplianceCollector(Collector):
    """Every bootbox metric, read from the live counters at each scrape (see the module docstring)."""

    def __init__(self, service: BootService, status: Callable[[], dict[str, Any]], http: HttpTally) -> None:
        self._service = service
        self._status = status
        self._http = http

    def collect(self) -> Iterator[Any]:
        servers = self._status()
        yield from self._dhcp(servers)
        yield from self._tftp(servers)
        yield from self._http_metrics(servers)
        yield from self._boots()
        yield from self._state()
        yield from self._journal(servers)
        yield from webhook_metrics(self._service)  # deliveries by hook and outcome

    @staticmethod
    def _server_counts(servers: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
        """``(server name, stats)`` of every server whose name starts with ``prefix`` (``dhcp``
        and ``dhcp6``; ``tftp`` and ``tftp6``)."""
        return [(name, stats) for name, stats in sorted(servers.items())
                if name.startswith(prefix) and isinstance(stats, dict)]

    def _dhcp(self, servers: dict[str, Any]) -> Iterator[Any]:
        received = CounterMetricFamily("bootbox_dhcp_packets_received", "DHCP packets received.", labels=["server"])
        answered = CounterMetricFamily("bootbox_dhcp_answers", "DHCP answers sent (offers and acks).", labels=["server"])
        ignored = CounterMetricFamily("bootbox_dhcp_packets_ignored",
                                      "DHCP packets not answered, by reason (rate_limited, malformed, error, other).",
                                      labels=["server", "reason"])
        for name, stats in self._server_counts(servers, "dhcp"):
            received.add_metric([name], _int(stats, "received"))
            answered.add_metric([name], _int(stats, "answered"))
            limited, malformed, errors = _int(stats, "rate_limited"), _int(stats, "malformed"), _int(stats, "errors")
            ignored.add_metric([name, "rate_limited"], limited)
            ignored.add_metric([name, "malformed"], malformed)
            ignored.add_metric([name, "error"], errors)
            ignored.add_metric([name, "other"], max(0, _int(stats, "ignored") - limited))  # not PXE, not for us
        missing = CounterMetricFamily("bootbox_dhcp_loader_missing",
                                      "DHCP requests not answered because the client's loader file is missing.")
        missing.add_metric([], _int(servers.get("boot") or {}, "loader_missing"))
        yield from (received, answered, ignored, missing)

    def _tftp(self, servers: dict[str, Any]) -> Iterator[Any]:
        families = {key: CounterMetricFamily(metric, text, labels=["server"])
                    for key, (metric, text) in _TFTP_COUNTERS.items()}
        refused = CounterMetricFamily("bootbox_tftp_requests_refused", "TFTP requests refused, by reason.",
                                      labels=["server", "reason"])
        active = GaugeMetricFamily("bootbox_tftp_transfers_active", "TFTP transfers running now.", labels=["server"])
        for name, stats in self._server_counts(servers, "tftp"):
            for key, family in families.items():
                family.add_metric([name], _int(stats, key))
            active.add_metric([name], _int(stats, "active"))
            for key in sorted(stats):
                if key.startswith(("refused_", "gave_up")):
                    refused.add_metric([name, key.removeprefix("refused_")], _int(stats, key))
        sent = CounterMetricFamily("bootbox_tftp_sent_bytes", "Bytes of files TFTP transfers delivered.")
        sent.add_metric([], self._service.boot_tally().tftp_bytes)
        yield from (*families.values(), refused, active, sent)

    def _http_metrics(self, servers: dict[str, Any]) -> Iterator[Any]:
        requests, sent = self._http.snapshot()
        by_class = CounterMetricFamily("bootbox_http_requests", "HTTP responses, by route class and status class.",
                                       labels=["route", "code"])
        for (route, code), count in sorted(requests.items()):
            by_class.add_metric([route, code], count)
        body = CounterMetricFamily("bootbox_http_response_bytes", "Bytes of HTTP response bodies, by route class.",
                                   labels=["route"])
        for route, count in sorted(sent.items()):
            body.add_metric([route], count)
        open_ = GaugeMetricFamily("bootbox_http_connections", "HTTP connections open now.", labels=["server"])
        refused = CounterMetricFamily("bootbox_http_connections_refused",
                                      "HTTP connections and requests refused or closed by the per-client limits.",
                                      labels=["server", "reason"])
        for name, stats in self._server_counts(servers, "http"):
            open_.add_metric([name], _int(stats, "connections"))
            for key in sorted(stats):
                if key.startswith(("refused_", "closed_")):
                    refused.add_metric([name, key], _int(stats, key))
        blobs = CounterMetricFamily("bootbox_http_blob_bytes", "Bytes of content-addressed boot files sent "
                                    "(/boot/blobs/; with caches in front, one copy per file: docs/caching.md).")
        blobs.add_metric([], BLOBS.sent_bytes)
        yield from (by_class, body, blobs, open_, refused)

    def _boots(self) -> Iterator[Any]:
        tally = self._service.boot_tally()
        firmwares = sorted({*tally.started, *tally.reported, *tally.failed})  # a zero, not no series, for each
        for metric, text, counts in (
            ("bootbox_boots_started", "Boots started: a boot script or GRUB config for a profile served.", tally.started),
            ("bootbox_boots_reported", "Boots the booted system reported in from (a new boot ID).", tally.reported),
            ("bootbox_boots_failed", "Boots whose after-boot pushes failed.", tally.failed),
        ):
            family = CounterMetricFamily(metric, text, labels=["firmware"])
            for firmware in firmwares:
                family.add_metric([firmware], counts.get(firmware, 0))
            yield family
        durations = HistogramMetricFamily("bootbox_boot_duration_seconds",
                                          "Seconds from a boot's script to its report-in, by firmware.",
                                          labels=["firmware"])
        for firmware, histogram in sorted(tally.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(_bound, DURATION_BUCKETS), "+Inf"), histogram.counts):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([firmware], buckets, histogram.total)
        pushes = CounterMetricFamily("bootbox_push_attempts", "After-boot push attempts, by outcome.",
                                     labels=["outcome"])
        for outcome, count in sorted(tally.pushes.items()):
            pushes.add_metric([outcome], count)
        events = CounterMetricFamily("bootbox_boot_events", "Boot events recorded, by kind.", labels=["kind"])
        for kind, count in sorted(tally.events.items()):
            events.add_metric([kind], count)
        yield from (durations, pushes, events)

    def _state(self) -> Iterator[Any]:
        service = self._service
        states = dict.fromkeys((str(state) for state in HostState), 0)
        for host in service.list_hosts():
            states[str(host.state)] = states.get(str(host.state), 0) + 1
        hosts = GaugeMetricFamily("bootbox_hosts", "Known hosts, by state.", labels=["state"])
        for state, count in sorted(states.items()):
            hosts.add_metric([state], count)
        counts = service.counts()
        profiles = GaugeMetricFamily("bootbox_profiles", "Image profiles.")
        profiles.add_metric([], counts.profiles)
        refused = CounterMetricFamily("bootbox_requests_refused",
                                      "Boot requests refused: identity checks, new-host rate limits.",
                                      labels=["reason"])
        for reason, count in sorted(counts.refused.items()):
            refused.add_metric([reason], count)
        rules = GaugeMetricFamily("bootbox_rules", "Rules in each rule set.", labels=["set"])
        digest = InfoMetricFamily("bootbox_ruleset", "A digest of each rule set's content: it changes with every "
                                  "edit, activation or rollback.", labels=["set"])
        for which in ("working", "active"):
            ruleset = service.ruleset(which)
            rules.add_metric([which], len(ruleset))
            digest.add_metric([which], {"digest": hashlib.sha256(repr(ruleset.rules).encode()).hexdigest()[:12]})
        info = InfoMetricFamily("bootbox_build", "The running bootbox.")
        info.add_metric([], {"version": __version__})
        yield from (hosts, profiles, refused, rules, digest, info)

    def _journal(self, servers: dict[str, Any]) -> Iterator[Any]:
        stats = self._service.counts().journal
        for key, text in (("appended", "Boot events recorded in memory."),
                          ("written", "Boot events written to the journal file."),
                          ("dropped", "Boot events not written to the journal file (writer behind, disk failing)."),
                          ("errors", "Failed journal writes.")):
            family = CounterMetricFamily(f"bootbox_journal_events_{key}" if key != "errors" else "bootbox_journal_write_errors",
                                         text)
            family.add_metric([], _int(stats, key))
            yield family
        written = CounterMetricFamily("bootbox_journal_written_bytes", "Bytes written to the journal file.")
        written.add_metric([], _int(stats, "bytes"))
        disk = servers.get("disk") or {}
        ok = GaugeMetricFamily("bootbox_state_writes_ok", "1 while writes to the state directory work, else 0.")
        ok.add_metric([], 1 if disk.get("state", "ok") == "ok" else 0)
        yield from (written, ok)


def _int(stats: dict[str, Any], key: str) -> int:
    value = stats.get(key, 0)
    return value if isinstance(value, int) else 0


def _bound(value: float) -> str:
    return str(float(value))  # "5.0": how prometheus_client spells a bucket's ``le``


def install(app: Any, service: BootService, status: Callable[[], dict[str, Any]]) -> None:
    """Count ``app``'s responses and serve ``/metrics`` from a registry of its own (no globals:
    two apps in one process, as in the tests, keep their own numbers)."""
    http = HttpTally()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(service, status, http))
    app.extensions[REGISTRY] = registry
    app.wsgi_app = http.wrap(app.wsgi_app)
    app.register_blueprint(blueprint)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Every metric, collected now (``install`` put this app's registry in its extensions)."""
    return Response(generate_latest(current_app.extensions[REGISTRY]), content_type=CONTENT_TYPE_LATEST)
