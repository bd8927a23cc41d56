"""The demo boot payload: a Debian kernel plus a tiny busybox initramfs that reports in.

A newcomer needs *something* to network-boot before they have images of their own, and the test
suite needs a payload whose success is visible from outside the VM. This module builds both from
Debian packages:

* the kernel comes from Debian's ``linux-image-<version>-amd64`` (``apt-get download`` +
  ``dpkg -x``), or from an installed ``/boot/vmlinuz-*`` when apt cannot fetch it;
* the initramfs (gzip'd cpio "newc", written here, not by the ``cpio`` tool) holds busybox-static,
  the e1000/e1000e/virtio_net/virtio_pci modules with their dependencies, and an ``/init`` that
  brings up the NIC named on the kernel command line (``bootbox.mac=`` or ``BOOTIF=``), runs
  ``udhcpc``, POSTs ``mac=..&ip=..&boot_id=..&kernel=..`` to ``bootbox.callback=<url>``, prints
  :data:`MARKER_OK` or :data:`MARKER_FAIL` on the console and powers off.

Everything is cached and the build is reproducible (fixed mtimes, sorted entries), so
:func:`build_demo_assets` returns at once when the result already exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from bootbox.errors import BootboxError

__all__ = [
    "DEFAULT_CMDLINE",
    "MARKER_FAIL",
    "MARKER_OK",
    "MARKER_START",
    "MODULES",
    "CpioEntry",
    "DemoAssets",
    "DemoError",
    "build_demo_assets",
    "default_cache_dir",
    "init_script",
    "module_load_order",
    "synthesize_modules_dep",
    "write_cpio",
]

log = logging.getLogger("bootbox.demo")

MODULES: tuple[str, ...] = ("e1000", "e1000e", "virtio_net", "virtio_pci", "efivarfs")
"""NIC drivers in the initramfs: QEMU's e1000 (pc), e1000e (q35's default) and virtio-net; and
efivarfs, through which /init reads the SecureBoot variable it reports."""
ARCH_MODULES: dict[str, tuple[str, ...]] = {"amd64": MODULES, "arm64": ("virtio_net", "virtio_pci", "efivarfs")}
"""Modules per Debian architecture: the arm64 ``virt`` machine has only virtio NICs."""
ARCH_CMDLINE: dict[str, str] = {"arm64": "console=ttyAMA0 quiet panic=-1"}
"""Kernel arguments where DEFAULT_CMDLINE's serial console is wrong (``virt``'s PL011 UART)."""

MARKER_START = "BOOTBOX-DEMO: init started"
MARKER_OK = "BOOTBOX-DEMO: reported in"
MARKER_FAIL = "BOOTBOX-DEMO: callback failed"

DEFAULT_CMDLINE = "console=ttyS0,115200n8 quiet panic=-1"
"""Serial console for the lab's logs; ``quiet`` because every console byte is slow under TCG;
``panic=-1`` so a broken payload reboots at once, which ``qemu -no-reboot`` turns into an exit."""

KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "demo.json"

_RECIPE_VERSION = "1"
"""Bump when the initramfs layout changes in a way the inputs' hashes do not capture."""


class DemoError(BootboxError):
    """The demo assets could not be built; the message says which tool or file is missing."""


@dataclass(frozen=True)
class DemoAssets:
    """A bootable demo payload.

    :ivar kernel: the Linux kernel image (bzImage with EFI stub).
    :ivar initrd: the gzip'd cpio initramfs.
    :ivar kernel_version: ``uname -r`` of that kernel, e.g. ``6.1.0-28-amd64``.
    :ivar cmdline: suggested kernel arguments, without the MAC and callback parts.
    """

    kernel: Path
    initrd: Path
    kernel_version: str
    cmdline: str

    def kernel_args(self, callback_url: str, mac: str | None = None) -> str:
        """The full kernel command line for one boot.

        ``initrd=`` names the initrd for EFI boots: iPXE before 2021 hands the initrd to Linux's
        EFI stub only through a file that the stub opens by that name. BIOS boots ignore it.
        Without ``mac`` the iPXE variable ``${netX/mac}`` is used, i.e. the NIC iPXE booted from.
        """
        if " " in callback_url:
            raise ValueError("the callback URL must not contain spaces")
        mac_arg = mac if mac is not None else "${netX/mac}"
        return (
            f"initrd={self.initrd.name} {self.cmdline} "
            f"bootbox.mac={mac_arg} bootbox.callback={callback_url}"
        )

    def ipxe_script(self, base_url: str, callback_url: str) -> str:
        """An iPXE script that boots these assets from ``base_url``/<file name>."""
        base = base_url.rstrip("/")
        return (
            "#!ipxe\n"
            f"kernel {base}/{self.kernel.name} {self.kernel_args(callback_url)}\n"
            f"initrd {base}/{self.initrd.name}\n"
            "boot\n"
        )


