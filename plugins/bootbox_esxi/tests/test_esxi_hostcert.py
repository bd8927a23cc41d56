"""The per-host TLS certificate from the appliance's CA, in the per-host boot module.

Unit level: the CA (made once, key 0600, reloaded), what it issues (chains to the CA, the
host's names and address as SANs, the key matches), the module members. Then real TLS
handshakes on loopback: a Python TLS server serving a vSphere ``/sdk/vimServiceVersions.xml``
with the issued certificate is verified by bootbox's client (``vsphere.negotiate`` with the
CA); a certificate from another CA, or from this CA for another host, is refused. Then the
module route: the module of a stateless host carries its certificate and key, the key reaches
no log and no timeline, and a requester the network shows to be another MAC gets 403.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import ssl
import stat
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from bootbox.service.identity import NeighbourTable
from bootbox_esxi import callin, hostcert
from bootbox_esxi.config import parse_config
from bootbox_esxi.hostprofile import vsphere
from bootbox_esxi.tests.test_esxi_answers import _stateless_key
from bootbox_esxi.tests.test_esxi_boot import BASE_URL, MAC, Env, env  # noqa: F401  (env: the fixture)

VERSIONS = b"""<?xml version="1.0" encoding="UTF-8" ?>
<namespaces version="1.0">
 <namespace>
  <name>urn:vim25</name>
  <version>7.0.3.0</version>
  <priorVersions><version>6.7</version><version>6.5</version></priorVersions>
 </namespace>
</namespaces>
"""


@pytest.fixture
def ca(tmp_path: Path) -> hostcert.HostCA:
    return hostcert.HostCA(tmp_path / "data", host_cert_days=30)


def _chains_to(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Raises unless ``issuer``'s key signed ``cert`` (RSA PKCS#1 v1.5, the CA's key type)."""
    assert cert.issuer == issuer.subject
    assert cert.signature_hash_algorithm is not None
    issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,  # type: ignore[union-attr,call-arg]
                               padding.PKCS1v15(), cert.signature_hash_algorithm)  # type: ignore[call-arg]


def test_the_ca_is_made_once_with_its_key_0600_and_reloaded(tmp_path: Path) -> None:
    first = hostcert.HostCA(tmp_path / "data", host_cert_days=30)
    key = tmp_path / "data" / "hostca" / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "hostca").stat().st_mode) == 0o700
    constraints = first.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    again = hostcert.HostCA(tmp_path / "data", host_cert_days=30)
    assert again.certificate == first.certificate  # the same CA after a restart, not a new one


