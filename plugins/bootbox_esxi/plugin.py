"""The ``esxi`` plugin object: the hook implementations, which wire the package's parts together.

One :class:`EsxiPlugin` per appliance. Its state (:class:`~bootbox_esxi.state.PluginState`:
catalog, importer, jobs, image cache) is built in ``bootbox_startup`` from the plugin's own
context and dropped in ``bootbox_shutdown``. This module imports the others (the HTTP side
typed against :class:`~bootbox_esxi.state.ServedPlugin`) and none imports it back. The
package's entry point registers one module-level instance (``bootbox_esxi``), because an entry
point names an object rather than a factory; tests that want isolation register their own
``EsxiPlugin()`` with ``load_entrypoints=False``.

Boot-path hooks read memory (the catalog and cached images) plus, once per image, build its
imgdb.tgz; nothing on that path touches the network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from bootbox import (
    AnswerEnv,
    BootContext,
    EventKind,
    Forbidden,
    Host,
    HostProfile,
    NotFound,
    PluginContext,
    PluginError,
    Profile,
    ValidationError,
    hookimpl,
)
from bootbox_esxi import hostcert, hostimage, imgdb, kickstart, script
from bootbox_esxi.catalog import BlobStore, Catalog
from bootbox_esxi.config import LOADER_NAMES, EsxiConfig, parse_config
from bootbox_esxi.depot import Importer, Limits, Progress
from bootbox_esxi.image import IMGDB, Image
from bootbox_esxi.imageprofile import normalize_spec
from bootbox_esxi.jobs import Jobs
from bootbox_esxi.kind import KIND, firmware_of
from bootbox_esxi.state import PluginState
from bootbox_esxi.hostprofile import schema as hostprofile_schema
from bootbox_esxi.hostprofile.runner import ENDPOINT_INPUT, HostProfiles, parse_endpoint


def _is_ip(text: str) -> bool:
    """Whether ``text`` is an IP address (a certificate names it as an IP, not a DNS, subjectAltName)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_CACHE_LIMIT = 512
_RESCAN_SECONDS = 2.0


