"""Settings: one TOML file, overridable by ``BOOTBOX_*`` environment variables and CLI flags.

Every default lives here (and is documented key by key in ``appliance/bootbox.toml``). Loading
validates types and values up front and names the offending key, so a typo fails at start-up
instead of at the first PXE boot.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bootbox.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/bootbox/bootbox.toml")

# Client architecture (DHCP option 93) → first-stage loader for plain PXE ROMs and UEFI HTTP.
# iPXE clients never get these: they get the HTTP script URL (see policy.py).
DEFAULT_LOADERS: dict[str, str] = {
    "0": "undionly.kpxe",  # x86 BIOS
    "7": "snponly.efi",  # x64 UEFI (IANA numbering)
    "9": "snponly.efi",  # x64 UEFI (RFC 4578 numbering; real firmware sends 7)
    "16": "snponly.efi",  # x64 UEFI HTTP boot: served over HTTP
}
# The GRUB loader kind (docs/firmware.md): architecture → Debian's network GRUB. ARM64 (11 PXE,
# 19 HTTP) has no Debian iPXE build, so it gets GRUB by default; x64 only when a host asks.
DEFAULT_GRUB_LOADERS: dict[str, str] = {
    "7": "grubnetx64.efi", "9": "grubnetx64.efi", "16": "grubnetx64.efi",
    "11": "grubnetaa64.efi", "19": "grubnetaa64.efi",
}  # fmt: skip
# Secure Boot hosts: architecture → Microsoft-signed shim, which loads grubx64.efi/grubaa64.efi.
DEFAULT_SECURE_BOOT_LOADERS: dict[str, str] = {
    "7": "shimx64.efi", "9": "shimx64.efi", "16": "shimx64.efi", "11": "shimaa64.efi", "19": "shimaa64.efi",
}
# Served loader name → file (absolute, or relative to state_dir), for loaders outside tftp.root:
# Debian's signed packages (shim-signed, grub-efi-amd64-signed; arm64 ones are fetched into
# state_dir/loaders by `python -m bootbox.signedloaders`). shim loads "grubx64.efi" from beside
# itself, so the signed network GRUB is served under that name too.
DEFAULT_LOADER_FILES: dict[str, str] = {
    "shimx64.efi": "/usr/lib/shim/shimx64.efi.signed",
    "grubx64.efi": "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    "grubnetx64.efi": "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    "shimaa64.efi": "loaders/arm64/shimaa64.efi.signed",
    "grubaa64.efi": "loaders/arm64/grubnetaa64.efi.signed",
    "grubnetaa64.efi": "loaders/arm64/grubnetaa64.efi.signed",
}


@dataclass(frozen=True)
class DhcpSettings:
    enabled: bool = True
    mode: str = "proxy"
    interface: str = ""
    bind_address: str = "0.0.0.0"
    port: int = 67
    boot_server_port: int = 4011
    client_port: int = 68
    rate_limit: float = 2.0  # packets per second per client MAC once its burst is spent; 0: no limit
    rate_burst: int = 12
    loaders: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LOADERS))
    grub_loaders: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_GRUB_LOADERS))
    secure_boot_loaders: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SECURE_BOOT_LOADERS))
    loader_files: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LOADER_FILES))
    # Full mode only (``mode = "full"``): bootbox is the network's DHCP server (net/dhcpserver.py).
    range_start: str = ""
    range_end: str = ""
    subnet_mask: str = ""  # empty: the prefix of the interface's address
    router: str = ""  # empty: no default gateway is offered (an isolated lab)
    dns_servers: tuple[str, ...] = ()  # empty: bootbox's own address when its DNS server runs
    domain: str = ""
    lease_seconds: int = 3600
    ignore_other_servers: bool = False
    reservations: Mapping[str, str] = field(default_factory=dict)  # MAC → fixed IPv4 address


@dataclass(frozen=True)
class TftpSettings:
    enabled: bool = True
    bind_address: str = "0.0.0.0"
    port: int = 69
    root: str = "/usr/lib/ipxe"
    timeout: float = 1.0
    retries: int = 5  # resends of an unanswered window, each waiting twice as long (≤ 8 timeouts)
    engine: bool = True  # the compiled block engine, when built (bootbox.net.tftp.engine)
    max_transfers: int = 2048  # transfers at once; more requests are dropped unanswered (the client retries)
    per_address_transfers: int = 32  # transfers at once to one client address; more are dropped unanswered
    engine_threads: int = 1024  # transfers served by the compiled engine at once (a thread each); more stay in the loop


@dataclass(frozen=True)
class HttpSettings:
    bind_address: str = "0.0.0.0"
    port: int = 8080
    threads: int = 16
    connection_limit: int = 1000
    public_url: str = ""
    # Per-client limits (bootbox.web.limits, docs/limits.md):
    max_body: int = 4 * 2**20  # bytes of a request body; larger is refused (413) before it is read
    per_address_connections: int = 64  # open connections from one client address; more get 503
    request_timeout: float = 20.0  # seconds to receive one whole request once it began (slow senders)
    idle_timeout: float = 60.0  # seconds a connection may sit idle between requests
    # HTTPS for the API and the console (docs/limits.md#tls): PEM files; both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    tls_port: int = 8443
    read_token: str = ""
    """When set, every read outside the boot endpoints (the API, the status page) needs
    ``Authorization: Bearer`` with this token (or the API token); empty: reads are open."""
    event_streams: int = 8
    """Event streams (``/api/v1/events/stream``) open at once; one more gets 503. Each has a
    thread of its own, added to ``threads``, so streams never take a boot file's thread."""
    send_threads: int = 0
    """Threads that send large file bodies (1 MiB and more) with a blocking ``sendfile`` beside
    the HTTP loop (bootbox.web.sendfile); 0: the loop sends every body. Helps HTTP-only boots
    (UEFI HTTP boot, iPXE fetching big images); in a mixed storm it took the interpreter from the
    TFTP thread, so it is off by default (README, Performance)."""
    event_heartbeat: float = 5.0
    """Seconds between comment lines on an idle event stream (keeps proxies and clients from
    timing it out, and finds a gone client)."""


