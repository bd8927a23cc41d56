"""``bootbox doctor``: checks that explain why network boot would fail here, each with its fix.

Every check returns a :class:`Check` (``ok``, ``warn``, ``fail`` or ``skip``, a one-line
summary, the fix, details). The checks read the machine through :mod:`bootbox.doctor.machine` and the
configuration; only :func:`check_dhcp_servers` touches the network (one DISCOVER, facts in
:mod:`bootbox.net.dhcp.probe`), and ``--client`` (:mod:`bootbox.doctor.client`) talks to the
running appliance. "Ours" means the process holding the state directory's lock: the bootbox
this configuration belongs to.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from bootbox.assets.signedloaders import LOADER_PACKAGES
from bootbox.doctor import machine
from bootbox.config import Settings
from bootbox.net.dhcp.probe import HeardServer, ProbeError, probe
from bootbox.store.lock import LOCK_FILENAME
from bootbox.store.setaside import list_set_aside, set_aside_dir

__all__ = ["Check", "Status", "appliance_pid", "run_checks"]

STORE_FILENAME = "bootbox.json"
_SECURE_BOOT_LOADER = re.compile(r"shim|grub", re.IGNORECASE)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    details: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": str(self.status), "summary": self.summary, "fix": self.fix,
                "details": list(self.details)}  # fmt: skip


def appliance_pid(settings: Settings) -> int | None:
    """The PID of the running bootbox that owns ``state_dir`` (it holds the lock), if any."""
    holders = [pid for pid in machine.flock_holders(settings.state_path / LOCK_FILENAME) if Path(f"/proc/{pid}").exists()]
    return holders[0] if holders else None


def _wanted_ports(settings: Settings) -> list[tuple[str, str, int, str]]:
    """(name, proto, port, config key) of every socket the configuration will open."""
    wanted = [("http", "tcp", settings.http.port, "http.port")]
    if settings.dhcp.enabled:
        wanted += [("dhcp", "udp", settings.dhcp.port, "dhcp.port"),
                   ("pxe boot server", "udp", settings.dhcp.boot_server_port, "dhcp.boot_server_port")]  # fmt: skip
    if settings.tftp.enabled:
        wanted.append(("tftp", "udp", settings.tftp.port, "tftp.port"))
    dns = getattr(settings, "dns", None)
    if getattr(dns, "enabled", False):
        port = int(getattr(dns, "port", 53))
        wanted += [("dns", "udp", port, "dns.port"), ("dns", "tcp", port, "dns.port")]
    return wanted


def check_ports(settings: Settings, ours: int | None, found: Sequence[machine.Listener] | None = None,
                owners: Mapping[int, int] | None = None) -> Check:  # fmt: skip
    """Each port bootbox needs is free, or held by our own running appliance."""
    found = machine.listeners() if found is None else found
    wanted = _wanted_ports(settings)
    busy = {(w.proto, w.port): w for w in found if any((w.proto, w.port) == (p, n) for _, p, n, _ in wanted)}
    owners = machine.socket_owners({w.inode for w in busy.values()}) if owners is None else owners
    details, problems = [], []
    for name, proto, port, key in wanted:
        sock = busy.get((proto, port))
        if sock is None:
            details.append(f"{proto}/{port} ({name}): free")
            continue
        pid = owners.get(sock.inode)
        if pid is not None and pid == ours:
            details.append(f"{proto}/{port} ({name}): bootbox (pid {pid})")
            continue
        who = f"{machine.process_name(pid) or '?'} (pid {pid})" if pid is not None else "another process"
        details.append(f"{proto}/{port} ({name}): held by {who}")
        problems.append((f"{proto}/{port} is held by {who}", key))
    if not problems:
        return Check("ports", Status.OK, "every port bootbox needs is free or its own", details=tuple(details))
    keys = ", ".join(sorted({key for _, key in problems}))
    return Check("ports", Status.FAIL, "; ".join(text for text, _ in problems),
                 f"stop the other program (e.g. systemctl stop dnsmasq), or move bootbox to other ports ({keys}, "
                 "or BOOTBOX_<SECTION>_PORT)", tuple(details))  # fmt: skip


def check_capabilities(settings: Settings, ours: int | None, mask: int | None = None) -> Check:
    """The process that serves can bind low ports and bind to an interface."""
    whose = f"the running bootbox (pid {ours})" if ours is not None else "this shell"
    mask = machine.capabilities(ours if ours is not None else "self") if mask is None else mask
    if mask is None:
        return Check("capabilities", Status.SKIP, f"cannot read the capabilities of {whose}")
    needed = {}
    if min((port for _, _, port, _ in _wanted_ports(settings)), default=1024) < 1024:
        needed["CAP_NET_BIND_SERVICE"] = machine.CAP_NET_BIND_SERVICE
    if settings.dhcp.enabled and (settings.dhcp.interface or settings.dhcp.mode == "full"):
        needed["CAP_NET_RAW"] = machine.CAP_NET_RAW
    missing = [name for name, bit in needed.items() if not mask >> bit & 1]
    if not missing:
        return Check("capabilities", Status.OK, f"{whose} has {', '.join(needed) or 'what it needs (no low ports)'}")
    status = Status.FAIL if ours is not None else Status.WARN
    return Check("capabilities", status, f"{whose} lacks {', '.join(missing)}",
                 "run bootbox as root, or through appliance/bootbox.service (it grants CAP_NET_BIND_SERVICE and "
                 "CAP_NET_RAW), or use ports above 1023 and no dhcp.interface")  # fmt: skip


def check_loaders(settings: Settings) -> Check:
    """Every loader the DHCP tables may offer is there: the iPXE builds in ``tftp.root`` (missing:
    fail, most clients need them) and the signed shim/GRUB files of ``[dhcp.loader_files]``
    (missing: warn; only ARM64, Secure Boot and ``loader = grub`` clients need them, and those get
    no offer until the files are there). The fix names the exact command for each missing file."""
    root = Path(settings.tftp.root)
    named = {name: _loader_file(settings, target) for name, target in settings.dhcp.loader_files.items() if target}
    names = sorted({name for name in settings.dhcp.loaders.values() if name and "://" not in name} - set(named))
    missing = [name for name in names if not (root / name).is_file()]
    absent = {name: path for name, path in sorted(named.items()) if not path.is_file()}
    details = tuple([f"{name}: {'missing' if name in missing else 'present'} in {root}" for name in names]
                    + [f"{name}: {'missing' if name in absent else 'present'} ({path})" for name, path in sorted(named.items())])
    fixes = []
    if missing:
        fixes.append("apt-get install ipxe (Debian puts undionly.kpxe and snponly.efi in /usr/lib/ipxe), "
                     "or point tftp.root / [dhcp.loaders] at your files")
    fixes += _signed_loader_fixes(absent)
    problems = ([f"missing in {root}: {', '.join(missing)}"] if missing else []) + (
        [f"signed loaders missing: {', '.join(f'{name} ({path})' for name, path in absent.items())}; the ARM64 / "
         "Secure Boot clients that need them get no offer until they are there"] if absent else [])
    if not problems:
        return Check("loaders", Status.OK, f"{len(names) + len(named)} loaders present", details=details)
    return Check("loaders", Status.FAIL if missing else Status.WARN, "; ".join(problems), "; ".join(fixes), details)


def _loader_file(settings: Settings, target: str) -> Path:
    """A ``[dhcp.loader_files]`` value as bootbox resolves it (relative: under ``state_dir``)."""
    path = Path(target)
    return path if path.is_absolute() else settings.state_path / path


def _signed_loader_fixes(absent: Mapping[str, Path]) -> list[str]:
    """How to get each absent signed loader: Debian's package for x64 files at Debian's own
    paths, ``bootbox.signedloaders`` (download + unpack, never install) for the rest."""
    by_file = {Path(inner).name: (arch, "/" + inner) for arch, packages in LOADER_PACKAGES.items()
               for inner in packages.values()}
    fetch: dict[tuple[str, Path], None] = {}
    install: dict[str, None] = {}
    unknown: list[str] = []
    for name, path in absent.items():
        arch, debian_path = by_file.get(path.name, ("", ""))
        if not arch:
            unknown.append(f"put {name} at {path}, or change [dhcp.loader_files] {name}")
        elif str(path) == debian_path:
            install.update(dict.fromkeys(package for package, inner in LOADER_PACKAGES[arch].items()
                                         if Path(inner).name == path.name))
        else:
            fetch[(arch, path.parent)] = None
    fixes = [f"apt-get install {' '.join(install)}"] if install else []
    for arch, directory in fetch:
        add_arch = f"dpkg --add-architecture {arch} && apt-get update && " if arch != "amd64" else ""
        debs = " ".join(f"{package}:{arch}" for package in LOADER_PACKAGES[arch])
        inner = " and ".join(LOADER_PACKAGES[arch].values())
        fixes.append(f"{add_arch}{sys.executable} -m bootbox.signedloaders {arch} {directory} (downloads "
                     f"Debian's signed {arch} shim and GRUB and unpacks them there; nothing is installed). It needs "
                     f"the network: offline, run it on a machine that has access and copy {directory} here, or get "
                     f"the packages there (apt-get download {debs}), copy the .deb files here, unpack each with "
                     f"dpkg -x FILE.deb DIR and copy {inner} from DIR into {directory}")
    return fixes + unknown


def check_addresses(settings: Settings, addresses: Mapping[str, list[IPv4Interface]] | None = None) -> Check:
    """The configured interface and addresses exist on this machine."""
    addresses = machine.interface_addresses() if addresses is None else addresses
    local = {str(a.ip): name for name, items in addresses.items() for a in items}
    details = tuple(f"{name}: {', '.join(map(str, items)) or 'no IPv4 address'}" for name, items in sorted(addresses.items()))
    problems: list[tuple[str, str]] = []
    interface = settings.dhcp.interface
    if interface and not addresses.get(interface):
        state = "has no IPv4 address" if interface in addresses else "does not exist"
        problems.append((f"dhcp.interface {interface!r} {state}", "set dhcp.interface to one of: " + ", ".join(sorted(addresses))))
    for key, value in (("server_address", settings.server_address), ("dhcp.bind_address", settings.dhcp.bind_address),
                       ("tftp.bind_address", settings.tftp.bind_address), ("http.bind_address", settings.http.bind_address)):
        if value and value not in ("0.0.0.0", "::") and value not in local:
            problems.append((f"{key} {value} is not an address of this machine",
                             f"use one of {', '.join(sorted(local))}, or leave {key} empty/0.0.0.0"))
    if settings.dhcp.mode == "full" and interface and addresses.get(interface):
        net = addresses[interface][0].network
        for key in ("range_start", "range_end"):
            if IPv4Address(getattr(settings.dhcp, key)) not in net:
                problems.append((f"dhcp.{key} is outside {interface}'s subnet {net}", f"choose a range inside {net}"))
    if problems:
        return Check("addresses", Status.FAIL, "; ".join(p for p, _ in problems), "; ".join(f for _, f in problems), details)
    where = f"interface {interface}" if interface else "every interface"
    return Check("addresses", Status.OK, f"answers on {where}", details=details)


def probe_interface(settings: Settings, addresses: Mapping[str, list[IPv4Interface]]) -> str | None:
    """Where to listen for other DHCP servers: dhcp.interface, server_address's, the default route's."""
    if settings.dhcp.interface:
        return settings.dhcp.interface
    for name, items in addresses.items():
        if settings.server_address and any(str(a.ip) == settings.server_address for a in items):
            return name
    return machine.default_route_interface()


def check_dhcp_servers(settings: Settings, heard: Sequence[HeardServer], interface: str, ours: int | None,
                       local: set[str]) -> Check:  # fmt: skip
    """Full mode must be alone; proxy mode needs someone else handing out addresses."""
    own = [s for s in heard if ours is not None and s.server_id in local]
    others = [s for s in heard if s not in own]
    details = tuple(f"{s.server_id}{' (bootbox)' if s in own else ''}: offered {s.offered}, next-server {s.next_server}"
                    for s in heard)  # fmt: skip
    names = ", ".join(f"{s.server_id} (offering {s.offered})" for s in others)
    if settings.dhcp.mode == "full":
        if not others:
            return Check("dhcp servers", Status.OK, f"no other DHCP server answers on {interface}", details=details)
        status = Status.WARN if settings.dhcp.ignore_other_servers else Status.FAIL
        return Check("dhcp servers", status, f"other DHCP servers answer on {interface}: {names}",
                     "stop them, or switch to dhcp.mode = \"proxy\" and let them hand out addresses", details)  # fmt: skip
    if not others:
        return Check("dhcp servers", Status.WARN, f"no DHCP server answered on {interface}: PXE clients will get no "
                     "address", "if this network has no DHCP server, use dhcp.mode = \"full\" (with "
                     "dhcp.interface and a range); otherwise check that DHCP reaches this segment", details)  # fmt: skip
    return Check("dhcp servers", Status.OK, f"address server(s) on {interface}: {names}; bootbox adds the boot "
                 "information (proxy)", details=details)  # fmt: skip


def check_secure_boot(settings: Settings, heard: Sequence[HeardServer] | None, server_ip: str | None) -> Check:
    """GRUB 2.06 (the Secure Boot chain) fetches from the siaddr of the *address* server's ACK."""
    names = {name for name in settings.dhcp.loaders.values() if name and _SECURE_BOOT_LOADER.search(name)}
    for group, table in settings.groups.items():  # [groups.NAME] choosing GRUB (docs/firmware.md)
        if table.get("secure_boot"):
            names |= {f"{name} (group {group})" for name in settings.dhcp.secure_boot_loaders.values() if name}
        elif table.get("loader") == "grub":
            names |= {f"{name} (group {group})" for name in settings.dhcp.grub_loaders.values() if name}
    grub = sorted(names)
    if not grub:
        return Check("secure boot", Status.SKIP, "no shim/GRUB loader configured; iPXE loaders follow bootbox's answer")
    if settings.dhcp.mode == "full":
        return Check("secure boot", Status.OK, f"full mode names bootbox as next-server for {', '.join(grub)}")
    fix = (f"GRUB asks the server named in the site DHCP's ACK (siaddr), not the proxy: set the site DHCP's "
           f"next-server to {server_ip or 'bootbox'} (dnsmasq: dhcp-boot=,,{server_ip or 'ADDRESS'}; ISC: "
           "next-server), or run bootbox in full mode")  # fmt: skip
    if heard and server_ip and all(s.next_server == server_ip for s in heard):
        return Check("secure boot", Status.OK, f"the site DHCP names {server_ip} as next-server, as GRUB needs")
    return Check("secure boot", Status.WARN, f"{', '.join(grub)} in proxy mode: GRUB may ask the wrong TFTP server", fix)


