"""Bootbox's vocabulary: immutable value types shared by the core, the servers and plugins.

Everything here is a frozen dataclass or a pure helper, so a value can cross threads (a DHCP
thread, an HTTP worker, the event writer) without locks. Mutation happens by building a new
value (``dataclasses.replace``) and handing it to the service, which owns all state.
"""

from __future__ import annotations

import re
import time
import uuid as _uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from bootbox.errors import ValidationError

_MAC_HEX = re.compile(r"^[0-9a-f]{12}$")


def normalize_mac(value: str, field_name: str = "mac") -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for any common spelling (case, ``-``, ``.``, ``:``, none).

    Rules, URLs and DHCP all spell MACs differently; comparing normalised strings is the one
    place that difference is absorbed.
    """
    hexdigits = re.sub(r"[^0-9a-fA-F]", "", value or "").lower()
    if not _MAC_HEX.match(hexdigits) or re.search(r"[^0-9a-fA-F:.\- ]", value):
        raise ValidationError(field_name, f"{value!r} is not a MAC address (want aa:bb:cc:dd:ee:ff)")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


def normalize_uuid(value: str, field_name: str = "uuid") -> str:
    """Return the canonical lower-case dashed form of a UUID given in any common spelling."""
    try:
        return str(_uuid.UUID(re.sub(r"[^0-9a-fA-F]", "", value or "")))
    except ValueError:
        raise ValidationError(field_name, f"{value!r} is not a UUID") from None


def mac_key(mac: str) -> str:
    """The MAC as 12 lower-case hex digits: safe in file names and URLs."""
    return normalize_mac(mac).replace(":", "")


class Firmware(StrEnum):
    """How the client is booting right now, as told by DHCP option 93/60/77."""

    BIOS = "bios"
    UEFI = "uefi"
    UEFI_HTTP = "uefi-http"


class Platform(StrEnum):
    """CPU family of the client, derived from the architecture code."""

    X86 = "x86"
    X86_64 = "x86_64"
    ARM32 = "arm32"
    ARM64 = "arm64"


@dataclass(frozen=True)
class ArchInfo:
    """What one DHCP client-architecture code (option 93, RFC 4578 + IANA) means."""

    code: int
    name: str
    firmware: Firmware
    platform: Platform


# IANA "Processor Architecture Types". 7 and 9 are both treated as x64 UEFI: RFC 4578 and the
# IANA registry disagree (erratum 4624) and real x64 firmware sends 7 (facts/pxe-dhcp.md §4).
ARCHITECTURES: Mapping[int, ArchInfo] = {
    a.code: a
    for a in (
        ArchInfo(0, "x86 BIOS", Firmware.BIOS, Platform.X86),
        ArchInfo(6, "x86 UEFI", Firmware.UEFI, Platform.X86),
        ArchInfo(7, "x64 UEFI", Firmware.UEFI, Platform.X86_64),
        ArchInfo(9, "x64 UEFI", Firmware.UEFI, Platform.X86_64),
        ArchInfo(10, "ARM32 UEFI", Firmware.UEFI, Platform.ARM32),
        ArchInfo(11, "ARM64 UEFI", Firmware.UEFI, Platform.ARM64),
        ArchInfo(15, "x86 UEFI HTTP", Firmware.UEFI_HTTP, Platform.X86),
        ArchInfo(16, "x64 UEFI HTTP", Firmware.UEFI_HTTP, Platform.X86_64),
        ArchInfo(18, "ARM32 UEFI HTTP", Firmware.UEFI_HTTP, Platform.ARM32),
        ArchInfo(19, "ARM64 UEFI HTTP", Firmware.UEFI_HTTP, Platform.ARM64),
        ArchInfo(20, "x86 BIOS HTTP", Firmware.BIOS, Platform.X86),
    )
}


BUILD_ARCH: Mapping[Platform, str] = {
    Platform.X86: "i386",
    Platform.X86_64: "x86_64",
    Platform.ARM32: "arm32",
    Platform.ARM64: "arm64",
}
"""A platform as iPXE's ``${buildarch}`` names it: the ``arch`` host attribute's vocabulary."""

PACKET_FACTS: frozenset[str] = frozenset({"vendor_class", "user_class"})
"""Facts that describe one DHCP packet rather than the machine: the latest packet's value
replaces the host's, and an absent one removes it (a PXE ROM after iPXE sends no user class)."""


