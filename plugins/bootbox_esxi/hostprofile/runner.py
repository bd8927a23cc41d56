"""The ESXi plugin's host-profile work for the running appliance: apply after a report-in,
re-apply after a reboot noticed through ``runtime.bootTime``, and check compliance.

What it remembers per host (plugin store, table ``hosts``) is where its API is, the certificate
thumbprint pinned for its current boot, that boot's ``runtime.bootTime`` and which password let
bootbox in; the last compliance result per host is in table ``compliance`` (what ``bootbox host
list`` shows, so listing hosts never queries one).

TLS trust, per boot: a host whose current boot fetched its call-in module got a key and
certificate from the appliance's CA in it (``hostcert.py``); its API is verified against that
CA, host name checked, and a certificate that does not verify is refused before any password is
sent (an ``audit`` event says so). Where that cannot apply (the simulator, a host that booted
without the module): after the host's verified report-in (its up token), the certificate it
presents is pinned for that boot. The watcher connects with that pin only. A host that later
presents another certificate may have rebooted (a stateless host has a new certificate each
boot) — or be an impostor: bootbox then sends it only the empty password a freshly booted
stateless host accepts, never the profile's, and accepts the new certificate only if that login
works and ``runtime.bootTime`` moved on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import secrets
import string

from bootbox import Conflict, EventKind, Host, NotFound, PluginContext, PushRefused, ValidationError, sha512_crypt
from bootbox_esxi import hostcert
from bootbox_esxi.hostprofile import apply as applier
from bootbox_esxi.hostprofile import esxcli, schema, vsphere
from bootbox_esxi.hostprofile.diff import compliant
from bootbox_esxi.hostprofile.model import HostConfig

log = logging.getLogger("bootbox.esxi.hostprofile")

ENDPOINT_INPUT = "esxi_api_endpoint"
PROFILE_PASSWORD = "the profile's root password"
EMPTY_PASSWORD = "the empty password of a fresh stateless host"
HOSTS, COMPLIANCE = "hostprofile_hosts", "hostprofile_compliance"
WATCH_TRIES = 5
"""Re-applies the watcher makes for one boot whose apply keeps failing, before it waits for
the next boot (or ``bootbox host push``)."""


@dataclass
class Known:
    """What bootbox remembers about one host whose host profile it applied."""

    address: str
    port: int
    thumbprint: str
    boot_time: str
    login: str = ""
    tries: int = 0
    done: bool = False
    restricted: bool = False
    """Its API answered RestrictedVersion: its next boots get the boot-module path (``esxcli``)."""


def parse_endpoint(raw: str, where: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (``[v6]:port``) → address and port (default 443)."""
    text = raw.strip()
    host, port = text, 443
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.lstrip(":")) if rest.lstrip(":").isdigit() else -1
    elif text.count(":") == 1:
        host, _, tail = text.partition(":")
        port = int(tail) if tail.isdigit() else -1
    if not host or not 0 < port < 65536:
        raise ValidationError(where, f"{raw!r} is not host or host:port")
    return host, port