def check_store(settings: Settings, ours: int | None) -> Check:
    """The store is readable JSON, and its lock is free or held by a live bootbox."""
    state, lock = settings.state_path, settings.state_path / LOCK_FILENAME
    if not state.exists():
        return Check("store", Status.OK, f"{state} does not exist yet; bootbox creates it at first start")
    store = state / STORE_FILENAME
    try:
        if store.exists():
            json.loads(store.read_bytes() or b"{}")
    except PermissionError:
        return Check("store", Status.FAIL, f"cannot read {store}", "run bootbox doctor as root (or as the service's user)")
    except ValueError as exc:
        return Check("store", Status.FAIL, f"{store} is not valid JSON ({exc})",
                     f"stop bootbox and restore {store.name}.bak over it (the previous good version)")  # fmt: skip
    holders = machine.flock_holders(lock)
    recorded = lock.read_text(errors="replace").strip() if lock.exists() and os.access(lock, os.R_OK) else ""
    if holders and ours is None:
        keepers = ", ".join(f"{machine.process_name(pid) or '?'} (pid {pid})" for pid in machine.opened_by(lock))
        return Check("store", Status.FAIL, f"{lock} is locked by pid {holders[0]}, which has exited; a process that "
                     f"inherited its descriptor keeps the lock: {keepers or 'not visible to this user'}",
                     "stop that process (it is not bootbox), then start bootbox again")  # fmt: skip
    if ours is not None:
        return Check("store", Status.OK, f"readable; in use by the running bootbox (pid {ours})")
    stale = f" (the last owner, pid {recorded}, has exited)" if recorded.isdigit() else ""
    return Check("store", Status.OK, f"readable and not locked{stale}")


