"""Linux image builds: cold (mmdebstrap from the archive, squashfs) and cached (the same recipe again).

    python -m bench.linux_image [--packages openssh-server,cloud-init,python3] [--json FILE]

A cold build is what ``bootbox image build`` costs the first time: every package downloaded
from the machine's apt archive, unpacked, the initramfs written, the root compressed. The cached
build is the same recipe asked for again: its digest is found in the image store, so the
figure is the cost of resolving the recipe (reading the injected ``.deb`` files' digests) and
repointing the name. There is no reference tool: Image Builder's own figures are not comparable.
Needs root, mmdebstrap and squashfs-tools, and the archive reachable; a cold run takes minutes.

In ``python -m bench`` (:func:`tables`) a second table boots what was built: on a lab segment
(:mod:`bootbox.lab`, ``bootbox lab up --images-dir``), one QEMU client (SeaBIOS + iPXE) boots the
busybox demo to its report-in, the reference column, and one boots the image to *configured*:
its report-in unit calls in after cloud-init's last stage has applied a host profile (when the
image has cloud-init). The ratio is what a real OS costs over the demo: the root image's download
into RAM and systemd's and cloud-init's start, under TCG on this machine.

``--quick`` with ``TEST_LINUX_IMAGES_DIR`` set to an images directory that holds a build (the
tests' shared image, tests/support/linuximage.py) reuses that build: the cached figure is
measured by asking for its recipe again, and the cold figure is the one recorded in its manifest
when it was built (the bench smoke test does this with the run's shared image, so a test run builds
one image, not two). Without it, ``--quick`` builds the smallest image (no extra package) cold.
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


def _build_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap --mode=root)"
    for tool in ("mmdebstrap", "mksquashfs"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install mmdebstrap squashfs-tools)"
    return None


def measure(packages: tuple[str, ...], images_dir: Path | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Build ``bench`` cold, then again (cached), in ``images_dir`` (kept) or a temporary one."""
    with tempfile.TemporaryDirectory(prefix="bench-linux-image-") as tmp:
        service = _service(images_dir or Path(tmp) / "images", [])
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
            "cached_seconds": round(cached_s, 3), "sizes": cold["sizes"], "kernel": cold["kernel_version"],
            "installed": [p["name"] for p in cold["packages"]]}
    return rows, meta


BOOT_TIMEOUT = 900.0
"""Seconds a TCG guest gets from power-on to the image's report-in (a loaded 2-core machine)."""
HOST_PROFILE = {"name": "bench-image", "kind": "cloud-init", "inputs": [],
                "templates": {"user-data": "#cloud-config\nhostname: bench-image\nwrite_files:\n"
                                           "  - path: /etc/bench-image\n    content: configured\n"}}
"""What "configured" applies: a hostname and a file, through cloud-init's NoCloud answers."""


def requirements() -> str | None:
    """What ``python -m bench`` needs: the build's tools (unless a build is reused) and the lab's."""
    missing = _build_requirements()
    if missing and not _reusable(os.environ.get("TEST_LINUX_IMAGES_DIR", "")):
        return missing
    if os.geteuid() != 0:
        return "needs root (network namespaces, mmdebstrap --mode=root)"
    for tool in ("ip", "setpriv", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 util-linux qemu-system-x86)"
    from bootbox.lab.sitedhcp import IPXE_DIR

    if not (IPXE_DIR / "undionly.kpxe").is_file():
        return f"needs {IPXE_DIR / 'undionly.kpxe'} (apt-get install ipxe)"
    return None


