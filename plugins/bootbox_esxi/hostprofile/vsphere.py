"""Reading and writing one ESXi host's configuration through its own vSphere API (pyVmomi).

bootbox talks to ``https://HOST/sdk`` as root, as Ansible's community.vmware modules do against
a standalone host: ``HostNetworkSystem`` (vSwitches, port groups, VMkernel NICs, DNS),
``HostDateTimeSystem`` (NTP), ``HostServiceSystem`` (SSH, ESXi Shell, ntpd),
``HostFirewallSystem``, the host's ``OptionManager`` (advanced options), ``HostDatastoreSystem``
(NFS), ``HostLocalAccountManager`` (users, root's password) and ``LicenseManager``.

TLS, one of two ways, the caller's choice (``runner.py``):

* ``cafile``: the host's certificate must chain to that CA (the appliance's own, ``hostcert.py``,
  which issued the certificate in the host's boot module) and name the address connected to
  (host-name checking on); anything else is :class:`CertificateUntrusted`;
* ``pin``: a SHA-256 thumbprint the peer must present (the one first seen in this boot of the
  host), where no certificate of bootbox's can apply (the simulator, hosts that booted without
  the module); another one is :class:`CertificateMismatch`.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import socket
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pyVim.connect import Connect, Disconnect
from pyVmomi import VmomiSupport, vim, vmodl
from pyVmomi.Security import ThumbprintMismatchException
from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap

from bootbox_esxi.hostprofile.diff import ADD, Change
from bootbox_esxi.hostprofile.model import Dns, HostConfig, Nfs, PortGroup, Service, User, VmkNic, VSwitch

ROOT = "root"
EVAL_LICENSE = "00000-00000-00000-00000-00000"


class HostApiError(Exception):
    """The host's API could not be used at all (unreachable, TLS, login); the message says why."""


class LoginRefused(HostApiError):
    """Every password bootbox has for root was refused (``InvalidLogin``)."""


class CertificateMismatch(HostApiError):
    """The host presented another certificate than the one pinned for this boot."""


class CertificateUntrusted(HostApiError):
    """The host's certificate does not verify against the CA bootbox trusts for it (another
    issuer, another host's name, expired): no credentials were sent."""


def fault_text(exc: BaseException) -> str:
    """``vim.fault.NotFound: stat nfs-iso: …`` — a vSphere fault as the timeline shows it."""
    name = type(exc).__name__  # pyVmomi names fault classes in full: vim.fault.NotFound
    if isinstance(exc, vmodl.MethodFault):
        msg = (getattr(exc, "msg", "") or "").strip()
        return name + (f": {msg}" if msg else "")
    return f"{name}: {exc}"


