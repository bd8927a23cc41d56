"""``[plugins.ansible]``: validated at start-up, errors naming ``plugins.ansible.KEY``.

Every key has a default, so installing the plugin is enough: it acts only on hosts whose host
profile is of kind ``ansible``. A play is bounded by ``[push] timeout`` (each attempt), not by a
key here: the push pool owns attempts, timeouts and backoff for every plugin alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from bootbox import ConfigError

PREFIX = "plugins.ansible"
KNOWN = ("user", "port", "connect_timeout", "command", "python_interpreter", "pin_host_keys")
USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class AnsibleConfig:
    user: str = "root"
    """The account the push logs in as; its key arrives through the host's cloud-init user-data."""
    port: int = 22
    """The hosts' SSH port."""
    connect_timeout: float = 10.0
    """Seconds to wait for a host's SSH connection (Ansible's ``timeout``)."""
    command: str = ""
    """``ansible-playbook`` to run; empty: the one installed beside bootbox's Python, else on PATH."""
    python_interpreter: str = "auto_silent"
    """The hosts' Python for Ansible's modules: ``auto_silent`` (Ansible finds it) or a path."""
    pin_host_keys: bool = True
    """Give each boot its SSH host key through the user-data and accept no other at the push."""


def parse_config(raw: Mapping[str, Any] | None) -> AnsibleConfig:
    if raw is None:
        return AnsibleConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError(PREFIX, "expected a table")
    for key in raw:
        if key not in KNOWN:
            raise ConfigError(f"{PREFIX}.{key}", f"unknown setting; known: {', '.join(KNOWN)}")
    user = raw.get("user", "root")
    if not isinstance(user, str) or not USER.fullmatch(user):
        raise ConfigError(f"{PREFIX}.user", "expected a user name (a-z, 0-9, '_', '-'; at most 32)")
    port = raw.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{PREFIX}.port", "expected a TCP port, 1-65535")
    timeout = raw.get("connect_timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise ConfigError(f"{PREFIX}.connect_timeout", "expected seconds, more than 0 and at most 300")
    command = raw.get("command", "")
    if not isinstance(command, str):
        raise ConfigError(f"{PREFIX}.command", "expected the path of ansible-playbook")
    python = raw.get("python_interpreter", "auto_silent")
    if not isinstance(python, str) or not (python in ("auto", "auto_silent", "auto_legacy") or python.startswith("/")):
        raise ConfigError(f"{PREFIX}.python_interpreter", "expected auto_silent, auto or an absolute path")
    pin = raw.get("pin_host_keys", True)
    if not isinstance(pin, bool):
        raise ConfigError(f"{PREFIX}.pin_host_keys", "expected true or false")
    return AnsibleConfig(user=user, port=port, connect_timeout=float(timeout), command=command,
                         python_interpreter=python, pin_host_keys=pin)