def check_database(settings: Settings) -> Check:
    """With ``[store] backend = "postgresql"``: the database answers, its schema is one this
    bootbox knows, and no boot-path writes wait in the outbox (docs/postgresql.md)."""
    if settings.store.backend != "postgresql":
        return Check("database", Status.SKIP, f"the store is {settings.store.backend} (no database)")
    from bootbox.store.outbox import OUTBOX_FILE, Outbox
    from bootbox.store.pg.health import probe_database

    outbox = settings.state_path / OUTBOX_FILE
    queued = len(Outbox(outbox)) if outbox.exists() and os.access(outbox, os.R_OK) else 0
    found = probe_database(settings.store.dsn, timeout=min(settings.store.connect_timeout, 5.0))
    if found.error:
        return Check("database", Status.FAIL, f"{found.error}; {queued} boot-path record(s) queued in {outbox}",
                     "start PostgreSQL or fix [store] dsn; bootbox keeps booting known hosts meanwhile and sends the "
                     "queue when it is back")
    if found.version > found.known:
        return Check("database", Status.FAIL, f"schema version {found.version} is newer than this bootbox knows "
                     f"({found.known})", "upgrade bootbox, or point [store] dsn at another database")
    detail = f"schema {found.version} ({'current' if found.version == found.known else 'migrated at next start'})"
    if queued:
        return Check("database", Status.WARN, f"reachable, {detail}; {queued} record(s) still queued in {outbox}",
                     "the running bootbox sends them by itself; `bootbox status` shows the count")
    return Check("database", Status.OK, f"reachable, {detail}; nothing queued")