# ---------------------------------------------------------------------------------------------
# cpio "newc" writer (the format the kernel's initramfs unpacker reads)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o755``).

    ``data`` is the file content, or the link target for a symlink; ``rdev`` is the
    (major, minor) of a device node.
    """

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_cpio(entries: Iterable[CpioEntry], out: BinaryIO, *, mtime: int = 0) -> None:
    """Write ``entries`` as a cpio newc archive (magic 070701) followed by the trailer.

    Owners are root, every entry has its own inode number with nlink 1 (2 for directories), so
    the kernel never tries to hard-link members. Parents must come before their children.
    """
    for ino, entry in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        name = entry.name.lstrip("/").encode()
        trailer = entry.name == "TRAILER!!!"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (
            0 if trailer else ino,
            entry.mode,
            0,  # uid
            0,  # gid
            0 if trailer else nlink,
            0 if trailer else mtime,
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(name) + 1,
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + name + b"\0")
        out.write(_pad4(len(header) + len(name) + 1))
        out.write(entry.data)
        out.write(_pad4(len(entry.data)))
    # The kernel accepts trailing zeros; pad to 512 like cpio(1) so tools that expect blocks work.
    position = out.tell() if out.seekable() else None
    if position is not None:
        out.write(b"\0" * (-position % 512))


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

_MOD_SUFFIX = re.compile(r"\.ko(\.(xz|gz|zst))?$")


def _module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` → ``virtio_net`` (dashes folded as modprobe does)."""
    return _MOD_SUFFIX.sub("", path.rsplit("/", 1)[-1]).replace("-", "_")


def module_load_order(modules_dep: str, wanted: Sequence[str], builtin: str = "") -> list[str]:
    """Resolve ``wanted`` module names against ``modules.dep`` text into an insmod order.

    Returns paths relative to the modules directory, every dependency before its users, no
    duplicates. A wanted module listed in ``modules.builtin`` is skipped (it is already in the
    kernel); one found in neither file raises DemoError.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        module = module.strip()
        deps[module] = rest.split()
        by_name[_module_name(module)] = module
    builtins = {_module_name(line.strip()) for line in builtin.splitlines() if line.strip()}

    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise DemoError(f"dependency cycle in modules.dep at {path}")
        visiting.add(path)
        for dep in deps.get(path, []):
            visit(dep)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key in builtins:
            log.debug("module %s is built into the kernel", name)
        else:
            raise DemoError(f"kernel module {name!r} is neither in modules.dep nor built in")
    return order


def _modinfo(data: bytes) -> dict[str, str]:
    """Parse the ``.modinfo`` section of an uncompressed ELF64 module into key → value.

    Repeated keys (alias=) keep the last value; only ``depends`` matters here.
    """
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise DemoError("not an ELF64 kernel module")
    endian = "<" if data[5] == 1 else ">"
    shoff = struct.unpack_from(endian + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name = struct.unpack_from(endian + "I", data, base)[0]
        offset, size = struct.unpack_from(endian + "QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = data[str_off : str_off + str_size]
    for index in range(shnum):
        name_off, offset, size = section(index)
        if names[name_off : names.index(b"\0", name_off)] == b".modinfo":
            info: dict[str, str] = {}
            for item in data[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info[key] = value
            return info
    return {}


def synthesize_modules_dep(modules_dir: Path, wanted: Sequence[str]) -> str:
    """modules.dep lines for ``wanted`` and their dependencies, read from each module's modinfo.

    Debian's kernel package ships no modules.dep (postinst runs depmod on the installed
    system), so for an unpacked package the ``depends=`` field that modpost wrote into every
    module is the source of truth. Lines list direct dependencies only, which
    :func:`module_load_order` expands.
    """
    by_name: dict[str, str] = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko*")):
        if _MOD_SUFFIX.search(path.name):
            by_name[_module_name(path.name)] = path.relative_to(modules_dir).as_posix()
    lines: dict[str, str] = {}
    pending = [name.replace("-", "_") for name in wanted]
    while pending:
        name = pending.pop()
        rel = by_name.get(name)
        if rel is None or rel in lines:
            continue
        depends = _modinfo(_read_module(modules_dir / rel)).get("depends", "")
        dep_names = [d.replace("-", "_") for d in depends.split(",") if d]
        missing = [d for d in dep_names if d not in by_name]
        if missing:
            raise DemoError(f"{rel} depends on {', '.join(missing)}, which the kernel lacks")
        lines[rel] = f"{rel}: " + " ".join(by_name[d] for d in dep_names)
        pending.extend(dep_names)
    return "".join(line.rstrip() + "\n" for _, line in sorted(lines.items()))


def _modules_dep_text(modules_dir: Path, modules: Sequence[str] = MODULES) -> str:
    """The tree's modules.dep, or one made from modinfo when the tree has none (a .deb)."""
    dep = modules_dir / "modules.dep"
    if dep.is_file():
        return dep.read_text()
    return synthesize_modules_dep(modules_dir, modules)


