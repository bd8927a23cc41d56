"""Kernel modules for the initramfs: which files, in which insmod order, stored uncompressed.

The order comes from ``modules.dep``; a kernel unpacked from Debian's package has none (its
postinst runs depmod on the installed system), so :func:`synthesize_modules_dep` writes the
lines from the ``depends=`` field modpost put in every module, as depmod would.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from bootbox.assets.demo.payload import MODULES, DemoError

__all__ = [
    "builtin_text",
    "dep_lines",
    "module_load_order",
    "module_name",
    "modules_dep_text",
    "read_module",
    "synthesize_modules_dep",
]

log = logging.getLogger("bootbox.demo")

_MOD_SUFFIX = re.compile(r"\.ko(\.(xz|gz|zst))?$")


def module_name(path: str) -> str:
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
        by_name[module_name(module)] = module
    builtins = {module_name(line.strip()) for line in builtin.splitlines() if line.strip()}

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
            by_name[module_name(path.name)] = path.relative_to(modules_dir).as_posix()
    lines: dict[str, str] = {}
    pending = [name.replace("-", "_") for name in wanted]
    while pending:
        name = pending.pop()
        rel = by_name.get(name)
        if rel is None or rel in lines:
            continue
        depends = _modinfo(read_module(modules_dir / rel)).get("depends", "")
        dep_names = [d.replace("-", "_") for d in depends.split(",") if d]
        missing = [d for d in dep_names if d not in by_name]
        if missing:
            raise DemoError(f"{rel} depends on {', '.join(missing)}, which the kernel lacks")
        lines[rel] = f"{rel}: " + " ".join(by_name[d] for d in dep_names)
        pending.extend(dep_names)
    return "".join(line.rstrip() + "\n" for _, line in sorted(lines.items()))


def modules_dep_text(modules_dir: Path, modules: Sequence[str] = MODULES) -> str:
    """The tree's modules.dep, or one made from modinfo when the tree has none (a .deb)."""
    dep = modules_dir / "modules.dep"
    if dep.is_file():
        return dep.read_text()
    return synthesize_modules_dep(modules_dir, modules)


def builtin_text(modules_dir: Path) -> str:
    """The tree's modules.builtin (the modules compiled into the kernel), or "" without one."""
    path = modules_dir / "modules.builtin"
    return path.read_text() if path.is_file() else ""


def dep_lines(dep_text: str) -> Iterator[tuple[str, str]]:
    """(module path, whole line) for each line of modules.dep text."""
    for line in dep_text.splitlines():
        if ":" in line:
            yield line.partition(":")[0].strip(), line


def read_module(path: Path) -> bytes:
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