@dataclass(frozen=True)
class HostsSettings:
    """Who may act for a host on the boot network (bootbox.service.identity; docs/security.md)."""

    adopt: str = "auto"
    """``auto``: a new MAC boots at once; ``manual``: it stays ``discovered`` (a waiting script,
    no secrets) until ``bootbox host adopt MAC``."""
    trust_loopback: bool = True
    """Requests from the appliance itself (127.0.0.0/8, ::1, its own addresses) may act for any
    host: QEMU's user-mode network (the demo) and local tools arrive that way. Set false when a
    proxy on the appliance forwards boot requests, or every forwarded request would be trusted."""
    trusted_networks: tuple[str, ...] = ()
    """Source networks (CIDR) whose requests are trusted for the MAC they name: hosts behind a
    DHCP relay or router, whose MAC the appliance's neighbour table cannot show."""
    neighbour_cache: float = 1.0
    """Seconds a read of the kernel's neighbour table is reused before a miss reads it again."""
    boot_token_ttl: float = 86400.0
    """Seconds a boot's up token lasts (a new boot replaces it sooner)."""
    answer_token_ttl: float = 1800.0
    """Seconds a boot's answer-file token lasts after the boot started."""
    new_hosts_per_source: int = 100
    """New host records one HTTP/TFTP source address may cause per minute (bootbox.service.newhosts)."""
    new_hosts_per_second: float = 200.0
    """New host records per second overall, DHCP included (a token bucket) ..."""
    new_hosts_burst: int = 2000
    """... with this burst: 1,000 new PXE clients in one second are all recorded."""
    discovered_expiry: float = 86400.0
    """Seconds after which a host only ever seen (never booted, not adopted, not awaiting adoption)
    is forgotten."""


@dataclass(frozen=True)
class Dhcp6Settings:
    """The DHCPv6 PXE responder (net/dhcp6.py; docs/firmware.md). TFTP and HTTP also listen on
    ``::`` when it is on. Router advertisements stay the router's job: clients need one with the
    M flag before they ask."""

    enabled: bool = False
    interface: str = ""
    server_address: str = ""  # bootbox's IPv6 address in boot URLs; empty: the interface's first global one
    address_pool: str = ""  # e.g. "fd42:b007::/64": hand out addresses; empty: boot options only
    port: int = 547
    client_port: int = 546


@dataclass(frozen=True)
class DnsSettings:
    enabled: bool = False
    bind_address: str = "0.0.0.0"
    port: int = 53
    domain: str = "home.arpa"
    ttl: int = 60
    nameserver: str = "ns"
    records: tuple[str, ...] = ()
    reverse_networks: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    timeout: float = 2.0


@dataclass(frozen=True)
class PushPolicy:
    """How hard a push is tried. Defaults follow the ESXi waiter: 10 s, +8–12 s a try, ≤5 min.

    It lives with the settings (not with the pool in :mod:`bootbox.service.pushes` that applies
    it) so reading the configuration never imports the service layer.
    """

    attempts: int = 5
    timeout: float = 30.0
    first_delay: float = 10.0
    step_min: float = 8.0
    step_max: float = 12.0
    max_delay: float = 300.0