def _read_module(path: Path) -> bytes:
    """Return the uncompressed module: busybox insmod cannot be trusted to read .xz/.zst."""
    raw = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise DemoError(f"{path.name} is zstd-compressed: install zstd (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return raw


# ---------------------------------------------------------------------------------------------
# the payload's scripts
# ---------------------------------------------------------------------------------------------

_INIT = r"""#!/bin/sh
# bootbox demo payload. As PID 1: find the boot NIC, get an address, report in, power off.
# When sourced by another shell (the tests do) it only defines its functions.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# bootbox_parse_cmdline "ARGS": sets BB_MAC (lowercase, colons) and BB_CALLBACK.
# bootbox.mac= wins over BOOTIF= (pxelinux style "01-aa-bb-cc-dd-ee-ff").
bootbox_parse_cmdline() {
    BB_MAC=""
    BB_CALLBACK=""
    _bb_bootif=""
    _bb_mac=""
    set -f  # a URL with ? or * must not be globbed
    for _bb_arg in $1; do
        case "$_bb_arg" in
            BOOTIF=*) _bb_bootif="${_bb_arg#BOOTIF=}" ;;
            bootbox.mac=*) _bb_mac="${_bb_arg#bootbox.mac=}" ;;
            bootbox.callback=*) BB_CALLBACK="${_bb_arg#bootbox.callback=}" ;;
        esac
    done
    set +f
    if [ ${#_bb_bootif} -eq 20 ]; then
        _bb_bootif="${_bb_bootif#??-}"  # drop the ARP hardware type
    fi
    BB_MAC="${_bb_mac:-$_bb_bootif}"
    BB_MAC=$(echo "$BB_MAC" | tr 'A-F-' 'a-f:')
}

# bootbox_find_iface MAC: the interface with that MAC, else the first that is not lo.
bootbox_find_iface() {
    for _bb_dev in /sys/class/net/*; do
        [ -e "$_bb_dev/address" ] || continue
        if [ -n "$1" ] && [ "$(cat "$_bb_dev/address")" = "$1" ]; then
            echo "${_bb_dev##*/}"
            return 0
        fi
    done
    [ -z "$1" ] || return 1
    for _bb_dev in /sys/class/net/*; do
        [ "${_bb_dev##*/}" = lo ] && continue
        [ -e "$_bb_dev/address" ] || continue
        echo "${_bb_dev##*/}"
        return 0
    done
    return 1
}

bootbox_main() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
    echo "@MARKER_START@ kernel $(uname -r)"
    while read -r _bb_mod; do
        insmod "/lib/modules/$(uname -r)/$_bb_mod" 2>/dev/null
    done < /etc/bootbox-demo/modules
    bootbox_parse_cmdline "$(cat /proc/cmdline)"
    ip link set lo up
    IFACE=""
    _bb_try=0
    while [ $_bb_try -lt 50 ]; do
        IFACE=$(bootbox_find_iface "$BB_MAC") && break
        _bb_try=$((_bb_try + 1))
        sleep 0.2
    done
    if [ -z "$IFACE" ]; then
        echo "@MARKER_FAIL@: no network interface${BB_MAC:+ with MAC $BB_MAC}"
        bootbox_poweroff
    fi
    MAC=$(cat "/sys/class/net/$IFACE/address")
    ip link set "$IFACE" up
    rm -f /run/bootbox-ip
    udhcpc -f -q -n -t 10 -T 2 -i "$IFACE" -s /etc/udhcpc.script >/dev/null 2>&1
    IP=$(cat /run/bootbox-ip 2>/dev/null)
    if [ -z "$IP" ]; then
        echo "@MARKER_FAIL@: no DHCP lease on $IFACE mac=$MAC"
        bootbox_poweroff
    fi
    echo "BOOTBOX-DEMO: $IFACE mac=$MAC ip=$IP"
    if [ -z "$BB_CALLBACK" ]; then
        echo "@MARKER_FAIL@: no bootbox.callback= on the kernel command line"
        bootbox_poweroff
    fi
    BOOT_ID=$(cat /proc/sys/kernel/random/uuid)
    SECURE_BOOT=$(bootbox_secure_boot)
    BODY="mac=$MAC&ip=$IP&boot_id=$BOOT_ID&kernel=$(uname -r)&secure_boot=$SECURE_BOOT"
    # Six tries, two seconds apart: a callback URL on IPv6 needs the address the kernel
    # configures by itself from the router advertisement (a few seconds after link-up).
    for _bb_attempt in 1 2 3 4 5 6; do
        # busybox 1.35's wget -T segfaults, so timeout(1) bounds each attempt instead.
        if timeout 10 wget -q -O /run/callback.out --post-data "$BODY" "$BB_CALLBACK"; then
            echo "@MARKER_OK@ mac=$MAC ip=$IP boot_id=$BOOT_ID"
            bootbox_poweroff
        fi
        sleep 2
    done
    echo "@MARKER_FAIL@: POST to $BB_CALLBACK failed mac=$MAC ip=$IP"
    bootbox_poweroff
}

# bootbox_secure_boot: "on" or "off" as the firmware's SecureBoot variable says (its fifth byte,
# after four attribute bytes), "off" without EFI, "unknown" when the variable cannot be read.
bootbox_secure_boot() {
    [ -d /sys/firmware/efi ] || { echo off; return; }
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
    for _bb_var in /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c; do
        [ -e "$_bb_var" ] || break
        case "$(dd if="$_bb_var" bs=1 skip=4 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')" in
            1) echo on; return ;;
            0) echo off; return ;;
        esac
    done
    echo unknown
}

bootbox_poweroff() {
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 5
    exit 1
}

if [ "$$" = 1 ]; then
    bootbox_main
fi
"""

_UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc event hook: configure the lease, remember the address for /init. No DNS, no routes
# unless offered: the lab's site DHCP sends an empty router option on purpose.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        for r in $router; do
            ip route add default via "$r" dev "$interface" && break
        done
        echo "$ip" > /run/bootbox-ip
        ;;
esac
exit 0
"""


def init_script() -> str:
    """The ``/init`` shell script, with the console markers filled in."""
    return (
        _INIT.replace("@MARKER_START@", MARKER_START)
        .replace("@MARKER_OK@", MARKER_OK)
        .replace("@MARKER_FAIL@", MARKER_FAIL)
    )


# ---------------------------------------------------------------------------------------------
# getting a kernel and busybox
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KernelTree:
    """A kernel image plus its modules directory (with or without ``modules.dep``)."""

    version: str
    vmlinuz: Path
    modules_dir: Path


def default_cache_dir() -> Path:
    """``$BOOTBOX_CACHE`` or ``$XDG_CACHE_HOME/bootbox`` or ``~/.cache/bootbox``, + ``/demo``."""
    root = os.environ.get("BOOTBOX_CACHE")
    if root:
        return Path(root) / "demo"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "bootbox" / "demo"


def _run(argv: Sequence[str], *, cwd: Path | None = None) -> str:
    """Run a packaging tool; a missing tool or a failure becomes DemoError with its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DemoError(
            f"{argv[0]} is not installed; the demo payload is built from Debian packages "
            "(needs apt-get, apt-cache and dpkg) or an installed /boot/vmlinuz-*"
        ) from exc
    if done.returncode != 0:
        raise DemoError(f"{' '.join(argv)} failed: {done.stderr.strip()[-1000:]}")
    return done.stdout


def _apt_kernel_package(arch: str = "amd64") -> str:
    """Name of the kernel package ``linux-image-<arch>`` currently depends on (for a foreign
    ``arch``, ``dpkg --add-architecture`` and ``apt-get update`` must have run)."""
    meta = f"linux-image-{arch}" if arch == "amd64" else f"linux-image-{arch}:{arch}"
    out = _run(["apt-cache", "depends", meta])
    for line in out.splitlines():
        match = re.match(rf"\s*Depends:\s*(linux-image-(\d\S*-{arch}))(:{arch})?\s*$", line)
        if match:
            return match.group(1)
    raise DemoError(f"apt-cache knows no {meta} dependency (run apt-get update first"
                    + ("" if arch == "amd64" else f"; dpkg --add-architecture {arch} before it") + ")")


def _extract_deb(package: str, workdir: Path) -> Path:
    """``apt-get download`` + ``dpkg -x`` into ``workdir``; return the extraction root."""
    _run(["apt-get", "download", package], cwd=workdir)
    debs = sorted(workdir.glob(f"{package.partition(':')[0]}_*.deb"))
    if not debs:
        raise DemoError(f"apt-get download {package} produced no .deb")
    root = workdir / "root"
    _run(["dpkg", "-x", str(debs[-1]), str(root)])
    return root


def _modules_root(root: Path, version: str) -> Path:
    """Debian moved modules from /lib to /usr/lib (trixie); accept either."""
    for candidate in (root / "lib/modules" / version, root / "usr/lib/modules" / version):
        if (candidate / "kernel").is_dir():
            return candidate
    raise DemoError(f"no modules for {version} under {root}")


def _compact_kernel(source: _KernelTree, dest: Path, modules: Sequence[str] = MODULES) -> _KernelTree:
    """Copy the kernel, modules.dep(+builtin) and only the NIC modules' closure into ``dest``.

    The full package unpacks to ~400 MB; the cache keeps ~10 MB.
    """
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    shutil.copyfile(source.vmlinuz, tmp / KERNEL_NAME)
    dep_text = _modules_dep_text(source.modules_dir, modules)
    builtin_path = source.modules_dir / "modules.builtin"
    builtin = builtin_path.read_text() if builtin_path.is_file() else ""
    wanted = module_load_order(dep_text, modules, builtin)
    kept = {path: line for path, line in _dep_lines(dep_text) if path in wanted}
    (tmp / "modules" / "modules.dep").write_text("".join(kept[p] + "\n" for p in wanted))
    (tmp / "modules" / "modules.builtin").write_text(builtin)
    for rel in wanted:
        target = tmp / "modules" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.modules_dir / rel, target)
    (tmp / "version").write_text(source.version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return _KernelTree(source.version, dest / KERNEL_NAME, dest / "modules")


def _dep_lines(dep_text: str) -> Iterator[tuple[str, str]]:
    for line in dep_text.splitlines():
        if ":" in line:
            yield line.partition(":")[0].strip(), line


def _cached_kernel(cache: Path, version: str, modules: Sequence[str] = MODULES) -> _KernelTree | None:
    """The trimmed kernel in the cache, if it holds every wanted module (a cache made before a
    module was added to the list is trimmed again)."""
    tree = cache / f"kernel-{version}"
    if not (tree / "version").is_file() or not (tree / KERNEL_NAME).is_file():
        return None
    builtin = tree / "modules" / "modules.builtin"
    try:
        module_load_order((tree / "modules" / "modules.dep").read_text(), modules,
                          builtin.read_text() if builtin.is_file() else "")
    except (OSError, DemoError):
        return None
    return _KernelTree(version, tree / KERNEL_NAME, tree / "modules")


def _installed_kernel() -> _KernelTree | None:
    """The newest ``/boot/vmlinuz-*`` that has a matching modules directory, if any."""

    def natural(path: Path) -> list[object]:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]

    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), key=natural, reverse=True):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        try:
            modules = _modules_root(Path("/"), version)
        except DemoError:
            continue
        if os.access(vmlinuz, os.R_OK):
            return _KernelTree(version, vmlinuz, modules)
    return None


