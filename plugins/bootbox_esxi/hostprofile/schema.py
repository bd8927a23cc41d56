"""The ``esxi`` host-profile document: its schema, and the desired state it describes.

A host profile of kind ``esxi`` has one template, ``host.yaml``: a Jinja2 template (answers are
``{{ answers.NAME }}``) that renders to a YAML document in the vSphere API's terms::

    vswitches:  [{name: vSwitch1, uplinks: [vmnic1], mtu: 9000, ports: 128}]
    portgroups: [{name: storage, vswitch: vSwitch1, vlan: 20}]
    vmknics:    [{portgroup: storage, ip: 198.18.1.5/24, mtu: 9000}]     # ip: dhcp | address/prefix
    dns:        {hostname: esx01, domain: lab.example, servers: [198.18.0.53], search: [lab.example]}
    ntp:        {servers: [198.18.0.1], policy: on}                        # the ntpd service's policy
    services:   {TSM-SSH: {policy: on, running: true}, TSM: {policy: off}}
    firewall:   {sshServer: true}
    advanced:   {Syslog.global.logHost: "udp://198.18.0.9:514"}
    nfs:        [{name: iso, host: 198.18.0.7, path: /export/iso, readonly: true}]
    users:      [{name: ops, password: {input: ops_password}, description: operators}]
    root_password: {input: root_password}
    license:    {input: license_key}                                       # or the key itself

Passwords are never written in the profile: ``{input: NAME}`` names a secret input, and its
answer (in clear, from the encrypted answer store) is what the host's API gets. Every error
names the field (``host.yaml: vswitches[0].mtu``). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Mapping

import yaml

from bootbox import ValidationError
from bootbox_esxi.hostprofile.model import Dns, HostConfig, Nfs, PortGroup, Service, User, VmkNic, VSwitch

FILE = "host.yaml"
KIND = "esxi"
SECTIONS = ("vswitches", "portgroups", "vmknics", "dns", "ntp", "services", "firewall", "advanced", "nfs",
            "users", "root_password", "license")
POLICIES = ("on", "off", "automatic")
NTP_SERVICE = "ntpd"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_LICENSE = re.compile(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){4}")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")

Secret = Callable[[str, str], "str | None"]
"""``secret(input_name, field)``: the clear answer of a declared secret input, ``None`` when it
is unknown here (a masked preview); raises ValidationError naming ``field`` if no such input."""


def _err(where: str, message: str) -> ValidationError:
    return ValidationError(f"{FILE}: {where}", message)


def _map(value: Any, where: str, known: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(where, "expected a mapping")
    if known:
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise _err(f"{where}.{unknown[0]}", f"unknown field; known: {', '.join(known)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _err(where, "expected a list")
    return value


def _str(value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _err(where, "expected a string")
    text = str(value).strip()
    if not text or (pattern is not None and not pattern.fullmatch(text)):
        raise _err(where, f"{text!r} is not {what or 'valid here'}")
    return text


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _err(where, f"expected a whole number from {low} to {high}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _err(where, "expected true or false")
    return value


def _ip(value: Any, where: str) -> str:
    text = _str(value, where)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _err(where, f"{text!r} is not an IP address") from None


def _strings(value: Any, where: str, check: Callable[[Any, str], str]) -> tuple[str, ...]:
    items = tuple(check(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where)))
    for i, item in enumerate(items):
        if item in items[:i]:
            raise _err(f"{where}[{i}]", f"{item!r} is listed twice")
    return items


def _unique(items: list[Any], key: Callable[[Any], str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if key(item) in seen:
            raise _err(f"{where}[{i}]", f"{what} {key(item)!r} is declared twice")
        seen.add(key(item))


def _password(value: Any, where: str, secret: Secret) -> str | None:
    if isinstance(value, Mapping):
        _map(value, where, ("input",))
        name = _str(value.get("input"), f"{where}.input")
        return secret(name, f"{where}.input")
    raise _err(where, "write {input: NAME} naming a secret input: a password never sits in the profile")


def _vswitch(doc: Any, where: str) -> VSwitch:
    doc = _map(doc, where, ("name", "uplinks", "mtu", "ports"))
    return VSwitch(name=_str(doc.get("name"), f"{where}.name", _NAME, "a vSwitch name"),
                   uplinks=_strings(doc.get("uplinks"), f"{where}.uplinks",
                                    lambda v, w: _str(v, w, re.compile(r"vmnic[0-9]{1,3}"), "a physical NIC (vmnic1)")),
                   mtu=_int(doc.get("mtu", 1500), f"{where}.mtu", 1280, 9000),
                   ports=_int(doc.get("ports", 128), f"{where}.ports", 8, 4088))


def _portgroup(doc: Any, where: str) -> PortGroup:
    doc = _map(doc, where, ("name", "vswitch", "vlan"))
    return PortGroup(name=_str(doc.get("name"), f"{where}.name", _NAME, "a port group name"),
                     vswitch=_str(doc.get("vswitch"), f"{where}.vswitch", _NAME, "a vSwitch name"),
                     vlan=_int(doc.get("vlan", 0), f"{where}.vlan", 0, 4095))


def _vmknic(doc: Any, where: str) -> VmkNic:
    doc = _map(doc, where, ("portgroup", "ip", "mtu"))
    ip = _str(doc.get("ip", "dhcp"), f"{where}.ip")
    if ip != "dhcp":
        try:
            iface = ipaddress.IPv4Interface(ip)
        except ValueError:
            raise _err(f"{where}.ip", f"{ip!r} is not dhcp or an IPv4 address with its prefix (198.18.1.5/24)") from None
        if "/" not in ip:
            raise _err(f"{where}.ip", f"{ip!r} needs its prefix length (198.18.1.5/24)")
        ip = str(iface)
    return VmkNic(portgroup=_str(doc.get("portgroup"), f"{where}.portgroup", _NAME, "a port group name"),
                  ip=ip, mtu=_int(doc.get("mtu", 1500), f"{where}.mtu", 1280, 9000))


def _dns(doc: Any) -> Dns:
    doc = _map(doc, "dns", ("hostname", "domain", "servers", "search"))
    hostname = doc.get("hostname")
    domain = doc.get("domain")
    return Dns(hostname=_str(hostname, "dns.hostname", _HOSTNAME, "a host name") if hostname else "",
               domain=_str(domain, "dns.domain", _HOSTNAME, "a domain name") if domain else "",
               servers=_strings(doc.get("servers"), "dns.servers", _ip),
               search=_strings(doc.get("search"), "dns.search", lambda v, w: _str(v, w, _HOSTNAME, "a domain name")))


def _service(doc: Any, where: str) -> Service:
    doc = _map(doc, where, ("policy", "running"))
    policy = doc.get("policy", "off")
    if isinstance(policy, bool):  # YAML 1.1 reads a bare on/off as a boolean
        policy = "on" if policy else "off"
    if policy not in POLICIES:
        raise _err(f"{where}.policy", f"{policy!r} is not one of {', '.join(POLICIES)}")
    running = _bool(doc["running"], f"{where}.running") if "running" in doc else policy == "on"
    return Service(policy=policy, running=running)


def _nfs(doc: Any, where: str) -> Nfs:
    doc = _map(doc, where, ("name", "host", "path", "readonly", "version"))
    host = _str(doc.get("host"), f"{where}.host")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = _str(host, f"{where}.host", _HOSTNAME, "an NFS server's address or name")
    version = doc.get("version", 3)
    if version not in (3, 4.1, "3", "4.1"):
        raise _err(f"{where}.version", "expected 3 or 4.1")
    path = _str(doc.get("path"), f"{where}.path")
    if not path.startswith("/"):
        raise _err(f"{where}.path", f"{path!r} is not an absolute export path")
    return Nfs(name=_str(doc.get("name"), f"{where}.name", _NAME, "a datastore name"), host=host, path=path,
               readonly=_bool(doc.get("readonly", False), f"{where}.readonly"),
               version="NFS" if str(version) == "3" else "NFS41")


def _user(doc: Any, where: str, secret: Secret) -> User:
    doc = _map(doc, where, ("name", "password", "description"))
    name = _str(doc.get("name"), f"{where}.name", _USER, "a local user name")
    if name == "root":
        raise _err(f"{where}.name", "root is set with root_password")
    description = doc.get("description", "") or ""
    if not isinstance(description, str):
        raise _err(f"{where}.description", "expected a string")
    password = _password(doc.get("password"), f"{where}.password", secret)
    return User(name=name, password=password or "", description=description)


def parse(doc: Any, secret: Secret) -> HostConfig:
    """A rendered ``host.yaml`` document (already loaded) → the host's desired configuration."""
    if doc is None:
        doc = {}
    doc = _map(doc, "(document)", SECTIONS)
    vswitches = [_vswitch(d, f"vswitches[{i}]") for i, d in enumerate(_list(doc.get("vswitches"), "vswitches"))]
    _unique(vswitches, lambda v: v.name, "vswitches", "vSwitch")
    portgroups = [_portgroup(d, f"portgroups[{i}]") for i, d in enumerate(_list(doc.get("portgroups"), "portgroups"))]
    _unique(portgroups, lambda p: p.name, "portgroups", "port group")
    vmknics = [_vmknic(d, f"vmknics[{i}]") for i, d in enumerate(_list(doc.get("vmknics"), "vmknics"))]
    _unique(vmknics, lambda v: v.portgroup, "vmknics", "a VMkernel NIC on port group")
    services = {_str(k, f"services.{k}", _KEY, "a service key (TSM-SSH, TSM, ntpd)"): _service(v, f"services.{k}")
                for k, v in _map(doc.get("services") or {}, "services").items()}
    ntp_servers = None
    if doc.get("ntp") is not None:
        ntp = _map(doc["ntp"], "ntp", ("servers", "policy", "running"))
        ntp_servers = _strings(ntp.get("servers"), "ntp.servers",
                               lambda v, w: _str(v, w, _HOSTNAME, "an NTP server's address or name"))
        if NTP_SERVICE in services:
            raise _err(f"services.{NTP_SERVICE}", "set the NTP daemon under ntp (policy, running)")
        services[NTP_SERVICE] = _service({k: v for k, v in ntp.items() if k != "servers"}, "ntp")
    firewall = {_str(k, f"firewall.{k}", _KEY, "a firewall ruleset key (sshServer)"): _bool(v, f"firewall.{k}")
                for k, v in _map(doc.get("firewall") or {}, "firewall").items()}
    advanced: dict[str, Any] = {}
    for key, value in _map(doc.get("advanced") or {}, "advanced").items():
        key = _str(key, f"advanced.{key}", _OPTION, "an advanced option key (Syslog.global.logHost)")
        if not isinstance(value, (str, int)):
            raise _err(f"advanced.{key}", "expected a string or a whole number")
        advanced[key] = value
    nfs = [_nfs(d, f"nfs[{i}]") for i, d in enumerate(_list(doc.get("nfs"), "nfs"))]
    _unique(nfs, lambda n: n.name, "nfs", "datastore")
    users = [_user(d, f"users[{i}]", secret) for i, d in enumerate(_list(doc.get("users"), "users"))]
    _unique(users, lambda u: u.name, "users", "user")
    root = _password(doc["root_password"], "root_password", secret) if doc.get("root_password") is not None else None
    license_key = None
    if doc.get("license") is not None:
        raw = doc["license"]
        if isinstance(raw, Mapping):
            raw = _map(raw, "license", ("input",))
            raw = secret(_str(raw.get("input"), "license.input"), "license.input")
        if raw is not None:
            license_key = _str(raw, "license", _LICENSE, "a licence key (XXXXX-XXXXX-XXXXX-XXXXX-XXXXX)").upper()
    dns = _dns(doc["dns"]) if doc.get("dns") is not None else None
    config = HostConfig(vswitches=tuple(vswitches), portgroups=tuple(portgroups), vmknics=tuple(vmknics), dns=dns,
                        ntp_servers=ntp_servers, services=services, firewall=firewall, advanced=advanced,
                        nfs=tuple(nfs), users=tuple(users), root_password=root, license=license_key)
    _check_references(config)
    return config


