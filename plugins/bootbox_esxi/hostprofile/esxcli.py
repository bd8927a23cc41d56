"""The boot-module path: an ``esxi`` host profile as an ``esxcli``/``vim-cmd`` script.

For hosts whose vSphere API cannot be written (free vSphere Hypervisor licence:
``RestrictedVersion``), the same desired state becomes a ``/bin/sh`` script that runs from the
per-boot call-in module (``etc/rc.local.d/local.sh``) before the host reports up. Each setting is
one **step**: a check that exits 0 when the host already complies, and the commands that make it
comply, run only if the check fails, then checked again. A step's result is ``complied``,
``changed`` or ``failed`` (with the exit status and the last output line); the script appends
one line per step to a report it POSTs to bootbox at the end (``report_url``), and bootbox puts
each on the host's timeline. Idempotent: run twice, the second run changes nothing.

Targets ESXi 7.0 (U1+, for ``esxcli system ntp``) and 8.0. Passwords travel only as SHA-512
crypt hashes (written into ``/etc/shadow``), never in clear. Pure: returns text.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Mapping

from bootbox_esxi.hostprofile.model import HostConfig

LOG = "/var/log/bootbox-hostprofile.log"
SHELL_SERVICES = {"TSM-SSH": "ssh", "TSM": "esx_shell"}
"""Services ``vim-cmd hostsvc`` enables and starts by name; other keys use ``/etc/init.d`` and ``chkconfig``."""


@dataclass(frozen=True)
class Step:
    """One setting: ``check`` exits 0 when the host complies; ``apply`` lines make it comply."""

    name: str
    check: str
    apply: tuple[str, ...]


def q(value: object) -> str:
    return shlex.quote(str(value))


def _vswitch_steps(want: HostConfig) -> list[Step]:
    steps = []
    for vs in want.vswitches:
        name = q(vs.name)
        listing = f"esxcli network vswitch standard list -v {name}"
        check = [f"{listing} >/dev/null 2>&1",
                 f"{listing} | grep -q '^ *MTU: {vs.mtu}$'",
                 f"{listing} | grep -q '^ *Configured Ports: {vs.ports}$'"]
        uplinks = ", ".join(vs.uplinks)
        check.append(f"{listing} | grep -q '^ *Uplinks: {uplinks}$'")
        apply = [f"{listing} >/dev/null 2>&1 || esxcli network vswitch standard add -v {name} -P {vs.ports}",
                 f"esxcli network vswitch standard set -v {name} -m {vs.mtu}"]
        apply += [f"{listing} | grep -Eq '^ *Uplinks:(.*[ ,])? *{u}(,|$)' || "
                  f"esxcli network vswitch standard uplink add -v {name} -u {q(u)}" for u in vs.uplinks]
        steps.append(Step(f"vswitch:{vs.name}", " && ".join(check), tuple(apply)))
    return steps


def _portgroup_steps(want: HostConfig) -> list[Step]:
    steps = []
    for pg in want.portgroups:
        row = f"esxcli network vswitch standard portgroup list | grep -q '^{pg.name}  *{pg.vswitch}  *[0-9]*  *{pg.vlan}$'"
        exists = f"esxcli network vswitch standard portgroup list | grep -q '^{pg.name}  '"
        apply = (f"{exists} || esxcli network vswitch standard portgroup add -p {q(pg.name)} -v {q(pg.vswitch)}",
                 f"esxcli network vswitch standard portgroup set -p {q(pg.name)} --vlan-id {pg.vlan}")
        steps.append(Step(f"portgroup:{pg.name}", row, apply))
    return steps


def _vmknic_steps(want: HostConfig) -> list[Step]:
    steps = []
    for index, nic in enumerate(want.vmknics, start=1):
        vmk = f"vmk{index}"  # vmk0 is the management interface; the profile's NICs follow in order
        listing = f"esxcli network ip interface list -i {vmk}"
        check = [f"{listing} 2>/dev/null | grep -q '^ *Portgroup: {nic.portgroup}$'",
                 f"{listing} | grep -q '^ *MTU: {nic.mtu}$'"]
        if nic.ip == "dhcp":
            ip_set = f"esxcli network ip interface ipv4 set -i {vmk} -t dhcp"
            check.append(f"esxcli network ip interface ipv4 get -i {vmk} | grep -q '^{vmk} .* DHCP '")
        else:
            iface = ipaddress.IPv4Interface(nic.ip)
            ip_set = f"esxcli network ip interface ipv4 set -i {vmk} -t static -I {iface.ip} -N {iface.netmask}"
            check.append(f"esxcli network ip interface ipv4 get -i {vmk} | grep -q '^{vmk}  *{iface.ip}  *{iface.netmask} '")
        apply = (f"{listing} >/dev/null 2>&1 || esxcli network ip interface add -i {vmk} -p {q(nic.portgroup)}",
                 f"esxcli network ip interface set -i {vmk} -m {nic.mtu}", ip_set)
        steps.append(Step(f"vmknic:{nic.portgroup}", " && ".join(check), apply))
    return steps


def _dns_steps(want: HostConfig) -> list[Step]:
    if want.dns is None:
        return []
    dns = want.dns
    servers = " ".join(dns.servers)
    search = " ".join(dns.search)
    check = [f"[ \"$(esxcli network ip dns server list | sed -n 's/^ *DNSServers: //p' | tr -d ',')\" = {q(servers)} ]",
             f"[ \"$(esxcli network ip dns search list | sed -n 's/^ *DNSSearch Domains: //p' | tr -d ',')\" = {q(search)} ]"]
    apply = ["esxcli network ip dns server remove --all"]
    apply += [f"esxcli network ip dns server add -s {q(s)}" for s in dns.servers]
    apply += ["for d in $(esxcli network ip dns search list | sed -n 's/^ *DNSSearch Domains: //p' | tr ',' ' '); "
              "do esxcli network ip dns search remove -d \"$d\"; done"]
    apply += [f"esxcli network ip dns search add -d {q(d)}" for d in dns.search]
    if dns.hostname:
        check.append(f"[ \"$(esxcli system hostname get | sed -n 's/^ *Host Name: //p')\" = {q(dns.hostname)} ]")
        apply.append(f"esxcli system hostname set --host {q(dns.hostname)}")
    if dns.domain:
        check.append(f"[ \"$(esxcli system hostname get | sed -n 's/^ *Domain Name: //p')\" = {q(dns.domain)} ]")
        apply.append(f"esxcli system hostname set --domain {q(dns.domain)}")
    return [Step("dns", " && ".join(check), tuple(apply))]


def _ntp_steps(want: HostConfig) -> list[Step]:
    if want.ntp_servers is None:
        return []
    servers = ", ".join(want.ntp_servers)
    args = " ".join(f"-s {q(s)}" for s in want.ntp_servers)
    return [Step("ntp", f"[ \"$(esxcli system ntp get | sed -n 's/^ *Server: //p')\" = {q(servers)} ]",
                 (f"esxcli system ntp set {args}",))]


def _service_steps(want: HostConfig) -> list[Step]:
    steps = []
    for key, service in want.services.items():
        if key == "ntpd":
            enabled = "true" if service.running else "false"
            steps.append(Step("service:ntpd", f"esxcli system ntp get | grep -q '^ *Enabled: {enabled}$'",
                              (f"esxcli system ntp set -e {'yes' if service.running else 'no'}",)))
            continue
        short = SHELL_SERVICES.get(key)
        status = f"/etc/init.d/{q(key if key != 'TSM-SSH' else 'SSH')} status >/dev/null 2>&1"
        if short is not None:
            init = "SSH" if key == "TSM-SSH" else "ESXShell"
            status = f"/etc/init.d/{init} status >/dev/null 2>&1"
            run = (f"vim-cmd hostsvc/{'enable' if service.policy != 'off' else 'disable'}_{short} >/dev/null",
                   f"vim-cmd hostsvc/{'start' if service.running else 'stop'}_{short} >/dev/null")
        else:
            run = (f"chkconfig {q(key)} {'on' if service.policy != 'off' else 'off'}",
                   f"/etc/init.d/{q(key)} {'start' if service.running else 'stop'}")
        check = status if service.running else f"! {status}"
        steps.append(Step(f"service:{key}", check, run))
    return steps


def _firewall_steps(want: HostConfig) -> list[Step]:
    return [Step(f"firewall:{key}",
                 f"esxcli network firewall ruleset list -r {q(key)} | grep -q '^{key}  *{str(on).lower()}$'",
                 (f"esxcli network firewall ruleset set -r {q(key)} -e {str(on).lower()}",))
            for key, on in want.firewall.items()]


def _advanced_steps(want: HostConfig) -> list[Step]:
    steps = []
    for key, value in want.advanced.items():
        path = "/" + key.replace(".", "/")
        kind, field = ("-i", "Int Value") if isinstance(value, int) else ("-s", "String Value")
        check = f"[ \"$(esxcli system settings advanced list -o {q(path)} | sed -n 's/^ *{field}: //p')\" = {q(value)} ]"
        apply = [f"esxcli system settings advanced set -o {q(path)} {kind} {q(value)}"]
        if key.startswith("Syslog."):
            apply.append("esxcli system syslog reload")
        steps.append(Step(f"advanced:{key}", check, tuple(apply)))
    return steps


def _nfs_steps(want: HostConfig) -> list[Step]:
    steps = []
    for nfs in want.nfs:
        family = "nfs41" if nfs.version == "NFS41" else "nfs"
        check = f"esxcli storage {family} list | grep -q '^{nfs.name}  *{nfs.host}  *{nfs.path} '"
        ro = " -r" if nfs.readonly else ""
        steps.append(Step(f"nfs:{nfs.name}", check,
                          (f"esxcli storage {family} add -H {q(nfs.host)} -s {q(nfs.path)} -v {q(nfs.name)}{ro}",)))
    return steps


def _has_hash(user: str, crypted: str) -> str:
    return f"[ \"$(sed -n 's/^{user}:\\([^:]*\\):.*/\\1/p' /etc/shadow)\" = {q(crypted)} ]"


def _shadow(user: str, crypted: str) -> str:
    """Set ``user``'s hash in /etc/shadow (ESXi keeps local accounts there; a stateless host's
    /etc is in memory, so this lasts until the next boot, when the module runs again)."""
    return (f"sed -i {q(f's|^{user}:[^:]*:|{user}:{crypted}:|')} /etc/shadow")


def _user_steps(want: HostConfig, hashes: Mapping[str, str]) -> list[Step]:
    steps = []
    for user in want.users:
        apply = [f"esxcli system account list | grep -q '^{user.name}  ' || esxcli system account add -i {q(user.name)} "
                 f"-d {q(user.description or user.name)} -p \"$BB_TMP_PW\" -c \"$BB_TMP_PW\""]
        crypted = hashes.get(user.name)
        check = f"esxcli system account list | grep -q '^{user.name}  '"
        if crypted:
            apply.append(_shadow(user.name, crypted))
            check += f" && {_has_hash(user.name, crypted)}"
        steps.append(Step(f"user:{user.name}", check, tuple(apply)))
    crypted = hashes.get("root")
    if want.root_password is not None and crypted:
        steps.append(Step("root_password", _has_hash("root", crypted), (_shadow("root", crypted),)))
    return steps


def _license_steps(want: HostConfig) -> list[Step]:
    if want.license is None:
        return []
    return [Step("license", f"vim-cmd vimsvc/license --show | grep -q {q(want.license)}",
                 (f"vim-cmd vimsvc/license --set {q(want.license)} >/dev/null",))]


def steps(want: HostConfig, hashes: Mapping[str, str]) -> list[Step]:
    """Every setting of ``want`` as a step, in the same order the API path applies them.

    ``hashes``: SHA-512 crypt hashes by account (``root`` and each local user).
    """
    return (_license_steps(want) + _vswitch_steps(want) + _portgroup_steps(want) + _vmknic_steps(want)
            + _dns_steps(want) + _ntp_steps(want) + _service_steps(want) + _firewall_steps(want)
            + _advanced_steps(want) + _nfs_steps(want) + _user_steps(want, hashes))


def render(want: HostConfig, *, hashes: Mapping[str, str], report_url: str) -> str:
    """The script (POSIX sh, busybox) that brings the host to ``want`` and reports each step."""
    out = [
        "# bootbox: apply the host profile through esxcli (the host's API is read-only), one step per",
        f"# setting; each step checks first, so a second run changes nothing. Log: {LOG}",
        "BB_REPORT=/tmp/bootbox-hostprofile.report",
        ": > \"$BB_REPORT\"",
        "BB_TMP_PW=\"Bb-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \\n')\"",
        "bb_step() {",
        "    # bb_step NAME CHECK APPLY: complied | changed | failed <rc> <last line>",
        "    if sh -c \"$2\" >/dev/null 2>&1; then echo \"$1 complied\" >> \"$BB_REPORT\"; return; fi",
        "    out=$(sh -c \"$3\" 2>&1); rc=$?",
        "    if [ $rc -eq 0 ] && sh -c \"$2\" >/dev/null 2>&1; then echo \"$1 changed\" >> \"$BB_REPORT\"",
        "    else echo \"$1 failed $rc $(echo \"$out\" | tail -n 1 | tr -d '\\r')\" >> \"$BB_REPORT\"; fi",
        "}",
    ]
    for step in steps(want, hashes):
        body = " && ".join(f"{{ {cmd}; }}" for cmd in step.apply)
        out.append(f"bb_step {q(step.name)} {q(step.check)} {q(body)}")
    out += [
        "unset BB_TMP_PW",
        f"cat \"$BB_REPORT\" >> {LOG}",
        f"wget -q -O /dev/null --post-file \"$BB_REPORT\" {q(report_url)} || echo 'bootbox: report not delivered' >> {LOG}",
        "",
    ]
    return "\n".join(out)