def is_restricted(exc: BaseException) -> bool:
    """True for ``RestrictedVersion``: the host's licence (free vSphere Hypervisor) makes its API read-only."""
    return isinstance(exc, vim.fault.RestrictedVersion)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _sha256(der: bytes | None, where: str) -> str:
    if not der:
        raise HostApiError(f"{where} presented no certificate")
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def thumbprint(address: str, port: int, timeout: float) -> str:
    """The SHA-256 thumbprint (``AA:BB:…``) of the certificate ``address:port`` presents."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            with _unverified().wrap_socket(sock, server_hostname=address) as tls:
                return _sha256(tls.getpeercert(binary_form=True), f"{address}:{port}")
    except OSError as exc:
        raise HostApiError(f"cannot reach {address}:{port}: {exc}") from None


def _untrusted(address: str, port: int, exc: ssl.SSLCertVerificationError) -> CertificateUntrusted:
    reason = exc.verify_message or exc.reason or str(exc)
    return CertificateUntrusted(f"{address}:{port} presented a certificate that does not verify against "
                                f"bootbox's host CA: {reason}; no credentials were sent")


def negotiate(address: str, port: int, pin: str, timeout: float, cafile: str | None = None) -> str:
    """The newest vSphere API version both pyVmomi and the host speak, read from the host's
    ``/sdk/vimServiceVersions.xml`` over a connection whose certificate matches ``pin`` (or,
    with ``cafile``, verifies against that CA for ``address``).

    (pyVmomi's own negotiation in ``SmartConnect`` does not apply the pin.)
    """
    return _negotiate(address, port, pin, timeout, cafile)[0]


def _negotiate(address: str, port: int, pin: str, timeout: float, cafile: str | None) -> tuple[str, str]:
    """:func:`negotiate`, and the SHA-256 thumbprint of the certificate the host presented."""
    context = ca_context(cafile) if cafile else _unverified()
    conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=context)
    try:
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted(address, port, exc) from None
        seen = _sha256(conn.sock.getpeercert(binary_form=True), f"{address}:{port}")  # type: ignore[union-attr]
        if not cafile and seen != pin:
            raise CertificateMismatch(f"{address}:{port} presented a certificate other than the pinned one "
                                      f"(pinned {pin[:23]}…, seen {seen[:23]}…)")
        conn.request("GET", "/sdk/vimServiceVersions.xml")
        response = conn.getresponse()
        body = response.read(1 << 20)
    except OSError as exc:
        raise HostApiError(f"cannot reach {address}:{port}: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise HostApiError(f"https://{address}:{port}/sdk/vimServiceVersions.xml answered HTTP {response.status}: "
                           "not a vSphere API endpoint")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise HostApiError(f"{address}:{port}: unreadable vimServiceVersions.xml: {exc}") from None
    offered: set[str] = set()
    for namespace in root.findall("namespace"):
        if namespace.findtext("name") == "urn:vim25":
            offered.add(namespace.findtext("version") or "")
            offered.update(v.text or "" for v in namespace.findall("priorVersions/version"))
    for version in GetServiceVersions("vim25"):
        if versionIdMap.get(version) in offered:
            return str(version), seen
    raise HostApiError(f"{address}:{port} offers vSphere API versions {sorted(offered)}, none of which pyVmomi speaks")


def _pinning_context() -> ssl.SSLContext:
    """A TLS context that trusts no CA, so pyVmomi always falls back to the pinned thumbprint.

    pyVmomi checks a pin only when certificate verification fails, and gives loopback peers an
    unverified context unless it is handed one; with an empty trust store verification always
    fails, so the pin is always what decides (including for the simulator on 127.0.0.1).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def ca_context(cafile: str) -> ssl.SSLContext:
    """A TLS context that trusts only ``cafile`` (the appliance's host CA) and checks that the
    certificate names the address connected to (an IP SAN for an address, a DNS SAN for a name).

    Handed to pyVmomi with no thumbprint, so a failed verification is final (pyVmomi falls back
    only to a pin, and its loopback exemption applies only when it is given no context)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=cafile)
    return context


@dataclass
class Session:
    """A logged-in session with one host, and which of the passwords tried worked."""

    si: Any
    host: Any
    content: Any
    password: str
    password_label: str
    thumbprint: str
    cafile: str | None = None
    """The CA the host's certificate was verified against (None: ``thumbprint`` was pinned)."""

    def close(self) -> None:
        try:
            Disconnect(self.si)
        except Exception:  # the host may be gone already (a reboot); nothing to clean up then
            pass

    @property
    def boot_time(self) -> str:
        value = self.host.runtime.bootTime
        return value.isoformat() if value is not None else ""


def connect(address: str, port: int, passwords: Iterable[tuple[str, str]], *, pin: str = "", timeout: float,
            user: str = ROOT, cafile: str | None = None) -> Session:
    """Log in as ``user`` (root) with each ``(label, password)`` in turn; the first that works wins.

    ``pin``: the SHA-256 thumbprint the peer must present; or ``cafile``: the CA its certificate
    must verify against, for ``address`` (then ``pin`` is not used). Raises :class:`LoginRefused`
    when every password gets ``InvalidLogin``, :class:`CertificateUntrusted` /
    :class:`CertificateMismatch` before any password is sent, :class:`HostApiError` for anything else.
    """
    if not cafile and not pin:
        raise ValueError("connect needs a pinned thumbprint or a CA to verify the host against")
    tried: list[str] = []
    version = seen = ""
    for label, password in passwords:
        try:
            if not version:
                version, seen = _negotiate(address, port, pin, timeout, cafile)
            if cafile:
                si = Connect(host=address, port=port, user=user, pwd=password, version=version,
                             sslContext=ca_context(cafile), httpConnectionTimeout=timeout)
            else:
                si = Connect(host=address, port=port, user=user, pwd=password, version=version, thumbprint=pin,
                             sslContext=_pinning_context(), httpConnectionTimeout=timeout)
        except vim.fault.InvalidLogin:
            tried.append(label)
            continue
        except ssl.SSLCertVerificationError as exc:
            if cafile:
                raise _untrusted(address, port, exc) from None
            raise HostApiError(f"TLS with {address}:{port} failed: {exc}") from None
        except ssl.SSLError as exc:
            raise HostApiError(f"TLS with {address}:{port} failed: {exc}") from None
        except vmodl.MethodFault as exc:
            raise HostApiError(f"{address}:{port} refused the login: {fault_text(exc)}") from None
        except ThumbprintMismatchException as exc:
            raise CertificateMismatch(f"{address}:{port} presented a certificate other than the pinned one "
                                      f"({pin[:23]}…): {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise HostApiError(f"cannot use the vSphere API at https://{address}:{port}/sdk: {exc}") from None
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        try:
            hosts = list(view.view)
        finally:
            view.Destroy()
        if not hosts:
            Disconnect(si)
            raise HostApiError(f"https://{address}:{port}/sdk has no HostSystem (is it a vCenter?)")
        return Session(si=si, host=hosts[0], content=content, password=password, password_label=label,
                       thumbprint=seen, cafile=cafile)
    raise LoginRefused(f"{user} login to {address}:{port} refused (InvalidLogin) with {' and '.join(tried) or 'no password'}")


# ---------------------------------------------------------------------------------- reading


def _prefix(mask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen


def read(session: Session, advanced_keys: Iterable[str] = ()) -> HostConfig:
    """The host's live configuration in the model's terms (advanced options: only ``advanced_keys``)."""
    host, content = session.host, session.content
    cm = host.configManager
    info = cm.networkSystem.networkInfo
    vswitches = []
    for vs in info.vswitch or []:
        bridge = vs.spec.bridge if vs.spec else None
        uplinks = tuple(bridge.nicDevice) if isinstance(bridge, vim.host.VirtualSwitch.BondBridge) else ()
        ports = (vs.spec.numPorts if vs.spec else 0) or vs.numPorts
        vswitches.append(VSwitch(name=vs.name, uplinks=uplinks, mtu=vs.mtu or 1500, ports=ports))
    portgroups = [PortGroup(name=pg.spec.name, vswitch=pg.spec.vswitchName, vlan=pg.spec.vlanId or 0)
                  for pg in info.portgroup or []]
    vmknics = []
    for nic in info.vnic or []:
        ip = nic.spec.ip
        address = "dhcp" if ip is None or ip.dhcp else f"{ip.ipAddress}/{_prefix(ip.subnetMask)}"
        vmknics.append(VmkNic(portgroup=nic.portgroup, ip=address, mtu=nic.spec.mtu or 1500))
    dns_info = info.dnsConfig
    dns = Dns(hostname=dns_info.hostName or "", domain=dns_info.domainName or "",
              servers=tuple(dns_info.address or ()), search=tuple(dns_info.searchDomain or ())) if dns_info else None
    ntp = cm.dateTimeSystem.dateTimeInfo.ntpConfig
    services = {s.key: Service(policy=s.policy, running=bool(s.running)) for s in cm.serviceSystem.serviceInfo.service}
    firewall = {r.key: bool(r.enabled) for r in cm.firewallSystem.firewallInfo.ruleset}
    advanced: dict[str, Any] = {}
    for key in advanced_keys:
        try:
            for option in cm.advancedOption.QueryOptions(name=key):
                if option.key == key:
                    advanced[key] = option.value
        except vim.fault.InvalidName:
            continue
    nfs = []
    for ds in host.datastore:
        ds_info = ds.info
        if isinstance(ds_info, vim.host.NasDatastoreInfo) and ds_info.nas is not None:
            mounts = [m.mountInfo for m in ds.host or [] if m.mountInfo is not None]
            readonly = bool(mounts) and mounts[0].accessMode == "readOnly"
            nfs.append(Nfs(name=ds.name, host=ds_info.nas.remoteHost, path=ds_info.nas.remotePath,
                           readonly=readonly, version=ds_info.nas.type or "NFS"))
    users = [User(name=u.principal) for u in content.userDirectory.RetrieveUserGroups(
        searchStr="", exactMatch=False, findUsers=True, findGroups=False) if not u.group]
    keys = [lic.licenseKey for lic in content.licenseManager.licenses or []]
    return HostConfig(vswitches=tuple(vswitches), portgroups=tuple(portgroups), vmknics=tuple(vmknics), dns=dns,
                      ntp_servers=tuple(ntp.server or ()) if ntp else (), services=services, firewall=firewall,
                      advanced=advanced, nfs=tuple(nfs), users=tuple(users), root_password=session.password,
                      license=keys[0] if keys else None)


# ---------------------------------------------------------------------------------- writing


def _switch_spec(vs: VSwitch) -> Any:
    bridge = vim.host.VirtualSwitch.BondBridge(nicDevice=list(vs.uplinks)) if vs.uplinks else None
    return vim.host.VirtualSwitch.Specification(numPorts=vs.ports, mtu=vs.mtu, bridge=bridge)


def _nic_spec(nic: VmkNic) -> Any:
    if nic.ip == "dhcp":
        ip = vim.host.IpConfig(dhcp=True)
    else:
        iface = ipaddress.IPv4Interface(nic.ip)
        ip = vim.host.IpConfig(dhcp=False, ipAddress=str(iface.ip), subnetMask=str(iface.netmask))
    return vim.host.VirtualNic.Specification(ip=ip, mtu=nic.mtu)


def _option_value(value: Any) -> Any:
    return VmomiSupport.vmodlTypes["long"](value) if isinstance(value, int) else str(value)


def _account(name: str, password: str, description: str = "") -> Any:
    return vim.host.LocalAccountManager.AccountSpecification(id=name, password=password, description=description)


def apply_change(session: Session, change: Change, have: HostConfig) -> None:
    """Write one setting; raises the host's fault (a ``vmodl.MethodFault``) if it refuses it."""
    cm = session.host.configManager
    kind, _, name = change.key.partition(":")
    handlers: dict[str, Callable[[], None]] = {}
    item = change.item
    if kind == "license":
        handlers[kind] = lambda: session.content.licenseManager.UpdateLicense(licenseKey=item, labels=[])
    elif kind == "vswitch":
        if change.action == ADD:
            handlers[kind] = lambda: cm.networkSystem.AddVirtualSwitch(vswitchName=item.name, spec=_switch_spec(item))
        else:
            handlers[kind] = lambda: cm.networkSystem.UpdateVirtualSwitch(vswitchName=item.name, spec=_switch_spec(item))
    elif kind == "portgroup":
        spec = vim.host.PortGroup.Specification(name=item.name, vlanId=item.vlan, vswitchName=item.vswitch,
                                                policy=vim.host.NetworkPolicy())
        if change.action == ADD:
            handlers[kind] = lambda: cm.networkSystem.AddPortGroup(portgrp=spec)
        else:
            handlers[kind] = lambda: cm.networkSystem.UpdatePortGroup(pgName=item.name, portgrp=spec)
    elif kind == "vmknic":
        if change.action == ADD:
            handlers[kind] = lambda: cm.networkSystem.AddVirtualNic(portgroup=item.portgroup, nic=_nic_spec(item))
        else:
            device = next(n.device for n in cm.networkSystem.networkInfo.vnic if n.portgroup == item.portgroup)
            handlers[kind] = lambda: cm.networkSystem.UpdateVirtualNic(device=device, nic=_nic_spec(item))
    elif kind == "dns":
        config = vim.host.DnsConfig(dhcp=False, hostName=item.hostname, domainName=item.domain,
                                    address=list(item.servers), searchDomain=list(item.search))
        handlers[kind] = lambda: cm.networkSystem.UpdateDnsConfig(config=config)
    elif kind == "ntp":
        config = vim.host.DateTimeConfig(ntpConfig=vim.host.NtpConfig(server=list(item)))
        handlers[kind] = lambda: cm.dateTimeSystem.UpdateDateTimeConfig(config=config)
    elif kind == "service":
        def service() -> None:
            current = have.services.get(name)
            if current is None or current.policy != item.policy:
                cm.serviceSystem.UpdateServicePolicy(id=name, policy=item.policy)
            if current is None or current.running != item.running:
                (cm.serviceSystem.StartService if item.running else cm.serviceSystem.StopService)(id=name)
        handlers[kind] = service
    elif kind == "firewall":
        method = cm.firewallSystem.EnableRuleset if item else cm.firewallSystem.DisableRuleset
        handlers[kind] = lambda: method(id=name)
    elif kind == "advanced":
        handlers[kind] = lambda: cm.advancedOption.UpdateOptions(
            changedValue=[vim.option.OptionValue(key=name, value=_option_value(item))])
    elif kind == "nfs":
        def nfs() -> None:
            if change.action != ADD:
                for ds in session.host.datastore:
                    if ds.name == item.name:
                        cm.datastoreSystem.RemoveDatastore(datastore=ds)
            cm.datastoreSystem.CreateNasDatastore(spec=vim.host.NasVolume.Specification(
                remoteHost=item.host, remotePath=item.path, localPath=item.name,
                accessMode="readOnly" if item.readonly else "readWrite", type=item.version))
        handlers[kind] = nfs
    elif kind == "user":
        handlers[kind] = lambda: session.content.accountManager.CreateUser(
            user=_account(item.name, item.password, item.description))
    elif kind == "root_password":
        handlers[kind] = lambda: session.content.accountManager.UpdateUser(user=_account(ROOT, item))
    if kind not in handlers:
        raise ValueError(f"no writer for setting {change.key}")
    handlers[kind]()