def check_set_aside(settings: Settings) -> Check:
    """Files bootbox kept because it could not read them all (bootbox.store.setaside), and whether
    the state directory's disk has room for the store, host log and journal."""
    state = settings.state_path
    kept = list_set_aside(state)
    details = tuple(f"{item.path} ({item.size} bytes): {item.why}" for item in kept)
    try:
        disk = os.statvfs(state) if state.exists() else None
    except OSError:
        disk = None
    if disk is not None and disk.f_bavail * disk.f_frsize < 1 << 20:
        return Check("set-aside files", Status.FAIL,
                     f"the disk of {state} is full: bootbox cannot save hosts, events or API writes",
                     f"free space on the file system of {state}; bootbox resumes writing by itself", details)
    if not kept:
        return Check("set-aside files", Status.OK, "no damaged state files were set aside")
    return Check("set-aside files", Status.WARN,
                 f"{len(kept)} damaged state file(s) kept in {set_aside_dir(state)}; bootbox runs with what it could read",
                 "read each .why note; restore a backup (bootbox state restore FILE, with bootbox stopped) if records "
                 "are missing; delete the kept files once you no longer need them", details)


def check_tftp_engine(settings: Settings, available: bool | None = None) -> Check:
    """Whether TFTP blocks are served by the compiled engine (bootbox.net.tftp.engine) or by the
    Python loop: the latter works, but many clients at once get less throughput."""
    if not settings.tftp.enabled:
        return Check("tftp engine", Status.SKIP, "TFTP is off (tftp.enabled = false)")
    if available is None:
        from bootbox.net.tftp.engine import AVAILABLE as available  # noqa: N811 (a module constant)
    if available:
        return Check("tftp engine", Status.OK, "compiled block engine built: transfers run in parallel on every core")
    return Check("tftp engine", Status.WARN,
                 "compiled block engine not built: every TFTP block is served by one Python thread "
                 "(fine for loaders; slower with many clients at once)",
                 "install gcc, libc6-dev and python3-dev, then reinstall bootbox (appliance/install.sh)")


