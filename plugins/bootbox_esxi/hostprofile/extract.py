"""``bootbox hostprofile extract --from HOST``: a host profile from a configured reference host.

As Auto Deploy's "extract from reference host": read the host's configuration through its
vSphere API and write an ``esxi`` host-profile document (YAML, for ``bootbox hostprofile add``)
whose per-host values are answers, not constants: the host name, the VMkernel NICs' addresses
and the licence key become inputs (``hostname``, ``vmk_<port group>_ip``, ``license_key``), and
the reference host's values are returned as that host's answers. Passwords cannot be read:
root's and each local user's become password inputs with no answer.

Taken from the host: standard vSwitches, port groups, VMkernel NICs other than the management
one, DNS servers and search domains, NTP servers and the ntpd policy, the SSH and ESXi Shell
services, the firewall rulesets bootbox profiles usually name (:data:`RULESETS`), the advanced
options in :data:`ADVANCED`, NFS datastores and local users (not the system accounts).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from bootbox_esxi.hostprofile import vsphere
from bootbox_esxi.hostprofile.runner import parse_endpoint

RULESETS = ("sshServer", "ntpClient", "nfsClient", "nfs41Client", "syslog", "snmp", "httpClient", "iSCSI")
ADVANCED = ("Syslog.global.logHost", "Syslog.global.logDir", "UserVars.SuppressShellWarning",
            "Net.TcpipHeapSize", "Net.TcpipHeapMax", "NFS.MaxVolumes")
SERVICES = ("TSM-SSH", "TSM")
SYSTEM_USERS = ("root", "dcui", "vpxuser")
MANAGEMENT = "Management Network"


def _input_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "x"


def extract(source: str, *, user: str, password: str, name: str, pin: str | None = None,
            timeout: float = 30.0) -> tuple[str, dict[str, str], str]:
    """(host-profile YAML, the reference host's answers, the SHA-256 thumbprint trusted)."""
    address, port = parse_endpoint(source, "--from")
    seen = pin or vsphere.thumbprint(address, port, timeout)
    session = vsphere.connect(address, port, [("the given password", password)], pin=seen, timeout=timeout,
                              user=user)
    try:
        live = vsphere.read(session, ADVANCED)
    finally:
        session.close()
    inputs: list[dict[str, Any]] = []
    answers: dict[str, str] = {}
    doc: dict[str, Any] = {}
    doc["vswitches"] = [{"name": v.name, "uplinks": list(v.uplinks), "mtu": v.mtu, "ports": v.ports}
                        for v in live.vswitches]
    doc["portgroups"] = [{"name": p.name, "vswitch": p.vswitch, "vlan": p.vlan} for p in live.portgroups]
    nics = []
    for nic in live.vmknics:
        if nic.portgroup == MANAGEMENT:
            continue  # the boot NIC's address comes from DHCP or the host's own boot configuration
        ip = nic.ip
        if ip != "dhcp":
            key = f"vmk_{_input_name(nic.portgroup)}_ip"
            inputs.append({"name": key, "validation": "cidr", "description": f"VMkernel NIC on {nic.portgroup}"})
            answers[key] = ip
            ip = "{{ answers.%s }}" % key
        nics.append({"portgroup": nic.portgroup, "ip": ip, "mtu": nic.mtu})
    doc["vmknics"] = nics
    if live.dns is not None:
        dns: dict[str, Any] = {"servers": list(live.dns.servers), "search": list(live.dns.search)}
        if live.dns.hostname:
            inputs.append({"name": "hostname", "validation": "hostname"})
            answers["hostname"] = live.dns.hostname
            dns["hostname"] = "{{ answers.hostname }}"
        if live.dns.domain:
            dns["domain"] = live.dns.domain
        doc["dns"] = dns
    ntpd = live.services.get("ntpd")
    doc["ntp"] = {"servers": list(live.ntp_servers or ()), "policy": ntpd.policy if ntpd else "off"}
    doc["services"] = {k: {"policy": s.policy, "running": s.running} for k, s in live.services.items() if k in SERVICES}
    doc["firewall"] = {k: v for k, v in live.firewall.items() if k in RULESETS}
    doc["advanced"] = {k: v for k, v in live.advanced.items() if v not in (None, "")}
    doc["nfs"] = [{"name": n.name, "host": n.host, "path": n.path, "readonly": n.readonly,
                   "version": 4.1 if n.version == "NFS41" else 3} for n in live.nfs]
    users = []
    for account in live.users:
        if account.name in SYSTEM_USERS:
            continue
        key = f"{_input_name(account.name)}_password"
        inputs.append({"name": key, "type": "password", "description": f"password of local user {account.name}"})
        users.append({"name": account.name, "password": {"input": key}})
    doc["users"] = users
    inputs.append({"name": "root_password", "type": "password", "description": "root's password"})
    doc["root_password"] = {"input": "root_password"}
    if live.license and live.license != vsphere.EVAL_LICENSE:
        inputs.append({"name": "license_key", "type": "password", "description": "the host's licence key"})
        doc["license"] = {"input": "license_key"}
    template = yaml.safe_dump({k: v for k, v in doc.items() if v not in ([], {}, None)}, sort_keys=False,
                              default_flow_style=False)
    profile = {"name": name, "kind": "esxi",
               "description": f"extracted from {address}:{port} (bootbox hostprofile extract)",
               "inputs": inputs, "templates": {"host.yaml": template}}
    return yaml.safe_dump(profile, sort_keys=False, default_flow_style=False, width=120), answers, seen
