"""The per-host certificate end to end: a running appliance, a stateless boot that fetches the
call-in module, and govmomi's ESXi simulator presenting the ``rui.crt``/``rui.key`` from it.

What a real stateless host does with the module's certificate (ESXi installs it as
``/etc/vmware/ssl/rui.crt`` and ``rui.key`` and its API presents it), the simulator does through
its ``-cert``/``-key`` flags: each "boot" here restarts it with the files taken from the module
that boot fetched. bootbox then verifies the host's API against its own CA with host-name
checking; a certificate from anywhere else is refused before any password is sent, with an
``audit`` event on the host's timeline.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootbox_esxi import EsxiPlugin
from bootbox_esxi.hostcert import sha256_colon
from bootbox_esxi.hostprofile import vsphere
from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from bootbox_esxi.tests.esxsim import EsxSim
from bootbox_esxi.tests.test_esxi_appliance import Running, http
from bootbox_esxi.tests.test_esxi_hostprofile_appliance import (
    MAC,
    WATCH,
    cli,
    events,
    host_profile,
    report_up,
    setup,
    start,
    wait_for,
)


@pytest.fixture
def lab(tmp_path: Path, esxsim: EsxSim) -> Iterator[tuple[Running, EsxSim, EsxiPlugin]]:
    (esxsim.workdir / "iso").mkdir()  # the simulator backs an NFS datastore with a directory
    plugin = EsxiPlugin()
    run = start(tmp_path, plugin=plugin, host_cert_days=30)
    try:
        run.import_depot(write_bundle(tmp_path / "depot.zip", depot_files([esx_base(), driver("net-a")])))
        run.api("POST", "/profiles", {"name": "esxi-lab", "kind": "esxi", "spec": {"vibs": ["esx-base", "net-a"]}})
        yield run, esxsim, plugin
    finally:
        run.appliance.stop()


def boot(run: Running, sim: EsxSim, tag: str) -> tuple[str, bytes]:
    """A stateless boot: script → boot.cfg → call-in module; the host comes up presenting the
    module's certificate (the simulator restarted with it). Returns the up URL and the cert PEM."""
    script = http(f"{run.url}/boot/hosts/{MAC}/script.ipxe?platform=efi")[2].decode()
    chain = next(line for line in script.splitlines() if line.startswith("chain --autofree"))
    cfg = dict(line.split("=", 1) for line in http(chain.split()[4])[2].decode().splitlines() if "=" in line)
    status, _, module = http(cfg["modules"].split(" --- ")[-1])
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(module), mode="r:gz") as tar:
        files = {name: tar.extractfile(name).read()  # type: ignore[union-attr]
                 for name in ("etc/rc.local.d/local.sh", "etc/vmware/ssl/rui.crt", "etc/vmware/ssl/rui.key")}
    crt, key = sim.workdir.parent / f"rui-{tag}.crt", sim.workdir.parent / f"rui-{tag}.key"
    crt.write_bytes(files["etc/vmware/ssl/rui.crt"])
    key.write_bytes(files["etc/vmware/ssl/rui.key"])
    present(sim, (crt, key))
    local_sh = files["etc/rc.local.d/local.sh"].decode()
    return next(line for line in local_sh.splitlines() if line.startswith("URL="))[4:].strip("'"), crt.read_bytes()


def present(sim: EsxSim, tls: tuple[Path, Path] | None) -> None:
    """(Re)start the simulated host presenting ``tls`` (None: a self-signed certificate of its own)."""
    sim.tls = tls
    if sim.process is not None:
        sim.restart()
    else:
        sim.start()


def test_the_hosts_api_is_verified_against_the_appliance_ca_every_boot(
        lab: tuple[Running, EsxSim, EsxiPlugin]) -> None:
    run, sim, _ = lab
    setup(run, sim, host_profile())
    up_url, cert_pem = boot(run, sim, "b1")
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["esx01", "esx01.lab.example"]  # the host profile's hostname
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]  # its API endpoint
    presented = vsphere.thumbprint("127.0.0.1", sim.port, 5)
    assert presented == sim.info["thumbprint_sha256"] == sha256_colon(cert.public_bytes(serialization.Encoding.DER))

    status, body = report_up(up_url, "b1")
    assert status == 200 and body["state"] == "configured", (status, body, events(run))
    applied = next(m for m in events(run) if m.startswith("esxi host profile esx-lab applied after its report-in"))
    assert "certificate verified against bootbox's host CA" in applied and "0 failed" in applied
    checked = cli(run, "host", "compliance", MAC, "--json")
    assert checked.exit_code == 0 and json.loads(checked.output)["compliant"], checked.output

    # The next boot fetches a new module with a new certificate; it never reports in: the
    # watcher sees the new boot time through a connection verified against the CA again.
    _, second = boot(run, sim, "b2")
    assert second != cert_pem
    wait_for(lambda: any("applied after a reboot bootbox noticed" in m for m in events(run)), 4 * WATCH + 30)
    again = next(m for m in events(run) if "applied after a reboot bootbox noticed" in m)
    assert "certificate verified against bootbox's host CA" in again and "0 failed" in again
    assert not any(e.startswith("esxi: refused") for e in events(run))


def test_a_certificate_bootbox_did_not_issue_for_the_host_is_refused_and_recorded(
        lab: tuple[Running, EsxSim, EsxiPlugin]) -> None:
    run, sim, plugin = lab
    setup(run, sim, host_profile())
    up_url, _ = boot(run, sim, "b1")
    present(sim, None)  # something else answers at the host's address, with its own certificate
    status, body = report_up(up_url, "b1")
    assert status == 409 and body["state"] == "failed", (status, body)
    assert "does not verify against bootbox's host CA" in body["message"] and "no credentials were sent" in body["message"]
    audits = [e for e in run.api("GET", f"/hosts/{MAC}/events") if e["kind"] == "audit"]
    assert len(audits) == 1 and audits[0]["message"].startswith(f"esxi: refused https://127.0.0.1:{sim.port}/sdk")
    assert "possible interception" in audits[0]["message"] and "esx01" in audits[0]["message"]
    assert not any("applied after its report-in" in m for m in events(run))

    # A genuine certificate of bootbox's CA, but another host's: refused as well (host-name check).
    ca = plugin._hostca
    assert ca is not None
    other = ca.issue(["esx02"], ["127.0.0.2"])
    crt, key = sim.workdir.parent / "other.crt", sim.workdir.parent / "other.key"
    crt.write_bytes(other.cert_pem)
    key.write_bytes(other.key_pem)
    present(sim, (crt, key))
    checked = cli(run, "host", "compliance", MAC)
    assert checked.exit_code != 0
    said = f"{checked.output}\n{checked.exception}"
    assert "does not verify against bootbox's host CA" in said and "IP address mismatch" in said, said
