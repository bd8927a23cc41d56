"""Secret answers at rest, and the password hashes the targets accept.

**Encryption.** Secret answers are stored encrypted with Fernet (the ``cryptography`` package:
AES-128-CBC with PKCS7 padding, authenticated by HMAC-SHA256, with a version byte and a
timestamp). The standard library has no cipher, and a home-made construction from ``hashlib``
is exactly what must not protect passwords, so this is the one place bootbox takes a crypto
dependency. The key lives in its own file (``<state_dir>/secrets.key`` by default, mode 0600,
created atomically on first use), *outside* the TinyDB file: a copy of ``bootbox.json`` or of
its ``.bak`` reveals no secret without the key. Losing the key loses the secrets (they must be
set again), which :meth:`SecretBox.decrypt` says in its error.

**Hashes.** ESXi's ``rootpw --iscrypted`` and cloud-init's ``passwd`` take a crypt(3) string;
bootbox writes SHA-512 crypt (``$6$``), which both accept. Python's ``crypt`` module is
deprecated in 3.11 and gone in 3.13, and ``passlib`` is unmaintained (its last release predates
3.11 and it imports ``crypt`` itself), so :func:`sha512_crypt` implements Ulrich Drepper's
published "Unix crypt using SHA-256 and SHA-512" specification; the tests check it against the
specification's own vectors and against ``openssl passwd -6``.

**Salts and derived keys.** A rendered answer file should not change every time it is rendered
(``bootbox host render`` output can then be compared), so a password's salt is derived from the
host, the field and the password with HMAC under a subkey of the secrets key: stable for the
same inputs, unpredictable without the key, different across hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from bootbox.errors import BootboxError, ValidationError
from bootbox.runtime.atomic import atomic_write_bytes

KEY_FILE = "secrets.key"
PREFIX = "fernet:"
MASK = "********"
"""What the API and the CLI show instead of a secret value."""

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SALT_CHARS = set(_ITOA64)
_ROUNDS_DEFAULT = 5000
# The byte order of SHA-512 crypt's final encoding, from the specification: 21 groups of three
# bytes of the last digest, each written as four characters, then byte 63 as two.
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)


class SecretBox:
    """Encrypts and decrypts secret answers with the key in ``key_path`` (made on first use)."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path)
        self._key = _load_or_create_key(self.key_path)
        self._fernet = Fernet(self._key)
        self._mac_key = hmac.new(base64.urlsafe_b64decode(self._key), b"bootbox derived keys v1", hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> str:
        """``fernet:<token>``: what the store keeps for a secret answer."""
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plaintext of :meth:`encrypt`'s output.

        :raises BootboxError: the value was encrypted with another key (the key file was
            replaced or lost): the answer must be set again.
        """
        if not is_encrypted(stored):
            raise BootboxError("not an encrypted value")
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise BootboxError(
                f"a secret answer cannot be decrypted with the key in {self.key_path} (was the key file replaced?); "
                "set that answer again"
            ) from None

    def derive(self, *parts: str) -> bytes:
        """A keyed digest of ``parts``: salts and per-host tokens that only this appliance can make."""
        message = "\x00".join(parts).encode("utf-8")
        return hmac.new(self._mac_key, message, hashlib.sha256).digest()

    def salt_for(self, *parts: str) -> str:
        """A 16-character crypt salt derived from ``parts`` (stable, unpredictable without the key)."""
        digest = self.derive("salt", *parts)
        return "".join(_ITOA64[b & 0x3F] for b in digest[:16])

    def hash_password(self, plaintext: str, *context: str) -> str:
        """SHA-512 crypt of ``plaintext`` with a salt derived from ``context`` and the password."""
        return sha512_crypt(plaintext, self.salt_for(*context, plaintext))


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def require_key(key_path: Path, store: object) -> None:
    """Refuse to start when the key is missing but ``store`` holds values encrypted with it.

    Making a new key then would leave every stored secret undecryptable, and it would only show
    when a host boots; a fresh state directory (no secrets yet) still gets its key made.

    :raises BootboxError: naming the key file, how many secrets need it, and how to restore it.
    """
    if Path(key_path).exists():
        return
    tables = getattr(store, "table_names", None)
    if tables is None:
        return
    count = sum(_count_encrypted(store.all(name)) for name in tables())  # type: ignore[attr-defined]
    if count:
        raise BootboxError(
            f"the secrets key {key_path} is missing, but the store holds {count} secret value(s) encrypted with it; "
            f"bootbox will not make a new key (those secrets could never be decrypted again). Restore {key_path} "
            "(mode 0600) from a backup: `bootbox state restore FILE` restores it with the rest of the state, or copy "
            "secrets.key out of a backup's keys/ folder. If the key is truly lost, move the store aside and set the "
            "secret answers again."
        )


def _count_encrypted(value: object) -> int:
    if isinstance(value, str):
        return int(is_encrypted(value))
    if isinstance(value, dict):
        return sum(_count_encrypted(item) for item in value.values())
    if isinstance(value, list):
        return sum(_count_encrypted(item) for item in value)
    return 0


def _load_or_create_key(path: Path) -> bytes:
    """Read the key; create it (mode 0600, atomically) if absent; refuse a malformed one."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        key = path.read_bytes().strip()
        try:
            if len(base64.urlsafe_b64decode(key)) != 32:
                raise ValueError
        except ValueError:
            raise BootboxError(f"{path} is not a bootbox secrets key (32 url-safe base64 bytes)") from None
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    old_umask = os.umask(0o077)
    try:
        atomic_write_bytes(path, key + b"\n")
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return key


def _b64_24(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(_ITOA64[word & 0x3F])
        word >>= 6
    return "".join(out)


def _repeat_to(data: bytes, length: int) -> bytes:
    return (data * (length // len(data) + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int | None = None) -> str:
    """``$6$[rounds=N$]salt$hash``: SHA-512 crypt as specified by Drepper (glibc's ``$6$``).

    :param salt: up to 16 characters of ``[./0-9A-Za-z]`` (longer salts are cut, as the spec says).
    :param rounds: ``None`` for the default 5000 (not written into the string); otherwise
        clamped to 1000..999999999 and written as ``rounds=N``.
    """
    if not salt or not set(salt) <= _SALT_CHARS:
        raise ValidationError("salt", "use 1-16 characters of ./0-9A-Za-z")
    salt_b = salt[:16].encode("ascii")
    key = password.encode("utf-8")
    custom = rounds is not None
    n_rounds = max(1000, min(999_999_999, rounds)) if rounds is not None else _ROUNDS_DEFAULT

    digest_b = hashlib.sha512(key + salt_b + key).digest()
    ctx_a = hashlib.sha512(key + salt_b)
    ctx_a.update(_repeat_to(digest_b, len(key)))
    length = len(key)
    while length > 0:
        ctx_a.update(digest_b if length & 1 else key)
        length >>= 1
    digest_a = ctx_a.digest()

    p_bytes = _repeat_to(hashlib.sha512(key * len(key)).digest(), len(key)) if key else b""
    s_bytes = _repeat_to(hashlib.sha512(salt_b * (16 + digest_a[0])).digest(), len(salt_b))

    c = digest_a
    for i in range(n_rounds):
        ctx = hashlib.sha512(p_bytes if i & 1 else c)
        if i % 3:
            ctx.update(s_bytes)
        if i % 7:
            ctx.update(p_bytes)
        ctx.update(c if i & 1 else p_bytes)
        c = ctx.digest()

    encoded = "".join(_b64_24(c[a], c[b], c[d], 4) for a, b, d in _ORDER) + _b64_24(0, 0, c[63], 2)
    head = f"$6$rounds={n_rounds}$" if custom else "$6$"
    return f"{head}{salt_b.decode('ascii')}${encoded}"


def mask(value: object) -> str:
    """The masked form of a secret (its length is not revealed either)."""
    return MASK
