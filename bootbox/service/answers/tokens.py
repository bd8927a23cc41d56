"""Per-boot credentials: the up token and the answer-file token of one boot of one host.

The boot network is unauthenticated, so what a host holds is what its boot was given. Each boot
draws a random nonce (``Host.boot_nonce``, kept in the host record so an appliance restart does
not strand a host that is still reporting in); both tokens are keyed HMACs of the MAC and that
nonce, so only this appliance can make them and they need no table of their own:

* a boot starts with the host's first verified script request after its previous report-in, or
  once its tokens have expired (the service decides, ``BootService.host_script``); re-fetches
  within one boot (iPXE retries, GRUB over TFTP and HTTP) get the same tokens and revoke nothing;
* a new boot draws a new nonce, so every earlier token of the host stops working;
* the up token lasts ``[hosts] boot_token_ttl`` from the boot's start, the answer token
  ``[hosts] answer_token_ttl``; each answer file can be fetched once per boot.

Which *machine* may use them is decided before any token is looked at
(:mod:`bootbox.service.identity`). Every refusal raises :class:`Forbidden` (answer files) or
returns the reason (the up token), for the audit event.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from typing import Callable

from bootbox.errors import Forbidden
from bootbox.model import Host

Derive = Callable[..., bytes]
"""``SecretBox.derive``: a keyed digest of its string arguments."""


def new_nonce() -> str:
    """A fresh boot nonce (96 random bits)."""
    return secrets.token_urlsafe(12)


class BootTokens:
    """Derives and checks a boot's tokens; remembers which answer files a boot was served."""

    def __init__(self, derive: Derive, *, answer_ttl: float, up_ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._derive = derive
        self.answer_ttl = answer_ttl
        self.up_ttl = up_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._served: dict[str, tuple[str, set[str]]] = {}  # mac → (nonce, files served this boot)

    def up_token(self, host: Host) -> str:
        """The up token of the host's current boot ("" before its first boot)."""
        if not host.boot_nonce:
            return ""
        return self._derive("up", host.mac, host.boot_nonce).hex()[:32]

    def answer_token(self, host: Host) -> str:
        """The answer-file token of the host's current boot ("" before its first boot)."""
        if not host.boot_nonce:
            return ""
        return base64.urlsafe_b64encode(self._derive("answer", host.mac, host.boot_nonce)[:24]).decode()

    def up_refusal(self, host: Host, presented: str | None) -> str | None:
        """Why ``presented`` is not the host's up token now, or None when it is."""
        expected = self.up_token(host)
        if not presented:
            return "no token"
        if not expected or not hmac.compare_digest(expected.encode(), str(presented).encode()):
            return "not the token of the host's current boot"
        if self._clock() >= host.boot_started + self.up_ttl:
            return "the boot's up token has expired (the host must boot again)"
        return None

    def check_answer(self, host: Host, token: str, name: str) -> None:
        """Raise :class:`Forbidden` (with the reason) unless ``name`` may be served with ``token`` now."""
        expected = self.answer_token(host)
        if not expected or not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
            raise Forbidden("unknown or revoked answer-file token (not this host's current boot)")
        if self._clock() >= host.boot_started + self.answer_ttl:
            raise Forbidden("the answer-file token has expired (the host must boot again)")
        with self._lock:
            nonce, served = self._served.get(host.mac, ("", set()))
            if nonce == host.boot_nonce and name in served:
                raise Forbidden(f"{name} was already served with this token (once per boot)")

    def redeem(self, host: Host, token: str, name: str) -> None:
        """:meth:`check_answer`, then mark ``name`` served for this boot."""
        with self._lock:
            nonce, served = self._served.get(host.mac, ("", set()))
            if nonce == host.boot_nonce and name in served:
                raise Forbidden(f"{name} was already served with this token (once per boot)")
            if nonce != host.boot_nonce:
                served = set()
            served.add(name)
            self._served[host.mac] = (host.boot_nonce, served)

    def forget(self, mac: str) -> None:
        """Drop what was served to ``mac`` (its boot ended or the host was removed)."""
        with self._lock:
            self._served.pop(mac, None)
