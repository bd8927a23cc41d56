"""BootService: the one object the protocol servers, the web app and the CLI's API talk to.

It composes the store, the in-memory host index, the event journal and the plugin manager,
and calls the hooks (through pluggy; per plugin through ``bootbox.hooks.calls``). The servers
see only its bound methods (``decide``, ``open_tftp``, ``host_script`` …), never the store or
pluggy; the web app calls only its public methods, never one of its parts.

Its parts each do one job and are handed the few collaborators they use (the settings, the host
index, the store, ``record``, a bound method of the service), never the service itself, so none of
them imports this module: :class:`~bootbox.service.profiles.ProfileRepository` (image profiles),
:class:`~bootbox.service.registries.Registries` (what plugins register),
:class:`~bootbox.service.rulebook.RuleBook` (rule sets), :class:`~bootbox.service.firmware.FirmwareBoot`
(loaders and GRUB files), :class:`~bootbox.service.answers.files.HostConfig` (host profiles,
answers, answer files) and :class:`~bootbox.service.afterboot.AfterBoot` (report-ins and pushes).

Boot-path methods read memory and append to the journal; they never wait on a store write.
Operator writes (profiles) are written through to the store before they return, so an
acknowledged write survives a crash.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import pluggy

from bootbox.core.render import ipxe as render
from bootbox.core import rules
from bootbox.core.caches import group_cache_urls
from bootbox.hooks import calls
from bootbox.service.afterboot import AfterBoot
from bootbox.service.bootmetrics import BootTally, TallySnapshot
from bootbox.service.eventfeed import EventFeed
from bootbox.service.webhooks import Webhooks
from bootbox.config import Settings
from bootbox.hooks.context import PluginContext, PluginStore
from bootbox.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from bootbox.service.firmware import FirmwareBoot
from bootbox.service.profiles import ProfileRepository
from bootbox.core.render.grub import waiting_config as grub_waiting_config
from bootbox.core.hostprofile import HostProfile
from bootbox.service.answers.books import HostProfileBook
from bootbox.service.answers.files import AnswerKind, HostConfig
from bootbox.service.answers.tokens import new_nonce
from bootbox.service.identity import Identity, Verdict
from bootbox.service.newhosts import AWAITING_ADOPTION, NewHostGate, NewHostRefused, Sweeper, expired
from bootbox.store.hostlog import HostLog
from bootbox.service.hostindex import HostIndex, HostPersister
from bootbox.runtime.pacing import BOOT_PATH
from bootbox.store.journal import Journal
from bootbox.model import (
    BootContext,
    BootEvent,
    BootSpec,
    EventKind,
    Host,
    HostState,
    Machine,
    PACKET_FACTS,
    REPORTED_STATES,
    Profile,
    normalize_mac,
    normalize_uuid,
)
from bootbox.hooks.manager import PluginInfo, plugin_infos
from bootbox.service.registries import ProfileKind, Registries
from bootbox.service.rulebook import RuleBook
from bootbox.store import Store
from bootbox.store.apitoken import load_or_create_token, token_matches

CONSOLE_KEY_FILE = "console-key"
DOCTOR_RESULT_FILE = "doctor-last.json"
"""Where ``bootbox doctor`` keeps its last result in the state dir (the console's Health page)."""

log = logging.getLogger("bootbox.service")


# iPXE query parameter → host attribute that rules match on.
_PARAM_ATTRS: dict[str, str] = {
    "uuid": "uuid",
    "serial": "serial",
    "asset": "asset",
    "manufacturer": "vendor",
    "product": "model",
    "buildarch": "arch",
    "platform": "platform",
    "ip": "ipv4",
    "hostname": "hostname",
    "domain": "domain",
}


def _clean_attr(value: str) -> str:
    """Trim and drop control characters: the values come from firmware and end up in scripts."""
    return "".join(ch for ch in value.strip() if ch.isprintable())[:256]


@dataclass(frozen=True)
class ServiceCounts:
    """What ``/api/v1/status`` reports of the service: hosts, profiles, the journal's counters."""

    hosts: int
    profiles: int
    journal: dict[str, Any]
    refused: dict[str, int] = field(default_factory=dict)
    """Requests refused because the requester may not act for the host it named (identity)."""


class BootService:
    """The boot appliance's core: decisions, host records, events, profiles, plugin calls."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        journal: Journal,
        pm: pluggy.PluginManager,
        *,
        host_log: HostLog | None = None,
        appliance_name: str = "",
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.appliance_name = appliance_name
        self.pm = pm
        self.host_log = host_log or HostLog(None)
        self.hosts = HostIndex(self.host_log.load(parse=Host.from_dict).values())
        self._persister = HostPersister(self.hosts, self.host_log)
        self.tally = BootTally(self.hosts.get)  # boots, durations, pushes for /metrics (bootbox.service.bootmetrics)
        self.feed = EventFeed(journal)  # events with IDs for live readers (bootbox.service.eventfeed)
        self.webhooks = Webhooks(settings, self.feed)  # [[webhooks]]: the feed, POSTed off the boot path
        self.registries = Registries()
        self.kinds: dict[str, ProfileKind] = self.registries.kinds
        self.item_types: dict[str, str] = self.registries.item_types
        self.attributes: dict[str, str] = self.registries.attributes
        self._profiles = ProfileRepository(store, kinds=lambda: self.registries.kinds)
        self.rules = RuleBook(
            store,
            attributes=lambda: self.attributes,
            item_types=lambda: self.item_types,
            profile_exists=lambda name: self.profile_or_none(name) is not None,
        )
        self.hostconfig = HostConfig(
            settings, store, hosts=self.hosts, record=self.record,
            render_answer_file=lambda **kwargs: self.pm.hook.bootbox_render_answer_file(**kwargs),
        )
        self.identity = Identity.from_settings(settings.hosts)
        self.new_hosts = NewHostGate(settings.hosts)
        self._sweeper = Sweeper(self.expire_discovered)
        self._refusals_logged = (0.0, 0)
        self.after_boot = AfterBoot(settings.push, hosts=self.hosts, record=self.record, pm=pm,
                                    up_token_ok=self.hostconfig.up_token_ok, answers=self.hostconfig.push_answers)
        self.firmware = FirmwareBoot(settings, hosts=self.hosts, decide=self.rules.decide, record=self.record,
                                     host_script=self.host_script, host_asset=self.host_asset)
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Run the start-up hooks (configure, startup, kinds, item types); start the write-behind.

        Start-up and the ``register`` hooks are called plugin by plugin (``bootbox.hooks.calls``):
        each plugin gets its own context, and every registration records the plugin that made it.
        """
        self.pm.hook.bootbox_configure(settings=self.settings)
        for call in calls.per_plugin(self.pm, "bootbox_startup"):
            call(context=self._plugin_context(call.plugin))
        calls.register_each(self.pm, "bootbox_register_profile_kinds", self.registries.register_kind)
        calls.register_each(self.pm, "bootbox_register_item_types", self.registries.register_item_type)
        calls.register_each(self.pm, "bootbox_register_attributes", self.registries.register_attribute)
        self.hostconfig.register_from(self.pm)
        self.rules.load()
        self._persister.start()
        self._sweeper.start()
        self._started = True
        self.after_boot.resume()  # rounds a stop cut off (issue 17): no host stays "pushes running"
        self.webhooks.start()  # pending deliveries resume (bootbox.service.webhooks)
        for warning in self.firmware.startup_warnings():
            log.warning("%s", warning)

    def _plugin_context(self, plugin: str) -> PluginContext:
        data_dir = self.settings.state_path / "plugins" / plugin
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return PluginContext(
            name=plugin,
            settings=self.settings,
            data_dir=data_dir,
            store=PluginStore(self.store, plugin),
            record=self.record,
            host=self.host,
            hosts=self.list_hosts,
            profile=self.profile,
            profiles=self.profiles,
            put_profile=self.put_profile,
            delete_profile=self.delete_profile,
            image_packages=self.image_packages,
            image_injections=self.image_injections,
            rules_using=self.rules_using,
            associations=self.associate,
            host_profile_files=lambda host: self.hostconfig.render(
                host, base_url=self.firmware.base_url_for(host.attrs.get("ipv4") or "127.0.0.1"), masked=False),
            answers=self.hostconfig.push_answers,
            report_check=lambda mac, result, message="": self._report_check(plugin, mac, result, message),
        )

    def _report_check(self, plugin: str, mac: str, result: str, message: str = "") -> None:
        """``PluginContext.report_check``: keep a plugin's last compliance result on the host."""
        mac = normalize_mac(mac)
        if self.hosts.get(mac) is None:
            return
        check = {"result": str(result), "message": str(message)[:256], "time": time.time()}

        def change(host: Host | None) -> Host:
            base = host or Host(mac=mac)
            return replace(base, checks={**base.checks, plugin: check})

        self.hosts.update(mac, change)

    def plugin_blueprints(self) -> list[Any]:
        """Blueprints plugins add to the web app (``bootbox_register_routes``)."""
        return calls.plugin_blueprints(self.pm)

    def image_packages(self, host: Host, profile: Profile) -> list[str]:
        """Packages plugins inject into what ``host`` boots (``bootbox_image_inject`` for the
        image ``profile.kind``/``profile.name``), in pluggy's order (the last registered plugin's
        first), each plugin's in the order it gave them."""
        try:
            return [package for _, package in self.image_injections(profile.kind, profile.name, host)]
        except Exception as exc:  # on the boot path a plugin's failure is logged, never raised
            log.exception("%s plugin hook bootbox_image_inject failed", host.mac)
            self.record(host.mac, EventKind.STATE, f"plugin hook bootbox_image_inject failed: {exc}",
                        hook="bootbox_image_inject")
            return []

    def rules_using(self, item_type: str, value: str) -> list[str]:
        """Names of the rules (working or active set) that assign ``item_type=value``."""
        return sorted({rule.name for which in ("working", "active") for rule in self.rules.get(which).rules
                       if (item_type, value) in rule.items})

    def image_injections(self, image_kind: str, image_name: str, host: Host | None = None) -> list[tuple[str, str]]:
        """``[(plugin, package)]``: what each plugin injects into an image
        (``bootbox_image_inject``), called plugin by plugin so each package keeps its plugin's
        name; a plugin's exception propagates (an image build must not leave a package out)."""
        out: list[tuple[str, str]] = []
        for call in calls.per_plugin(self.pm, "bootbox_image_inject"):
            for result in call(image_kind=image_kind, image_name=image_name, host=host) or []:
                out += [(call.plugin, str(package)) for package in result or []]
        return out

    def close(self) -> None:
        """Flush hosts and events; wait for after-boot work (bounded); let plugins clean up."""
        self.feed.close()
        self.after_boot.close()
        self._sweeper.stop()
        if self._started:
            self._persister.stop()
            calls.call_each(self.pm, "bootbox_shutdown", on_error=_log_shutdown_failure)
        self.webhooks.close()  # after every event of the stop is recorded: they are queued too
        self.journal.flush()

    # ---------------------------------------------------------------- events

    def record(self, mac: str, kind: str, message: str, /, **data: Any) -> BootEvent:
        """Append one boot step to the host's timeline (memory + journal, never the store),
        naming the appliance that served it (``[appliance] name``; several may share a database)."""
        if self.appliance_name:
            data.setdefault("appliance", self.appliance_name)
        event = BootEvent(mac=mac, kind=str(kind), message=message, data=data)
        self.feed.publish(event)  # the journal, and the live readers
        self.tally.observe(event)
        log.info("%s %s %s", mac, kind, message)
        return event

    def _see(self, mac: str, state: HostState | None = None, attrs: Mapping[str, str] | None = None,
             *, clear: frozenset[str] = frozenset(), source: str = "", began: float | None = None) -> Host:
        """Record that ``mac`` was seen, with the facts it reported: non-empty ``attrs`` replace
        the host's; an empty value of a key in ``clear`` removes it (a per-packet DHCP fact).

        ``began`` is when the step that reports ``state`` started: a step that started before
        the host's last report-in belongs to the boot that reported (its record merely came in
        late, e.g. a TFTP transfer whose last ACK was handled after the host was up), so it
        leaves a reported state (up, configured...) alone; a new boot's first step moves it.
        The check is inside the index update, which the report-in's own update serialises with."""
        now = time.time()
        if self.hosts.get(mac) is None and not self.new_hosts.allow(source):  # bootbox.service.newhosts
            return Host(mac=mac, attrs={**(attrs or {}), "mac": mac}, first_seen=now, last_seen=now)  # not recorded

        def change(host: Host | None) -> Host:
            host = host or Host(mac=mac, first_seen=now)
            new_attrs = dict(host.attrs)
            for key, value in (attrs or {}).items():
                if value:
                    new_attrs[key] = value
                elif key in clear:
                    new_attrs.pop(key, None)
            new_attrs["mac"] = mac
            keep = began is not None and host.state in REPORTED_STATES and began < self.after_boot.reported_at(mac)
            return replace(host, attrs=new_attrs, state=host.state if keep or not state else state, last_seen=now)

        return self.hosts.update(mac, change)

    # ---------------------------------------------------------------- DHCP

    def decide(self, machine: Machine) -> BootSpec | None:
        """Answer a PXE client's DHCP request (called on the DHCP thread; memory only): the
        loader its architecture, group and rule items call for (bootbox.service.firmware).

        Every DHCP path (proxy, full, DHCPv6; PXE ROM, shim, GRUB, HTTP boot, iPXE) comes
        through here, so this is where the facts the packet carries (arch, platform, firmware,
        vendor and user class, UUID, address: :meth:`Machine.facts`) land on the host, *before*
        any rule decision: the loader choice now and the first-boot association later, which
        for a GRUB-booted host (ARM64, Secure Boot) has nothing else to go on.
        """
        BOOT_PATH.touch()  # background writers hold back while packets keep coming (bootbox.runtime.pacing)
        self._see(machine.mac, None, machine.facts(), clear=PACKET_FACTS)  # a new host starts DISCOVERED
        return self.firmware.decide(machine)

    def dhcp_answered(self, machine: Machine, spec: BootSpec, port: int) -> None:
        """Record that the proxy answered ``machine`` (an OFFER on 67, an ACK on 4011); its
        facts were recorded by :meth:`decide`."""
        kind = EventKind.DHCP_OFFER if port in (self.settings.dhcp.port, self.settings.dhcp6.port) else EventKind.DHCP_ACK
        self.record(
            machine.mac,
            kind,
            f"{'offer' if kind == EventKind.DHCP_OFFER else 'boot-server ack'}: {spec.boot_file} ({spec.reason})",
            boot_file=spec.boot_file,
            arch=machine.arch,
            ipxe=machine.is_ipxe,
            port=port,
        )

    # ---------------------------------------------------------------- TFTP and loaders

    def _mac_for_ip(self, ip: str) -> str:
        mac = self.identity.neighbours.mac_of(ip, wait=False) or self.hosts.mac_for_ip(ip)  # evidence first, then what was said
        return mac or f"ip:{ip}"

    def open_tftp(self, name: str, client: tuple[str, int]) -> BinaryIO:
        """Open a loader, a generated GRUB config or a host's profile file for a TFTP read;
        raises NotFound / Forbidden (mapped to TFTP errors)."""
        return self.firmware.open_tftp(name, client)

    def tftp_done(self, record: Any) -> None:
        """Record a finished TFTP transfer on the host that made it."""
        mac = self._mac_for_ip(record.client_ip)
        if record.ok:
            if not mac.startswith("ip:"):
                began = time.time() - record.duration
                self._see(mac, HostState.BOOTING, began=began)
                if began >= self.after_boot.reported_at(mac):  # not for a late record of a boot that reported
                    self.firmware.loader_sent(mac, record.filename)
            self.record(mac, EventKind.TFTP_SENT, f"tftp {record.filename} ({record.bytes_sent} bytes)",
                        file=record.filename, bytes=record.bytes_sent, ip=record.client_ip, blksize=record.blksize)
        else:
            self.record(mac, EventKind.TFTP_FAILED, f"tftp {record.filename} failed: {record.error}",
                        file=record.filename, error=record.error, ip=record.client_ip)

    def grub_file(self, path: str, client_ip: str, base_url: str) -> str | None:
        """A GRUB file bootbox generates (``grub/grub.cfg``, ``grub/hosts/<mac>.cfg``) for GRUB
        that came in over HTTP, or None when ``path`` is not one."""
        return self.firmware.generated(path, client_ip, base_url)

    def loader_path(self, name: str, client_ip: str, *, record: bool = True) -> Path:
        """A loader served over HTTP to UEFI HTTP-boot clients (same files as TFTP)."""
        path = self.firmware.loader_path(name)
        if record:
            mac = self._mac_for_ip(client_ip)
            self.firmware.loader_sent(mac, name)
            self.record(mac, EventKind.HTTP_FILE, f"http loader {name}", file=name, ip=client_ip)
        return path

    # ---------------------------------------------------------------- HTTP boot

    def entry_script(self, base_url: str) -> str:
        return render.entry_script(base_url)

    def _call_boot_hook(self, mac: str, name: str, /, **kwargs: Any) -> Any:
        """Call a boot-path hook; a plugin's exception is logged and recorded, never raised."""
        try:
            return getattr(self.pm.hook, name)(**kwargs)
        except Exception as exc:
            log.exception("%s plugin hook %s failed", mac, name)
            self.record(mac, EventKind.STATE, f"plugin hook {name} failed: {exc}", hook=name)
            return None

    def host_script(self, mac: str, params: Mapping[str, str], client_ip: str, base_url: str,
                    *, loader: str = "ipxe") -> str:
        """The per-host iPXE script (or, with ``loader="grub"``, GRUB config): record what the
        loader reported, choose a profile, render it."""
        mac = normalize_mac(mac)
        grub = loader == "grub"
        verdict = self._verify(mac, client_ip, "GRUB config" if grub else "boot script")
        self.firmware.progressed(mac)

        def waiting(boot: BootContext, attrs: Mapping[str, str], reason: str) -> str:
            if grub:
                return grub_waiting_config(mac, attrs, reason, self.settings.retry_seconds)
            return render.waiting_script(boot, attrs, reason, self.settings.retry_seconds)

        attrs = {attr: _clean_attr(params[param]) for param, attr in _PARAM_ATTRS.items() if params.get(param)}
        if attrs.get("uuid"):
            try:
                attrs["uuid"] = normalize_uuid(attrs["uuid"])
            except ValidationError:
                attrs.pop("uuid")
        attrs.setdefault("ipv4", client_ip)
        host = self._see(mac, None, attrs, source=client_ip if verdict.vouched else "")
        if self.hosts.get(mac) is None:
            raise NewHostRefused(f"too many new hosts right now; {mac} is not recorded (retry later)")
        host = self._vouch(host, client_ip, verdict, uuid=attrs.get("uuid", ""))
        gate = self._secret_gate(host)
        if gate and gate.startswith(AWAITING_ADOPTION) and host.reason != gate:  # it never expires now
            host = self.hosts.update(mac, lambda h: replace(h or host, reason=gate))  # type: ignore[arg-type]
        if gate:
            self.record(mac, EventKind.HTTP_SCRIPT, f"waiting script: {gate}", reason=gate)
            return waiting(BootContext(base_url=base_url, mac=mac), host.attrs, gate)
        host = self._begin_boot(host)
        extra = self._call_boot_hook(mac, "bootbox_host_attributes", host=host, params=dict(params)) or []
        merged = {k: _clean_attr(str(v)) for result in reversed(extra) if result for k, v in result.items()}
        if merged:
            host = self._see(mac, None, merged)
        boot = BootContext(base_url=base_url, mac=mac, firmware=host.attrs.get("platform", ""))
        profile_name = self._call_boot_hook(mac, "bootbox_select_profile", host=host)
        profile = self.profile_or_none(profile_name) if profile_name else None
        if profile is None:
            reason = (
                f"its image profile {profile_name!r} does not exist"
                if profile_name
                else "no rule in the active rule set gives it an image profile"
            )
            self._see(mac, HostState.WAITING)
            self.record(mac, EventKind.HTTP_SCRIPT, f"waiting script: {reason}", reason=reason)
            return waiting(boot, host.attrs, reason)
        host = self.hosts.get(mac) or host  # with the associations the rules just cached
        held = self.hostconfig.hold_reason(host)
        if held:
            self._see(mac, HostState.NEEDS_ANSWERS)
            self.hosts.update(mac, lambda h: replace(h, reason=held))  # type: ignore[arg-type]
            self.record(mac, EventKind.ANSWERS, f"held: {held}", reason=held, profile=profile.name)
            return waiting(boot, host.attrs, f"it is held: {held}")
        boot = replace(boot, answer_token=self.hostconfig.mint(host), up_token=self.hostconfig.tokens.up_token(host),
                       cache_urls=group_cache_urls(self.settings.groups, host.associations))
        hook = "bootbox_grub_config" if grub else "bootbox_boot_script"
        script = self._call_boot_hook(mac, hook, host=host, profile=profile, boot=boot)
        if not script:
            reason = f"no plugin boots profiles of kind {profile.kind!r}"
            self._see(mac, HostState.WAITING)
            self.record(mac, EventKind.HTTP_SCRIPT, f"waiting script: {reason}", reason=reason, profile=profile.name)
            return waiting(boot, host.attrs, reason)
        self.hosts.update(mac, lambda h: replace(h or Host(mac=mac), state=HostState.BOOTING, profile=profile.name,
                                                 reason=""))
        self.record(mac, EventKind.HTTP_SCRIPT, f"{'GRUB config' if grub else 'script'} for profile {profile.name} "
                    f"({profile.kind})", profile=profile.name, kind=profile.kind, ip=client_ip, loader=loader)
        return script

    def host_asset(self, mac: str, name: str, client_ip: str, *, record: bool = True) -> Path:
        """A file of the host's own profile; other hosts' profiles are out of reach (404)."""
        mac = normalize_mac(mac)
        host = self.hosts.get(mac)
        if host is None or not host.profile:
            raise NotFound(f"host {mac} has no profile yet; fetch its script first")
        profile = self.profile(host.profile)
        path = self._call_boot_hook(mac, "bootbox_profile_asset", host=host, profile=profile, name=name)
        if path is None or not Path(path).is_file():
            raise NotFound(f"profile {profile.name} has no file {name!r}")
        if record:
            self.record(mac, EventKind.HTTP_FILE, f"http {name} of profile {profile.name}", file=name, ip=client_ip)
        return Path(path)

    def booted(self, mac: str, report: Mapping[str, str], client_ip: str, token: str | None = None) -> Host:
        """The Linux demo's report-in (``/booted``): the same state change as ``/up``, with the
        same checks (the requester, then this boot's up token)."""
        return self.host_up(mac, report, client_ip, token, what="report-in (booted)")[0]

    def host_up(self, mac: str, report: Mapping[str, str], client_ip: str, token: str | None, *,
                what: str = "report-in (up)") -> tuple[Host, str]:
        """``/up``: a report-in from the host itself with its current boot's up token (else 403
        or 401, an audit event, and nothing changes); returns the host and done/busy/failed."""
        mac = normalize_mac(mac)
        verdict = self._verify(mac, client_ip, what)
        host = self.hosts.require(mac)
        refusal = self._secret_gate(host) or self.hostconfig.up_refusal(mac, token)
        if refusal:
            self._audit(mac, client_ip, what, refusal)
            raise Unauthorized(f"host {mac}: {what} refused: {refusal} (use the URL bootbox gave the host)")
        result = self.after_boot.report(mac, report, client_ip, token=token)
        self._vouch(self.hosts.get(mac) or host, client_ip, verdict)
        return result

    def push(self, mac: str) -> Host:
        """Run every plugin's after-boot push again for the host's current boot."""
        return self.after_boot.push(mac)

    def answer_file(self, mac: str, token: str, name: str, client_ip: str, base_url: str) -> str:
        """One answer file of the host's current boot, to that host only (else 403 + audit)."""
        try:
            mac = normalize_mac(mac)
        except ValidationError:
            raise Forbidden("malformed host in the answer-file URL") from None
        self._verify(mac, client_ip, f"answer file {name}")
        host = self.hosts.get(mac)
        gate = self._secret_gate(host) if host is not None else None
        if gate:
            self._audit(mac, client_ip, f"answer file {name}", gate)
            raise Forbidden(f"answer file {name} of {mac} refused: {gate}")
        return self.hostconfig.serve(mac, token, name, client_ip, base_url)

    # ---------------------------------------------------------------- identity, boots, adoption

    def _verify(self, mac: str, client_ip: str, what: str) -> Verdict:
        """Refuse (403, an audit event on the host's timeline, a counter) a request from
        ``client_ip`` that may not act for ``mac`` (bootbox.service.identity). Nothing else changes."""
        verdict = self.identity.check(mac, client_ip)
        if not verdict.ok:
            self._audit(mac, client_ip, what, verdict.reason)
            raise Forbidden(f"the {what} of {mac} is served only to that host ({verdict.reason})")
        return verdict

    def verify_requester(self, mac: str, client_ip: str, what: str) -> None:
        """:meth:`_verify` for routes plugins add under ``/boot/<plugin>/hosts/<mac>/`` (the web
        app's gate), and refuse a host whose secrets are stopped (conflict, awaiting adoption)."""
        mac = normalize_mac(mac)
        self._verify(mac, client_ip, what)
        host = self.hosts.get(mac)
        gate = self._secret_gate(host) if host is not None else None
        if gate:
            self._audit(mac, client_ip, what, gate)
            raise Forbidden(f"the {what} of {mac} is refused: {gate}")

    def _audit(self, mac: str, client_ip: str, what: str, reason: str) -> None:
        """An audit event for a known host (a stranger's MAC gets no record); the log says it
        once per 10 s with a count, so a flood of refusals is not a flood of log lines."""
        if self.hosts.get(mac) is not None:
            self.record(mac, EventKind.AUDIT, f"refused {what} to {client_ip}: {reason}", ip=client_ip,
                        reason=reason, what=what)
        last, quiet = self._refusals_logged
        now = time.monotonic()
        if now - last >= 10.0:
            more = f" (and {quiet} more refusals in the last 10 s)" if quiet else ""
            log.warning("%s: refused %s to %s: %s%s", mac, what, client_ip, reason, more)
            self._refusals_logged = (now, 0)
        else:
            self._refusals_logged = (last, quiet + 1)

    def _vouch(self, host: Host, client_ip: str, verdict: Verdict, *, uuid: str = "") -> Host:
        """Remember what a verified request showed: the address the network vouched for (DNS
        publishes it), and the SMBIOS UUID of the host's first verified boot. A later verified
        request for the same MAC with another UUID is a second machine: ``conflict``."""
        verified = dict(host.verified)
        if verdict.vouched:
            verified["ipv6" if ":" in client_ip else "ipv4"] = client_ip.removeprefix("::ffff:")
        bound = verified.get("uuid", "")
        if uuid and not bound:
            verified["uuid"] = uuid
        if uuid and bound and uuid != bound and host.state != HostState.CONFLICT:
            reason = (f"two machines claim {host.mac}: SMBIOS UUID {uuid} from {client_ip}, bound to {bound}; "
                      f"secrets stop until an operator runs: bootbox host resolve {host.mac}")
            self.record(host.mac, EventKind.AUDIT, f"conflict: {reason}", ip=client_ip, uuid=uuid, bound=bound)
            return self.hosts.update(host.mac, lambda h: replace(h or host, state=HostState.CONFLICT,
                                                                  reason=reason))
        if verified == dict(host.verified):
            return host
        return self.hosts.update(host.mac, lambda h: replace(h or host, verified=verified))

    def _secret_gate(self, host: Host) -> str | None:
        """Why ``host`` gets no profile and no secrets now (conflict, awaiting adoption), or None."""
        if host.state == HostState.CONFLICT:
            return host.reason or f"its identity is in conflict (bootbox host resolve {host.mac})"
        if self.settings.hosts.adopt == "manual" and not host.adopted:
            return f"{AWAITING_ADOPTION} (bootbox host adopt {host.mac})"
        return None

    def _begin_boot(self, host: Host) -> Host:
        """The host's current boot, or a new one (new tokens, the earlier ones void) when it
        reported in since its boot began, has none, or its boot is older than the answer-token
        lifetime. Re-fetches within one boot keep its tokens."""
        now = time.time()
        ttl = self.settings.hosts.answer_token_ttl
        if host.boot_nonce and host.state not in REPORTED_STATES and now < host.boot_started + ttl:
            return host
        host = self.hosts.update(host.mac, lambda h: replace(h or host, boot_nonce=new_nonce(), boot_started=now))
        self.hostconfig.tokens.forget(host.mac)
        return host

    def configured_hostname(self, host: Host) -> str:
        """The DNS name the host's host profile answers give it (its ``hostname`` answer), or ""."""
        if not host.associations.get("host_profile"):
            return ""
        value = self.hostconfig.answers.stored(host.mac).get("hostname")
        return value if isinstance(value, str) else ""

    def adopt(self, mac: str, hostname: str = "") -> Host:
        """An operator vouches for ``mac`` (``[hosts] adopt = "manual"``): it boots with its
        profile and secrets from its next script request; a conflict is cleared and the next
        verified boot binds its UUID afresh. ``hostname`` becomes its DNS name."""
        mac = normalize_mac(mac)
        hostname = _check_hostname(hostname)
        now = time.time()

        def change(h: Host | None) -> Host:
            base = h or Host(mac=mac, first_seen=now, last_seen=now)
            state, reason, verified = base.state, base.reason, dict(base.verified)
            if reason.startswith(AWAITING_ADOPTION):
                reason = ""
            if state == HostState.CONFLICT:
                state, reason = HostState.DISCOVERED, ""
                verified.pop("uuid", None)
            return replace(base, adopted=True, state=state, reason=reason, verified=verified,
                           name=hostname or base.name)

        host = self.hosts.update(mac, change)
        self._persister.flush()
        self.record(mac, EventKind.STATE, f"adopted by an operator{f' as {hostname}' if hostname else ''}",
                    hostname=hostname)
        return host

    def expire_discovered(self) -> list[str]:
        """Forget hosts only ever seen and not seen for ``[hosts] discovered_expiry`` seconds
        (never those awaiting adoption); the sweeper calls it every minute."""
        macs = expired(self.hosts.all(), now=time.time(), after=self.settings.hosts.discovered_expiry)
        for mac in macs:
            if self.hosts.remove(mac):
                self._persister.forget(mac)
        if macs:
            log.info("forgot %d host(s) only ever seen, not for %.0f s ([hosts] discovered_expiry)",
                     len(macs), self.settings.hosts.discovered_expiry)
        return macs

    def resolve(self, mac: str) -> Host:
        """Clear a ``conflict``: the next verified boot binds the host's UUID afresh."""
        mac = normalize_mac(mac)
        host = self.hosts.require(mac)
        if host.state != HostState.CONFLICT:
            raise Conflict(f"host {mac} is not in conflict (state {host.state})")
        host = self.hosts.update(mac, lambda h: replace(h or host, state=HostState.DISCOVERED, reason="", verified={
            k: v for k, v in (h or host).verified.items() if k != "uuid"}))
        self._persister.flush()
        self.record(mac, EventKind.STATE, "conflict resolved by an operator; the next boot binds its UUID")
        return host

    # ---------------------------------------------------------------- rules and associations

    def associate(self, host: Host) -> Mapping[str, str]:
        """The host's rule items: cached after its first boot, as Auto Deploy does.

        A host with an ``image`` association keeps it (rule edits reach it only through
        ``repair``). Otherwise the active set decides; the result is cached only once it carries
        an image, so a waiting host is evaluated afresh each time it asks.
        """
        current = self.hosts.get(host.mac) or host
        if current.associations.get("image"):
            return current.associations
        decision = self.rules.decide(current.attrs)
        if "image" not in decision:
            return {}
        chosen = {item: choice.value for item, choice in decision.items()}
        self.hosts.update(host.mac, lambda h: replace(h or host, associations=chosen))
        why = ", ".join(f"{item}={choice.value} (rule {choice.rule})" for item, choice in sorted(decision.items()))
        self.record(host.mac, EventKind.RULES, f"first boot: associated {why}", **chosen)
        return chosen

    def compliance(self, which: str = "active") -> list[rules.HostDrift]:
        """Hosts whose cached associations differ from what the set gives them now."""
        known = [(h.mac, h.attrs, h.associations) for h in self.hosts.all() if h.associations]
        return rules.compliance(self.rules.compiled(which), known)

    def repair(self, macs: list[str] | None = None, which: str = "active") -> list[rules.HostDrift]:
        """Rewrite the associations of drifted hosts (all, or ``macs``); they apply at next boot."""
        wanted = {normalize_mac(m, "hosts") for m in macs} if macs else None
        if wanted:
            for mac in wanted:
                self.host(mac)
        drifts = [d for d in self.compliance(which) if wanted is None or d.host in wanted]
        for drift in drifts:
            expected = dict(drift.expected)
            self.hosts.update(drift.host, lambda h, e=expected: replace(h, associations=e))  # type: ignore[arg-type]
            changes = ", ".join(f"{i.item_type}: {i.stored or '-'} -> {i.expected or '-'}" for i in drift.items)
            self.record(drift.host, EventKind.RULES, f"repaired associations ({changes}); applies at next boot")
        self._persister.flush()
        return drifts

    def explain(self, attrs: Mapping[str, Any], which: str = "active") -> list[rules.RuleExplanation]:
        return rules.explain(self.rules.get(which), attrs)

    # ---------------------------------------------------------------- hosts (API)

    def list_hosts(self) -> list[Host]:
        return self.hosts.all()

    def host(self, mac: str) -> Host:
        return self.hosts.require(mac)

    def host_events(self, mac: str, limit: int | None = None) -> list[BootEvent]:
        return self.journal.events(normalize_mac(mac), limit=limit)

    def remove_host(self, mac: str, *, answers: bool = False) -> None:
        """Forget a host; its next boot starts as a new one. Its answers (operator input, maybe
        imported before it ever booted) are kept unless ``answers``: then they go too, secrets
        included, as when a machine leaves the site."""
        mac = normalize_mac(mac)
        if not self.hosts.remove(mac):
            raise NotFound(f"host {mac} is not known to bootbox")
        self._persister.forget(mac)
        if answers:
            self.hostconfig.answers.delete_host(mac)

    # ---------------------------------------------------------------- replication (bootbox.service.replication)

    def reload_tables(self, tables: set[str]) -> None:
        """Rebuild what the service derives from store tables another appliance changed (the
        store's memory already holds the new documents): the compiled rules, the profiles, the
        host profiles. Answers and host-profile versions are read from the store as they are."""
        if "rulesets" in tables:
            self.rules.load()
        if "profiles" in tables:
            self._profiles = ProfileRepository(self.store, kinds=lambda: self.registries.kinds)
        if "hostprofiles" in tables:
            config = self.hostconfig
            config.profiles = HostProfileBook(
                self.store,
                kinds=lambda: {name: kind.files for name, kind in config.kinds.items()},
                reserved=lambda: {name: item.plugin for name, item in config.inputs.items()},
            )
        log.info("applied changes from another appliance to: %s", ", ".join(sorted(tables)))

    # ---------------------------------------------------------------- profiles (API; kept by bootbox.service.profiles)

    def profiles(self) -> list[Profile]:
        return self._profiles.all()

    def profile_or_none(self, name: str) -> Profile | None:
        return self._profiles.get_or_none(name)

    def profile(self, name: str) -> Profile:
        return self._profiles.get(name)

    def put_profile(self, profile: Profile, *, replace_existing: bool = False) -> Profile:
        """Validate with the kind's plugin, then write through to the store."""
        return self._profiles.put(profile, replace_existing=replace_existing)

    def delete_profile(self, name: str) -> None:
        self._profiles.delete(name)

    def profile_kinds(self) -> list[ProfileKind]:
        """The profile kinds plugins registered, in the order they did."""
        return list(self.registries.kinds.values())

    # ---------------------------------------------------------------- rule sets (API)

    def ruleset(self, which: str = "working") -> rules.RuleSet:
        """The working, active or previous rule set (ValidationError for another name)."""
        return self.rules.get(which)

    def make_rule(self, fields: Mapping[str, Any]) -> rules.Rule:
        """A rule from API input, checked against the registered attributes, item types, profiles."""
        return self.rules.make_rule(fields)

    def add_rule(self, rule: rules.Rule, *, at: int | None = None, activate: bool = True) -> rules.RuleSet:
        return self.rules.add(rule, at=at, activate=activate)

    def replace_rule(self, rule: rules.Rule, *, activate: bool = True) -> rules.RuleSet:
        return self.rules.replace(rule, activate=activate)

    def remove_rule(self, name: str, *, activate: bool = True) -> rules.RuleSet:
        return self.rules.remove(name, activate=activate)

    def move_rule(self, name: str, at: int, *, activate: bool = True) -> rules.RuleSet:
        return self.rules.move(name, at, activate=activate)

    def load_ruleset(self, doc: Mapping[str, Any], *, activate: bool = True) -> rules.RuleSet:
        """Replace the working set with an exported one; every rule is checked before anything lands."""
        return self.rules.load_working(doc, activate=activate)

    def ruleset_diff(self) -> list[rules.RuleDiff]:
        """What activating the working set would change."""
        return self.rules.diff()

    def activate_rules(self) -> list[rules.RuleDiff]:
        """Activate the working set; returns what that changed."""
        changes = self.rules.diff()
        self.rules.activate()
        return changes

    def rollback_rules(self) -> rules.RuleSet:
        """Make the previous active set active again; returns it."""
        return self.rules.rollback()

    # ---------------------------------------------------------------- host profiles and answers (API)

    def host_profiles(self) -> list[HostProfile]:
        return self.hostconfig.profiles.all()

    def host_profile(self, name: str, version: int | None = None) -> HostProfile:
        """A host profile, its latest version or ``version``; NotFound otherwise."""
        return self.hostconfig.profiles.get(name, version)

    def put_host_profile(self, doc: Mapping[str, Any], *, replace_existing: bool) -> HostProfile:
        """Validate and store a host profile (a new version when it replaces one)."""
        return self.hostconfig.profiles.put(doc, replace_existing=replace_existing)

    def delete_host_profile(self, name: str) -> None:
        """Delete a host profile no host uses (Conflict names those that do)."""
        self.hostconfig.delete_profile(name)

    def answer_kinds(self) -> list[AnswerKind]:
        """The answer-file kinds plugins registered (kickstart, cloud-init …)."""
        return list(self.hostconfig.kinds.values())

    def host_answers(self, mac: str) -> dict[str, Any]:
        """A host's answers for operators (secrets masked), its inputs and those missing."""
        return self.hostconfig.overview(mac)

    def set_answers(self, mac: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set some of a host's answers; returns :meth:`host_answers` afterwards."""
        self.hostconfig.set_answers(mac, values)
        return self.hostconfig.overview(mac)

    def unset_answer(self, mac: str, key: str) -> dict[str, Any]:
        """Forget one of a host's answers; returns :meth:`host_answers` afterwards."""
        self.hostconfig.answers.unset(mac, [key])
        return self.hostconfig.overview(mac)

    def import_answers(self, text: str) -> list[str]:
        """Answers for many hosts from CSV, all validated before any is written; the MACs written."""
        return self.hostconfig.import_answers(text)

    def render_answer_files(self, host: Host, *, base_url: str, kind: str | None = None,
                            profile_name: str | None = None, masked: bool = True) -> tuple[HostProfile, dict[str, str]]:
        """The answer files ``host`` gets (secrets masked unless ``masked`` is false)."""
        return self.hostconfig.render(host, base_url=base_url, kind=kind, profile_name=profile_name, masked=masked)

    # ---------------------------------------------------------------- the appliance (API)

    def counts(self) -> ServiceCounts:
        """How many hosts and profiles, and the journal's counters (``/api/v1/status``)."""
        return ServiceCounts(hosts=len(self.hosts), profiles=len(self._profiles), journal=dict(self.journal.stats),
                             refused={"identity": self.identity.refused, **self.new_hosts.refused})

    def boot_stats(self) -> dict[str, int]:
        """Boot-path counters for ``/api/v1/status`` (``bootbox status``): ``loader_missing``, the
        DHCP requests left unanswered because the client's loader file is not there."""
        return self.firmware.stats

    def boot_tally(self) -> TallySnapshot:
        """Boots started, reported and failed, their durations, pushes by result (``/metrics``)."""
        return self.tally.snapshot()

    def event_feed(self) -> EventFeed:
        """The numbered events live readers follow (``/api/v1/events/stream``)."""
        return self.feed

    def recent_events(self, limit: int) -> list[BootEvent]:
        """The latest ``limit`` boot steps of every host, oldest first."""
        return self.journal.recent(limit)

    def base_url(self, request_url: str) -> str:
        """The base URL hosts are told to use: ``[http] public_url`` when set, else the one the
        request came in on (``request_url``)."""
        public = self.settings.http.public_url
        return (public or request_url).rstrip("/")

    def console_key(self) -> bytes:
        """The key that signs the web console's session cookies: made at first use, kept mode
        0600 in the state dir (``console-key``) so logins survive a restart; deleting the file
        logs everyone out."""
        self.settings.state_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return load_or_create_token(self.settings.state_path, CONSOLE_KEY_FILE).encode()

    def last_doctor_result(self) -> dict[str, Any] | None:
        """The last ``bootbox doctor`` run's result (``ok``, ``time``, ``checks``, ``client``), or
        None when it never ran here or its file is unreadable."""
        try:
            doc = json.loads((self.settings.state_path / DOCTOR_RESULT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    @staticmethod
    def api_token_matches(expected: str, presented: str | None) -> bool:
        """The API token check, in constant time, for the web app (which does not touch the store,
        where the token and its comparison live)."""
        return token_matches(expected, presented)

    # ---------------------------------------------------------------- plugins

    def plugins(self) -> list[PluginInfo]:
        return plugin_infos(self.pm)


def _check_hostname(name: str) -> str:
    """A DNS name an operator gives a host: letters, digits, hyphens, dots; ValidationError otherwise."""
    name = name.strip().rstrip(".").lower()
    labels = name.split(".") if name else []
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValidationError("hostname", f"{name[:64]!r} is not a host name (letters, digits, hyphens, dots)")
    return name


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _log_shutdown_failure(plugin: str, exc: Exception) -> None:
    log.error("shutdown hook of %s failed", plugin, exc_info=exc)
