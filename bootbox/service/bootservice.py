"""BootService: the one object the protocol servers, the web app and the CLI's API talk to.

It composes the store, the in-memory host index, the event journal and the plugin manager,
and is the only caller of ``pm.hook``. The servers see only its bound methods (``decide``,
``open_tftp``, ``host_script`` …), never the store or pluggy.

Boot-path methods read memory and append to the journal; they never wait on a store write.
Operator writes (profiles) are written through to the store before they return, so an
acknowledged write survives a crash.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import pluggy

from bootbox.core import policy
from bootbox.core.render import ipxe as render
from bootbox.core import rules
from bootbox.service.afterboot import AfterBoot
from bootbox.config import Settings
from bootbox.hooks.context import PluginContext, PluginStore
from bootbox.errors import BootboxError, Conflict, NotFound, PluginError, ValidationError
from bootbox.service.firmware import FirmwareBoot
from bootbox.core.render.grub import waiting_config as grub_waiting_config
from bootbox.service.answers.files import HostConfig
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
    Profile,
    normalize_mac,
    normalize_uuid,
)
from bootbox.hooks.manager import PluginInfo, plugin_infos
from bootbox.service.rulebook import RuleBook
from bootbox.store import Store

log = logging.getLogger("bootbox.service")

PROFILES_TABLE = "profiles"
BUILTIN_ITEM_TYPES: dict[str, str] = {
    "image": "the profile the host boots (an image profile)",
    "host_profile": "the host profile: configuration templates and per-host answers",
    "group": "a location label: cluster, site, rack",
    "loader": "the first-stage loader kind: ipxe or grub (docs/firmware.md)",
    "secure_boot": "on: the signed chain, shim -> GRUB -> signed kernel (docs/firmware.md)",
}
_PROFILE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

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


class ProfileKind:
    """A registered profile kind: its name, its spec validator and who registered it."""

    def __init__(self, name: str, validate: Callable[[Mapping[str, Any]], dict[str, Any]], description: str, plugin: str):
        self.name = name
        self.validate = validate
        self.description = description
        self.plugin = plugin


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.pm = pm
        self.host_log = host_log or HostLog(None)
        self.hosts = HostIndex(Host.from_dict(doc) for doc in self.host_log.load().values())
        self._persister = HostPersister(self.hosts, self.host_log)
        self._profiles_lock = threading.Lock()
        self._profiles: dict[str, Profile] = {
            doc["name"]: Profile.from_dict(doc) for doc in store.all(PROFILES_TABLE).values()
        }
        self.kinds: dict[str, ProfileKind] = {}
        self.item_types: dict[str, str] = dict(BUILTIN_ITEM_TYPES)
        self.attributes: dict[str, str] = {name: "built in" for name in rules.BUILTIN_ATTRIBUTES}
        self.rules = RuleBook(
            store,
            attributes=lambda: self.attributes,
            item_types=lambda: self.item_types,
            profile_exists=lambda name: self.profile_or_none(name) is not None,
        )
        self.hostconfig = HostConfig(self)
        self.after_boot = AfterBoot(self)
        self.firmware = FirmwareBoot(self)
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Run the start-up hooks (configure, startup, kinds, item types); start the write-behind."""
        self.pm.hook.bootbox_configure(settings=self.settings)
        for impl in self.pm.hook.bootbox_startup.get_hookimpls():
            impl.function(context=self._plugin_context(impl.plugin_name))
        for impl in self.pm.hook.bootbox_register_profile_kinds.get_hookimpls():
            impl.function(register=functools.partial(self._register_kind, plugin=impl.plugin_name))
        for impl in self.pm.hook.bootbox_register_item_types.get_hookimpls():
            impl.function(register=functools.partial(self._register_item_type, plugin=impl.plugin_name))
        for impl in self.pm.hook.bootbox_register_attributes.get_hookimpls():
            impl.function(register=functools.partial(self._register_attribute, plugin=impl.plugin_name))
        self.hostconfig.register_from(self.pm)
        self.rules.load()
        self._persister.start()
        self._started = True
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
            associations=self.associate,
        )

    def _register_attribute(self, name: str, *, description: str = "", plugin: str) -> None:
        if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
            raise PluginError(f"host attribute {name!r} from {plugin} is not a valid name (lower-case, _)")
        if name in self.attributes:
            raise PluginError(f"host attribute {name!r} from {plugin} is registered twice")
        self.attributes[name] = description or f"registered by {plugin}"

    def _register_item_type(self, name: str, *, description: str = "", plugin: str) -> None:
        if not name or not set(name) <= _PROFILE_NAME_CHARS or name in self.item_types:
            raise PluginError(f"rule item type {name!r} from {plugin} is invalid or registered twice")
        self.item_types[name] = description or f"registered by {plugin}"

    def plugin_blueprints(self) -> list[Any]:
        """Blueprints plugins add to the web app (``bootbox_register_routes``)."""
        blueprints: list[Any] = []
        self.pm.hook.bootbox_register_routes(register=blueprints.append)
        return blueprints

    def image_packages(self, host: Host, profile: Profile) -> list[str]:
        """Packages plugins add to what ``host`` boots (``bootbox_image_packages``), in order."""
        results = self._call_boot_hook(host.mac, "bootbox_image_packages", host=host, profile=profile) or []
        return [name for result in results if result for name in result]

    def _register_kind(
        self, kind: str, *, validate: Callable[..., dict[str, Any]], description: str = "", plugin: str
    ) -> None:
        if not kind or not set(kind) <= _PROFILE_NAME_CHARS:
            raise PluginError(f"profile kind {kind!r} is not a valid name")
        if kind in self.kinds:
            raise PluginError(f"profile kind {kind!r} is registered twice (by {self.kinds[kind].plugin} and {plugin})")
        self.kinds[kind] = ProfileKind(kind, validate, description, plugin=plugin)

    def close(self) -> None:
        """Flush hosts and events; wait for after-boot work (bounded); let plugins clean up."""
        self.after_boot.close()
        if self._started:
            self._persister.stop()
            for impl in self.pm.hook.bootbox_shutdown.get_hookimpls():
                try:
                    impl.function()
                except Exception:
                    log.exception("shutdown hook of %s failed", impl.plugin_name)
        self.journal.flush()

    # ---------------------------------------------------------------- events

    def record(self, mac: str, kind: str, message: str, /, **data: Any) -> BootEvent:
        """Append one boot step to the host's timeline (memory + journal, never the store)."""
        event = BootEvent(mac=mac, kind=str(kind), message=message, data=data)
        self.journal.append(event)
        log.info("%s %s %s", mac, kind, message)
        return event

    def _see(self, mac: str, state: HostState | None = None, attrs: Mapping[str, str] | None = None) -> Host:
        now = time.time()

        def change(host: Host | None) -> Host:
            host = host or Host(mac=mac, first_seen=now)
            new_attrs = dict(host.attrs)
            new_attrs.update({k: v for k, v in (attrs or {}).items() if v})
            new_attrs["mac"] = mac
            return replace(host, attrs=new_attrs, state=state or host.state, last_seen=now)

        return self.hosts.update(mac, change)

    # ---------------------------------------------------------------- DHCP

    def decide(self, machine: Machine) -> BootSpec | None:
        """Answer a PXE client's DHCP request (called on the DHCP thread; memory only): the
        loader its architecture, group and rule items call for (bootbox.service.firmware)."""
        BOOT_PATH.touch()  # background writers hold back while packets keep coming (bootbox.runtime.pacing)
        return self.firmware.decide(machine)

    def dhcp_answered(self, machine: Machine, spec: BootSpec, port: int) -> None:
        """Record that the proxy answered ``machine`` (an OFFER on 67, an ACK on 4011)."""
        kind = EventKind.DHCP_OFFER if port in (self.settings.dhcp.port, self.settings.dhcp6.port) else EventKind.DHCP_ACK
        attrs = {"firmware": str(machine.firmware)}
        if machine.uuid:
            attrs["uuid"] = machine.uuid
        if machine.client_ip and machine.client_ip != "0.0.0.0":
            attrs["ipv6" if ":" in machine.client_ip else "ipv4"] = machine.client_ip
        host = self.hosts.get(machine.mac)
        self._see(machine.mac, None if host and host.state != HostState.DISCOVERED else HostState.DISCOVERED, attrs)
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
        mac = self.hosts.mac_for_ip(ip) or _arp_lookup(ip)
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
                self._see(mac, HostState.BOOTING)
                self.firmware.loader_sent(mac, record.filename)
            self.record(mac, EventKind.TFTP_SENT, f"tftp {record.filename} ({record.bytes_sent} bytes)",
                        file=record.filename, bytes=record.bytes_sent, ip=record.client_ip, blksize=record.blksize)
        else:
            self.record(mac, EventKind.TFTP_FAILED, f"tftp {record.filename} failed: {record.error}",
                        file=record.filename, error=record.error, ip=record.client_ip)

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
        host = self._see(mac, None, attrs)
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
        boot = replace(boot, answer_token=self.hostconfig.mint(host, client_ip),
                       up_token=self.hostconfig.up_token(mac))
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

    def booted(self, mac: str, report: Mapping[str, str], client_ip: str) -> Host:
        """The Linux demo's report-in (``/booted``, no token): the same state change as ``/up``."""
        return self.after_boot.report(mac, report, client_ip, check_token=False)[0]

    def host_up(self, mac: str, report: Mapping[str, str], client_ip: str, token: str | None) -> tuple[Host, str]:
        """``/up``: a report-in with the host's token; returns the host and done/busy/failed."""
        return self.after_boot.report(mac, report, client_ip, token=token)

    def push(self, mac: str) -> Host:
        """Run every plugin's after-boot push again for the host's current boot."""
        return self.after_boot.push(mac)

    def answer_file(self, mac: str, token: str, name: str, client_ip: str, base_url: str) -> str:
        """One answer file, for the host its single-use token was minted for (else 403 + audit)."""
        return self.hostconfig.serve(mac, token, name, client_ip, base_url)

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
        mac = normalize_mac(mac)
        host = self.hosts.get(mac)
        if host is None:
            raise NotFound(f"host {mac} is not known to bootbox")
        return host

    def host_events(self, mac: str, limit: int | None = None) -> list[BootEvent]:
        return self.journal.events(normalize_mac(mac), limit=limit)

    def remove_host(self, mac: str) -> None:
        mac = normalize_mac(mac)
        if not self.hosts.remove(mac):
            raise NotFound(f"host {mac} is not known to bootbox")
        self._persister.forget(mac)

    # ---------------------------------------------------------------- profiles (API)

    def profiles(self) -> list[Profile]:
        with self._profiles_lock:
            return sorted(self._profiles.values(), key=lambda p: p.name)

    def profile_or_none(self, name: str) -> Profile | None:
        with self._profiles_lock:
            return self._profiles.get(name)

    def profile(self, name: str) -> Profile:
        profile = self.profile_or_none(name)
        if profile is None:
            raise NotFound(f"profile {name!r} does not exist")
        return profile

    def put_profile(self, profile: Profile, *, replace_existing: bool = False) -> Profile:
        """Validate with the kind's plugin, then write through to the store."""
        if not profile.name or not set(profile.name) <= _PROFILE_NAME_CHARS or len(profile.name) > 64:
            raise ValidationError("name", "use 1-64 letters, digits, '.', '_' or '-'")
        kind = self.kinds.get(profile.kind)
        if kind is None:
            known = ", ".join(sorted(self.kinds)) or "none"
            raise ValidationError("kind", f"unknown profile kind {profile.kind!r}; known kinds: {known}")
        validated = replace(profile, spec=kind.validate(dict(profile.spec)))
        with self._profiles_lock:
            if profile.name in self._profiles and not replace_existing:
                raise Conflict(f"profile {profile.name!r} already exists")
            self.store.put(PROFILES_TABLE, profile.name, validated.to_dict())
            self._profiles[profile.name] = validated
        return validated

    def delete_profile(self, name: str) -> None:
        with self._profiles_lock:
            if name not in self._profiles:
                raise NotFound(f"profile {name!r} does not exist")
            self.store.delete(PROFILES_TABLE, name)
            del self._profiles[name]

    # ---------------------------------------------------------------- plugins

    def plugins(self) -> list[PluginInfo]:
        return plugin_infos(self.pm)


def _arp_lookup(ip: str, arp_table: Path = Path("/proc/net/arp")) -> str | None:
    """The kernel's neighbour table knows the MAC of a client that just talked to us."""
    try:
        for line in arp_table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == ip and fields[3] != "00:00:00:00:00:00":
                return normalize_mac(fields[3])
    except (OSError, BootboxError):
        return None
    return None
