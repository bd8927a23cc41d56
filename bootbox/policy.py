"""The DHCP boot decision, as a pure function: which file or URL a PXE client loads next.

The rule that prevents the classic chainload loop lives here: a client that is already iPXE
(user class ``iPXE`` / option 175) gets the HTTP URL of its script, never the iPXE binary again.
Plain PXE ROMs get a loader by architecture from a configurable table, fetched over TFTP, and
UEFI HTTP-boot clients get the same loader as an absolute HTTP URL (facts/pxe-dhcp.md §4–§6).
"""

from __future__ import annotations

from typing import Mapping

from bootbox.model import BootSpec, Machine

ENTRY_SCRIPT_PATH = "/boot.ipxe"
LOADER_PATH = "/boot/loaders/"


def http_base_url(machine: Machine, *, server_address: str, http_port: int, public_url: str = "") -> str:
    """The base URL a client on ``machine``'s segment can reach the HTTP server at."""
    if public_url:
        return public_url.rstrip("/")
    address = server_address or machine.server_ip
    return f"http://{address}" if http_port == 80 else f"http://{address}:{http_port}"


def choose_boot(machine: Machine, *, loaders: Mapping[str, str], next_server: str, base_url: str) -> BootSpec | None:
    """Decide what ``machine`` boots next; ``None`` means "do not answer" (unsupported arch).

    A missing architecture (no option 93, nothing in option 60) is treated as x86 BIOS, the
    only kind of ROM old enough to omit it.
    """
    if machine.is_ipxe:
        return BootSpec(base_url + ENTRY_SCRIPT_PATH, next_server, "PXEClient", "iPXE: HTTP script")
    arch = "0" if machine.arch is None else str(machine.arch)
    loader = loaders.get(arch)
    if not loader:
        return None
    if machine.http_boot:
        return BootSpec(base_url + LOADER_PATH + loader, next_server, "HTTPClient", f"arch {arch}: loader over HTTP")
    return BootSpec(loader, next_server, "PXEClient", f"arch {arch}: loader over TFTP")
