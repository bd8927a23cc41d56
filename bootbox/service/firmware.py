"""Per-firmware boot paths in the service: which loader a host gets, and GRUB's files.

:class:`FirmwareBoot` is the service's helper (like ``HostConfig``) for everything that differs
between firmware kinds (docs/firmware.md):

* the DHCP decision with the host's :class:`~bootbox.core.policy.BootChoice` (its ``loader`` and
  ``secure_boot`` rule items, then its group's ``[groups.NAME]`` table), recording on the host's
  timeline why a client was not answered and warning when GRUB is handed out by a proxy;
* the files GRUB reads over TFTP (and HTTP): the one ``grub/grub.cfg``, each host's
  ``grub/hosts/<mac>.cfg`` rendered at request time, and the host's profile files under
  ``boot/hosts/<mac>/assets/``;
* loader names resolved through ``[dhcp.loader_files]`` (:mod:`bootbox.service.bootfiles`), and
  no offer at all for a client whose loader file is not there: its firmware then falls through
  to its next boot option instead of failing on "file not found"; the host's timeline says why,
  the log says it once per file, and :attr:`FirmwareBoot.stats` counts it (``bootbox status``).

It is given what it uses, not the service: the settings, the host index, the active rules'
decision, ``record``, and the two service operations a GRUB file stands for (a host's script,
a host's profile file) as bound methods, typed by the protocols below.

Runs on protocol threads: the decision reads memory only; file opens are quick.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Protocol

from bootbox.config import Settings
from bootbox.core.render import grub as grubcfg
from bootbox.core import policy
from bootbox.core.rules import Decision
from bootbox.service.bootfiles import BootFiles, local_address_for
from bootbox.service.collaborators import Record
from bootbox.service.hostindex import HostIndex
from bootbox.errors import NotFound
from bootbox.model import BootSpec, EventKind, Firmware, Host, Machine, normalize_mac

log = logging.getLogger("bootbox.firmware")

__all__ = ["FirmwareBoot", "GRUB_NEXT_SERVER_WARNING", "HostAsset", "HostScript"]

GRUB_NEXT_SERVER_WARNING = (
    "GRUB 2.06 reads grub.cfg from the next-server (siaddr) of the site DHCP's answer, not from "
    "this proxy's: set the site DHCP's next-server to bootbox (dnsmasq: dhcp-boot=,,ADDRESS; ISC: "
    "next-server), or run bootbox with [dhcp] mode = \"full\""
)
_MISSING_TOLD_MAX = 65536
"""(host, loader) pairs remembered as told "your loader is missing" (memory bound)."""
_ASSET_PATH = re.compile(r"^boot/hosts/([0-9a-fA-F]{12})/assets/([A-Za-z0-9._-]{1,64})$")


class HostScript(Protocol):
    """The service's ``host_script``: a host's boot, rendered for its loader (here GRUB's)."""

    def __call__(self, mac: str, params: Mapping[str, str], client_ip: str, base_url: str, *,
                 loader: str = "ipxe") -> str: ...


class HostAsset(Protocol):
    """The service's ``host_asset``: a file of the host's own profile, else NotFound."""

    def __call__(self, mac: str, name: str, client_ip: str, *, record: bool = True) -> Path: ...


class FirmwareBoot:
    """Loader choice and GRUB file serving for one service."""

    def __init__(self, settings: Settings, *, hosts: HostIndex, decide: Callable[[Mapping[str, Any]], Decision],
                 record: Record, host_script: HostScript, host_asset: HostAsset) -> None:
        """``decide``: the active rules' decision for a host's attributes."""
        self._settings = settings
        self._hosts = hosts
        self._decide = decide
        self._record = record
        self._host_script = host_script
        self._host_asset = host_asset
        dhcp = settings.dhcp
        self.tables = policy.LoaderTables(ipxe=dhcp.loaders, grub=dhcp.grub_loaders,
                                          secure_boot=dhcp.secure_boot_loaders)
        self.files = BootFiles(settings.tftp.root, dhcp.loader_files, settings.state_path)
        self._warned_proxy: set[str] = set()
        self._first_stage = {name for table in (dhcp.loaders, dhcp.grub_loaders, dhcp.secure_boot_loaders)
                             for name in table.values() if name}
        self._ipxe = {name for name in dhcp.loaders.values() if name}
        self._pending: dict[str, str] = {}  # MAC → first-stage loader it fetched and has not run yet
        self._pending_lock = threading.Lock()
        self._missing_lock = threading.Lock()
        self._missing_logged: set[str] = set()  # loader names logged as missing (once each)
        self._missing_told: set[tuple[str, str]] = set()  # (MAC, name) put on a timeline
        self._stats = {"loader_missing": 0}

    @property
    def stats(self) -> dict[str, int]:
        """Counters for ``/api/v1/status``: ``loader_missing`` is how many DHCP requests went
        unanswered because the loader chosen for the client is not there."""
        with self._missing_lock:
            return dict(self._stats)

    def startup_warnings(self) -> list[str]:
        """What an operator should fix before GRUB-booted hosts arrive (logged at start-up)."""
        settings = self._settings
        missing = self.files.missing()
        with self._missing_lock:
            self._missing_logged.update(missing)  # said here: the DHCP path does not say it again
        warnings = []
        if missing:  # one line for all of them: on an offline install that is the three ARM64 files
            warnings.append("clients whose loader is not there get no offer until it is (`bootbox doctor` says how "
                            "to fetch it): " + "; ".join(f"loader {name} is configured as {path}, which does not exist"
                                                         for name, path in sorted(missing.items())))
        secure_groups = sorted(name for name, table in settings.groups.items() if table.get("secure_boot"))
        if secure_groups and settings.dhcp.mode == "proxy":
            warnings.append(f"groups {', '.join(secure_groups)} boot with Secure Boot in proxy mode: "
                            + GRUB_NEXT_SERVER_WARNING)
        return warnings

    # ------------------------------------------------------------------ DHCP

    def choice(self, machine: Machine) -> policy.BootChoice:
        """The host's boot choice, from its cached associations or, for a host without an image
        yet, from what the active rules give it on the facts DHCP carries (memory only)."""
        host = self._hosts.get(machine.mac)
        associations: Mapping[str, str] = host.associations if host is not None else {}
        if not associations.get("image"):
            attrs: dict[str, Any] = dict(host.attrs) if host is not None else {}
            attrs.update(machine.facts())  # this packet's facts, even before the host records them
            attrs["mac"] = machine.mac
            associations = {item: choice.value for item, choice in self._decide(attrs).items()}
        return policy.choice_from(associations, self._settings.groups)

    def decide(self, machine: Machine) -> BootSpec | None:
        """The DHCP answer for ``machine``, or None (and the reason on its timeline)."""
        settings = self._settings
        if not machine.is_ipxe:
            self._check_stalled(machine)
        server = settings.server_address if ":" not in machine.server_ip else ""
        base = policy.http_base_url(machine, server_address=server, http_port=settings.http.port,
                                    public_url=settings.http.public_url)
        choice = self.choice(machine) if not machine.is_ipxe else policy.BootChoice()
        spec = policy.choose(machine, loaders=self.tables, next_server=settings.server_address or machine.server_ip,
                             base_url=base, choice=choice)
        if isinstance(spec, policy.NoLoader):
            self._record(machine.mac, EventKind.DHCP_IGNORED, f"not answered: {spec.reason}", arch=machine.arch,
                           reason=spec.reason)
            return None
        if machine.is_ipxe:
            return spec
        picked = policy.select_loader(machine.arch, self.tables, choice)
        if isinstance(picked, policy.Loader):
            if not self.files.exists(picked.name):
                self._loader_missing(machine, picked.name)
                return None
            self._loader_present(picked.name)
            if (picked.kind is policy.LoaderKind.GRUB and settings.dhcp.mode == "proxy"
                    and ":" not in machine.server_ip):
                self._warn_proxy_grub(machine.mac, spec)
        return spec

    def _loader_missing(self, machine: Machine, name: str) -> None:
        """No offer: the loader chosen for ``machine`` is not there. Logged once per file,
        counted per request, put on the host's timeline (and as its reason) once per host."""
        where = self.files.where(name)
        why = (f"its loader {name} is not there ({where}), so it gets no offer and its firmware moves on to its "
               "next boot option; `bootbox doctor` says how to install or fetch it")
        with self._missing_lock:
            self._stats["loader_missing"] += 1
            first_log = name not in self._missing_logged
            self._missing_logged.add(name)
            first_for_host = (machine.mac, name) not in self._missing_told
            if len(self._missing_told) >= _MISSING_TOLD_MAX:  # a flood of forged MACs: start over
                self._missing_told.clear()
            self._missing_told.add((machine.mac, name))
        if first_log:
            log.warning("loader %s is not there (%s): clients that need it (arch %s first) get no offer until it "
                        "is; `bootbox doctor` says how to fetch it", name, where, machine.arch)
        if first_for_host:
            self._hosts.update(machine.mac, lambda h: replace(h or Host(mac=machine.mac), reason=f"not answered: {why}"))
            self._record(machine.mac, EventKind.DHCP_IGNORED, f"not answered: {why}", arch=machine.arch,
                         loader=name, missing=str(where))

    def _loader_present(self, name: str) -> None:
        """A loader that was missing is there again: a later disappearance is logged and put
        on the timelines anew."""
        if name in self._missing_logged:  # racy read on purpose: the common case takes no lock
            with self._missing_lock:
                self._missing_logged.discard(name)
                self._missing_told = {told for told in self._missing_told if told[1] != name}

    # ------------------------------------------------------------------ did the loader run?

    def loader_sent(self, mac: str, name: str) -> None:
        """A file reached ``mac``: a first-stage loader is now expected to run; anything else
        (the next stage, a config) shows the previous one did."""
        name = name.replace("\\", "/").lstrip("/")
        with self._pending_lock:
            if name in self._first_stage:
                self._pending[mac] = name
            else:
                self._pending.pop(mac, None)

    def progressed(self, mac: str) -> None:
        """The loader ran: it asked for its script or GRUB config."""
        with self._pending_lock:
            self._pending.pop(mac, None)

    def _check_stalled(self, machine: Machine) -> None:
        """The firmware itself is back at DHCP after fetching a loader that never asked for
        anything: it did not start it. UEFI Secure Boot refusing an unsigned loader ("Access
        Denied", then the next boot entry) looks exactly like this on the wire (facts §9)."""
        with self._pending_lock:
            name = self._pending.pop(machine.mac, None)
        if name is None:
            return
        if name in self._ipxe and machine.firmware is not Firmware.BIOS:
            asked_as = machine.vendor_class.split(":")[0]
            why = (f"{name} was downloaded but never ran: the firmware came back to DHCP (as {asked_as}) "
                   "instead of asking for its script. Secure Boot firmware refuses Debian's unsigned iPXE "
                   "(\"Access Denied\"); if Secure Boot is on for this host, give it secure_boot = on (its group's "
                   "[groups.NAME] table or a secure_boot rule item) so it gets shim -> GRUB -> a signed kernel")
        else:
            why = (f"{name} was downloaded but never ran: the firmware came back to DHCP instead. It refused or "
                   "could not start it (a Secure Boot refusal, or a loader for another architecture)")
        log.warning("%s %s", machine.mac, why)
        self._hosts.update(machine.mac, lambda h: replace(h or Host(mac=machine.mac), reason=why))
        self._record(machine.mac, EventKind.STATE, f"stalled: {why}", loader=name, stalled=True)

    def _warn_proxy_grub(self, mac: str, spec: BootSpec) -> None:
        """Once per host and run: the GRUB chain behind a proxy needs the site DHCP's help."""
        if mac in self._warned_proxy:
            return
        self._warned_proxy.add(mac)
        log.warning("%s gets %s from a proxy: %s", mac, spec.boot_file, GRUB_NEXT_SERVER_WARNING)
        self._record(mac, EventKind.STATE, f"warning: {spec.boot_file} through proxyDHCP: "
                     + GRUB_NEXT_SERVER_WARNING, warning="grub-behind-proxy")

    # ------------------------------------------------------------------ files

    def base_url_for(self, client_ip: str) -> str:
        """The HTTP base URL for a client that reached us over TFTP (no Host header to copy)."""
        settings = self._settings
        if settings.http.public_url:
            return settings.http.public_url.rstrip("/")
        v6 = ":" in client_ip
        address = (settings.dhcp6.server_address if v6 else settings.server_address) or local_address_for(client_ip)
        machine = Machine(mac="00:00:00:00:00:00", server_ip=address)
        return policy.http_base_url(machine, server_address="", http_port=settings.http.port)

    def grub_host_config(self, mac: str, client_ip: str, base_url: str) -> str:
        """``grub/hosts/<mac>.cfg``: the host's boot, rendered now, as for an iPXE script."""
        return self._host_script(mac, {"platform": "efi"}, client_ip, base_url, loader="grub")

    def generated(self, name: str, client_ip: str, base_url: str | None = None) -> str | None:
        """The text of a GRUB file bootbox generates, or None when ``name`` is not one."""
        if grubcfg.is_main_config(name):
            return grubcfg.main_config(base_url or self.base_url_for(client_ip))
        mac = grubcfg.host_config_mac(name)
        if mac is not None:
            return self.grub_host_config(mac, client_ip, base_url or self.base_url_for(client_ip))
        return None

    def open_tftp(self, name: str, client: tuple[str, ...]) -> BinaryIO:
        """A TFTP read: generated GRUB configs, a host's profile files, then loaders."""
        client_ip = str(client[0])
        text = self.generated(name, client_ip)
        if text is not None:
            return io.BytesIO(text.encode())
        asset = _ASSET_PATH.match(name.replace("\\", "/").lstrip("/"))
        if asset is not None:
            mac = normalize_mac(asset.group(1))
            return self._host_asset(mac, asset.group(2), client_ip, record=False).open("rb")
        return self.files.open(name)

    def loader_path(self, name: str) -> Path:
        """A loader served over HTTP (UEFI HTTP boot): same names as over TFTP."""
        try:
            return self.files.path(name)
        except NotFound:
            raise NotFound(f"no loader {name!r}") from None
