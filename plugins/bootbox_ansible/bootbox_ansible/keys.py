"""The appliance's SSH key pair: made once, at the first start, kept in the plugin's data dir.

Why a key of its own: the push logs into hosts that keep nothing across reboots, so the key must
reach them with every boot (the per-host cloud-init user-data, never the shared image, which
every host of every operator's fleet could read). One ed25519 pair per appliance, made with
``cryptography`` (no ``ssh-keygen`` subprocess at start-up), written in OpenSSH's own formats so
``ssh`` and ``ansible-playbook`` read it as they read any user's key.

The private key file is created ``0600`` with ``O_EXCL`` (never world-readable, not even for a
moment, and never overwritten by a second start racing the first); it is never logged or put on
a timeline: only its path and the public key's fingerprint are shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bootbox import PluginError

PRIVATE_NAME = "id_ed25519"
PUBLIC_NAME = "id_ed25519.pub"


@dataclass(frozen=True)
class KeyPair:
    """Where the private key is and what the public key says (never the private key itself)."""

    private_path: Path
    public: str
    """One ``authorized_keys`` line: ``ssh-ed25519 AAAA… bootbox@<appliance>``."""

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` prints it, to compare with a host's ``authorized_keys``."""
        blob = base64.b64decode(self.public.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create(directory: Path, comment: str = "bootbox") -> KeyPair:
    """The key pair in ``directory`` (``id_ed25519`` and ``id_ed25519.pub``), made if absent.

    A private key whose mode lets anyone but the owner read it is refused (ssh would refuse to
    use it too, with a less helpful message), as is a public key that does not match it.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        tmp = private_path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        _write_new(tmp, private, 0o600)
        os.replace(tmp, private_path)  # a crash leaves no half-written key under the real name
        public_path.unlink(missing_ok=True)
        _write_new(public_path, public + f" {comment}\n".encode(), 0o644)
    mode = private_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PluginError(f"{private_path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PluginError(f"{private_path} is not an unencrypted OpenSSH private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PluginError(f"{private_path} is not an ed25519 key")
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    if not public_path.exists():
        _write_new(public_path, f"{derived} {comment}\n".encode(), 0o644)
    public = public_path.read_text().strip()
    if public.split()[:2] != derived.split()[:2]:
        raise PluginError(f"{public_path} does not belong to {private_path}; remove the .pub file to have it rewritten")
    return KeyPair(private_path, public)


def host_key(appliance_key: Path, instance_id: str) -> tuple[str, str]:
    """The SSH host key a host gets for one boot: ``(private key in OpenSSH PEM, public key line)``.

    Derived, not random: HMAC-SHA256 of the boot's cloud-init ``instance-id`` under the
    appliance's private key is the ed25519 seed. Every render of the same boot's user-data (one
    per answer file the host fetches) therefore gives the same key, without keeping host private
    keys anywhere, and no one without the appliance's private key can compute it. The push pins
    the public half (:mod:`bootbox_ansible.runner`), so it talks only to the machine that fetched
    this boot's user-data.
    """
    loaded = serialization.load_ssh_private_key(appliance_key.read_bytes(), password=None)
    secret = loaded.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())
    seed = hmac.new(secret, b"bootbox-ansible-host-key|" + instance_id.encode(), hashlib.sha256).digest()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public