@dataclass(frozen=True)
class Machine:
    """A client as one DHCP/PXE request describes it: the DHCP server's whole view of a host.

    ``server_ip`` is the local address the request arrived on, so answers name an address the
    client can reach even on a multi-homed appliance.
    """

    mac: str
    arch: int | None = None
    vendor_class: str = ""
    user_class: str = ""
    is_ipxe: bool = False
    uuid: str | None = None
    server_ip: str = ""
    client_ip: str | None = None
    port: int = 67

    @property
    def http_boot(self) -> bool:
        """True for UEFI HTTP boot clients (option 60 ``HTTPClient``)."""
        return self.vendor_class.startswith("HTTPClient")

    @property
    def arch_info(self) -> ArchInfo | None:
        return ARCHITECTURES.get(self.arch) if self.arch is not None else None

    @property
    def firmware(self) -> Firmware:
        info = self.arch_info
        if self.http_boot:
            return Firmware.UEFI_HTTP
        return info.firmware if info else Firmware.BIOS

    def facts(self) -> dict[str, str]:
        """The host attributes this packet reports, as rules match them (like SMBIOS facts).

        ``arch`` and ``platform`` are spelled as iPXE reports ``${buildarch}`` and ``${platform}``
        (``arm64``, ``x86_64``, ``i386``; ``efi``, ``pcbios``), so one rule (``arch=arm64``)
        matches a host whether the fact came from its DHCP packet or from iPXE's query string,
        and a GRUB-booted host, which never runs iPXE, is matched on what its DHCP said.
        ``vendor_class`` and ``user_class`` describe this packet only: an empty one clears the
        host's (see :data:`PACKET_FACTS`). An unknown architecture code gives no ``arch``.
        """
        facts = {"firmware": str(self.firmware), "vendor_class": self.vendor_class, "user_class": self.user_class}
        info = self.arch_info
        if info is not None:
            facts["arch"] = BUILD_ARCH[info.platform]
            facts["platform"] = "pcbios" if self.firmware is Firmware.BIOS else "efi"
        if self.uuid:
            facts["uuid"] = self.uuid
        if self.client_ip and self.client_ip != "0.0.0.0":
            facts["ipv6" if ":" in self.client_ip else "ipv4"] = self.client_ip
        return facts


@dataclass(frozen=True)
class BootSpec:
    """The boot part of a DHCP answer: what the client should load next and from where.

    ``boot_file`` is a TFTP file name for PXE ROMs and an absolute ``http://`` URL for iPXE and
    UEFI HTTP clients. ``vendor_class`` is echoed in option 60 (``PXEClient``/``HTTPClient``).
    """

    boot_file: str
    next_server: str
    vendor_class: str = "PXEClient"
    reason: str = ""


class HostState(StrEnum):
    """Where a host is in its boot, as the operator sees it in ``bootbox host list``."""

    DISCOVERED = "discovered"  # seen by DHCP, nothing fetched yet
    BOOTING = "booting"  # loader or script fetched
    WAITING = "waiting"  # matched no profile; retrying
    NEEDS_ANSWERS = "needs-answers"  # held: required answers of its host profile are missing
    CONFLICT = "conflict"  # two machines claimed its identity; no secrets until an operator resolves it
    BOOTED = "booted"  # kept so hosts stored by older versions load; reports now lead to UP
    UP = "up"  # the booted OS reported in with a new boot ID; pushes not started yet
    CONFIGURING = "configuring"  # plugins are pushing configuration (bootbox_host_up)
    CONFIGURED = "configured"  # every push succeeded (or there was nothing to push)
    FAILED = "failed"  # a push gave up; ``Host.reason`` says why