def _get_kernel(cache: Path, arch: str = "amd64") -> _KernelTree:
    """The Debian kernel named by linux-image-<arch>, cached; else (amd64) the installed one."""
    problems: list[str] = []
    modules = ARCH_MODULES[arch]
    try:
        package = _apt_kernel_package(arch)
        version = package.removeprefix("linux-image-")
        cached = _cached_kernel(cache, version, modules)
        if cached is not None:
            return cached
        log.info("downloading %s", package)
        with tempfile.TemporaryDirectory(dir=cache, prefix="deb-") as tmp:
            root = _extract_deb(package if arch == "amd64" else f"{package}:{arch}", Path(tmp))
            source = _KernelTree(
                version, root / "boot" / f"vmlinuz-{version}", _modules_root(root, version)
            )
            return _compact_kernel(source, cache / f"kernel-{version}", modules)
    except DemoError as exc:
        problems.append(str(exc))
        if arch != "amd64":
            raise DemoError(f"cannot get an {arch} kernel for the demo payload: {exc}") from exc
    installed = _installed_kernel()
    if installed is not None:
        log.warning("using the installed kernel %s (%s)", installed.version, problems[0])
        cached = _cached_kernel(cache, installed.version)
        if cached is not None:
            return cached
        return _compact_kernel(installed, cache / f"kernel-{installed.version}")
    problems.append("no /boot/vmlinuz-* with a matching /lib/modules directory")
    raise DemoError("cannot get a kernel for the demo payload: " + "; ".join(problems))


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no PT_INTERP, i.e. one that runs without a libc."""
    with path.open("rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:
            return False
        endian = "<" if ident[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", ident, 0x20)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _get_busybox(cache: Path, arch: str = "amd64") -> Path:
    """A statically linked busybox: the installed busybox-static, else its Debian package (for
    another ``arch``, always the package, ``busybox-static:<arch>``)."""
    if arch == "amd64":
        for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
            if candidate.is_file() and _is_static_elf(candidate):
                return candidate
    cached = cache / ("busybox" if arch == "amd64" else f"busybox-{arch}")
    if cached.is_file():
        return cached
    log.info("downloading busybox-static for %s", arch)
    with tempfile.TemporaryDirectory(dir=cache, prefix="deb-") as tmp:
        root = _extract_deb("busybox-static" if arch == "amd64" else f"busybox-static:{arch}", Path(tmp))
        for rel in ("bin/busybox", "usr/bin/busybox"):
            if (root / rel).is_file():
                shutil.copyfile(root / rel, cached)
                cached.chmod(0o755)
                return cached
    raise DemoError("the busybox-static package holds no busybox binary")


# ---------------------------------------------------------------------------------------------
# the initramfs
# ---------------------------------------------------------------------------------------------

_DIRS = (
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "root",
    "etc", "etc/bootbox-demo", "lib", "lib/modules",
)  # fmt: skip


def _applet_links(busybox: Path) -> list[str]:
    """Install paths of every applet, from the binary itself (``busybox --list-full``)."""
    out = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


def _initramfs_entries(kernel: _KernelTree, busybox: Path, modules: Sequence[str] = MODULES,
                       applets: Sequence[str] | None = None) -> list[CpioEntry]:
    """Everything in the initramfs. ``applets`` are busybox's install paths; by default the
    binary lists them itself, which a foreign-architecture busybox cannot do here."""
    d, f, link = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777
    mod_dir = f"lib/modules/{kernel.version}"
    entries = [CpioEntry(name, d) for name in (*_DIRS, mod_dir)]
    # The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    entries.append(CpioEntry("bin/busybox", f | 0o755, busybox.read_bytes()))
    for applet in _applet_links(busybox) if applets is None else applets:
        if applet == "bin/busybox":
            continue
        depth = applet.count("/")
        entries.append(CpioEntry(applet, link, ("../" * depth + "bin/busybox").encode()))
    dep_text = _modules_dep_text(kernel.modules_dir, modules)
    builtin_path = kernel.modules_dir / "modules.builtin"
    builtin = builtin_path.read_text() if builtin_path.is_file() else ""
    flat: list[str] = []
    for rel in module_load_order(dep_text, modules, builtin):
        name = _module_name(rel) + ".ko"
        flat.append(name)
        entries.append(
            CpioEntry(f"{mod_dir}/{name}", f | 0o644, _read_module(kernel.modules_dir / rel))
        )
    entries.append(
        CpioEntry("etc/bootbox-demo/modules", f | 0o644, "".join(m + "\n" for m in flat).encode())
    )
    entries.append(CpioEntry("etc/udhcpc.script", f | 0o755, _UDHCPC_SCRIPT.encode()))
    entries.append(CpioEntry("init", f | 0o755, init_script().encode()))
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recipe_key(kernel: _KernelTree, busybox: Path, modules: Sequence[str] = MODULES) -> str:
    """Hash of everything the output depends on, so a rebuild happens exactly when needed."""
    digest = hashlib.sha256()
    for part in (_RECIPE_VERSION, kernel.version, init_script(), _UDHCPC_SCRIPT, *modules):
        digest.update(part.encode() + b"\0")
    digest.update(_sha256(kernel.vmlinuz).encode())
    digest.update(_sha256(busybox).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise builders sharing a directory (parallel test workers, two CLI runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build_demo_assets(dest: Path, *, cache: Path | None = None, arch: str = "amd64") -> DemoAssets:
    """Build (or reuse) ``dest/vmlinuz`` and ``dest/initrd.img`` for the demo profile.

    :param dest: output directory; created if needed. ``dest/demo.json`` records what was built.
    :param cache: where downloaded packages are unpacked and trimmed (default
        :func:`default_cache_dir`); reused across calls and projects.
    :param arch: Debian architecture of the payload: ``amd64`` or ``arm64`` (``linux-image-arm64``
        and ``busybox-static:arm64`` are downloaded; needs ``dpkg --add-architecture arm64``).
    :raises DemoError: when no kernel or no static busybox can be found, with the reason.

    Idempotent: if ``dest`` already holds assets made from the same kernel, busybox and recipe,
    nothing is rewritten (file mtimes do not change), so HTTP caches and ETags stay valid.
    """
    dest = Path(dest)
    cache = Path(cache) if cache is not None else default_cache_dir()
    if arch not in ARCH_MODULES:
        raise DemoError(f"no demo payload for architecture {arch!r}; known: {', '.join(ARCH_MODULES)}")
    modules = ARCH_MODULES[arch]
    with _locked(cache):
        kernel = _get_kernel(cache, arch)
        busybox = _get_busybox(cache, arch)
        # A foreign busybox cannot run here to list its applets; the host's of the same Debian
        # release has the same list.
        applets = None if arch == "amd64" else _applet_links(_get_busybox(cache))
    key = _recipe_key(kernel, busybox, modules)
    assets = DemoAssets(
        kernel=dest / KERNEL_NAME,
        initrd=dest / INITRD_NAME,
        kernel_version=kernel.version,
        cmdline=ARCH_CMDLINE.get(arch, DEFAULT_CMDLINE),
    )
    with _locked(dest):
        manifest = dest / MANIFEST_NAME
        if manifest.is_file() and assets.kernel.is_file() and assets.initrd.is_file():
            try:
                if json.loads(manifest.read_text()).get("key") == key:
                    return assets
            except ValueError:
                pass
        raw = io.BytesIO()
        write_cpio(_initramfs_entries(kernel, busybox, modules, applets), raw)
        packed = io.BytesIO()
        with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(raw.getvalue())
        _atomic_write(assets.initrd, packed.getvalue())
        _atomic_write(assets.kernel, kernel.vmlinuz.read_bytes())
        record = {"key": key, **{k: str(v) for k, v in asdict(assets).items()}}
        _atomic_write(manifest, (json.dumps(record, indent=2) + "\n").encode())
    log.info("built demo assets for kernel %s in %s", kernel.version, dest)
    return assets


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootbox.demo DEST [--cache DIR]``: build the assets and print them as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bootbox.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dest", type=Path, help="output directory for vmlinuz and initrd.img")
    parser.add_argument("--cache", type=Path, default=None, help="download/unpack cache")
    parser.add_argument(
        "--callback", default="http://198.18.0.1:8080/booted",
        help="callback URL used in the sample iPXE script that is printed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        assets = build_demo_assets(args.dest, cache=args.cache)
    except BootboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = {k: str(v) for k, v in asdict(assets).items()}
    out["ipxe_script"] = assets.ipxe_script("http://198.18.0.1:8080", args.callback)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
