"""The appliance's own CA and the per-host TLS certificate it puts into each stateless host's boot module.

Auto Deploy hands every stateless host its SSL key and certificate in its boot image, so the
host's API presents a certificate its management server can verify from the first second of the
boot. bootbox does the same: at first start the esxi plugin makes a CA (``<data dir>/hostca/``:
``ca.key`` mode 0600, ``ca.crt``), and whenever it renders a host's call-in module
(``callin.build_module``) it issues that host a fresh RSA key and a certificate whose CN is the
host's host-profile hostname (else its address) and whose subjectAltNames are the hostname, its
FQDN and the host's address(es). The module puts them where ESXi's ``hostd`` and ``rhttpproxy``
read theirs: ``/etc/vmware/ssl/rui.crt`` and ``/etc/vmware/ssl/rui.key``.

When bootbox later connects to the host's vSphere API it verifies the certificate against this
CA with host-name checking (``vsphere.connect(cafile=…)``), for hosts whose current boot fetched
the module (:class:`IssuedCerts` remembers that, per host, until the host's next boot script).

Why RSA-2048 for host keys: VMware's certificate requirements for ESXi name RSA keys of 2048
to 16384 bits (read in its documentation, not tried on a host); ECDSA would be cheaper but is not
in that list. The CA key is RSA-2048 too, as VMCA's root is by default, and cheap to make at first
start (about 50 ms; RSA-3072 costs several times that in every fresh appliance, the tests'
included). Private keys are never logged, never stored for hosts (only the CA's own), and served
only inside the host's module, whose route checks the requester's identity and the boot's
call-in key.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DIR = "hostca"
CA_KEY, CA_CERT = "ca.key", "ca.crt"
CA_DAYS = 3650
HOST_KEY_BITS = CA_KEY_BITS = 2048
TABLE = "hostcerts"
"""Plugin store table: MAC → the certificate issued for the host's current boot (no key)."""


@dataclass(frozen=True)
class Issued:
    """One host's key and certificate (PEM), as they go into its boot module."""

    key_pem: bytes
    cert_pem: bytes
    serial: int
    sha256: str
    names: tuple[str, ...]
    addresses: tuple[str, ...]
    not_after: str

    def record(self) -> dict[str, Any]:
        """What bootbox keeps about it: everything but the key."""
        return {"serial": format(self.serial, "x"), "sha256": self.sha256, "names": list(self.names),
                "addresses": list(self.addresses), "not_after": self.not_after}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` mode 0600 from the start (never world-readable, not even for a moment)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, timezone-aware on every supported ``cryptography`` (``_utc`` is 42+)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def sha256_colon(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class HostCA:
    """The appliance's CA for ESXi host certificates: made once, kept in the plugin's data dir."""

    def __init__(self, data_dir: Path, host_cert_days: int) -> None:
        self.directory = Path(data_dir) / CA_DIR
        self.host_cert_days = host_cert_days
        self._lock = threading.Lock()
        self._key, self._cert = self._load_or_create()

    @property
    def cafile(self) -> Path:
        """The CA certificate (PEM), what a TLS client verifies host certificates against."""
        return self.directory / CA_CERT

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def _load_or_create(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key_path, cert_path = self.directory / CA_KEY, self.directory / CA_CERT
        if key_path.is_file() and cert_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{key_path}: not an RSA key")
            if key_path.stat().st_mode & 0o077:
                os.chmod(key_path, 0o600)  # someone loosened it: the CA key must stay the appliance's
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootbox"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"bootbox ESXi host CA {os.uname().nodename}"[:64])])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def issue(self, names: Iterable[str], addresses: Iterable[str]) -> Issued:
        """A new key and a certificate for one host: CN the first name (else the first address),
        SAN every name (DNS) and address (IP). At least one of them is needed."""
        dns = tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in names if n and n.strip()))
        ips = tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in addresses if a))
        if not dns and not ips:
            raise ValueError("a host certificate needs the host's name or address")
        key = rsa.generate_private_key(public_exponent=65537, key_size=HOST_KEY_BITS)
        now = _now()
        not_after = now + datetime.timedelta(days=self.host_cert_days)
        not_after = min(not_after, _not_after(self._cert))  # never outlive the CA
        common = (dns or ips)[0]
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        with self._lock:
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootbox"),
                                             x509.NameAttribute(NameOID.COMMON_NAME, common[:64])]))
                    .issuer_name(self._cert.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                 key_encipherment=True, data_encipherment=False, key_agreement=False,
                                                 key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                 decipher_only=False), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                    .add_extension(x509.SubjectAlternativeName(san), critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                   critical=False)
                    .sign(self._key, hashes.SHA256()))
        # PKCS#1 ("BEGIN RSA PRIVATE KEY"): the form ESXi's own generate-certificates writes to rui.key
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return Issued(key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                      serial=cert.serial_number, sha256=sha256_colon(cert.public_bytes(serialization.Encoding.DER)),
                      names=dns, addresses=ips, not_after=not_after.isoformat())


def host_names(hostname: str, domain: str) -> list[str]:
    """The DNS names of a host-profile hostname: itself and, with a domain, its FQDN."""
    if not hostname:
        return []
    if "." in hostname or not domain:
        return [hostname]
    return [hostname, f"{hostname}.{domain}"]


class IssuedCerts:
    """Which hosts' current boot carries a certificate from the appliance's CA (so their API is
    verified against it rather than pinned): MAC → :meth:`Issued.record`, in the plugin store
    (table ``hostcerts``) with a copy in memory, so the boot path reads memory only and writes
    only for a host that had one. Set when the host's module is rendered, dropped by its next
    boot script (a boot that may not fetch the module again)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, Any]] = dict(store.all(TABLE))

    def remember(self, mac: str, issued: Issued, boot_key_sha256: str = "") -> None:
        doc = {**issued.record(), "boot": boot_key_sha256}
        with self._lock:
            self._held[mac] = doc
            self._store.put(TABLE, mac, doc)

    def forget(self, mac: str) -> None:
        with self._lock:
            if self._held.pop(mac, None) is not None:
                self._store.delete(TABLE, mac)

    def get(self, mac: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._held.get(mac)
        return dict(doc) if doc is not None else None