REPORTED_STATES = frozenset({HostState.BOOTED, HostState.UP, HostState.CONFIGURING, HostState.CONFIGURED,
                             HostState.FAILED})
"""States of a host whose current boot has reported in: a report without a new boot ID is a repeat."""


@dataclass(frozen=True)
class Host:
    """A machine bootbox knows, with the facts it reported and its cached associations.

    ``attrs`` holds the rule-matchable facts (vendor, model, serial, uuid, asset, ipv4, hostname,
    domain, arch, platform, …); ``associations`` maps an item type (``image``, ``host_profile``,
    ``group``) to the name chosen on first boot, reused on every later boot.
    """

    mac: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    state: HostState = HostState.DISCOVERED
    associations: Mapping[str, str] = field(default_factory=dict)
    profile: str = ""
    boot_id: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    note: str = ""
    reason: str = ""
    """Why the host is ``failed`` or ``needs-answers`` (empty otherwise)."""
    pushes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The last push of each plugin for this host: ``{plugin: {result, message, attempts, boot_id, time}}``."""
    boot_nonce: str = ""
    """This boot's random nonce: its up and answer tokens are keyed HMACs of it (bootbox.service.answers.tokens);
    a new boot draws a new one, which voids the earlier tokens. Useless without the secrets key."""
    boot_started: float = 0.0
    """When this boot's tokens were drawn (they expire from here)."""
    adopted: bool = False
    """An operator adopted the host (``[hosts] adopt = "manual"``: only adopted hosts get secrets)."""
    verified: Mapping[str, str] = field(default_factory=dict)
    """What the network vouched for (bootbox.service.identity): ``ipv4``/``ipv6``, where its last
    verified request came from (what DNS publishes), and ``uuid``, the SMBIOS UUID bound at its
    first verified boot (another one later is a ``conflict``). ``attrs`` keep what was *said*."""
    name: str = ""
    """The DNS name an operator gave it (``bootbox host adopt MAC --hostname``)."""
    checks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The last compliance check of each plugin that checks hosts (e.g. the esxi plugin's host
    profile): ``{plugin: {result, message, time}}``, set through ``PluginContext.report_check``
    and shown by ``bootbox host list`` without contacting any host."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "attrs": dict(self.attrs),
            "state": str(self.state),
            "associations": dict(self.associations),
            "profile": self.profile,
            "boot_id": self.boot_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "note": self.note,
            "reason": self.reason,
            "pushes": {name: dict(push) for name, push in self.pushes.items()},
            "boot_nonce": self.boot_nonce,
            "boot_started": self.boot_started,
            "adopted": self.adopted,
            "verified": dict(self.verified),
            "name": self.name,
            "checks": {name: dict(check) for name, check in self.checks.items()},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Host":
        return cls(
            mac=normalize_mac(doc["mac"]),
            attrs=dict(doc.get("attrs") or {}),
            state=HostState(doc.get("state") or HostState.DISCOVERED),
            associations=dict(doc.get("associations") or {}),
            profile=str(doc.get("profile") or ""),
            boot_id=doc.get("boot_id"),
            first_seen=float(doc.get("first_seen") or 0.0),
            last_seen=float(doc.get("last_seen") or 0.0),
            note=str(doc.get("note") or ""),
            reason=str(doc.get("reason") or ""),
            pushes={str(k): dict(v) for k, v in (doc.get("pushes") or {}).items()},
            boot_nonce=str(doc.get("boot_nonce") or ""),
            boot_started=float(doc.get("boot_started") or 0.0),
            adopted=bool(doc.get("adopted")),
            verified={str(k): str(v) for k, v in (doc.get("verified") or {}).items()},
            name=str(doc.get("name") or ""),
            checks={str(k): dict(v) for k, v in (doc.get("checks") or {}).items()},
        )