def test_an_issued_certificate_chains_to_the_ca_names_the_host_and_matches_its_key(ca: hostcert.HostCA) -> None:
    issued = ca.issue(hostcert.host_names("esx01", "lab.example"), ["198.18.0.21"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    _chains_to(cert, ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["esx01", "esx01.lab.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.21")]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "esx01"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.ExtendedKeyUsageOID.SERVER_AUTH]
    before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
    assert (hostcert._not_after(cert) - before.replace(tzinfo=hostcert._not_after(cert).tzinfo)).days == 30
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert issued.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as ESXi writes rui.key
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert issued.sha256 == hostcert.sha256_colon(cert.public_bytes(serialization.Encoding.DER))
    assert "key" not in " ".join(issued.record())  # what bootbox keeps: no key
    with pytest.raises(ValueError, match="name or address"):
        ca.issue([], [])


def test_the_module_carries_rui_crt_and_rui_key_beside_local_sh(ca: hostcert.HostCA) -> None:
    issued = ca.issue(["esx01"], ["198.18.0.21"])
    data = callin.build_module("http://bootbox:8080/api/v1/hosts/x/up?token=t", "",
                               (issued.cert_pem, issued.key_pem))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == [callin.LOCAL_SH, "etc/vmware/ssl/rui.crt", "etc/vmware/ssl/rui.key"]
        assert members["etc/vmware/ssl/rui.crt"].mode == 0o644 and members["etc/vmware/ssl/rui.key"].mode == 0o400
        assert all((m.uid, m.gid, m.uname) == (0, 0, "root") and m.isfile() for m in members.values())
        assert tar.extractfile("etc/vmware/ssl/rui.crt").read() == issued.cert_pem  # type: ignore[union-attr]
        assert tar.extractfile("etc/vmware/ssl/rui.key").read() == issued.key_pem  # type: ignore[union-attr]


def test_host_cert_days_is_validated() -> None:
    assert parse_config({}).host_cert_days == 1825
    assert parse_config({"host_cert_days": 0}).host_cert_days == 0
    for bad in (-1, 3651, "30", True, 1.5):
        with pytest.raises(Exception, match="plugins.esxi.host_cert_days"):
            parse_config({"host_cert_days": bad})


# ------------------------------------------------------------------------ real TLS handshakes


class _Sdk(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = VERSIONS if self.path == "/sdk/vimServiceVersions.xml" else b"not here"
        self.send_response(200 if body is VERSIONS else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Start a TLS server on 127.0.0.1 presenting the given PEM certificate and key; stopped after."""
    servers: list[ThreadingHTTPServer] = []

    def serve(cert_pem: bytes, key_pem: bytes) -> int:
        crt, key = tmp_path / f"rui{len(servers)}.crt", tmp_path / f"rui{len(servers)}.key"
        crt.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(crt, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Sdk)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_issued_certificate_verifies_against_the_ca(ca: hostcert.HostCA, tls_server) -> None:  # type: ignore[no-untyped-def]
    issued = ca.issue(["esx01"], ["127.0.0.1"])
    port = tls_server(issued.cert_pem, issued.key_pem)
    assert vsphere.negotiate("127.0.0.1", port, "", 5, cafile=str(ca.cafile))
    # without the CA the same certificate is not trusted: the check is the CA, not "any certificate"
    other = hostcert.HostCA(ca.directory.parent / "elsewhere", host_cert_days=30)
    with pytest.raises(vsphere.CertificateUntrusted, match="unable to get local issuer certificate"):
        vsphere.negotiate("127.0.0.1", port, "", 5, cafile=str(other.cafile))


def test_a_certificate_from_another_ca_is_refused(ca: hostcert.HostCA, tls_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stranger = hostcert.HostCA(tmp_path / "stranger", host_cert_days=30).issue(["esx01"], ["127.0.0.1"])
    port = tls_server(stranger.cert_pem, stranger.key_pem)
    with pytest.raises(vsphere.CertificateUntrusted, match="no credentials were sent"):
        vsphere.negotiate("127.0.0.1", port, "", 5, cafile=str(ca.cafile))
    with pytest.raises(vsphere.CertificateUntrusted):  # the login path refuses before any password
        vsphere.connect("127.0.0.1", port, [("profile", "Root-Pass-1")], cafile=str(ca.cafile), timeout=5)


def test_this_cas_certificate_for_another_host_is_refused(ca: hostcert.HostCA, tls_server) -> None:  # type: ignore[no-untyped-def]
    another = ca.issue(["esx02"], ["127.0.0.2"])  # genuine, but not for the address bootbox connects to
    port = tls_server(another.cert_pem, another.key_pem)
    with pytest.raises(vsphere.CertificateUntrusted, match="IP address mismatch"):
        vsphere.negotiate("127.0.0.1", port, "", 5, cafile=str(ca.cafile))


# ------------------------------------------------------------------------ the module route


def _module(env: Env, key: str, **environ: str) -> tuple[int, bytes]:
    response = env.client.get(f"/boot/esxi/hosts/{MAC.replace(':', '')}/{key}/bbcallin.tgz", base_url=BASE_URL,
                              environ_base=environ)
    return response.status_code, response.data


def test_the_module_route_issues_the_hosts_certificate_and_never_logs_its_key(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = _stateless_key(env)
    status, data = _module(env, key)
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        cert_pem = tar.extractfile("etc/vmware/ssl/rui.crt").read()  # type: ignore[union-attr]
        key_pem = tar.extractfile("etc/vmware/ssl/rui.key").read()  # type: ignore[union-attr]
    cert = x509.load_pem_x509_certificate(cert_pem)
    hostca = env.plugin._hostca
    assert hostca is not None
    _chains_to(cert, hostca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]  # where it fetched from
    issued = [e for e in env.service.host_events(MAC) if "issued by bootbox's host CA" in e.message]
    assert len(issued) == 1 and issued[0].data["serial"] == format(cert.serial_number, "x")
    secret_line = key_pem.decode().splitlines()[1]
    everything = caplog.text + "".join(repr(e) for e in env.service.host_events(MAC))
    assert secret_line not in everything and "PRIVATE KEY" not in everything
    assert env.plugin.hostprofiles.cafile(MAC) == str(hostca.cafile)  # this boot: verified against the CA
    env.script()  # ... until its next boot script (that boot may not fetch the module)
    assert env.plugin.hostprofiles.cafile(MAC) is None


def test_another_mac_asking_for_the_hosts_module_gets_403_and_no_key(env: Env) -> None:
    key = _stateless_key(env)
    env.service.identity.neighbours = NeighbourTable(read_v4=lambda: {"198.18.0.99": "52:54:00:99:99:99"})
    status, data = _module(env, key, REMOTE_ADDR="198.18.0.99")  # the right key, from another MAC
    assert status == 403 and b"PRIVATE KEY" not in data and data[:2] != b"\x1f\x8b"
    assert not any("issued by bootbox's host CA" in e.message for e in env.service.host_events(MAC))
    assert any(e.kind == "audit" for e in env.service.host_events(MAC))
    assert env.plugin.hostprofiles.cafile(MAC) is None