class HostProfiles:
    """Applies ``esxi`` host profiles for one appliance; owns the reboot watcher thread."""

    def __init__(self, context: PluginContext, watch_seconds: float, timeout: float = 30.0, *,
                 ca: hostcert.HostCA | None = None, certs: hostcert.IssuedCerts | None = None) -> None:
        self.context = context
        self.ca = ca
        self.certs = certs
        self._untrusted_noted: set[str] = set()
        self.watch_seconds = watch_seconds
        self.timeout = timeout
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._known = {mac: Known(**doc) for mac, doc in context.store.all(HOSTS).items()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what a host should be

    def desired(self, host: Host, answers: Mapping[str, Any]) -> tuple[str, HostConfig] | None:
        """The host's host profile name and desired configuration, or None if it has no ``esxi`` one."""
        try:
            profile, files = self.context.host_profile_files(host)
        except NotFound:
            return None
        if profile.kind != schema.KIND:
            return None
        secrets = {spec.name: spec.is_secret for spec in profile.inputs}
        return profile.name, schema.load(files[schema.FILE], schema.secrets_from(secrets, answers))

    def endpoint(self, host: Host, answers: Mapping[str, Any]) -> tuple[str, int]:
        raw = answers.get(ENDPOINT_INPUT)
        if raw:
            return parse_endpoint(str(raw), ENDPOINT_INPUT)
        address = host.attrs.get("ipv4", "")
        if not address:
            raise PushRefused(f"host {host.mac} reported no address; set the answer {ENDPOINT_INPUT}=HOST[:PORT]")
        return address, 443

    def cafile(self, mac: str) -> str | None:
        """The CA to verify ``mac``'s API against: the appliance's, when its current boot carried a
        certificate from it (its call-in module); None: pin the thumbprint instead."""
        if self.ca is None or self.certs is None or self.certs.get(mac) is None:
            return None
        return str(self.ca.cafile)

    def certificate_issued(self, mac: str) -> None:
        """A new boot of ``mac`` got a certificate from the CA: a refusal from now on is news again."""
        self._untrusted_noted.discard(mac)

    def _untrusted(self, mac: str, address: str, port: int, exc: vsphere.CertificateUntrusted) -> None:
        """An ``audit`` event: the host's certificate is not the one bootbox gave it (once per episode)."""
        if mac in self._untrusted_noted:
            return
        self._untrusted_noted.add(mac)
        issued = (self.certs.get(mac) if self.certs else None) or {}
        names = ", ".join([*issued.get("names", []), *issued.get("addresses", [])])
        self.context.record(mac, EventKind.AUDIT,
                            (f"esxi: refused https://{address}:{port}/sdk: {exc} (this boot's call-in module gave the "
                             f"host a certificate from bootbox's CA for {names or 'it'}, serial "
                             f"{issued.get('serial', '?')}); possible interception, or the host did not install it"),
                            address=address, port=port, serial=issued.get("serial", ""), reason=str(exc))

    @staticmethod
    def passwords(want: HostConfig) -> list[tuple[str, str]]:
        tries = [(PROFILE_PASSWORD, want.root_password)] if want.root_password else []
        return tries + [(EMPTY_PASSWORD, "")]

    # ------------------------------------------------------------------ applying

    def push(self, host: Host, answers: Mapping[str, Any], timeout: float) -> str | None:
        """``bootbox_host_up``: apply the host profile after the host's (verified) report-in."""
        try:
            found = self.desired(host, answers)
        except ValidationError as exc:  # the profile or an answer is wrong: retrying cannot help
            raise PushRefused(f"its esxi host profile does not validate: {exc.field}: {exc.message}") from None
        if found is None:
            return None
        name, want = found
        address, port = self.endpoint(host, answers)
        timeout = min(timeout, self.timeout) if timeout > 0 else self.timeout
        before = self._known.get(host.mac)
        had_module = before is not None and before.restricted  # this boot's call-in module carried the script
        cafile = self.cafile(host.mac)
        with self._claim(host.mac):
            # no CA certificate this boot: pin what the first contact of this verified boot presents
            pin = "" if cafile else vsphere.thumbprint(address, port, timeout)
            try:
                session = vsphere.connect(address, port, self.passwords(want), pin=pin, cafile=cafile,
                                          timeout=timeout)
            except vsphere.CertificateUntrusted as exc:
                self._untrusted(host.mac, address, port, exc)
                raise PushRefused(f"host profile {name}: {exc}") from None
            except vsphere.LoginRefused as exc:
                raise PushRefused(f"host profile {name}: {exc}; set the host's root_password answer to its "
                                  "current password, or reboot it") from None
            try:
                report = self._apply(host.mac, name, session, want, address, port, timeout, "after its report-in")
            finally:
                session.close()
        if report.restricted and had_module:
            return (f"host profile {name}: the host's vSphere API is read-only (RestrictedVersion); "
                    "its boot module's esxcli script applies the profile (steps on the timeline)")
        if report.restricted:
            raise PushRefused(f"host profile {name}: the host's licence makes its vSphere API read-only "
                              "(vim.fault.RestrictedVersion: free vSphere Hypervisor); assign an evaluation or "
                              "paid licence, or configure it with the boot-module path")
        if report.failed:
            raise RuntimeError(f"host profile {name}: {report.summary()}: "
                               + "; ".join(o.line() for o in report.failed))
        return f"host profile {name} applied to https://{address}:{port}/sdk: {report.summary()}"

    def _apply(self, mac: str, name: str, session: vsphere.Session, want: HostConfig, address: str, port: int,
               timeout: float, why: str) -> applier.Report:
        record = self.context.record

        def verify_root(password: str) -> bool:
            try:
                vsphere.connect(address, port, [(PROFILE_PASSWORD, password)], pin=session.thumbprint,
                                cafile=session.cafile, timeout=timeout).close()
            except vsphere.LoginRefused:
                return False
            return True

        self._untrusted_noted.discard(mac)
        report = applier.apply(session, want, verify_root)
        for outcome in report.outcomes:
            if outcome.result != applier.COMPLIED:
                record(mac, EventKind.PUSH, f"esxi host profile {name}: {outcome.line()}", **outcome.to_dict())
        complied = [o.key for o in report.outcomes if o.result == applier.COMPLIED]
        if complied:
            record(mac, EventKind.PUSH, f"esxi host profile {name}: already complied: {', '.join(complied)}",
                   complied=complied)
        tls = ("certificate verified against bootbox's host CA" if session.cafile
               else f"certificate pinned, SHA-256 {session.thumbprint[:23]}…")
        record(mac, EventKind.STATE, (f"esxi host profile {name} applied {why} (logged in with {report.login}, "
                                      f"boot {report.boot_time}, {tls}): {report.summary()}"),
               login=report.login, boot_time=report.boot_time, summary=report.summary(),
               tls="ca" if session.cafile else "pin")
        if report.restricted:
            record(mac, EventKind.STATE, ("esxi: the host's vSphere API is read-only (vim.fault.RestrictedVersion: "
                                          "its licence is the free vSphere Hypervisor); the host profile cannot be "
                                          "applied through the API: from its next boot it is applied by an esxcli "
                                          "script in its call-in module"))
        with self._lock:
            known = self._known.get(mac)
            same_boot = known is not None and known.boot_time == report.boot_time
            tries = (known.tries if same_boot and known else 0) + 1
            self._known[mac] = Known(address=address, port=port, thumbprint=session.thumbprint,
                                     boot_time=report.boot_time, login=report.login, tries=tries,
                                     done=not report.failed or report.restricted, restricted=report.restricted)
            self.context.store.put(HOSTS, mac, asdict(self._known[mac]))
        settings = [{"setting": o.key, "action": "none" if o.result != applier.FAILED else "failed",
                     "want": o.want, "have": o.have} for o in report.outcomes]
        self._save_compliance(mac, name, not report.failed, report.boot_time, settings, "apply")
        return report

    def _claim(self, mac: str) -> "_Claim":
        return _Claim(self, mac)

    # ------------------------------------------------------------------ the boot-module path

    def boot_script(self, host: Host, report_url: str) -> str:
        """The ``esxcli`` script for this boot's call-in module: only for a host whose API was
        found read-only (``RestrictedVersion``); "" for every other host."""
        known = self._known.get(host.mac)
        if known is None or not known.restricted:
            return ""
        found = self.desired(host, self.context.answers(host))
        if found is None:
            return ""
        _, want = found
        alphabet = string.ascii_letters + string.digits + "./"

        def crypt(password: str) -> str:
            return sha512_crypt(password, "".join(secrets.choice(alphabet) for _ in range(16)))

        hashes = {user.name: crypt(user.password) for user in want.users if user.password}
        if want.root_password:
            hashes["root"] = crypt(want.root_password)
        return esxcli.render(want, hashes=hashes, report_url=report_url)

    def record_steps(self, mac: str, text: str) -> int:
        """The boot-module script's report: one line per step (``NAME complied|changed|failed
        [RC LAST-LINE]``) becomes an event; the steps are the host's latest compliance."""
        settings: list[dict[str, str]] = []
        record = self.context.record
        for line in text.splitlines()[:500]:
            parts = line.strip().split(" ", 3)
            if len(parts) < 2 or parts[1] not in ("complied", "changed", "failed"):
                continue
            name, result = parts[0][:120], parts[1]
            detail = " ".join(parts[2:])[:300]
            if result != "complied":
                record(mac, EventKind.PUSH, f"esxi host profile (esxcli): {name} {result}"
                                            + (f": exit {detail}" if detail else ""), setting=name, result=result)
            settings.append({"setting": name, "action": "failed" if result == "failed" else "none",
                             "want": "", "have": detail})
        failed = [s["setting"] for s in settings if s["action"] == "failed"]
        record(mac, EventKind.STATE, f"esxi host profile applied by the boot module: {len(settings)} steps, "
                                     f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
        if settings:
            known = self._known.get(mac)
            self._save_compliance(mac, "(boot module)", not failed, known.boot_time if known else "", settings,
                                  "boot-module")
        return len(settings)

    # ------------------------------------------------------------------ compliance

    def compliance(self, mac: str) -> dict[str, Any]:
        """Auto Deploy's "check compliance": the host's live state diffed against its host
        profile, nothing written. The result is kept as the host's last known compliance."""
        host = self.context.host(mac)
        answers = self.context.answers(host)
        found = self.desired(host, answers)
        if found is None:
            raise NotFound(f"host {host.mac} has no host profile of kind {schema.KIND}")
        name, want = found
        known = self._known.get(host.mac)
        address, port = (known.address, known.port) if known else self.endpoint(host, answers)
        cafile = self.cafile(host.mac)
        pin = "" if cafile else known.thumbprint if known else vsphere.thumbprint(address, port, self.timeout)
        try:
            session = vsphere.connect(address, port, self.passwords(want), pin=pin, cafile=cafile,
                                      timeout=self.timeout)
        except vsphere.CertificateUntrusted as exc:
            self._untrusted(host.mac, address, port, exc)
            raise Conflict(f"compliance of {host.mac}: {exc}") from None
        except vsphere.HostApiError as exc:
            raise Conflict(f"compliance of {host.mac}: {exc}") from None
        try:
            changes = applier.check(session, want)
            boot_time = session.boot_time
        finally:
            session.close()
        return self._save_compliance(host.mac, name, compliant(changes), boot_time,
                                     [c.to_dict() for c in changes], "check")

    def _save_compliance(self, mac: str, name: str, ok: bool, boot_time: str, settings: list[dict[str, str]],
                         how: str) -> dict[str, Any]:
        doc = {"mac": mac, "host_profile": name, "compliant": ok, "boot_time": boot_time, "time": time.time(),
               "how": how, "settings": settings,
               "non_compliant": [s["setting"] for s in settings if s.get("action") != "none"]}
        self.context.store.put(COMPLIANCE, mac, doc)
        self.context.report_check(mac, "compliant" if ok else "non-compliant",
                                  f"host profile {name}" + ("" if ok else ": " + ", ".join(doc["non_compliant"])))
        return doc

    def last_compliance(self) -> dict[str, dict[str, Any]]:
        return self.context.store.all(COMPLIANCE)

    # ------------------------------------------------------------------ the reboot watcher

    def start(self) -> None:
        if self.watch_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="esxi-bootwatch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_seconds):
            self.watch_once()

    def watch_once(self) -> None:
        """Read ``runtime.bootTime`` of every known host once; re-apply where it changed."""
        with self._lock:
            macs = [mac for mac in self._known if mac not in self._busy]
        for mac in macs:
            if self._stop.is_set():
                return
            try:
                self._watch_host(mac)
            except Exception as exc:  # one host's trouble must not stop the watch of the others
                log.warning("%s: boot watch failed: %s", mac, exc)

    def _watch_host(self, mac: str) -> None:
        known = self._known.get(mac)
        try:
            host = self.context.host(mac)
        except NotFound:
            return
        answers = self.context.answers(host)
        found = self.desired(host, answers)
        if known is None or found is None:
            return
        name, want = found
        record = self.context.record
        cafile = self.cafile(mac)
        with self._claim(mac):
            try:
                session = vsphere.connect(known.address, known.port, self.passwords(want), pin=known.thumbprint,
                                          cafile=cafile, timeout=self.timeout)
            except vsphere.CertificateUntrusted as exc:
                self._untrusted(mac, known.address, known.port, exc)
                return
            except vsphere.CertificateMismatch:
                session = self._new_certificate(mac, known)
                if session is None:
                    return
            except vsphere.HostApiError as exc:
                log.info("%s: boot watch: %s", mac, exc)  # down or rebooting: the next round will see it
                return
            try:
                boot_time = session.boot_time
                if boot_time == known.boot_time and (known.done or known.tries >= WATCH_TRIES):
                    return
                if boot_time != known.boot_time:
                    record(mac, EventKind.STATE, (f"esxi: reboot detected (runtime.bootTime {known.boot_time} → "
                                                  f"{boot_time}); applying host profile {name} again"),
                           boot_time=boot_time, previous_boot_time=known.boot_time)
                self._apply(mac, name, session, want, known.address, known.port, self.timeout,
                            "after a reboot bootbox noticed")
            finally:
                session.close()

    def _new_certificate(self, mac: str, known: Known) -> vsphere.Session | None:
        """The host presents a certificate other than this boot's pin: accept it only from a host
        that rebooted (new ``bootTime``) and takes a fresh host's empty password."""
        record = self.context.record
        try:
            seen = vsphere.thumbprint(known.address, known.port, self.timeout)
            session = vsphere.connect(known.address, known.port, [(EMPTY_PASSWORD, "")], pin=seen,
                                      timeout=self.timeout)
        except vsphere.LoginRefused:
            record(mac, EventKind.AUDIT, (f"esxi: https://{known.address}:{known.port}/sdk presents a new certificate "
                                          "but is not a freshly booted host (the empty password is refused); "
                                          "bootbox sends it no credentials (possible interception) and waits "
                                          "for the host's report-in"))
            return None
        except vsphere.HostApiError as exc:
            log.info("%s: boot watch: %s", mac, exc)
            return None
        if session.boot_time == known.boot_time:
            session.close()
            record(mac, EventKind.AUDIT, (f"esxi: https://{known.address}:{known.port}/sdk presents a new certificate "
                                          "without having rebooted; refused (possible interception)"))
            return None
        record(mac, EventKind.STATE, f"esxi: new certificate with the new boot, pinned (SHA-256 {seen[:23]}…)",
               thumbprint=seen)
        return session


class _Claim:
    """One apply or watch at a time per host (a report-in and the watcher can meet)."""

    def __init__(self, owner: HostProfiles, mac: str) -> None:
        self.owner, self.mac = owner, mac

    def __enter__(self) -> None:
        while True:
            with self.owner._lock:
                if self.mac not in self.owner._busy:
                    self.owner._busy.add(self.mac)
                    return
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        with self.owner._lock:
            self.owner._busy.discard(self.mac)