def _reusable(images_dir: str) -> tuple[str, dict[str, Any]] | None:
    """The first built image in ``images_dir`` and its manifest, if there is one."""
    names = Path(images_dir) / "names" if images_dir else None
    for ref in sorted(names.glob("*.json")) if names is not None and names.is_dir() else []:
        try:
            digest = json.loads(ref.read_text())["digest"]
            manifest = json.loads((names.parent / "objects" / digest / "manifest.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        return ref.stem, manifest
    return None


def _service(images_dir: Path, injected: list[tuple[str, str]]) -> Any:
    from bootbox_linux.build import Builder
    from bootbox_linux.image import host_mirror
    from bootbox_linux.images import ImageService
    from bootbox_linux.imagestore import ImageStore

    return ImageService(ImageStore(images_dir), Builder(images_dir / "tmp"), host_mirror(),
                        inject=lambda _n: injected, used_by=lambda _n: {"profiles": [], "rules": []})


def _reuse(images_dir: Path, name: str, manifest: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    """The build figures of an existing build: its recorded cold time, and its recipe asked for again."""
    recipe = manifest["recipe"]
    injected = [(i["plugin"], i["package"] if i["source"] == "archive" else i["source"]) for i in recipe["injected"]]
    started = time.monotonic()
    cached = _service(images_dir, injected).build(name, recipe["suite"], recipe["packages"], recipe["mirror"])
    cached_s = time.monotonic() - started
    if not cached["cached"] or cached["digest"] != manifest["digest"]:
        raise RuntimeError(f"{images_dir}: asking for image {name}'s recipe again built it anew "
                           f"({cached['digest'][:12]} != {manifest['digest'][:12]})")
    rows = [Row("cold build (recorded)", "s", round(float(manifest["seconds"]), 1), float("nan"), "",
                higher_is_better=False),
            Row("cached build", "s", round(cached_s, 3), float("nan"), "", higher_is_better=False),
            Row("root (squashfs)", "MB", round(manifest["sizes"]["filesystem.squashfs"] / 1e6, 1), float("nan"), "",
                higher_is_better=False)]
    meta = {"reused": str(images_dir), "image": name, "package_count": len(manifest["packages"]),
            "cold_seconds": manifest["seconds"], "cached_seconds": round(cached_s, 3), "sizes": manifest["sizes"],
            "kernel": manifest["kernel_version"]}
    return rows, meta


def _boot(images_dir: Path, name: str, configure: bool) -> tuple[list[Row], dict[str, Any]]:
    """The demo's boot-to-report-in and the image's boot-to-configured, on one lab."""
    from bootbox.lab.labboot import IMAGE_NIC, IMAGE_SMP, boot, lab_api
    from bootbox.lab.session import down, read_state, up

    lab_dir = Path(tempfile.mkdtemp(prefix="bench-linux-image-lab-"))
    lines: list[str] = []
    try:
        up(lab_dir / "lab", "full", images_dir=images_dir)
        if configure:
            state = read_state(lab_dir / "lab")
            assert state is not None
            lab_api(state)("POST", "/hostprofiles", HOST_PROFILE)
        demo = boot(lab_dir / "lab", "bios", timeout=300.0, out=lines.append)
        image = boot(lab_dir / "lab", "bios", timeout=BOOT_TIMEOUT, out=lines.append, image=name,
                     host_profile=HOST_PROFILE["name"] if configure else None)
    finally:
        down(lab_dir / "lab")
        shutil.rmtree(lab_dir, ignore_errors=True)
    for result, what in ((demo, "the demo"), (image, f"image {name}")):
        if not result.booted:
            raise RuntimeError(f"{what} did not report in; console:\n{result.console_tail}")
    steps = [e for e in image.timeline if e.kind == "http.file"]
    root = next((e.seconds for e in steps if e.message.split()[1].endswith("filesystem.squashfs")), float("nan"))
    figure = "boot to configured (cloud-init done)" if configure else "boot to report-in"
    rows = [Row(figure, "s", round(float(image.seconds or 0), 1), round(float(demo.seconds or 0), 1),
                "busybox demo", higher_is_better=False),
            Row("root image requested", "s", round(root, 1), float("nan"), "", higher_is_better=False)]
    meta = {"image": name, "configured": configure, "demo_seconds": demo.seconds, "image_seconds": image.seconds,
            "image_timeline": [e.__dict__ for e in image.timeline], "firmware": "bios", "accel": "tcg",
            "image_nic": IMAGE_NIC, "image_qemu_args": list(IMAGE_SMP)}
    return rows, meta


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """For ``python -m bench``: the build (cold and cached; ``runs`` is ignored: minutes each),
    then the boot of what was built beside the demo's."""
    kept = os.environ.get("TEST_LINUX_IMAGES_DIR", "")
    reusable = _reusable(kept) if quick else None
    work = Path(tempfile.mkdtemp(prefix="bench-linux-image-"))
    try:
        if reusable is not None:
            images_dir, (name, manifest) = Path(kept), reusable
            rows, meta = _reuse(images_dir, name, manifest)
            packages = [p["name"] for p in manifest["packages"]]
        else:
            images_dir, name = work / "images", "bench"
            rows, meta = measure(QUICK_PACKAGES if quick else FULL_PACKAGES, images_dir)
            packages = meta["installed"]
        build = Table("linux_image", f"Linux image build from the Debian archive: {meta['package_count']} packages "
                                     "installed, cold then cached", rows, meta=meta,
                      notes=["no reference tool; the cold figure depends on the archive's speed"]
                      + ([f"reused the build in {kept} (TEST_LINUX_IMAGES_DIR): its cold time is the recorded one"]
                         if reusable is not None else []))
        boot_rows, boot_meta = _boot(images_dir, name, configure="cloud-init" in packages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    booted = Table("linux_image_boot", "Linux image boot on the lab (QEMU TCG, SeaBIOS + iPXE, full DHCP; the image "
                                       "on a virtio NIC with 2 vCPUs): power-on to configured, beside the busybox "
                                       "demo's power-on to report-in",
                   boot_rows, meta=boot_meta,
                   notes=[("the image downloads its root into RAM and starts systemd and cloud-init; the demo is a "
                           "busybox initramfs: the ratio is what a real OS costs over the demo")])
    return [build, booted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.linux_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", default=",".join(FULL_PACKAGES), help="comma-separated packages to install")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    missing = _build_requirements()
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
