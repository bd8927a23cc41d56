"""The configuration of one ESXi host, in the vSphere API's terms: what a host profile wants
(after its answers are filled in) and what a host has. Pure data, no I/O.

Both sides use the same types, so the diff compares like with like. A live state carries only
what the API can read back: passwords are never readable, so ``users`` and ``root_password``
are compared by other means (see ``diff``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VSwitch:
    """A standard vSwitch (``HostVirtualSwitchSpec``): physical uplinks, MTU, ports."""

    name: str
    uplinks: tuple[str, ...] = ()
    mtu: int = 1500
    ports: int = 128


@dataclass(frozen=True)
class PortGroup:
    """A port group on a standard vSwitch (``HostPortGroupSpec``), with its VLAN (0: none, 4095: all)."""

    name: str
    vswitch: str
    vlan: int = 0


@dataclass(frozen=True)
class VmkNic:
    """A VMkernel NIC on a port group (``HostVirtualNicSpec``); ``ip`` is ``dhcp`` or ``a.b.c.d/len``."""

    portgroup: str
    ip: str = "dhcp"
    mtu: int = 1500


@dataclass(frozen=True)
class Dns:
    """``HostDnsConfig`` (static): host name, domain, servers, search domains."""

    hostname: str = ""
    domain: str = ""
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """A host service (``HostService``): its start-up policy and whether it runs now."""

    policy: str = "off"  # on | off | automatic
    running: bool = False


@dataclass(frozen=True)
class Nfs:
    """An NFS datastore (``HostNasVolumeSpec``): ``name`` is its local path."""

    name: str
    host: str
    path: str
    readonly: bool = False
    version: str = "NFS"  # NFS (v3) | NFS41


@dataclass(frozen=True)
class User:
    """A local account; ``password`` is the clear text from a secret answer (never logged)."""

    name: str
    password: str = field(default="", repr=False)
    description: str = ""


@dataclass(frozen=True)
class HostConfig:
    """Everything a host profile can say about a host, or everything read back from one.

    ``ntp_servers is None`` means "the profile says nothing about NTP" (likewise ``dns``,
    ``license``); services, firewall rulesets and advanced options are keyed by their vSphere
    keys (``TSM-SSH``, ``sshServer``, ``Syslog.global.logHost``).
    """

    vswitches: tuple[VSwitch, ...] = ()
    portgroups: tuple[PortGroup, ...] = ()
    vmknics: tuple[VmkNic, ...] = ()
    dns: Dns | None = None
    ntp_servers: tuple[str, ...] | None = None
    services: dict[str, Service] = field(default_factory=dict)
    firewall: dict[str, bool] = field(default_factory=dict)
    advanced: dict[str, Any] = field(default_factory=dict)
    nfs: tuple[Nfs, ...] = ()
    users: tuple[User, ...] = ()
    root_password: str | None = field(default=None, repr=False)
    license: str | None = None