def _check_references(config: HostConfig) -> None:
    """Port groups name a vSwitch and VMkernel NICs a port group of the profile (or vSwitch0 /
    the default port groups every ESXi host has)."""
    switches = {v.name for v in config.vswitches} | {"vSwitch0"}
    for i, pg in enumerate(config.portgroups):
        if pg.vswitch not in switches:
            raise _err(f"portgroups[{i}].vswitch", f"{pg.vswitch!r} is not a vSwitch of this profile (or vSwitch0)")
    groups = {p.name for p in config.portgroups} | {"Management Network", "VM Network"}
    for i, nic in enumerate(config.vmknics):
        if nic.portgroup not in groups:
            raise _err(f"vmknics[{i}].portgroup", f"{nic.portgroup!r} is not a port group of this profile")


def load(text: str, secret: Secret) -> HostConfig:
    """Parse rendered ``host.yaml`` text (YAML errors name the line)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise _err("(document)", f"{line}not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse(doc, secret)


def secrets_from(inputs: Mapping[str, bool], answers: Mapping[str, Any], masked: bool = False) -> Secret:
    """A :data:`Secret` over a profile's inputs (``name → is secret``) and the host's answers."""

    def secret(name: str, where: str) -> str | None:
        if name not in inputs:
            raise _err(where, f"{name!r} is not an input of this host profile")
        if not inputs[name]:
            raise _err(where, f"input {name!r} must be secret (type: password, or secret: true)")
        value = answers.get(name)
        if masked or value in (None, ""):
            return None
        return str(value)

    return secret
