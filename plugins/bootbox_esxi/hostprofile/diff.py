"""The difference between what a host profile wants and what a host has, setting by setting.

Pure: :func:`diff` takes two :class:`~bootbox_esxi.hostprofile.model.HostConfig` values and
returns one :class:`Change` per setting the profile names, in the order they must be applied
(the licence first: a read-only licence refuses everything else; vSwitches before their port
groups, port groups before their VMkernel NICs; the root password last, so the session that
applies the rest is not cut off). A change with ``action == "none"`` is a setting that already
complies; compliance is "every change is none".

Settings the profile does not mention are left alone: a stateless host starts from ESXi's
defaults at every boot, so there is nothing stale to remove. Passwords cannot be read back:
a local user complies when it exists, and the root password complies when it is the password
bootbox logged in with (``HostConfig.root_password`` of the live side is that password).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bootbox_esxi.hostprofile.model import Dns, HostConfig, Nfs, PortGroup, Service, VmkNic, VSwitch

NONE, ADD, UPDATE = "none", "add", "update"


@dataclass(frozen=True)
class Change:
    """One setting: its key (``vswitch:vSwitch1``), what to do, and the two sides as text.

    ``item`` is the desired value the applier writes (a model object, a string, a bool...).
    ``want``/``have`` are for people and the timeline; secrets never appear in them.
    """

    key: str
    action: str
    want: str
    have: str
    item: Any = field(default=None, repr=False)  # the root password, a full licence key: never in a repr

    @property
    def complies(self) -> bool:
        return self.action == NONE

    def to_dict(self) -> dict[str, str]:
        return {"setting": self.key, "action": self.action, "want": self.want, "have": self.have}


_WANT = object()


def _change(key: str, want: Any, have: Any, text: Callable[[Any], str], item: Any = _WANT) -> Change:
    """One setting compared; ``text`` shows either side the same way, ``item`` is what apply sets
    (``want`` unless given)."""
    item = want if item is _WANT else item
    if have is None:
        return Change(key, ADD, text(want), "absent", item)
    return Change(key, NONE if want == have else UPDATE, text(want), text(have), item)


def _key_text(key: str) -> str:
    """A licence key as the timeline shows it: its first group only."""
    return key[:5] + "-…"


def _dns_text(dns: Dns) -> str:
    parts = [f"hostname={dns.hostname}" if dns.hostname else "", f"domain={dns.domain}" if dns.domain else "",
             f"servers={','.join(dns.servers) or '-'}", f"search={','.join(dns.search) or '-'}"]
    return " ".join(p for p in parts if p)


def _dns_wanted(want: Dns, have: Dns) -> Dns:
    """The profile's DNS with the host's own values where the profile leaves a field empty."""
    return Dns(hostname=want.hostname or have.hostname, domain=want.domain or have.domain,
               servers=want.servers, search=want.search)


def _service_text(service: Service) -> str:
    return f"policy {service.policy}, {'running' if service.running else 'stopped'}"


def _vswitch_text(vs: VSwitch) -> str:
    return f"uplinks={','.join(vs.uplinks) or '-'} mtu={vs.mtu} ports={vs.ports}"


def _portgroup_text(pg: PortGroup) -> str:
    return f"vswitch={pg.vswitch} vlan={pg.vlan}"


def _vmknic_text(nic: VmkNic) -> str:
    return f"ip={nic.ip} mtu={nic.mtu}"


def _nfs_text(nfs: Nfs) -> str:
    return f"{nfs.host}:{nfs.path}{' ro' if nfs.readonly else ''}"


def _list_text(values: tuple[str, ...]) -> str:
    return ",".join(values) or "-"


def _enabled_text(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def diff(want: HostConfig, have: HostConfig) -> list[Change]:
    """Every setting of ``want`` compared with ``have``, in apply order."""
    changes: list[Change] = []
    if want.license is not None:
        have_key = have.license or ""
        changes.append(Change("license", NONE if have_key == want.license else UPDATE, _key_text(want.license),
                              _key_text(have_key) if have_key else "none", want.license))
    switches = {v.name: v for v in have.vswitches}
    changes += [_change(f"vswitch:{vs.name}", vs, switches.get(vs.name), _vswitch_text) for vs in want.vswitches]
    groups = {p.name: p for p in have.portgroups}
    changes += [_change(f"portgroup:{pg.name}", pg, groups.get(pg.name), _portgroup_text) for pg in want.portgroups]
    nics = {n.portgroup: n for n in have.vmknics}
    changes += [_change(f"vmknic:{nic.portgroup}", nic, nics.get(nic.portgroup), _vmknic_text)
                for nic in want.vmknics]
    if want.dns is not None:
        have_dns = have.dns or Dns()
        changes.append(_change("dns", _dns_wanted(want.dns, have_dns), have_dns, _dns_text))
    if want.ntp_servers is not None:
        changes.append(_change("ntp", tuple(want.ntp_servers), tuple(have.ntp_servers or ()), _list_text))
    changes += [_change(f"service:{key}", service, have.services.get(key), _service_text)
                for key, service in want.services.items()]
    changes += [_change(f"firewall:{key}", enabled, have.firewall.get(key), _enabled_text)
                for key, enabled in want.firewall.items()]
    for key, value in want.advanced.items():
        cur_value = have.advanced.get(key)
        changes.append(_change(f"advanced:{key}", str(value), None if cur_value is None else str(cur_value), str,
                               item=value))
    stores = {n.name: n for n in have.nfs}
    changes += [_change(f"nfs:{nfs.name}", nfs, stores.get(nfs.name), _nfs_text) for nfs in want.nfs]
    users = {u.name for u in have.users}
    for user in want.users:
        changes.append(Change(f"user:{user.name}", NONE if user.name in users else ADD, "exists",
                              "exists (password not readable)" if user.name in users else "absent", user))
    if want.root_password is not None:
        ok = have.root_password == want.root_password
        changes.append(Change("root_password", NONE if ok else UPDATE, "the profile's (secret answer)",
                              "the profile's (logged in with it)" if ok else "another one (logged in without it)",
                              want.root_password))
    return changes


def compliant(changes: list[Change]) -> bool:
    return all(change.complies for change in changes)