@dataclass(frozen=True)
class PushSettings(PushPolicy):
    """How hard after-boot pushes are tried (the policy's fields) and how many run at once."""

    workers: int = 4


@dataclass(frozen=True)
class StoreSettings:
    """Where the documents live (bootbox.store; docs/postgresql.md)."""

    backend: str = "tinydb"
    """``tinydb``: a file in the state directory (the embedded default); ``postgresql``: the
    database ``dsn`` names (bootbox.store.postgresql)."""
    dsn: str = ""
    """libpq connection string or URI for ``backend = "postgresql"``, e.g.
    ``host=/run/postgresql dbname=bootbox`` or ``postgresql://bootbox@db.lab/bootbox``. It may hold
    a password: bootbox never logs it and shows it masked (:func:`mask_dsn`); a ``~/.pgpass`` file
    or ``PGPASSWORD`` keeps it out of the config altogether."""
    connect_timeout: float = 10.0
    """Seconds to wait for the database when connecting."""
    reconnect_max: float = 10.0
    """Longest wait, in seconds, between attempts to reach the database again during an outage
    (the waits start at 0.2 s and double)."""
    outbox_max_bytes: int = 256 * 2**20
    """Most bytes of boot-path writes (hosts, events) queued in ``outbox.jsonl`` in the state
    directory while the database is unreachable; past it they are counted dropped."""


@dataclass(frozen=True)
class ApplianceSettings:
    """Who this appliance is among several sharing one database (docs/postgresql.md)."""

    name: str = ""
    """Shown on every boot event it records (``bootbox host events``); empty: the hostname."""

    @property
    def effective_name(self) -> str:
        return self.name or socket.gethostname()


STORE_BACKENDS = ("tinydb", "postgresql")
_DSN_SECRETS = (
    re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)"),  # key=value form and URI query
    re.compile(r"(://[^/@:?#]*:)([^@/?#]*)(@)"),  # postgresql://user:secret@host
)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``: the only form of it bootbox prints."""
    masked = _DSN_SECRETS[0].sub(lambda m: m.group(1) + "***", dsn)
    return _DSN_SECRETS[1].sub(lambda m: m.group(1) + "***" + m.group(3), masked)


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = True
    profile: str = "demo"


@dataclass(frozen=True)
class UiSettings:
    """The operator's web console (docs/console.md): who may log in, how long a session lasts."""

    users: Mapping[str, str] = field(default_factory=dict)
    """``[ui.users]``: user name → password hash made by ``bootbox user passwd NAME`` (scrypt)."""
    session_ttl: float = 43200.0
    """Seconds a console login lasts (the signed session cookie expires then)."""
    page_size: int = 100
    """Hosts per page of the console's host list."""
    login_attempts: int = 10
    """Failed logins a minute from one client address before the console refuses more (429)."""


PASSWORD_HASH = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")
"""The form of a ``[ui.users]`` hash: ``scrypt$N$r$p$salt$hash`` (base64), as ``bootbox user passwd`` prints."""


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhook]``: how every hook's deliveries are made (bootbox.service.webhooks; docs/events.md)."""

    workers: int = 2
    """Threads that POST deliveries (one hook's deliveries go out one at a time, in order)."""
    timeout: float = 10.0
    """Seconds a receiver has to answer one delivery."""
    first_delay: float = 5.0
    """Seconds before the first retry; each later one waits twice as long, at most ``max_delay``."""
    max_delay: float = 600.0
    retry_horizon: float = 86400.0
    """Seconds after an event within which its delivery is retried; then it is given up (failed)."""
    log_retention: float = 604800.0
    """Seconds a delivery-log entry is kept (``bootbox webhook deliveries``)."""
    log_entries: int = 1000
    """Delivery-log entries kept per hook at most, however recent."""
    queue_limit: int = 10000
    """Deliveries waiting per hook at most; past it new events are dropped (counted, logged)."""


@dataclass(frozen=True)
class Webhook:
    """One ``[[webhooks]]`` table: where matching boot events are POSTed, signed with ``secret``."""

    name: str
    url: str
    events: tuple[str, ...] = ()
    """Event kinds delivered (``dhcp.offer``, ``http.script``, ``booted`` …); empty: every kind."""
    hosts: tuple[str, ...] = ()
    """MACs whose events are delivered; empty: every host."""
    secret: str = field(default="", repr=False)
    secret_file: str = ""
    """A file holding the secret (read at start-up), instead of ``secret`` in the config."""

    def masked(self) -> dict[str, Any]:
        """This hook for display: the secret never shown."""
        return {**dataclasses.asdict(self), "secret": "***" if self.secret else ""}


