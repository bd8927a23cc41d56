"""Pure renderers for the GRUB loader kind: the one ``grub.cfg`` and the per-host configs.

Debian's signed network GRUB (``grubnetx64.efi``/``grubnetaa64.efi``, also what shim loads as
``grubx64.efi``/``grubaa64.efi``) reads a fixed ``$prefix/grub.cfg``, i.e. ``/grub/grub.cfg``
on the server it booted from. It has no per-MAC search, and its ``[ -e ]`` test cannot see files
over TFTP (facts/pxe-dhcp.md §9), so per-host behaviour has to be dispatched inside that one
file. GRUB sets ``$net_default_mac`` to the MAC it booted from; the file bootbox generates at
request time hands over to ``$prefix/hosts/$net_default_mac.cfg``, which bootbox renders for
that host at request time from its profile (through the ``bootbox_grub_config`` hook), exactly
as the iPXE path renders ``script.ipxe``. A host bootbox has never heard of gets a config too
(the "waiting" one), so the dispatch needs no list of hosts and cannot go stale.

Quoting: everything bootbox writes into GRUB script is single-quoted (no variable expansion, no
globbing by the ``regexp`` module's wildcard translator); only the variables bootbox means to
expand stay outside quotes.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from bootbox.errors import ValidationError
from bootbox.model import normalize_mac

GRUB_DIR = "grub"
MAIN_CONFIG = f"{GRUB_DIR}/grub.cfg"
HOSTS_DIR = f"{GRUB_DIR}/hosts"
HOST_CONFIG_SUFFIX = ".cfg"
RETRY_SECONDS = 10
HOST_CONFIG_EXPR = '"${prefix}/hosts/${net_default_mac}.cfg"'
"""GRUB expression for the asking host's own config: where the main config hands over."""


def grub_quote(text: str) -> str:
    """``text`` as one literal GRUB word: single quotes, ``'`` written as ``'\\''``, control
    characters dropped (they would end the line)."""
    clean = "".join(ch for ch in text if ch.isprintable())
    return "'" + clean.replace("'", "'\\''") + "'"


def host_config_mac(name: str) -> str | None:
    """The MAC in a requested ``grub/hosts/<mac>.cfg`` path (any spelling), or None for any other
    path. Leading slashes are ignored: TFTP clients send names with and without them."""
    name = name.lstrip("/")
    prefix = HOSTS_DIR + "/"
    if not name.startswith(prefix) or not name.endswith(HOST_CONFIG_SUFFIX):
        return None
    try:
        return normalize_mac(name[len(prefix) : -len(HOST_CONFIG_SUFFIX)])
    except ValidationError:
        return None


def is_main_config(name: str) -> bool:
    """True for the fixed path network GRUB asks for first."""
    return name.lstrip("/") == MAIN_CONFIG


def main_config(server: str) -> str:
    """The one ``grub.cfg``: report, hand over to the host's own config, retry if that fails.

    ``server`` only labels the file (the address it was generated for), so an operator reading
    a capture knows which bootbox wrote it.
    """
    return "\n".join(
        [
            f"# bootbox {server}: generated per request; each host continues in hosts/<its MAC>.cfg",
            "set timeout=0",
            'echo "bootbox: GRUB on ${net_default_mac} fetches its configuration from ${net_default_server}"',
            f"configfile {HOST_CONFIG_EXPR}",
            "echo " + grub_quote(f"bootbox: the host configuration could not be read; retrying in {RETRY_SECONDS} s"),
            f"sleep {RETRY_SECONDS}",
            'configfile "${prefix}/grub.cfg"',
            "",
        ]
    )


def waiting_config(mac: str, attrs: Mapping[str, str], reason: str, retry_seconds: int) -> str:
    """For a host with nothing to boot: say why and show its attributes, then ask again.

    The GRUB twin of :func:`bootbox.core.render.ipxe.waiting_script`: the host keeps asking, so a new
    rule takes effect without a power cycle.
    """
    lines = [f"echo {grub_quote(f'bootbox: {mac} tried to network-boot, but {reason}')}",
             f"echo {grub_quote('bootbox: its attributes (use them in a rule pattern):')}"]
    lines += [f"echo {grub_quote(f'  {key}={attrs[key]}')}" for key in sorted(attrs) if attrs[key]]
    lines += [f"echo {grub_quote(f'bootbox: asking again in {retry_seconds} seconds')}",
              f"sleep {retry_seconds}", f"configfile {HOST_CONFIG_EXPR}", ""]
    return "\n".join(lines)


def linux_config(title: str, kernel: str, initrds: Iterable[str], args: Iterable[str]) -> str:
    """Load a kernel and initrds from the boot server and boot; on failure, retry the config.

    ``kernel`` and ``initrds`` are paths on the server GRUB booted from (``/boot/hosts/…``), read
    over the protocol GRUB itself came in on. ``args`` are kernel arguments, each quoted. Under
    Secure Boot, GRUB has shim verify the kernel; the initrd is not checked (facts §9).
    """
    initrd_paths = list(initrds)
    lines = [f"echo {grub_quote(title)}",
             " ".join(["linux", grub_quote(kernel), *(grub_quote(a) for a in args)])]
    if initrd_paths:
        lines.append(" ".join(["initrd", *(grub_quote(p) for p in initrd_paths)]))
    lines += ["boot",
              f"echo {grub_quote(f'bootbox: loading the boot files failed; retrying in {RETRY_SECONDS} seconds')}",
              f"sleep {RETRY_SECONDS}", f"configfile {HOST_CONFIG_EXPR}", ""]
    return "\n".join(lines)