@dataclass(frozen=True)
class Profile:
    """A named boot recipe of one ``kind`` (``linux``, ``esxi``, …) owned by a boot-kind plugin.

    ``spec`` is kind-specific (for ``linux``: kernel, initrd, cmdline) and validated by the
    plugin that registered the kind.
    """

    name: str
    kind: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "spec": dict(self.spec), "description": self.description}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Profile":
        return cls(
            name=str(doc["name"]),
            kind=str(doc["kind"]),
            spec=dict(doc.get("spec") or {}),
            description=str(doc.get("description") or ""),
        )


class EventKind(StrEnum):
    """The steps of a boot, in the order a healthy boot takes them."""

    DHCP_OFFER = "dhcp.offer"
    DHCP_ACK = "dhcp.ack"
    DHCP_IGNORED = "dhcp.ignored"
    TFTP_SENT = "tftp.sent"
    TFTP_FAILED = "tftp.failed"
    HTTP_SCRIPT = "http.script"
    HTTP_FILE = "http.file"
    HTTP_DENIED = "http.denied"
    BOOTED = "booted"
    RULES = "rules"
    STATE = "state"
    PUSH = "push"  # one attempt of one plugin's after-boot push, and its result
    ANSWERS = "answers"  # an answer file served, or a host held for missing answers
    AUDIT = "audit"  # a refused request for a host's answer file (403)


@dataclass(frozen=True)
class BootEvent:
    """One step of one host's boot, as shown by ``bootbox host events MAC``."""

    mac: str
    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "mac": self.mac, "kind": self.kind, "message": self.message, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "BootEvent":
        return cls(
            mac=str(doc["mac"]),
            kind=str(doc["kind"]),
            message=str(doc.get("message") or ""),
            data=dict(doc.get("data") or {}),
            time=float(doc.get("time") or 0.0),
        )


@dataclass(frozen=True)
class BootContext:
    """The URLs a boot script may use, for one host, built from the base URL it asked on.

    Boot-kind plugins get one of these in ``bootbox_boot_script`` so they never hard-code the
    appliance's address or URL layout.
    """

    base_url: str
    mac: str
    firmware: str = ""
    answer_token: str = ""
    """Single-use token for this boot's answer files (empty: the host has no host profile)."""
    up_token: str = ""
    """The host's credential for ``up_url`` (empty in contexts built without one)."""
    cache_urls: tuple[str, ...] = ()
    """The caches of the host's group (``[groups.NAME] cache_urls``), for its content-addressed
    boot files only (``bootbox.asset_urls``; docs/caching.md). Empty: everything from the appliance."""

    @property
    def _host_base(self) -> str:
        return f"{self.base_url.rstrip('/')}/boot/hosts/{self.mac.replace(':', '')}"

    @property
    def script_url(self) -> str:
        """This host's own script: chaining to it again is how a boot retries."""
        return f"{self._host_base}/script.ipxe"

    def asset_url(self, name: str) -> str:
        """URL of a file of this host's profile (kernel, initrd, modules), served with Range."""
        return f"{self._host_base}/assets/{name}"

    def asset_path(self, name: str) -> str:
        """The same file as a path on the boot server, for loaders that fetch over the protocol
        they came in on (GRUB reads it over TFTP, or HTTP when it was HTTP-booted)."""
        return f"/boot/hosts/{self.mac.replace(':', '')}/assets/{name}"

    @property
    def callback_url(self) -> str:
        """Where the booted OS reports in (``POST``), with this boot's up token."""
        url = f"{self.base_url.rstrip('/')}/api/v1/hosts/{self.mac}/booted"
        return f"{url}?token={self.up_token}" if self.up_token else url

    @property
    def up_url(self) -> str:
        """Where the booted OS reports "up" with Auto Deploy's status codes (``POST``; retry on 503)."""
        return f"{self.base_url.rstrip('/')}/api/v1/hosts/{self.mac}/up?token={self.up_token}"

    def answer_url(self, name: str = "") -> str:
        """URL of one of this boot's answer files (``name=""``: the directory, for cloud-init's
        ``ds=nocloud-net;s=``). Empty when the host has no host profile."""
        if not self.answer_token:
            return ""
        return f"{self._host_base}/answers/{self.answer_token}/{name}"
