"""``[plugins.vcd]``: validated at start-up, errors naming ``plugins.vcd.KEY``.

Without a ``[plugins.vcd]`` table the plugin does nothing at all (no VIB, no answers, no
pushes), so installing it changes nothing until an operator configures it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bootbox import ConfigError

PREFIX = "plugins.vcd"
KNOWN = ("url", "username", "password", "password_file", "groups", "vib", "timeout", "verify_tls", "ca_file")


@dataclass(frozen=True)
class VcdConfig:
    enabled: bool = False
    url: str = ""
    username: str = ""
    password: str = ""
    groups: tuple[str, ...] = ("vcd",)
    vib: str = "vcloud-agent"
    timeout: float = 10.0
    verify_tls: bool = True
    ca_file: str = ""

    def __repr__(self) -> str:  # never print the password (settings dumps, tracebacks)
        return f"VcdConfig(enabled={self.enabled}, url={self.url!r}, groups={self.groups}, vib={self.vib!r})"


def _string(raw: Mapping[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{PREFIX}.{key}", "expected a string")
    return value


def parse_config(raw: Mapping[str, Any] | None) -> VcdConfig:
    if raw is None:
        return VcdConfig()
    for key in raw:
        if key not in KNOWN:
            raise ConfigError(f"{PREFIX}.{key}", f"unknown setting; known: {', '.join(KNOWN)}")
    url = _string(raw, "url").rstrip("/")
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"{PREFIX}.url", f"{url!r} is not an http(s)://host[:port][/path] URL")
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
    timeout = raw.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise ConfigError(f"{PREFIX}.timeout", "expected seconds, more than 0 and at most 300")
    verify = raw.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{PREFIX}.verify_tls", "expected true or false")
    ca_file = _string(raw, "ca_file")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{PREFIX}.ca_file", f"{ca_file} does not exist")
    return VcdConfig(enabled=True, url=url, username=_string(raw, "username"), password=password,
                     groups=tuple(groups), vib=vib, timeout=float(timeout), verify_tls=verify, ca_file=ca_file)
