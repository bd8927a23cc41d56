"""Pure renderers for the iPXE scripts bootbox itself writes (boot kinds render their own).

Failure paths end in a retry, never in ``exit 0``: a failed script that exits with success
drops UEFI into its setup screen instead of retrying (facts/pxe-dhcp.md §5).
"""

from __future__ import annotations

from typing import Mapping

from bootbox.model import BootContext

# What iPXE reports about the host, as query parameters of the per-host script URL. ``netX``
# is the device iPXE booted from, i.e. the boot NIC. Free-text settings are escaped with
# ``:uristring``; typed ones (MAC, UUID, IPv4) are not: their normal form is already URL-safe,
# and older iPXE (Debian 12's 2019 build, seen on the wire) applies ``uristring`` to their raw
# bytes, so a UUID's zero byte cut the URL short.
IPXE_FACTS: tuple[tuple[str, str], ...] = (
    ("mac", "netX/mac"),
    ("uuid", "uuid"),
    ("serial", "serial:uristring"),
    ("asset", "asset:uristring"),
    ("manufacturer", "manufacturer:uristring"),
    ("product", "product:uristring"),
    ("buildarch", "buildarch:uristring"),
    ("platform", "platform:uristring"),
    ("ip", "netX/ip"),
    ("hostname", "hostname:uristring"),
    ("domain", "domain:uristring"),
)


def entry_script(base_url: str) -> str:
    """The one generic script every iPXE client gets first: it chains to its per-host script."""
    query = "&".join(f"{name}=${{{setting}}}" for name, setting in IPXE_FACTS)
    url = f"{base_url.rstrip('/')}/boot/hosts/${{netX/mac:hexhyp}}/script.ipxe?{query}"
    return "\n".join(
        [
            "#!ipxe",
            "echo bootbox: fetching the boot script for ${netX/mac}",
            ":retry",
            f"chain --replace --autofree {url} || goto failed",
            ":failed",
            "echo bootbox: could not fetch the boot script; retrying in 10 seconds",
            "sleep 10",
            "goto retry",
            "",
        ]
    )


def _quote(value: str) -> str:
    """Make a value safe to ``echo`` in an iPXE script (no expansion, no line breaks)."""
    return "".join(ch if ch.isprintable() and ch not in "${}" else "?" for ch in value)


def waiting_script(boot: BootContext, attrs: Mapping[str, str], reason: str, retry_seconds: int) -> str:
    """Shown to a host that matches no profile: its facts (to write a rule), then retry.

    Like Auto Deploy, bootbox keeps the host asking rather than giving it a default; unlike it,
    the host retries its script in place, so a new rule takes effect without a power cycle.
    """
    lines = [
        "#!ipxe",
        "echo",
        f"echo bootbox: this host tried to network-boot, but {_quote(reason)}",
        "echo bootbox: its attributes (use them in a rule pattern):",
    ]
    for key in sorted(attrs):
        if attrs[key]:
            lines.append(f"echo   {_quote(key)}={_quote(str(attrs[key]))}")
    lines += [
        f"echo bootbox: asking again in {retry_seconds} seconds",
        f"sleep {retry_seconds}",
        f"chain --replace --autofree {boot.script_url}",
        "",
    ]
    return "\n".join(lines)
