"""Build the demo payload into a directory, reusing what is already there.

The output is reproducible (fixed mtimes, sorted entries, gzip without a timestamp) and keyed by
a hash of every input, so :func:`build_demo_assets` returns at once, rewriting nothing, when
``dest`` already holds the result; downloads are cached across calls and projects.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from bootbox.assets.demo.busybox import applet_links, get_busybox
from bootbox.assets.demo.cpio import write_cpio
from bootbox.assets.demo.initramfs import initramfs_entries
from bootbox.assets.demo.kernel import KernelTree, get_kernel
from bootbox.assets.demo.payload import (
    ARCH_CMDLINE,
    ARCH_MODULES,
    DEFAULT_CMDLINE,
    INITRD_NAME,
    KERNEL_NAME,
    MANIFEST_NAME,
    MODULES,
    DemoAssets,
    DemoError,
)
from bootbox.assets.demo.scripts import init_script, udhcpc_script

__all__ = ["build_demo_assets", "default_cache_dir"]

log = logging.getLogger("bootbox.demo")

_RECIPE_VERSION = "1"
"""Bump when the initramfs layout changes in a way the inputs' hashes do not capture."""


def default_cache_dir() -> Path:
    """``$BOOTBOX_CACHE`` or ``$XDG_CACHE_HOME/bootbox`` or ``~/.cache/bootbox``, + ``/demo``."""
    root = os.environ.get("BOOTBOX_CACHE")
    if root:
        return Path(root) / "demo"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "bootbox" / "demo"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recipe_key(kernel: KernelTree, busybox: Path, modules: Sequence[str] = MODULES) -> str:
    """Hash of everything the output depends on, so a rebuild happens exactly when needed."""
    digest = hashlib.sha256()
    for part in (_RECIPE_VERSION, kernel.version, init_script(), udhcpc_script(), *modules):
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
        kernel = get_kernel(cache, arch)
        busybox = get_busybox(cache, arch)
        # A foreign busybox cannot run here to list its applets; the host's of the same Debian
        # release has the same list.
        applets = None if arch == "amd64" else applet_links(get_busybox(cache))
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
        write_cpio(initramfs_entries(kernel, busybox, modules, applets), raw)
        packed = io.BytesIO()
        with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(raw.getvalue())
        _atomic_write(assets.initrd, packed.getvalue())
        _atomic_write(assets.kernel, kernel.vmlinuz.read_bytes())
        record = {"key": key, **{k: str(v) for k, v in asdict(assets).items()}}
        _atomic_write(manifest, (json.dumps(record, indent=2) + "\n").encode())
    log.info("built demo assets for kernel %s in %s", kernel.version, dest)
    return assets
