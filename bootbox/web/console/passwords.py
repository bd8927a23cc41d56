"""Password hashes for console users: scrypt from the standard library, memory-hard.

``bootbox user passwd NAME`` prints ``NAME = "scrypt$N$r$p$salt$hash"`` for ``[ui.users]``; the
console checks a login against it. scrypt is memory-hard (N·r·128 bytes per guess: 32 MiB with
the defaults), so a stolen config costs an attacker far more per guess than a fast hash would,
and it needs no package beyond Python itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**15, 8, 1
"""The cost of a new hash: 32 MiB and ~0.1 s per check on a small appliance."""
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
"""The largest cost a stored hash may ask for (a config typo must not take the machine's memory)."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=2 * 128 * n * r * p + 2**20)


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """The ``scrypt$N$r$p$salt$hash`` line for ``password`` with a new random salt."""
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed``; False for any malformed hash (never an exception)."""
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isdigit() for x in parts[1:4]):
        return False
    n, r, p = (int(x) for x in parts[1:4])
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        return False
    try:
        salt, expected = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)
