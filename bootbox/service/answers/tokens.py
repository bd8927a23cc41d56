"""Single-use tokens for answer-file URLs: minted per boot, bound to a MAC and a source address.

A rendered answer file may carry secrets (password hashes, credentials), and the boot network
is unauthenticated (PXE trusts nobody), so an answer file is served only to the host it belongs
to, once per file, for a short while after that host fetched its boot script:

* the token is random (``secrets.token_urlsafe``: 192 bits), minted when the host fetches its
  boot script, and only its SHA-256 is kept, so a memory dump does not yield usable URLs;
* it is valid for one host (the MAC in the URL must be the one it was minted for) and one
  source address (the address the script request came from);
* each file can be fetched once with it; minting a new token for a host revokes the old one;
* it expires after ``ttl`` seconds.

Tokens live in memory only: an appliance restart revokes them all, and the host gets new ones
on its next boot. Every refusal raises :class:`Forbidden` with the reason, for the audit event.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from bootbox.errors import Forbidden

DEFAULT_TTL = 1800.0
"""Thirty minutes: an ESXi installer loads ~100 modules before it asks for ks.cfg."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass
class _Grant:
    mac: str
    client_ip: str
    expires: float
    served: set[str] = field(default_factory=set)


class AnswerTokens:
    """The live tokens, by digest; thread-safe."""

    def __init__(self, *, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._by_mac: dict[str, str] = {}

    def mint(self, mac: str, client_ip: str) -> str:
        """A new token for this boot of ``mac`` from ``client_ip`` (the previous one is revoked)."""
        token = secrets.token_urlsafe(24)
        now = self._clock()
        with self._lock:
            for digest in [d for d, g in self._grants.items() if g.expires <= now]:
                self._forget(digest)
            old = self._by_mac.pop(mac, None)
            if old is not None:
                self._grants.pop(old, None)
            digest = _digest(token)
            self._grants[digest] = _Grant(mac=mac, client_ip=client_ip, expires=now + self.ttl)
            self._by_mac[mac] = digest
        return token

    def _forget(self, digest: str) -> None:
        grant = self._grants.pop(digest, None)
        if grant is not None and self._by_mac.get(grant.mac) == digest:
            del self._by_mac[grant.mac]

    def check(self, token: str, mac: str, client_ip: str, name: str) -> None:
        """Raise :class:`Forbidden` (with the reason) unless ``name`` may be served now."""
        with self._lock:
            self._check(token, mac, client_ip, name)

    def redeem(self, token: str, mac: str, client_ip: str, name: str) -> None:
        """:meth:`check`, then mark ``name`` served: the same URL is refused from now on."""
        with self._lock:
            grant = self._check(token, mac, client_ip, name)
            grant.served.add(name)

    def _check(self, token: str, mac: str, client_ip: str, name: str) -> _Grant:
        grant = self._grants.get(_digest(token))
        if grant is None:
            raise Forbidden("unknown or revoked answer-file token")
        if grant.mac != mac:
            raise Forbidden(f"the token was minted for another host ({grant.mac})")
        if self._clock() >= grant.expires:
            self._forget(_digest(token))
            raise Forbidden("the answer-file token has expired (the host must boot again)")
        if grant.client_ip != client_ip:
            raise Forbidden(f"the token is bound to {grant.client_ip}, not {client_ip}")
        if name in grant.served:
            raise Forbidden(f"{name} was already served with this token (tokens are single-use)")
        return grant

    def revoke(self, mac: str) -> None:
        with self._lock:
            digest = self._by_mac.get(mac)
            if digest is not None:
                self._forget(digest)

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)