@dataclass(frozen=True)
class Settings:
    """The whole configuration; immutable once loaded."""

    state_dir: str = "/var/lib/bootbox"
    server_address: str = ""
    log_level: str = "info"
    retry_seconds: int = 60
    disable_plugins: tuple[str, ...] = ()
    secrets_key_file: str = ""
    """Key that encrypts secret answers; empty: ``<state_dir>/secrets.key``. Keep it apart from
    backups of the store if you can: the store alone then reveals no secret."""
    dhcp: DhcpSettings = field(default_factory=DhcpSettings)
    tftp: TftpSettings = field(default_factory=TftpSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    push: PushSettings = field(default_factory=PushSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    dhcp6: Dhcp6Settings = field(default_factory=Dhcp6Settings)
    hosts: HostsSettings = field(default_factory=HostsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    appliance: ApplianceSettings = field(default_factory=ApplianceSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    webhooks: tuple[Webhook, ...] = ()
    """``[[webhooks]]``: each a :class:`Webhook` (docs/events.md)."""
    ui: UiSettings = field(default_factory=UiSettings)
    groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[groups.NAME]``: boot settings of the hosts whose ``group`` rule item is NAME
    (``loader = "ipxe"|"grub"``, ``secure_boot = true|false``; docs/firmware.md; ``cache_urls =
    ["http://…"]``, HTTP caches for their content-addressed boot files; docs/caching.md)."""
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[plugins.NAME]`` tables, passed as they are to the plugin that owns NAME to validate."""

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, for display: the store's DSN with its password masked."""
        data = dataclasses.asdict(self)
        data["store"]["dsn"] = mask_dsn(self.store.dsn)
        data["webhooks"] = [hook.masked() for hook in self.webhooks]
        data["ui"]["users"] = {name: "scrypt$***" for name in self.ui.users}  # a hash still invites guessing
        return data


_SECTIONS = {"dhcp": DhcpSettings, "tftp": TftpSettings, "http": HttpSettings, "demo": DemoSettings, "dns": DnsSettings,
             "push": PushSettings,
             "dhcp6": Dhcp6Settings, "hosts": HostsSettings, "store": StoreSettings, "ui": UiSettings,
             "webhook": WebhookSettings, "appliance": ApplianceSettings}
_GROUP_KEYS = {"loader": ("ipxe", "grub"), "secure_boot": (True, False), "cache_urls": ()}
_LOG_LEVELS = ("debug", "info", "warning", "error")
DHCP_MODES = ("proxy", "full")
ADOPT_MODES = ("auto", "manual")
# BOOTBOX_* variables that are not settings: the CLI's (config file, API URL and token), the demo
# payload's download cache (set by the systemd unit), and the test suite's lab switch and
# screenshot directory (a ``bootbox serve`` a test starts inherits them).
_NOT_SETTINGS = ("BOOTBOX_CONFIG", "BOOTBOX_URL", "BOOTBOX_TOKEN", "BOOTBOX_CA", "BOOTBOX_CACHE", "BOOTBOX_LAB_REQUIRED",
                 "BOOTBOX_ARTIFACTS")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` or raise ConfigError naming ``key``."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, float) or (isinstance(value, str) and not value.strip().lstrip("-").isdigit()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a whole number, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, f"expected a list of names, got {value!r}")
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(key, f"expected a table of names, got {value!r}")
        return {**default, **{str(k): v for k, v in value.items()}}  # merges; "" switches an entry off
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", f"unknown setting; known: {', '.join(sorted(known))}")
    defaults = cls()
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "plugins" and cls is Settings:
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise ConfigError("plugins", "expected [plugins.NAME] tables")
            values[name] = {str(k): dict(v) for k, v in value.items()}
        elif name == "groups" and cls is Settings:
            values[name] = _groups(value)
        elif name == "webhooks" and cls is Settings:
            values[name] = _webhooks(value)
        elif name in _SECTIONS and cls is Settings:
            if not isinstance(value, Mapping):
                raise ConfigError(name, "expected a [section] table")
            values[name] = _build(_SECTIONS[name], value, f"{name}.")
        else:
            values[name] = _coerce(f"{prefix}{name}", value, getattr(defaults, name))
    return cls(**values)


def _cache_urls(where: str, value: Any) -> tuple[str, ...]:
    """``[groups.NAME] cache_urls``: plain ``http://host[:port][/path]`` URLs of HTTP caches in
    front of this appliance (iPXE and ESXi's loader fetch over http; docs/caching.md)."""
    if not isinstance(value, list):
        raise ConfigError(where, "expected a list of http URLs, e.g. [\"http://cache1:8080\"]")
    urls = []
    for i, url in enumerate(value):
        match = re.fullmatch(r"http://[A-Za-z0-9.\-\[\]:]+(?::\d+)?(/[A-Za-z0-9._~/-]*)?", url) if isinstance(url, str) else None
        if match is None:
            raise ConfigError(f"{where}[{i}]", f"{url!r} is not a plain http://host[:port][/path] URL")
        urls.append(url.rstrip("/"))
    return tuple(urls)


def _groups(value: Any) -> dict[str, dict[str, Any]]:
    """``[groups.NAME]`` tables: only the keys of _GROUP_KEYS, with their allowed values."""
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ConfigError("groups", "expected [groups.NAME] tables")
    groups: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        checked: dict[str, Any] = {}
        for key, item in table.items():
            where = f"groups.{name}.{key}"
            if key not in _GROUP_KEYS:
                raise ConfigError(where, f"unknown setting; known: {', '.join(sorted(_GROUP_KEYS))}")
            if key == "cache_urls":  # docs/caching.md
                checked[key] = _cache_urls(where, item)
                continue
            item = _coerce(where, item, True) if key == "secure_boot" else item
            if item not in _GROUP_KEYS[key]:
                raise ConfigError(where, f"use one of {', '.join(map(str, _GROUP_KEYS[key]))}")
            checked[key] = item
        groups[str(name)] = checked
    return groups


_WEBHOOK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _webhooks(value: Any) -> tuple[Webhook, ...]:
    """``[[webhooks]]`` tables: a unique name, an http(s) URL, one secret, MACs spelled one way."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError("webhooks", "expected [[webhooks]] tables")
    hooks: list[Webhook] = []
    for index, table in enumerate(value):
        where = f"webhooks.{table.get('name') if isinstance(table.get('name'), str) else index}"
        for key in ("name", "url"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise ConfigError(f"{where}.{key}", "required: a string")
        blank = Webhook(name="", url="")
        known = [f.name for f in dataclasses.fields(Webhook)]
        for key in table:
            if key not in known:
                raise ConfigError(f"{where}.{key}", f"unknown setting; known: {', '.join(sorted(known))}")
        hook = Webhook(**{key: _coerce(f"{where}.{key}", item, getattr(blank, key)) for key, item in table.items()})
        if not _WEBHOOK_NAME.fullmatch(hook.name):
            raise ConfigError(f"{where}.name", "use lower-case letters, digits, - and _ (it names a directory and a metric label)")
        if any(other.name == hook.name for other in hooks):
            raise ConfigError(f"{where}.name", "two [[webhooks]] have this name")
        scheme, _, rest = hook.url.partition("://")
        if scheme not in ("http", "https") or not rest.split("/")[0]:
            raise ConfigError(f"{where}.url", f"{hook.url!r} is not an http:// or https:// URL")
        if bool(hook.secret) == bool(hook.secret_file):
            raise ConfigError(f"{where}.secret", "set one of secret or secret_file (deliveries are signed with it)")
        macs = tuple(mac.strip().lower().replace("-", ":") for mac in hook.hosts)
        for mac in macs:
            if not _MAC.fullmatch(mac):
                raise ConfigError(f"{where}.hosts", f"{mac!r} is not a MAC address like \"52:54:00:12:34:56\"")
        hooks.append(dataclasses.replace(hook, hosts=macs, events=tuple(kind.strip() for kind in hook.events)))
    return tuple(hooks)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``BOOTBOX_HTTP_PORT=9000`` → ``{"http": {"port": "9000"}}``; ``BOOTBOX_STATE_DIR`` → top level."""
    top = {f.name for f in dataclasses.fields(Settings)} - {"plugins"}
    result: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("BOOTBOX_") or name in _NOT_SETTINGS:
            continue
        key = name[len("BOOTBOX_") :].lower()
        section, _, rest = key.partition("_")
        if section in _SECTIONS and rest:
            result.setdefault(section, {})[rest] = value
        elif key in top:
            result[key] = value
        else:
            raise ConfigError(name, "unknown environment setting")
    return result


def _validate(settings: Settings) -> None:
    for key, port in (
        ("dhcp.port", settings.dhcp.port),
        ("dhcp.boot_server_port", settings.dhcp.boot_server_port),
        ("dhcp.client_port", settings.dhcp.client_port),
        ("tftp.port", settings.tftp.port),
        ("http.port", settings.http.port),
        ("dns.port", settings.dns.port),
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port {port} is outside 0..65535")
    for key, addr in (
        ("dhcp.bind_address", settings.dhcp.bind_address),
        ("tftp.bind_address", settings.tftp.bind_address),
        ("http.bind_address", settings.http.bind_address),
        ("dns.bind_address", settings.dns.bind_address),
    ):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(key, f"{addr!r} is not an IP address") from None
    if settings.server_address:
        try:
            ipaddress.IPv4Address(settings.server_address)
        except ValueError:
            raise ConfigError("server_address", f"{settings.server_address!r} is not an IPv4 address") from None
    _validate_hosts(settings.hosts)
    if settings.dhcp.mode not in DHCP_MODES:
        raise ConfigError("dhcp.mode", f"{settings.dhcp.mode!r} is not a mode; use \"proxy\" or \"full\"")
    if settings.dhcp.rate_limit < 0:
        raise ConfigError("dhcp.rate_limit", "use 0 (no limit) or a positive number of packets per second")
    if settings.dhcp.rate_burst < 0:
        raise ConfigError("dhcp.rate_burst", "use 0 (no limit) or a positive number of packets")
    _validate_full_dhcp(settings.dhcp)
    for table in ("loaders", "grub_loaders", "secure_boot_loaders"):
        for code in getattr(settings.dhcp, table):
            if not code.isdigit() or int(code) > 65535:
                raise ConfigError(f"dhcp.{table}.{code}", "keys are DHCP client-architecture numbers (option 93)")
    for name in settings.dhcp.loader_files:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"dhcp.loader_files.{name}", "keys are served file names, without directories")
    _validate_dhcp6(settings.dhcp6)
    if settings.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError("log_level", f"use one of {', '.join(_LOG_LEVELS)}")
    push = settings.push
    if push.attempts < 1 or push.workers < 1:
        raise ConfigError("push.attempts" if push.attempts < 1 else "push.workers", "must be at least 1")
    for key in ("timeout", "first_delay", "step_min", "step_max", "max_delay"):
        if getattr(push, key) < 0:
            raise ConfigError(f"push.{key}", "must not be negative")
    if push.step_min > push.step_max:
        raise ConfigError("push.step_min", "must not exceed push.step_max")
    if settings.http.threads < 1:
        raise ConfigError("http.threads", "must be at least 1")
    if not 0 <= settings.http.send_threads <= 64:
        raise ConfigError("http.send_threads", "must be between 0 (off) and 64")
    _validate_limits(settings.http, settings.tftp)
    if settings.retry_seconds < 1:
        raise ConfigError("retry_seconds", "must be at least 1")
    if not settings.state_dir:
        raise ConfigError("state_dir", "must not be empty")
    if settings.store.backend not in STORE_BACKENDS:
        raise ConfigError("store.backend", f"{settings.store.backend!r} is not a backend; use \"tinydb\" or \"postgresql\"")
    for user, hashed in settings.ui.users.items():
        if not PASSWORD_HASH.fullmatch(hashed):
            raise ConfigError(f"ui.users.{user}", "expected a hash made by `bootbox user passwd NAME` (scrypt$...)")
    if settings.store.backend == "postgresql" and not settings.store.dsn.strip():
        raise ConfigError("store.dsn", "backend \"postgresql\" needs a dsn, e.g. \"host=/run/postgresql dbname=bootbox\"")
    if len(settings.appliance.name) > 63 or not settings.appliance.name.isprintable():
        raise ConfigError("appliance.name", "use up to 63 printable characters (it names this appliance on the timeline)")
    _validate_webhook(settings.webhook)


def _validate_webhook(webhook: WebhookSettings) -> None:
    """``[webhook]``: a pool, a queue and a log that can hold something; delays that are delays."""
    for key in ("workers", "log_entries", "queue_limit"):
        if getattr(webhook, key) < 1:
            raise ConfigError(f"webhook.{key}", f"expected a whole number, 1 or more; got {getattr(webhook, key)!r}")
    for key in ("timeout", "retry_horizon", "log_retention"):
        if not getattr(webhook, key) > 0:
            raise ConfigError(f"webhook.{key}", f"expected a number of seconds greater than 0; got {getattr(webhook, key)!r}")
    if webhook.first_delay > webhook.max_delay:
        raise ConfigError("webhook.first_delay", "must not exceed webhook.max_delay")


def _validate_limits(http: HttpSettings, tftp: TftpSettings) -> None:
    """The per-client limits (docs/limits.md): each a positive number, and a per-address share
    no larger than the whole."""
    for key, value in (("http.max_body", http.max_body), ("http.per_address_connections", http.per_address_connections),
                       ("tftp.max_transfers", tftp.max_transfers),
                       ("tftp.per_address_transfers", tftp.per_address_transfers),
                       ("tftp.engine_threads", tftp.engine_threads)):
        if value < 1:
            raise ConfigError(key, f"{value} is not allowed; use a whole number of at least 1")
    for key, seconds in (("http.request_timeout", http.request_timeout), ("http.idle_timeout", http.idle_timeout)):
        if not 1 <= seconds <= 86400:  # (NaN fails too)
            raise ConfigError(key, f"{seconds} is not allowed; use a number of seconds from 1 to 86400")
    if http.per_address_connections > http.connection_limit > 0:
        raise ConfigError("http.per_address_connections", f"must not exceed http.connection_limit ({http.connection_limit})")
    if tftp.per_address_transfers > tftp.max_transfers:
        raise ConfigError("tftp.per_address_transfers", f"must not exceed tftp.max_transfers ({tftp.max_transfers})")
    if bool(http.tls_cert) != bool(http.tls_key):
        raise ConfigError("http.tls_key" if http.tls_cert else "http.tls_cert",
                          "set both tls_cert and tls_key (PEM files), or neither")
    if not 0 <= http.tls_port <= 65535:
        raise ConfigError("http.tls_port", f"port {http.tls_port} is outside 0..65535")
    if http.tls_cert and http.tls_port == http.port != 0:
        raise ConfigError("http.tls_port", f"must differ from http.port ({http.port}): firmware fetches plain HTTP there")


def _validate_hosts(hosts: HostsSettings) -> None:
    if hosts.adopt not in ADOPT_MODES:
        raise ConfigError("hosts.adopt", f"{hosts.adopt!r} is not a mode; use \"auto\" or \"manual\"")
    for net in hosts.trusted_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError("hosts.trusted_networks", f"{net!r} is not a network like 198.18.5.0/24") from None
    for key in ("neighbour_cache", "boot_token_ttl", "answer_token_ttl", "discovered_expiry"):
        if not getattr(hosts, key) > 0:
            raise ConfigError(f"hosts.{key}", "must be a positive number of seconds")
    if not hosts.new_hosts_per_second > 0:
        raise ConfigError("hosts.new_hosts_per_second", "must be a positive number of records per second")
    for key in ("new_hosts_per_source", "new_hosts_burst"):
        if getattr(hosts, key) < 1:
            raise ConfigError(f"hosts.{key}", "must be at least 1")


def _validate_dhcp6(dhcp6: Dhcp6Settings) -> None:
    if dhcp6.enabled and not dhcp6.interface:
        raise ConfigError("dhcp6.interface", "the DHCPv6 responder needs the interface to serve (e.g. \"eth1\")")
    if dhcp6.server_address:
        try:
            ipaddress.IPv6Address(dhcp6.server_address)
        except ValueError:
            raise ConfigError("dhcp6.server_address", f"{dhcp6.server_address!r} is not an IPv6 address") from None
    if dhcp6.address_pool:
        try:
            pool = ipaddress.IPv6Network(dhcp6.address_pool)
        except ValueError:
            raise ConfigError("dhcp6.address_pool", f"{dhcp6.address_pool!r} is not an IPv6 prefix like fd42:b007::/64") from None
        if pool.prefixlen > 120:
            raise ConfigError("dhcp6.address_pool", "use a prefix of /120 or shorter")
    for key, port in (("dhcp6.port", dhcp6.port), ("dhcp6.client_port", dhcp6.client_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port {port} is outside 0..65535")


def _ipv4(key: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IPv4 address") from None


def _validate_full_dhcp(dhcp: DhcpSettings) -> None:
    """Check the full-mode keys; they are checked in proxy mode too, so a typo is caught before
    anyone switches modes. What needs the interface (its subnet) is checked when serving."""
    full = dhcp.mode == "full"
    if full and not dhcp.interface:
        raise ConfigError("dhcp.interface", "full mode hands out addresses, so it needs the interface to serve (e.g. \"eth1\")")
    for key in ("range_start", "range_end"):
        if full and not getattr(dhcp, key):
            raise ConfigError(f"dhcp.{key}", "full mode needs an address range (range_start and range_end)")
    addresses = {key: _ipv4(f"dhcp.{key}", getattr(dhcp, key)) for key in ("range_start", "range_end", "router")
                 if getattr(dhcp, key)}
    for index, server in enumerate(dhcp.dns_servers):
        _ipv4(f"dhcp.dns_servers[{index}]", server)
    if "range_start" in addresses and "range_end" in addresses and addresses["range_start"] > addresses["range_end"]:
        raise ConfigError("dhcp.range_end", f"{dhcp.range_end} comes before range_start {dhcp.range_start}")
    network = None
    if dhcp.subnet_mask:
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{dhcp.subnet_mask}").prefixlen
        except ValueError:
            raise ConfigError("dhcp.subnet_mask", f"{dhcp.subnet_mask!r} is not a netmask like 255.255.255.0") from None
        if "range_start" in addresses:
            network = ipaddress.IPv4Network(f"{addresses['range_start']}/{prefix}", strict=False)
    if network is not None:
        for key, address in addresses.items():
            if address not in network:
                raise ConfigError(f"dhcp.{key}", f"{address} is outside the subnet {network}")
    for mac, fixed in dhcp.reservations.items():
        key = f"dhcp.reservations.{mac}"
        if not _MAC.fullmatch(mac.lower()):
            raise ConfigError(key, "keys are MAC addresses like \"52:54:00:12:34:56\"")
        reserved = _ipv4(key, fixed)
        if network is not None and reserved not in network:
            raise ConfigError(key, f"{fixed} is outside the subnet {network}")
    if not 60 <= dhcp.lease_seconds <= 0xFFFFFFFE:
        raise ConfigError("dhcp.lease_seconds", "use at least 60 seconds (and less than 136 years)")
    if dhcp.domain and not all(_LABEL.fullmatch(label) for label in dhcp.domain.lower().rstrip(".").split(".")):
        raise ConfigError("dhcp.domain", f"{dhcp.domain!r} is not a domain name like lab.example")


def _read_text(path: Path) -> str:
    """The config file as text; a ConfigError (never a traceback) if it cannot be read or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), f"is not UTF-8 text (byte {raw[exc.start]:#04x} on line {line}); "
                                     "save it as UTF-8, as TOML requires") from None


# Numeric settings that must be at least 1, or greater than 0; every other number must be
# finite and 0 or more (0 often means "off" or "no limit": see appliance/bootbox.toml).
_AT_LEAST_ONE = {"tftp.retries": "tries", "http.connection_limit": "connections", "http.threads": "threads",
                 "push.attempts": "attempts", "push.workers": "threads", "retry_seconds": "seconds",
                 "ui.page_size": "hosts", "ui.login_attempts": "attempts"}
_ABOVE_ZERO = {"http.event_heartbeat": "seconds", "tftp.timeout": "seconds", "dns.timeout": "seconds", "store.connect_timeout": "seconds",
               "store.reconnect_max": "seconds", "store.outbox_max_bytes": "bytes",
               "ui.session_ttl": "seconds"}


def _validate_numbers(settings: Settings) -> None:
    """Every numeric setting, in every section: a clear error naming the key and the expected
    form, so a negative limit never gives a server that starts but accepts nothing."""
    sections: list[tuple[str, Any]] = [("", settings)]
    sections += [(f"{name}.", getattr(settings, name)) for name in _SECTIONS if hasattr(settings, name)]
    for prefix, values in sections:
        for item in dataclasses.fields(values):
            value = getattr(values, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = f"{prefix}{item.name}"
            if key in _AT_LEAST_ONE and value < 1:
                raise ConfigError(key, f"expected a whole number of {_AT_LEAST_ONE[key]}, 1 or more; got {value!r}")
            if key in _ABOVE_ZERO and not (math.isfinite(value) and value > 0):
                raise ConfigError(key, f"expected a number of {_ABOVE_ZERO[key]} greater than 0 (e.g. 1.5); got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(key, f"expected a finite number, 0 or more; got {value!r}")


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults ← TOML file ← ``BOOTBOX_*`` environment ← explicit overrides (CLI flags).

    ``path=None`` reads ``$BOOTBOX_CONFIG`` or ``/etc/bootbox/bootbox.toml`` when they exist; an
    explicitly given path must exist.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    explicit = path is not None or bool(env.get("BOOTBOX_CONFIG"))
    config_path = path or Path(env.get("BOOTBOX_CONFIG") or DEFAULT_CONFIG_PATH)
    if config_path.exists():
        try:
            data = tomllib.loads(_read_text(config_path))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(config_path), f"not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError("config", f"{config_path} does not exist")
    data = _merge(data, _env_overrides(env))
    data = _merge(data, overrides or {})
    settings = _build(Settings, data, "")
    _validate(settings)
    _validate_numbers(settings)
    return settings
