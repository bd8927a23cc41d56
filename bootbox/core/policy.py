"""The DHCP boot decision, as a pure function: which file or URL a network-boot client loads next.

The rule that prevents the classic chainload loop lives here: a client that is already iPXE
(user class ``iPXE`` / option 175, or DHCPv6 user class ``iPXE``) gets the HTTP URL of its
script, never the iPXE binary again.

Everything else gets a first-stage *loader*, chosen from configurable tables by the client's
architecture (option 93 / DHCPv6 option 61, which also encodes the firmware mode: 7 is x64 UEFI
PXE, 16 is x64 UEFI HTTP boot, 11 and 19 are their ARM64 twins; facts/pxe-dhcp.md §4–§6) and
by the host's own choice (:class:`BootChoice`: a loader kind and Secure Boot, from its group or
its own rule items). There are two loader kinds:

* ``ipxe``: an iPXE build that comes back for the iPXE script (the default where one exists);
* ``grub``: Debian's network GRUB, which reads ``/grub/grub.cfg`` from the server it booted from
  (:mod:`bootbox.core.render.grub`). Debian builds no arm64 iPXE, so ARM64 defaults to it.

Secure Boot always means GRUB: Microsoft-signed shim, which loads the Debian-signed network GRUB
served as ``grubx64.efi``/``grubaa64.efi`` beside it; unsigned iPXE would be refused.

PXE clients get a TFTP file name; UEFI HTTP-boot clients the same loader as an absolute URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from bootbox.model import BootSpec, Machine

ENTRY_SCRIPT_PATH = "/boot.ipxe"
LOADER_PATH = "/boot/loaders/"

BOOL_WORDS: Mapping[str, bool] = {
    "1": True, "true": True, "yes": True, "on": True,
    "0": False, "false": False, "no": False, "off": False,
}  # fmt: skip
"""How ``secure_boot`` is spelled in rule items (``--item secure_boot=on``) and group tables."""


class LoaderKind(StrEnum):
    """What a loader does once loaded: comes back as iPXE, or reads GRUB's configuration."""

    IPXE = "ipxe"
    GRUB = "grub"


@dataclass(frozen=True)
class LoaderTables:
    """Client architecture (decimal, as a string) → served loader name, one table per path.

    ``ipxe`` is ``[dhcp.loaders]``, ``grub`` is ``[dhcp.grub_loaders]`` and ``secure_boot`` is
    ``[dhcp.secure_boot_loaders]`` (shim; always followed by GRUB). An empty name switches an
    architecture off in that table.
    """

    ipxe: Mapping[str, str] = field(default_factory=dict)
    grub: Mapping[str, str] = field(default_factory=dict)
    secure_boot: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootChoice:
    """What a host (or its group) asked for; the empty choice means "architecture defaults".

    :ivar loader: ``""`` (the table's default kind for the architecture), ``ipxe`` or ``grub``.
    :ivar secure_boot: serve the signed chain (shim → GRUB → signed kernel); ``None``: not said.
    :ivar source: where the choice came from, for the event log (``group rack1``, ``rule items``).
    """

    loader: str = ""
    secure_boot: bool | None = None
    source: str = ""


@dataclass(frozen=True)
class Loader:
    """The loader picked for one client: its kind and served name."""

    kind: LoaderKind
    name: str
    secure_boot: bool = False


@dataclass(frozen=True)
class NoLoader:
    """No loader fits: the client is not answered, and this says why (it goes on the timeline)."""

    reason: str


def parse_bool(value: str | bool, what: str = "secure_boot") -> bool:
    """``on``/``off``, ``true``/``false``, ``yes``/``no``, ``1``/``0`` (any case) → bool."""
    if isinstance(value, bool):
        return value
    try:
        return BOOL_WORDS[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"{what} must be on or off, not {value!r}") from None


def merge_choices(*choices: BootChoice | None) -> BootChoice:
    """Combine choices, most specific first: the first that sets a field wins it.

    So a host's ``secure_boot = off`` overrides its group's ``on``, and a host that says nothing
    inherits the group's setting.
    """
    loader, secure, sources = "", None, []
    for choice in choices:
        if choice is None:
            continue
        if not loader and choice.loader:
            loader = choice.loader
            sources.append(choice.source)
        if secure is None and choice.secure_boot is not None:
            secure = choice.secure_boot
            sources.append(choice.source)
    return BootChoice(loader, secure, ", ".join(dict.fromkeys(s for s in sources if s)))


