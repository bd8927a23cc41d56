"""``bootbox lint``'s checks: a host profile should carry no host-specific values.

PURE. Jinja constructs are blanked out first (so ``{{ answers.ip }}`` is never flagged), then
each line is searched for literal IPv4 addresses (other than the unspecified, loopback and
link-local ones and netmasks) and for literal host names after the keys that carry one in the
formats bootbox renders (kickstart ``--hostname=``, cloud-init ``hostname:`` /
``local-hostname:`` / ``fqdn:``, preseed ``netcfg/get_hostname string``). These are warnings:
a site-wide address (a DNS server) may be intended, but a host's own belongs in its answers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from bootbox.core.hostprofile import HostProfile


@dataclass(frozen=True)
class LintWarning:
    profile: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.profile}/{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "file": self.file, "line": self.line, "message": self.message}


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
_HOST_KEY = re.compile(
    r"(?i)(--hostname|\bhostname|local-hostname|\bfqdn|netcfg/get_hostname|netcfg/hostname)"
    r"(\s*[=:]\s*|\s+string\s+)([A-Za-z0-9][A-Za-z0-9.-]*)")
_PLACEHOLDERS = {"unassigned-hostname", "localhost", "string", "true", "false"}


def _blank_jinja(text: str) -> str:
    """Replace Jinja constructs by spaces (newlines kept), so only literal text is linted."""
    return _JINJA.sub(lambda m: "".join("\n" if ch == "\n" else " " for ch in m.group(0)), text)


def _site_address(text: str) -> bool:
    """Addresses that are never a host's own: unspecified, loopback, netmasks, link-local."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return True  # not an address at all (a version number such as 1.2.3.4000)
    return addr.is_unspecified or addr.is_loopback or addr.is_link_local or text.startswith("255.")


def lint_template(profile: str, file_name: str, text: str) -> list[LintWarning]:
    """Warn about literal addresses and host names: per-host values belong in the answers."""
    warnings: list[LintWarning] = []
    for number, line in enumerate(_blank_jinja(text).splitlines(), start=1):
        for match in _IPV4.finditer(line):
            if not _site_address(match.group(1)):
                warnings.append(LintWarning(profile, file_name, number,
                                            f"hard-coded address {match.group(1)}: put it in the answers "
                                            "(an input with validation ipv4) and use {{ answers.NAME }}"))
        for match in _HOST_KEY.finditer(line):
            value = match.group(3)
            if value.lower() not in _PLACEHOLDERS and not value.startswith("-"):
                warnings.append(LintWarning(profile, file_name, number,
                                            f"hard-coded host name {value!r}: put it in the answers "
                                            "(an input with validation hostname or fqdn)"))
    return warnings


def lint(profile: HostProfile) -> list[LintWarning]:
    return [w for name in sorted(profile.templates) for w in lint_template(profile.name, name, profile.templates[name])]
