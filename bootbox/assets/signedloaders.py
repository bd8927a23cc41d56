"""Fetch Debian's signed boot loaders (shim, network GRUB) for an architecture into a directory.

The x64 loaders come with installed packages (``shim-signed``, ``grub-efi-amd64-signed``) and
bootbox's default ``[dhcp.loader_files]`` points at them where Debian puts them. ARM64 ones
cannot be installed beside an amd64 system's own GRUB, so they are downloaded as packages and
unpacked (``apt-get download`` + ``dpkg -x`` through :mod:`bootbox.assets.debian`: no maintainer
scripts run) into ``state_dir/loaders/arm64``, where the defaults look for them::

    dpkg --add-architecture arm64 && apt-get update
    python -m bootbox.assets.signedloaders arm64 /var/lib/bootbox/loaders/arm64

(``python -m bootbox.signedloaders`` is the same command, kept as an alias.)

Only the signed EFI images are kept; the download is verified by apt like any package.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bootbox.assets.debian import Apt
from bootbox.errors import BootboxError

__all__ = ["LOADER_PACKAGES", "LoaderFetchError", "fetch_signed_loaders"]

LOADER_PACKAGES: dict[str, dict[str, str]] = {
    # Debian architecture → package → the file it ships (path inside the package).
    "amd64": {
        "shim-signed": "usr/lib/shim/shimx64.efi.signed",
        "grub-efi-amd64-signed": "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    },
    "arm64": {
        "shim-signed": "usr/lib/shim/shimaa64.efi.signed",
        "grub-efi-arm64-signed": "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
    },
}


class LoaderFetchError(BootboxError):
    """The packages could not be downloaded or did not hold the expected files."""


_APT = Apt(LoaderFetchError, " (apt-get and dpkg are needed)")


def fetch_signed_loaders(dest: Path, arch: str) -> dict[str, Path]:
    """Download and unpack ``arch``'s signed shim and network GRUB into ``dest``.

    Returns file name → path. Files already in ``dest`` are kept (a re-run downloads nothing),
    so a test session or an install step can call this every time.
    """
    if arch not in LOADER_PACKAGES:
        raise LoaderFetchError(f"no signed loaders known for {arch!r}; known: {', '.join(LOADER_PACKAGES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {package: dest / Path(inner).name for package, inner in LOADER_PACKAGES[arch].items()}
    missing = [package for package, target in wanted.items() if not target.is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="bootbox-loaders-") as tmp:
            work = Path(tmp)
            debs = _APT.download([f"{package}:{arch}" for package in missing], work)
            for package in missing:
                deb = debs[f"{package}:{arch}"]
                root = _APT.extract(deb, work / package)
                source = root / LOADER_PACKAGES[arch][package]
                if not source.is_file():
                    raise LoaderFetchError(f"{deb.name} holds no {LOADER_PACKAGES[arch][package]}")
                temporary = wanted[package].with_suffix(".part")
                shutil.copyfile(source, temporary)
                temporary.replace(wanted[package])
    return {target.name: target for target in wanted.values()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootbox.signedloaders ARCH DEST``: fetch and list the loaders."""
    parser = argparse.ArgumentParser(prog="python -m bootbox.signedloaders", description=__doc__.split("\n")[0])
    parser.add_argument("arch", choices=sorted(LOADER_PACKAGES))
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        for name, path in fetch_signed_loaders(args.dest, args.arch).items():
            print(f"{name}\t{path}")
    except BootboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