def choice_from(associations: Mapping[str, str], groups: Mapping[str, Mapping[str, Any]]) -> BootChoice:
    """A host's boot choice: its own ``loader``/``secure_boot`` rule items, then its group's
    ``[groups.NAME]`` table (the group being its ``group`` rule item).

    A ``secure_boot`` item that is not a yes/no word (``on``, ``off``, ``true``, …) counts as
    unsaid.
    """
    if not ("loader" in associations or "secure_boot" in associations or associations.get("group")):
        return _NO_CHOICE  # most hosts: architecture defaults (every DISCOVER comes through here)
    own_secure: bool | None = None
    if "secure_boot" in associations:
        try:
            own_secure = parse_bool(associations["secure_boot"])
        except ValueError:
            own_secure = None
    own = BootChoice(associations.get("loader", ""), own_secure, "its rule items")
    group = associations.get("group", "")
    table = groups.get(group) if group else None
    if not table:
        return merge_choices(own)
    secure = table.get("secure_boot")
    return merge_choices(own, BootChoice(str(table.get("loader", "")), None if secure is None else bool(secure),
                                         f"group {group}"))


_NO_CHOICE = BootChoice()


def http_base_url(machine: Machine, *, server_address: str, http_port: int, public_url: str = "") -> str:
    """The base URL a client on ``machine``'s segment can reach the HTTP server at."""
    if public_url:
        return public_url.rstrip("/")
    address = server_address or machine.server_ip
    if ":" in address:
        address = f"[{address}]"  # an IPv6 literal in a URL (RFC 3986 §3.2.2)
    return f"http://{address}" if http_port == 80 else f"http://{address}:{http_port}"


def select_loader(arch: int | None, tables: LoaderTables, choice: BootChoice = BootChoice()) -> Loader | NoLoader:
    """The loader for a plain (non-iPXE) firmware of architecture ``arch``.

    A missing architecture (no option 93, nothing in option 60) is treated as x86 BIOS, the only
    kind of ROM old enough to omit it.
    """
    code = "0" if arch is None else str(arch)
    if choice.secure_boot:
        if choice.loader == LoaderKind.IPXE:
            return NoLoader("Secure Boot and the ipxe loader were both asked for: Debian's iPXE is unsigned, "
                            "so Secure Boot firmware would refuse it; use loader grub (or turn Secure Boot off)")
        name = tables.secure_boot.get(code, "")
        if not name:
            return NoLoader(f"Secure Boot was asked for, but [dhcp.secure_boot_loaders] has no shim for "
                            f"architecture {code}")
        return Loader(LoaderKind.GRUB, name, secure_boot=True)
    if choice.loader:
        try:
            kind = LoaderKind(choice.loader)
        except ValueError:
            return NoLoader(f"unknown loader kind {choice.loader!r} (use ipxe or grub)")
        table = tables.ipxe if kind is LoaderKind.IPXE else tables.grub
        name = table.get(code, "")
        if not name:
            section = "loaders" if kind is LoaderKind.IPXE else "grub_loaders"
            return NoLoader(f"loader {kind} was asked for, but [dhcp.{section}] has none for architecture {code}")
        return Loader(kind, name)
    if tables.ipxe.get(code):
        return Loader(LoaderKind.IPXE, tables.ipxe[code])
    if tables.grub.get(code):
        return Loader(LoaderKind.GRUB, tables.grub[code])
    return NoLoader(f"no loader for client architecture {code}")


def choose(
    machine: Machine,
    *,
    loaders: LoaderTables | Mapping[str, str],
    next_server: str,
    base_url: str,
    choice: BootChoice = BootChoice(),
) -> BootSpec | NoLoader:
    """Decide what ``machine`` boots next, or why it is not answered.

    ``loaders`` may be a bare mapping, taken as the iPXE table (the layout before GRUB).
    """
    if machine.is_ipxe:
        return BootSpec(base_url + ENTRY_SCRIPT_PATH, next_server, "PXEClient", "iPXE: HTTP script")
    tables = loaders if isinstance(loaders, LoaderTables) else LoaderTables(ipxe=loaders)
    picked = select_loader(machine.arch, tables, choice)
    if isinstance(picked, NoLoader):
        return picked
    arch = "0" if machine.arch is None else str(machine.arch)
    what = f"arch {arch}: {picked.kind} loader" + (" (Secure Boot)" if picked.secure_boot else "")
    if choice.source:
        what += f", as {choice.source} asks"
    if machine.http_boot:
        return BootSpec(base_url + LOADER_PATH + picked.name, next_server, "HTTPClient", f"{what} over HTTP")
    return BootSpec(picked.name, next_server, "PXEClient", f"{what} over TFTP")


def choose_boot(
    machine: Machine,
    *,
    loaders: LoaderTables | Mapping[str, str],
    next_server: str,
    base_url: str,
    choice: BootChoice = BootChoice(),
) -> BootSpec | None:
    """:func:`choose`, with ``None`` for "do not answer" (an architecture without a loader)."""
    spec = choose(machine, loaders=loaders, next_server=next_server, base_url=base_url, choice=choice)
    return None if isinstance(spec, NoLoader) else spec
