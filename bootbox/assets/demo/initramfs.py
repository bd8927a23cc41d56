"""The initramfs's contents: directories, device nodes, busybox and its applets, the NIC
modules in load order, and the two scripts, as cpio entries in a fixed order.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

from bootbox.assets.demo.busybox import applet_links
from bootbox.assets.demo.cpio import CpioEntry
from bootbox.assets.demo.kernel import KernelTree
from bootbox.assets.demo.kmod import builtin_text, module_load_order, module_name, modules_dep_text, read_module
from bootbox.assets.demo.payload import MODULES
from bootbox.assets.demo.scripts import init_script, udhcpc_script

__all__ = ["initramfs_entries"]

_DIRS = (
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "root",
    "etc", "etc/bootbox-demo", "lib", "lib/modules",
)  # fmt: skip


def initramfs_entries(kernel: KernelTree, busybox: Path, modules: Sequence[str] = MODULES,
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
    for applet in applet_links(busybox) if applets is None else applets:
        if applet == "bin/busybox":
            continue
        depth = applet.count("/")
        entries.append(CpioEntry(applet, link, ("../" * depth + "bin/busybox").encode()))
    dep_text = modules_dep_text(kernel.modules_dir, modules)
    flat: list[str] = []
    for rel in module_load_order(dep_text, modules, builtin_text(kernel.modules_dir)):
        name = module_name(rel) + ".ko"
        flat.append(name)
        entries.append(
            CpioEntry(f"{mod_dir}/{name}", f | 0o644, read_module(kernel.modules_dir / rel))
        )
    entries.append(
        CpioEntry("etc/bootbox-demo/modules", f | 0o644, "".join(m + "\n" for m in flat).encode())
    )
    entries.append(CpioEntry("etc/udhcpc.script", f | 0o755, udhcpc_script().encode()))
    entries.append(CpioEntry("init", f | 0o755, init_script().encode()))
    return entries
