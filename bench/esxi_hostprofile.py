"""Apply an ESXi host profile to many hosts at once: N simulated ESXi hosts report in together.

    python -m bench.esxi_hostprofile [--hosts 32] [--json out.json]     (also part of python -m bench.esxi)

Each host is govmomi's ESXi simulator (``simulator.ESX()`` with bootbox's extensions, built
from Debian's golang-github-vmware-govmomi-dev: plugins/bootbox_esxi/tests/vcsim) on its own
loopback port. ``bootbox serve`` runs as a separate process, entry-point plugins as in
production, with a small imported depot, an ESXi image profile and an ``esxi`` host profile
(vSwitch, two port groups, a VMkernel NIC, DNS, NTP, SSH, syslog host, NFS, root password).
Every host first boots as the boot test's host does (script, boot.cfg, call-in module), untimed,
and its simulator starts with the ``rui.crt``/``rui.key`` the module carries, so bootbox verifies
each host's API against its own CA, as on real hosts; then all report in at once and the clock runs until every host is ``configured`` (the esxi
plugin applied and read back its profile through the host's vSphere API). Reported: that wall
time, bootbox's CPU seconds for it, and the settings applied. There is no reference figure:
Auto Deploy cannot run here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import io
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    Table,
    cpu_seconds,
    free_port,
    http_call,
    positive_int,
    print_table,
    scratch_dir,
    start_bootbox,
    write_json,
)

HOST_YAML = """\
vswitches: [{name: vSwitch1, uplinks: [vmnic1], mtu: 9000}]
portgroups: [{name: storage, vswitch: vSwitch1, vlan: 20}, {name: vmotion, vswitch: vSwitch1, vlan: 30}]
vmknics: [{portgroup: storage, ip: "{{ answers.storage_ip }}", mtu: 9000}]
dns: {hostname: "{{ answers.hostname }}", domain: lab.example, servers: [198.18.0.53], search: [lab.example]}
ntp: {servers: [198.18.0.1], policy: on}
services: {TSM-SSH: {policy: on}}
firewall: {sshServer: true}
advanced: {Syslog.global.logHost: "udp://198.18.0.9:514"}
nfs: [{name: iso, host: 198.18.0.7, path: /export/iso, readonly: true}]
root_password: {input: root_password}
"""


def _api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    status, data = http_call(f"{base}/api/v1{path}", method, body, token)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
    return json.loads(data)


def _boot(base: str, mac: str, workdir: Path) -> tuple[str, tuple[Path, Path]]:
    """Boot one host as far as its call-in module: the up URL in it, and its TLS certificate and
    key (from the appliance's CA) written where the simulated host will present them."""
    script = http_call(f"{base}/boot/hosts/{mac}/script.ipxe?platform=efi")[1].decode()
    chain = next(line for line in script.splitlines() if line.startswith("chain --autofree"))
    cfg = dict(line.split("=", 1) for line in http_call(chain.split()[4])[1].decode().splitlines() if "=" in line)
    module = http_call(cfg["modules"].split(" --- ")[-1])[1]
    workdir.mkdir(parents=True, exist_ok=True)
    tls = (workdir / "rui.crt", workdir / "rui.key")
    with tarfile.open(fileobj=io.BytesIO(module), mode="r:gz") as tar:
        local_sh = tar.extractfile("etc/rc.local.d/local.sh").read().decode()  # type: ignore[union-attr]
        tls[0].write_bytes(tar.extractfile("etc/vmware/ssl/rui.crt").read())  # type: ignore[union-attr]
        tls[1].write_bytes(tar.extractfile("etc/vmware/ssl/rui.key").read())  # type: ignore[union-attr]
    return next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'"), tls


def measure(hosts: int) -> tuple[list[Row], dict[str, Any]]:
    from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
    from bootbox_esxi.tests.esxsim import EsxSim, build

    t0 = time.monotonic()
    binary = build()
    build_seconds = time.monotonic() - t0
    with scratch_dir("bench-esxi-hp-") as work:
        sims = [EsxSim(binary, work / f"sim{i}") for i in range(hosts)]
        server = None
        try:
            for sim in sims:  # booted below, presenting the certificate from their call-in module
                (sim.workdir / "iso").mkdir(parents=True)
            loaders = {}
            for key in ("efi", "c32", "pxelinux"):
                loaders[key] = work / f"loader-{key}"
                loaders[key].write_bytes(os.urandom(2048))
            tftp_root = work / "tftp"
            tftp_root.mkdir()
            http_port = free_port()
            extra = ("[plugins.esxi]\nwatch_seconds = 0\n[plugins.esxi.loaders]\n"
                     + "".join(f'{k} = "{v}"\n' for k, v in loaders.items()))
            server = start_bootbox(work, tftp_root=tftp_root, http_port=http_port, tftp_port=free_port(),
                                   extra_toml=extra)
            base = f"http://127.0.0.1:{http_port}"
            token = (work / "state" / "api-token").read_text().strip()
            bundle = write_bundle(work / "depot.zip", depot_files([esx_base(), driver("net-a")]))
            job = _api(base, token, "POST", "/esxi/depots", {"source": str(bundle)})
            while job["state"] == "running":
                time.sleep(0.05)
                job = _api(base, token, "GET", f"/esxi/jobs/{job['id']}")
            if job["state"] != "done":
                raise RuntimeError(f"depot import failed: {job.get('error')}")
            _api(base, token, "POST", "/profiles", {"name": "esxi-lab", "kind": "esxi",
                                                    "spec": {"vibs": ["esx-base", "net-a"]}})
            _api(base, token, "POST", "/hostprofiles", {
                "name": "esx-lab", "kind": "esxi",
                "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "storage_ip", "validation": "cidr"},
                           {"name": "root_password", "type": "password"}],
                "templates": {"host.yaml": HOST_YAML}})
            _api(base, token, "POST", "/rules", {"name": "lab", "all_hosts": True,
                                                 "items": {"image": "esxi-lab", "host_profile": "esx-lab"}})
            macs = [f"52:54:00:e6:{i // 256:02x}:{i % 256:02x}" for i in range(hosts)]
            for i, (mac, sim) in enumerate(zip(macs, sims)):
                _api(base, token, "PATCH", f"/hosts/{mac}/answers", {"values": {
                    "hostname": f"esx{i:02d}", "storage_ip": f"198.18.1.{i + 10}/24", "root_password": "Bench-Pass-1",
                    "esxi_api_endpoint": sim.address}})
            ups = []
            for mac, sim in zip(macs, sims):  # each host boots with the TLS identity its module carries
                up_url, sim.tls = _boot(base, mac, sim.workdir.parent / f"{sim.workdir.name}-tls")
                sim.start()
                ups.append(up_url)
            cpu0, start = cpu_seconds(server.pid), time.monotonic()
            threads = [threading.Thread(target=http_call, args=(url, "POST", {"boot_id": "bench"})) for url in ups]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            states: dict[str, str] = {}
            while True:
                listed = {h["mac"]: h for h in _api(base, token, "GET", "/hosts")}
                states = {mac: listed[mac]["state"] for mac in macs}
                if all(state in ("configured", "failed") for state in states.values()) or time.monotonic() - start > 600:
                    break
                time.sleep(0.05)
            wall, cpu = time.monotonic() - start, cpu_seconds(server.pid) - cpu0
            configured = sum(1 for s in states.values() if s == "configured")
            compliant = sum(1 for mac in macs if (listed[mac].get("checks") or {}).get("esxi", {}).get("result") == "compliant")
            applied = [json.loads(http_call(f"{base}/api/v1/esxi/hosts/{mac}/hostprofile/compliance", token=token)[1])
                       for mac in macs[:1]]
            settings = len(applied[0]["settings"]) if applied and "settings" in applied[0] else 0
            pushes = [listed[mac]["pushes"].get("esxi", {}) for mac in macs]
        finally:
            if server is not None:
                server.stop()
            for sim in sims:
                sim.stop()
    nan = float("nan")
    rows = [
        Row(f"apply a host profile to {hosts} hosts at once", "s", wall, nan, "", higher_is_better=False),
        Row("  per host (wall / hosts)", "s", wall / hosts, nan, "", higher_is_better=False),
        Row("  bootbox CPU", "s", cpu, nan, "", higher_is_better=False),
        Row("  hosts configured", "hosts", configured, hosts, "hosts"),
        Row("  hosts compliant after (read back)", "hosts", compliant, hosts, "hosts"),
    ]
    meta = {"hosts": hosts, "settings_per_host": settings, "build_seconds": round(build_seconds, 1),
            "attempts_median": statistics.median([p.get("attempts", 0) for p in pushes]) if pushes else 0}
    return rows, meta


def table(hosts: int) -> Table:
    rows, meta = measure(hosts)
    return Table("esxi-hostprofile", f"ESXi: apply a host profile ({meta['settings_per_host']} settings) to {hosts} "
                                     "simulated hosts at once, report-in to configured", rows, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.esxi_hostprofile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=positive_int, default=32, help="simulated hosts (default 32)")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    args = parser.parse_args(argv)
    rows, meta = measure(args.hosts)
    print_table(f"ESXi: apply a host profile ({meta['settings_per_host']} settings) to {args.hosts} hosts at once", rows)
    print(f"  simulator built in {meta['build_seconds']} s; median push attempts {meta['attempts_median']}")
    write_json(args.json, "esxi-hostprofile", rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
