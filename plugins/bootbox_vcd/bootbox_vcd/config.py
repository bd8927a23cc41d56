"""``[plugins.vcd]``: validated at start-up, errors naming ``plugins.vcd.KEY``.

Without a ``[plugins.vcd]`` table the plugin does nothing at all (no VIB, no answers, no
pushes), so installing it changes nothing until an operator configures it. ``url`` is the vCD
cell's address (``https://vcd.example.net``; a trailing ``/api`` is accepted and dropped), since
every vCloud API path starts at ``/api``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bootbox import ConfigError

PREFIX = "plugins.vcd"
KNOWN = ("url", "username", "org", "password", "password_file", "groups", "vib", "timeout", "poll_seconds",
         "verify_tls", "ca_file", "hostname_answer", "domain_answer")


@dataclass(frozen=True)
class VcdConfig:
    enabled: bool = False
    url: str = ""
    username: str = ""
    org: str = "System"
    password: str = ""
    groups: tuple[str, ...] = ("vcd",)
    vib: str = "vcloud-agent"
    timeout: float = 10.0
    poll_seconds: float = 2.0
    verify_tls: bool = True
    ca_file: str = ""
    hostname_answer: str = "hostname"
    domain_answer: str = "domain"

    def __repr__(self) -> str:  # never print the password (settings dumps, tracebacks)
        return f"VcdConfig(enabled={self.enabled}, url={self.url!r}, groups={self.groups}, vib={self.vib!r})"


def _string(raw: Mapping[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{PREFIX}.{key}", "expected a string")
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 300:
        raise ConfigError(f"{PREFIX}.{key}", "expected seconds, more than 0 and at most 300")
    return float(value)


def parse_config(raw: Mapping[str, Any] | None) -> VcdConfig:
    if raw is None:
        return VcdConfig()
    for key in raw:
        if key not in KNOWN:
            raise ConfigError(f"{PREFIX}.{key}", f"unknown setting; known: {', '.join(KNOWN)}")
    url = _string(raw, "url").rstrip("/").removesuffix("/api")
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
            raise ConfigError(f"{PREFIX}.url", f"{url!r} is not the vCD cell's http(s)://host[:port] address")
    password = _string(raw, "password")
    password_file = _string(raw, "password_file")
    if password and password_file:
        raise ConfigError(f"{PREFIX}.password_file", "give password or password_file, not both")
    if password_file:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{PREFIX}.password_file", f"cannot read {password_file}: {exc.strerror}") from None
    groups = raw.get("groups", ["vcd"])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise ConfigError(f"{PREFIX}.groups", "expected a list of group names")
    vib = _string(raw, "vib", "vcloud-agent")
    if not vib:
        raise ConfigError(f"{PREFIX}.vib", "must not be empty")
    timeout = _seconds(raw, "timeout", 10.0)
    poll = _seconds(raw, "poll_seconds", 2.0)
    verify = raw.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{PREFIX}.verify_tls", "expected true or false")
    ca_file = _string(raw, "ca_file")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{PREFIX}.ca_file", f"{ca_file} does not exist")
    org = _string(raw, "org", "System")
    if not org:
        raise ConfigError(f"{PREFIX}.org", "must not be empty (the system organisation is System)")
    answers = {key: _string(raw, key, default) for key, default in (("hostname_answer", "hostname"),
                                                                     ("domain_answer", "domain"))}
    return VcdConfig(enabled=True, url=url, username=_string(raw, "username"), org=org, password=password,
                     groups=tuple(groups), vib=vib, timeout=timeout, poll_seconds=poll, verify_tls=verify,
                     ca_file=ca_file, **answers)
