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

from dataclasses import dataclass
from typing import Any

from bootbox_esxi.hostprofile.model import Dns, HostConfig, Service

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
    item: Any = None

    @property
    def complies(self) -> bool:
        return self.action == NONE

    def to_dict(self) -> dict[str, str]:
        return {"setting": self.key, "action": self.action, "want": self.want, "have": self.have}


def _change(key: str, want: Any, have: Any, item: Any, want_text: str, have_text: str) -> Change:
    if have is None:
        return Change(key, ADD, want_text, "absent", item)
    return Change(key, NONE if want == have else UPDATE, want_text, have_text, item)


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


def diff(want: HostConfig, have: HostConfig) -> list[Change]:
    """Every setting of ``want`` compared with ``have``, in apply order."""
    changes: list[Change] = []
    if want.license is not None:
        have_key = have.license or ""
        changes.append(Change("license", NONE if have_key == want.license else UPDATE, _key_text(want.license),
                              _key_text(have_key) if have_key else "none", want.license))
    switches = {v.name: v for v in have.vswitches}
    for vs in want.vswitches:
        cur = switches.get(vs.name)
        text = f"uplinks={','.join(vs.uplinks) or '-'} mtu={vs.mtu} ports={vs.ports}"
        cur_text = f"uplinks={','.join(cur.uplinks) or '-'} mtu={cur.mtu} ports={cur.ports}" if cur else ""
        changes.append(_change(f"vswitch:{vs.name}", vs, cur, vs, text, cur_text))
    groups = {p.name: p for p in have.portgroups}
    for pg in want.portgroups:
        cur_pg = groups.get(pg.name)
        changes.append(_change(f"portgroup:{pg.name}", pg, cur_pg, pg, f"vswitch={pg.vswitch} vlan={pg.vlan}",
                               f"vswitch={cur_pg.vswitch} vlan={cur_pg.vlan}" if cur_pg else ""))
    nics = {n.portgroup: n for n in have.vmknics}
    for nic in want.vmknics:
        cur_nic = nics.get(nic.portgroup)
        changes.append(_change(f"vmknic:{nic.portgroup}", nic, cur_nic, nic, f"ip={nic.ip} mtu={nic.mtu}",
                               f"ip={cur_nic.ip} mtu={cur_nic.mtu}" if cur_nic else ""))
    if want.dns is not None:
        have_dns = have.dns or Dns()
        wanted = _dns_wanted(want.dns, have_dns)
        changes.append(_change("dns", wanted, have_dns, wanted, _dns_text(wanted), _dns_text(have_dns)))
    if want.ntp_servers is not None:
        have_ntp = have.ntp_servers or ()
        changes.append(_change("ntp", tuple(want.ntp_servers), tuple(have_ntp), tuple(want.ntp_servers),
                               ",".join(want.ntp_servers) or "-", ",".join(have_ntp) or "-"))
    for key, service in want.services.items():
        cur_service = have.services.get(key)
        changes.append(_change(f"service:{key}", service, cur_service, service, _service_text(service),
                               _service_text(cur_service) if cur_service else ""))
    for key, enabled in want.firewall.items():
        cur_rule = have.firewall.get(key)
        changes.append(_change(f"firewall:{key}", enabled, cur_rule, enabled, "enabled" if enabled else "disabled",
                               "" if cur_rule is None else ("enabled" if cur_rule else "disabled")))
    for key, value in want.advanced.items():
        cur_value = have.advanced.get(key)
        cur_text = None if cur_value is None else str(cur_value)
        changes.append(_change(f"advanced:{key}", str(value), cur_text, value, str(value), cur_text or ""))
    stores = {n.name: n for n in have.nfs}
    for nfs in want.nfs:
        cur_nfs = stores.get(nfs.name)
        text = f"{nfs.host}:{nfs.path}{' ro' if nfs.readonly else ''}"
        cur_text = f"{cur_nfs.host}:{cur_nfs.path}{' ro' if cur_nfs.readonly else ''}" if cur_nfs else ""
        changes.append(_change(f"nfs:{nfs.name}", nfs, cur_nfs, nfs, text, cur_text))
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
