"""The payload's kernel: Debian's ``linux-image-<arch>``, trimmed and cached, else the installed one.

The full package unpacks to ~400 MB; the cache keeps the kernel image, the modules the
initramfs needs (:data:`~bootbox.assets.demo.payload.MODULES` and their dependencies) and a
modules.dep for just those, ~10 MB. On amd64 an installed ``/boot/vmlinuz-*`` with its modules
directory stands in when apt cannot fetch the package (offline, no apt).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootbox.assets.debian import Apt
from bootbox.assets.demo.kmod import builtin_text, dep_lines, module_load_order, modules_dep_text
from bootbox.assets.demo.payload import ARCH_MODULES, KERNEL_NAME, MODULES, DemoError

__all__ = ["APT", "KernelTree", "apt_kernel_package", "get_kernel", "installed_kernel", "modules_root"]

log = logging.getLogger("bootbox.demo")

APT = Apt(
    DemoError,
    "; the demo payload is built from Debian packages (needs apt-get, apt-cache and dpkg) "
    "or an installed /boot/vmlinuz-*",
)
"""The packaging tools, failing with DemoError (busybox-static comes through it too)."""


@dataclass(frozen=True)
class KernelTree:
    """A kernel image plus its modules directory (with or without ``modules.dep``)."""

    version: str
    vmlinuz: Path
    modules_dir: Path


def apt_kernel_package(arch: str = "amd64") -> str:
    """Name of the kernel package ``linux-image-<arch>`` currently depends on (for a foreign
    ``arch``, ``dpkg --add-architecture`` and ``apt-get update`` must have run)."""
    meta = f"linux-image-{arch}" if arch == "amd64" else f"linux-image-{arch}:{arch}"
    out = APT.run(["apt-cache", "depends", meta])
    for line in out.splitlines():
        match = re.match(rf"\s*Depends:\s*(linux-image-(\d\S*-{arch}))(:{arch})?\s*$", line)
        if match:
            return match.group(1)
    raise DemoError(f"apt-cache knows no {meta} dependency (run apt-get update first"
                    + ("" if arch == "amd64" else f"; dpkg --add-architecture {arch} before it") + ")")


def modules_root(root: Path, version: str) -> Path:
    """Debian moved modules from /lib to /usr/lib (trixie); accept either."""
    for candidate in (root / "lib/modules" / version, root / "usr/lib/modules" / version):
        if (candidate / "kernel").is_dir():
            return candidate
    raise DemoError(f"no modules for {version} under {root}")


def _compact_kernel(source: KernelTree, dest: Path, modules: Sequence[str] = MODULES) -> KernelTree:
    """Copy the kernel, modules.dep(+builtin) and only the NIC modules' closure into ``dest``."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    shutil.copyfile(source.vmlinuz, tmp / KERNEL_NAME)
    dep_text = modules_dep_text(source.modules_dir, modules)
    builtin = builtin_text(source.modules_dir)
    wanted = module_load_order(dep_text, modules, builtin)
    kept = {path: line for path, line in dep_lines(dep_text) if path in wanted}
    (tmp / "modules" / "modules.dep").write_text("".join(kept[p] + "\n" for p in wanted))
    (tmp / "modules" / "modules.builtin").write_text(builtin)
    for rel in wanted:
        target = tmp / "modules" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.modules_dir / rel, target)
    (tmp / "version").write_text(source.version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return KernelTree(source.version, dest / KERNEL_NAME, dest / "modules")


def _cached_kernel(cache: Path, version: str, modules: Sequence[str] = MODULES) -> KernelTree | None:
    """The trimmed kernel in the cache, if it holds every wanted module (a cache made before a
    module was added to the list is trimmed again)."""
    tree = cache / f"kernel-{version}"
    if not (tree / "version").is_file() or not (tree / KERNEL_NAME).is_file():
        return None
    try:
        module_load_order((tree / "modules" / "modules.dep").read_text(), modules,
                          builtin_text(tree / "modules"))
    except (OSError, DemoError):
        return None
    return KernelTree(version, tree / KERNEL_NAME, tree / "modules")


def installed_kernel() -> KernelTree | None:
    """The newest ``/boot/vmlinuz-*`` that has a matching modules directory, if any."""

    def natural(path: Path) -> list[object]:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]

    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), key=natural, reverse=True):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        try:
            modules = modules_root(Path("/"), version)
        except DemoError:
            continue
        if os.access(vmlinuz, os.R_OK):
            return KernelTree(version, vmlinuz, modules)
    return None


def get_kernel(cache: Path, arch: str = "amd64") -> KernelTree:
    """The Debian kernel named by linux-image-<arch>, cached; else (amd64) the installed one."""
    problems: list[str] = []
    modules = ARCH_MODULES[arch]
    try:
        package = apt_kernel_package(arch)
        version = package.removeprefix("linux-image-")
        cached = _cached_kernel(cache, version, modules)
        if cached is not None:
            return cached
        log.info("downloading %s", package)
        with tempfile.TemporaryDirectory(dir=cache, prefix="deb-") as tmp:
            root = APT.fetch(package if arch == "amd64" else f"{package}:{arch}", Path(tmp))
            source = KernelTree(version, root / "boot" / f"vmlinuz-{version}", modules_root(root, version))
            return _compact_kernel(source, cache / f"kernel-{version}", modules)
    except DemoError as exc:
        problems.append(str(exc))
        if arch != "amd64":
            raise DemoError(f"cannot get an {arch} kernel for the demo payload: {exc}") from exc
    installed = installed_kernel()
    if installed is not None:
        log.warning("using the installed kernel %s (%s)", installed.version, problems[0])
        cached = _cached_kernel(cache, installed.version)
        if cached is not None:
            return cached
        return _compact_kernel(installed, cache / f"kernel-{installed.version}")
    problems.append("no /boot/vmlinuz-* with a matching /lib/modules directory")
    raise DemoError("cannot get a kernel for the demo payload: " + "; ".join(problems))