def run_checks(settings: Settings, *, network: bool = True, probe_seconds: float = 2.0,
               prober: Callable[..., list[HeardServer]] = probe) -> list[Check]:  # fmt: skip
    """Every check, in the order an operator would fix things."""
    ours = appliance_pid(settings)
    addresses = machine.interface_addresses()
    local = {str(a.ip) for items in addresses.values() for a in items}
    checks = [check_ports(settings, ours), check_capabilities(settings, ours), check_loaders(settings),
              check_addresses(settings, addresses), check_store(settings, ours), check_database(settings), check_set_aside(settings),
              check_tftp_engine(settings)]  # fmt: skip
    interface = probe_interface(settings, addresses)
    heard: list[HeardServer] | None = None
    if not network:
        checks.append(Check("dhcp servers", Status.SKIP, "not probed (--no-network)"))
    elif not settings.dhcp.enabled:
        checks.append(Check("dhcp servers", Status.SKIP, "bootbox's DHCP is off (dhcp.enabled = false)"))
    elif interface is None:
        checks.append(Check("dhcp servers", Status.SKIP, "no interface to probe (no dhcp.interface, no default route)",
                            "set dhcp.interface"))  # fmt: skip
    else:
        try:
            heard = prober(interface, timeout=probe_seconds, server_port=settings.dhcp.port,
                           client_port=settings.dhcp.client_port)  # fmt: skip
            checks.append(check_dhcp_servers(settings, heard, interface, ours, local))
        except ProbeError as exc:
            checks.append(Check("dhcp servers", Status.WARN, f"could not probe {interface}: {exc}",
                                "run bootbox doctor as root"))  # fmt: skip
    server_ip = settings.server_address or next((str(a.ip) for a in addresses.get(interface or "", [])), None)
    checks.append(check_secure_boot(settings, heard, server_ip))
    return checks
