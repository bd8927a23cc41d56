"""The payload's userland: one statically linked busybox and the list of its applets.

The initramfs has no libc, so only a static busybox will do: the installed busybox-static when
there is one, else its Debian package (always the package for a foreign architecture).
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from bootbox.assets.demo.kernel import APT
from bootbox.assets.demo.payload import DemoError

__all__ = ["applet_links", "get_busybox", "is_static_elf"]

log = logging.getLogger("bootbox.demo")


def is_static_elf(path: Path) -> bool:
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


def get_busybox(cache: Path, arch: str = "amd64") -> Path:
    """A statically linked busybox: the installed busybox-static, else its Debian package (for
    another ``arch``, always the package, ``busybox-static:<arch>``)."""
    if arch == "amd64":
        for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
            if candidate.is_file() and is_static_elf(candidate):
                return candidate
    cached = cache / ("busybox" if arch == "amd64" else f"busybox-{arch}")
    if cached.is_file():
        return cached
    log.info("downloading busybox-static for %s", arch)
    with tempfile.TemporaryDirectory(dir=cache, prefix="deb-") as tmp:
        root = APT.fetch("busybox-static" if arch == "amd64" else f"busybox-static:{arch}", Path(tmp))
        for rel in ("bin/busybox", "usr/bin/busybox"):
            if (root / rel).is_file():
                shutil.copyfile(root / rel, cached)
                cached.chmod(0o755)
                return cached
    raise DemoError("the busybox-static package holds no busybox binary")


def applet_links(busybox: Path) -> list[str]:
    """Install paths of every applet, from the binary itself (``busybox --list-full``)."""
    out = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})
