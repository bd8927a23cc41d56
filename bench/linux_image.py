"""Linux image builds: cold (mmdebstrap from the archive, squashfs) and cached (the same recipe again).

    python -m bench.linux_image [--packages openssh-server,cloud-init,python3] [--json FILE]

A cold build is what ``bootbox image build`` costs the first time: every package downloaded
from the machine's apt archive, unpacked, the initramfs written, the root compressed. The cached
build is the same recipe asked for again: its digest is found in the image store, so the
figure is the cost of resolving the recipe (reading the injected ``.deb`` files' digests) and
repointing the name. There is no reference tool: Image Builder's own figures are not comparable.
Needs root, mmdebstrap and squashfs-tools, and the archive reachable; a cold run takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row, Table

QUICK_PACKAGES: tuple[str, ...] = ()
"""``--quick``: only what every image has (kernel, live-boot, systemd, busybox)."""
FULL_PACKAGES = ("openssh-server", "cloud-init", "python3", "ifupdown", "isc-dhcp-client")


def requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap --mode=root)"
    for tool in ("mmdebstrap", "mksquashfs"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install mmdebstrap squashfs-tools)"
    return None


def measure(packages: tuple[str, ...]) -> tuple[list[Row], dict[str, Any]]:
    from bootbox_linux.build import Builder
    from bootbox_linux.image import host_mirror
    from bootbox_linux.images import ImageService
    from bootbox_linux.imagestore import ImageStore

    with tempfile.TemporaryDirectory(prefix="bench-linux-image-") as tmp:
        store = ImageStore(Path(tmp) / "images")
        service = ImageService(store, Builder(Path(tmp) / "build"), host_mirror(), inject=lambda _n: [],
                               used_by=lambda _n: {"profiles": [], "rules": []})
        started = time.monotonic()
        cold = service.build("bench", "bookworm", packages)
        cold_s = time.monotonic() - started
        started = time.monotonic()
        cached = service.build("bench", "bookworm", packages)
        cached_s = time.monotonic() - started
    assert not cold["cached"] and cached["cached"] and cold["digest"] == cached["digest"]
    rows = [Row("cold build", "s", round(cold_s, 1), float("nan"), "", higher_is_better=False),
            Row("cached build", "s", round(cached_s, 3), float("nan"), "", higher_is_better=False),
            Row("root (squashfs)", "MB", round(cold["sizes"]["filesystem.squashfs"] / 1e6, 1), float("nan"), "",
                higher_is_better=False)]
    meta = {"packages": list(packages), "package_count": cold["package_count"], "cold_seconds": round(cold_s, 1),
            "cached_seconds": round(cached_s, 3), "sizes": cold["sizes"], "kernel": cold["kernel_version"]}
    return rows, meta


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """For ``python -m bench``: one cold and one cached build (``runs`` is ignored: minutes each)."""
    packages = QUICK_PACKAGES if quick else FULL_PACKAGES
    rows, meta = measure(packages)
    return [Table("linux_image", f"Linux image build from the Debian archive: {meta['package_count']} packages "
                                 "installed, cold then cached", rows, meta=meta,
                  notes=["no reference tool; the cold figure depends on the archive's speed"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.linux_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", default=",".join(FULL_PACKAGES), help="comma-separated packages to install")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    missing = requirements()
    if missing:
        print(f"skipped: {missing}", file=sys.stderr)
        return 2
    rows, meta = measure(tuple(p for p in args.packages.split(",") if p))
    for row in rows:
        print(f"{row.figure:<18} {row.ours:>10} {row.unit}")
    if args.json:
        args.json.write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