class EsxiPlugin:
    """Stateless ESXi from software depots, as bootbox hooks."""

    def __init__(self) -> None:
        self.__name__ = KIND  # pluggy names a registered object after its __name__
        self.config = EsxiConfig()
        self.retry_seconds = 60
        self.public_url = ""
        self._state: PluginState | None = None
        self._hostprofiles: HostProfiles | None = None
        self._hostca: hostcert.HostCA | None = None
        self._hostcerts: hostcert.IssuedCerts | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> PluginState:
        if self._state is None:
            raise PluginError("the esxi plugin is not started (bootbox serve starts it)")
        return self._state

    @hookimpl
    def bootbox_configure(self, settings: Any) -> None:
        self.config = parse_config(settings.plugins.get(KIND, {}))
        self.retry_seconds = settings.retry_seconds
        self.public_url = settings.http.public_url

    @hookimpl
    def bootbox_startup(self, context: PluginContext) -> None:
        catalog = Catalog(context.store, BlobStore(context.data_dir))
        importer = Importer(catalog, Limits(max_vib_bytes=self.config.max_vib_bytes))

        def work(source: str, progress: Progress) -> dict[str, Any]:
            return importer.run(source, progress)

        self._state = PluginState(context=context, catalog=catalog, importer=importer, jobs=Jobs(work))
        if self.config.host_cert_days > 0:
            self._hostca = hostcert.HostCA(context.data_dir, self.config.host_cert_days)
            self._hostcerts = hostcert.IssuedCerts(context.store)
        else:  # no certificates: hosts whose module carried one in an earlier run are pinned from now on
            self._hostca, self._hostcerts = None, None
        self._hostprofiles = HostProfiles(context, self.config.watch_seconds, ca=self._hostca,
                                          certs=self._hostcerts)
        self._hostprofiles.start()

    @hookimpl
    def bootbox_shutdown(self) -> None:
        if self._hostprofiles is not None:
            self._hostprofiles.stop()
            self._hostprofiles = None
        if self._state is not None:
            self._state.jobs.close()
        self._state = None

    @hookimpl
    def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
        register(KIND, validate=self.validate_spec,
                 description="ESXi image profile from imported software depots (stateless or install)")

    @hookimpl
    def bootbox_register_routes(self, register: Callable[..., None]) -> None:
        from bootbox_esxi.web import make_blueprints  # here: only the HTTP side needs Flask

        for blueprint in make_blueprints(self):
            register(blueprint)
        from bootbox_esxi.hostprofile.web import make_blueprint, make_host_blueprint

        register(make_blueprint(self))
        register(make_host_blueprint(self))

    @hookimpl
    def bootbox_register_commands(self, register: Callable[..., None]) -> None:
        from bootbox_esxi.cli import register_commands  # here: only the CLI process needs typer's side

        register_commands(register)

    def validate_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_spec(spec, self.state.catalog, self.config.acceptance)

    # ------------------------------------------------------------------ answer files

    @hookimpl
    def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
        register(kickstart.KIND, files=(kickstart.FILE,),
                 description="ESXi scripted install (ks.cfg), fetched by install-mode hosts through ks=")
        register(hostprofile_schema.KIND, files=(hostprofile_schema.FILE,),
                 description="ESXi host configuration in vSphere API terms, applied through the host's own API "
                             "after every boot (docs/esxi.md)")

    @hookimpl
    def bootbox_render_answer_file(self, kind: str, host: Host, profile: HostProfile, answers: Mapping[str, Any],
                                   env: AnswerEnv) -> dict[str, str] | None:
        """``ks.cfg``, checked (rootpw hashed) and, unless the host boots stateless, with a
        ``%firstboot`` call-in when it has none (stateless hosts call in from a boot module);
        ``host.yaml`` of an ``esxi`` host profile, validated against its schema (errors name the
        field), which the plugin itself applies after boot (``hostprofile/``)."""
        if kind == hostprofile_schema.KIND:
            text = env.render(hostprofile_schema.FILE)
            secrets = {spec.name: spec.is_secret for spec in profile.inputs}
            hostprofile_schema.load(text, hostprofile_schema.secrets_from(secrets, answers, masked=env.masked))
            return {hostprofile_schema.FILE: text}
        if kind != kickstart.KIND:
            return None
        return kickstart.render(env, add_callin=self.mode_of(host) != "stateless")

    @hookimpl
    def bootbox_register_answer_inputs(self, register: Callable[..., None]) -> None:
        register(ENDPOINT_INPUT, required=False,
                 description="where bootbox reaches the host's vSphere API, HOST[:PORT] "
                             "(default: the address it reported up from, port 443)",
                 applies_to=lambda host: self.mode_of(host) != "")

    @property
    def hostprofiles(self) -> HostProfiles:
        if self._hostprofiles is None:
            raise PluginError("the esxi plugin is not started (bootbox serve starts it)")
        return self._hostprofiles

    def hostprofile_boot_script(self, mac: str, report_url: str) -> str:
        """The boot-module path's ``esxcli`` script for this boot of ``mac`` ("" when it uses the API)."""
        if self._hostprofiles is None:
            return ""
        try:
            return self._hostprofiles.boot_script(self.state.context.host(mac), report_url)
        except Exception as exc:  # the call-in module must still be served: the host reports up either way
            self.state.context.record(mac, EventKind.STATE, f"esxi: host profile left out of the call-in module: {exc}")
            return ""

    def host_certificate(self, mac: str, requester: str, boot_key: str) -> tuple[bytes, bytes] | None:
        """A new key and certificate from the appliance's CA for this boot of ``mac`` (``(cert
        PEM, key PEM)``), for its call-in module: named after its host profile's ``dns.hostname``
        (and FQDN) and its addresses (the ``esxi_api_endpoint`` answer, the address it fetched
        the module from, the ``ipv4`` it reported). From now until its next boot script, its API is verified against the CA.
        The key is not kept and never logged; the timeline gets the serial and thumbprint."""
        if self._hostca is None or self._hostcerts is None:
            return None
        context = self.state.context
        host = context.host(mac)
        answers = context.answers(host)
        names: list[str] = []
        addresses: list[str] = []
        try:
            found = self._hostprofiles.desired(host, answers) if self._hostprofiles else None
        except ValidationError:  # the push will say what is wrong; the certificate still names the address
            found = None
        if found is not None and found[1].dns is not None:
            names += hostcert.host_names(found[1].dns.hostname, found[1].dns.domain)
        raw = answers.get(ENDPOINT_INPUT)
        if raw:
            try:
                where, _ = parse_endpoint(str(raw), ENDPOINT_INPUT)
                (addresses if _is_ip(where) else names).append(where)
            except ValidationError:
                pass
        requester = requester.split("%", 1)[0]
        if requester.startswith("::ffff:") and _is_ip(requester[7:]):
            requester = requester[7:]
        for address in (requester, str(host.attrs.get("ipv4", ""))):  # where bootbox connects without the answer
            if _is_ip(address):
                addresses.append(address)
        issued = self._hostca.issue(names, addresses)
        self._hostcerts.remember(host.mac, issued, hashlib.sha256(boot_key.encode()).hexdigest())
        if self._hostprofiles is not None:
            self._hostprofiles.certificate_issued(host.mac)
        context.record(host.mac, EventKind.STATE,
                       (f"esxi: TLS certificate for {', '.join(issued.names + issued.addresses)} issued by bootbox's "
                        f"host CA into its call-in module (serial {issued.serial:x}, SHA-256 {issued.sha256[:23]}…); "
                        "its vSphere API is verified against that CA this boot"),
                       serial=format(issued.serial, "x"), sha256=issued.sha256, names=list(issued.names),
                       addresses=list(issued.addresses))
        return issued.cert_pem, issued.key_pem

    def hostprofile_steps(self, mac: str, key: str, text: str, client: str) -> int:
        """The boot-module script's step report, accepted with this boot's call-in key only."""
        try:
            self.state.callins.up_token(mac, key)
        except Forbidden as exc:
            self.state.context.record(mac, EventKind.AUDIT, f"refused a host-profile step report from {client}: {exc}",
                                      ip=client, reason=str(exc))
            raise
        return self.hostprofiles.record_steps(mac, text)

    @hookimpl
    def bootbox_host_up(self, host: Host, event: Any, answers: Mapping[str, Any], timeout: float) -> str | None:
        """Apply the host's ``esxi`` host profile through its own vSphere API (after every boot)."""
        if self._hostprofiles is None:
            return None
        return self._hostprofiles.push(host, answers, timeout)

    def mode_of(self, host: Host) -> str:
        """``stateless`` or ``install`` for a host whose image is an ESXi profile, else ``""``.

        A host that has not booted yet has no ``profile``; its ``image`` association (set by the
        rules) names the same profile, which is what ``bootbox host render`` previews.
        """
        name = host.profile or host.associations.get("image", "")
        if not name or self._state is None:
            return ""
        try:
            profile = self._state.context.profile(name)
        except NotFound:
            return ""
        return str(profile.spec.get("mode") or "stateless") if profile.kind == KIND else ""

    # ------------------------------------------------------------------ images

    @hookimpl
    def bootbox_image_inject(self, image_kind: str, host: Host | None) -> list[str] | None:
        """``[plugins.esxi.inject]``: VIBs for hosts whose ``group`` association matches."""
        if image_kind != KIND or host is None or not self.config.inject:
            return None
        group = host.associations.get("group", "")
        if not group and self._state is not None:  # first boot: the rules chose it a moment ago
            group = self._state.context.associations(host).get("group", "")
        return list(self.config.inject.get(group, ())) or None

    def injected_for(self, host: Host, profile: Profile) -> list[str]:
        """What plugins add to ``host``'s image.

        Until the core offers every plugin's answer (``context.image_packages``, asked for in
        the report), only this plugin's own ``[plugins.esxi.inject]`` is seen.
        """
        ask = getattr(self.state.context, "image_packages", None)
        if callable(ask):
            return list(ask(host, profile))
        return self.bootbox_image_inject(image_kind=profile.kind, host=host) or []

    def image_for(self, host: Host | None, profile: Profile) -> Image:
        """The (cached) image ``host`` boots; ``host=None``: the profile alone."""
        state = self.state
        injected = tuple(self.injected_for(host, profile)) if host is not None else ()
        key = (profile.name, json.dumps(profile.spec, sort_keys=True), injected, state.catalog.generation)
        with state.lock:
            found = state.images.get(key)
        if found is not None:
            return found
        built = hostimage.resolve(profile.name, profile.spec, state.catalog, injected)
        with state.lock:
            if len(state.images) > _CACHE_LIMIT:
                state.images.clear()
                state.by_id.clear()
            state.images[key] = built
            state.by_id[built.id] = built
        return built

    def image_by_id(self, image_id: str) -> Image:
        """An image some host or profile resolves to (re-resolved after a restart).

        An unknown ID makes every ESXi profile and host resolve again, at most once per
        ``_RESCAN_SECONDS``, so requests for made-up IDs cannot keep the appliance busy.
        """
        state = self.state
        found = state.by_id.get(image_id)
        if found is None and time.monotonic() - state.rescanned >= _RESCAN_SECONDS:
            state.rescanned = time.monotonic()
            profiles = {p.name: p for p in state.context.profiles() if p.kind == KIND}
            pairs: list[tuple[Host | None, Profile]] = [(None, p) for p in profiles.values()]
            pairs += [(h, profiles[h.profile]) for h in state.context.hosts() if h.profile in profiles]
            for host, profile in pairs:
                try:
                    self.image_for(host, profile)
                except Exception:  # one broken profile must not hide the others' images
                    continue
            found = state.by_id.get(image_id)
        if found is None:
            raise NotFound(f"no image {image_id!r} is being served")
        return found

    def imgdb_path(self, image: Image) -> Path:
        state = self.state
        sha = state.imgdbs.get(image.id)
        if sha is None or not state.catalog.blobs.has(sha):
            sha = state.catalog.blobs.put_bytes(imgdb.build(image, state.catalog))
            state.imgdbs[image.id] = sha
        return state.catalog.blobs.path(sha)

    def loader_path(self, image: Image, key: str) -> Path | None:
        path = image.loaders.get(key) or self.config.loaders.get(key)
        return Path(path) if path else None

    def file_of(self, image: Image, name: str) -> Path | None:
        """The file behind ``name`` in an image's tree: a loader, imgdb.tgz or a module."""
        for key, loader in LOADER_NAMES.items():
            if name == loader:
                return self.loader_path(image, key)
        if name == IMGDB:
            return self.imgdb_path(image)
        module = image.module(name)
        return self.state.catalog.payload_path(module.sha256) if module else None

    # ------------------------------------------------------------------ booting

    @hookimpl
    def bootbox_boot_script(self, host: Host, profile: Profile, boot: BootContext) -> str | None:
        if profile.kind != KIND:
            return None
        self.state.callins.revoke(host.mac)  # a new boot: the last one's call-in module is over
        if self._hostcerts is not None:
            self._hostcerts.forget(host.mac)  # and so is its certificate, until this boot's module
        try:
            image = self.image_for(host, profile)
        except (hostimage.ImageError, ValueError) as exc:
            return script.render_error(boot, profile.name, str(exc), self.retry_seconds)
        firmware = firmware_of(host, boot)
        bios = self.config.bios
        needed = ["efi"] if firmware == "uefi" else (["c32"] if bios == "com32" else ["pxelinux", "c32"])
        for key in needed:
            path = self.loader_path(image, key)
            if path is None or not path.is_file():
                return script.render_error(
                    boot, profile.name,
                    f"{LOADER_NAMES[key]} is not available: set plugins.esxi.loaders.{key} (or the profile's "
                    f"loaders.{key}) to VMware's file from an ESXi ISO", self.retry_seconds)
        for ref, reason in image.refused:
            self.state.context.record(host.mac, EventKind.STATE, f"esxi: injected VIB {ref} left out: {reason}",
                                      vib=ref)
        base = self.boot_files_url(host, profile, image.mode, boot)
        return script.render(boot, script.ScriptInputs(
            profile=profile.name, mode=image.mode, firmware=firmware, bootcfg_url=f"{base}/boot.cfg",
            pxelinux_cfg_url=f"{base}/pxelinux.cfg", cache_urls=boot.cache_urls or self.config.cache_urls, bios=bios))

    def boot_files_url(self, host: Host, profile: Profile, mode: str, boot: BootContext) -> str:
        """Where this boot's boot.cfg and pxelinux.cfg live: ``…/hosts/<mac>/<call-in key>/<answer token>``.

        Stateless: a new call-in key (``callin.CallinKeys``) stands for the up token, which never
        appears in a URL; the previous boot's key stops working. Install: the core's single-use
        answer token, so boot.cfg's ``ks=`` is ``boot.answer_url("ks.cfg")``. ``-`` for neither.
        """
        state = self.state
        key = state.callins.mint(host.mac, boot.up_token) if mode == "stateless" and boot.up_token else ""
        answer = boot.answer_token if mode == "install" else ""
        if mode == "install" and not answer:
            stale = " (spec.kickstart is no longer read)" if profile.spec.get("kickstart") else ""
            state.context.record(host.mac, EventKind.STATE, (
                f"esxi: profile {profile.name} installs, but the host has no host profile, so the installer "
                f"runs without a kickstart{stale}: give it one of kind kickstart (rule item host_profile=NAME)"))
        return f"{boot.base_url.rstrip('/')}/boot/esxi/hosts/{boot.mac.replace(':', '')}/{key or '-'}/{answer or '-'}"

    @hookimpl
    def bootbox_profile_asset(self, host: Host, profile: Profile, name: str) -> Path | None:
        if profile.kind != KIND:
            return None
        try:
            image = self.image_for(host, profile)
        except (hostimage.ImageError, ValueError):
            return None
        return self.file_of(image, name)
