"""Building a Linux image: mmdebstrap a root, take its kernel and live-boot initramfs, squash it.

The steps, each logged to the build's log file (every line of mmdebstrap's ``--verbose``
output, then ours):

1. ``mmdebstrap --variant=apt`` installs the recipe's packages (plus the base that boots:
   ``linux-image-amd64``, ``live-boot``, ``systemd-sysv``) and the injected ``.deb`` files
   from the one archive the recipe names into a directory under the build dir. Installing the
   kernel with ``live-boot`` present makes initramfs-tools write an initramfs whose
   ``/init`` understands ``boot=live fetch=URL``: bring up the network, download the squashfs
   into RAM, mount it read-only under a tmpfs overlay.
2. Per-host state is removed so each host makes its own: SSH host keys (one ed25519 key,
   made before sshd starts by a drop-in unless cloud-init wrote the one its user-data carries),
   ``/etc/machine-id``; cloud-init is told to look only for NoCloud (no minute-long probing of
   cloud metadata services on every boot).
3. ``dpkg-query --admindir`` lists every installed package with its version (the image's
   manifest: ``image show``/``image diff``).
4. ``mksquashfs`` (zstd) makes ``filesystem.squashfs`` of the root; the kernel and
   initramfs are copied beside it.

Outputs are written into a staging directory next to the image store's objects and renamed
into place only when complete, so a failed build (an unknown package, an unreachable archive, a
full disk, a timeout) leaves every earlier image as it was. :func:`classify` turns the log of
a failed build into a message naming the cause.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootbox import BootboxError
from bootbox_linux.image import BUILDER_VERSION, Recipe

KERNEL, INITRD, ROOTFS, MANIFEST, LOG = "vmlinuz", "initrd.img", "filesystem.squashfs", "manifest.json", "build.log"
FILES = (KERNEL, INITRD, ROOTFS)

PHASES = (
    ("update", "reading the archive's package lists"),
    ("download", "downloading packages"),
    ("extract", "extracting the essential packages"),
    ("essential", "installing the essential packages"),
    ("install", "installing the packages (and the kernel's initramfs)"),
    ("finish", "removing per-host state, listing packages"),
    ("squashfs", "compressing the root filesystem"),
    ("publish", "publishing"),
)
_MARKERS = {
    "I: running apt-get update": "update",
    "I: downloading packages": "download",
    "I: extracting archives": "extract",
    "I: installing essential packages": "essential",
    "I: installing remaining packages": "install",
}

DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
"""Left out of every image (``--dpkgopt=path-exclude``): documentation no stateless host reads,
tens of megabytes of RAM per host otherwise. Copyright files are kept."""

SSH_DROPIN = """\
# bootbox: an image is shared by every host that boots it, so it carries no SSH host keys;
# each boot makes its own ed25519 key before sshd starts, unless cloud-init wrote one (the key
# bootbox hands a boot in its user-data). Only ed25519: an RSA key costs tens of seconds to
# make on a slow or emulated CPU at every boot, and sshd is told to use no other (sshd_config.d).
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
"""

SSHD_HOSTKEYS = """\
# bootbox: the one host key each boot makes (see ssh.service.d/bootbox-hostkeys.conf).
HostKey /etc/ssh/ssh_host_ed25519_key
"""

REPORT_IN = """\
#!/bin/sh
# bootbox: tell the appliance this boot is up, as its demo payload does: POST mac, ip, boot_id
# and kernel to bootbox.callback= from the kernel command line (a new up token every boot).
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bootbox.callback=*) CALLBACK="${arg#bootbox.callback=}" ;;
        bootbox.mac=*) MAC="${arg#bootbox.mac=}" ;;
    esac
done
[ -n "$CALLBACK" ] || exit 0
# Report once the host is configured: after cloud-init's last stage, when cloud-init is there.
if command -v cloud-init >/dev/null; then
    timeout 900 cloud-init status --wait >/dev/null 2>&1
fi
for try in 1 2 3 4 5 6 7 8 9 10; do
    set -- $(hostname -I)
    BODY="mac=$MAC&ip=$1&boot_id=$(cat /proc/sys/kernel/random/boot_id)&kernel=$(uname -r)"
    if busybox wget -q -O /dev/null --post-data "$BODY" "$CALLBACK"; then
        echo "bootbox: reported in (ip $1)"
        exit 0
    fi
    sleep 3
done
echo "bootbox: could not report in to $CALLBACK" >&2
exit 1
"""

REPORT_IN_UNIT = """\
[Unit]
Description=bootbox: report this boot to the appliance
Wants=network-online.target
After=network-online.target

[Service]
# simple, not oneshot: the script waits for cloud-final, which is ordered after multi-user.target
Type=simple
ExecStart=/usr/lib/bootbox/report-in
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

CLOUD_CFG = """\
# bootbox: hosts boot with ds=nocloud-net;s=<their answer URL>; look for nothing else.
datasource_list: [NoCloud, None]
# Host keys: bootbox's user-data hands each boot its ed25519 key; without one, make only that type.
ssh_genkeytypes: [ed25519]
# The image has no locales package: generating one fails, after seconds, on every boot.
locale: false
# The network is up before the root is: live-boot's initramfs configured it to fetch the root.
# Rendered again by cloud-init, its `ifup` of the same interface failed after ~15 s every boot.
network:
  config: disabled
"""


class BuildError(BootboxError):
    """A build failed; ``cause`` is one of ``unknown-package``, ``archive-unreachable``,
    ``disk-full``, ``timeout``, ``failed``."""

    def __init__(self, message: str, cause: str = "failed") -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class Progress:
    """Where a build is: shared between the build thread and whoever polls it."""

    phase: str = "queued"
    step: int = 0
    steps: int = len(PHASES)
    fetched: int = 0
    last: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self, phase: str) -> None:
        names = [p for p, _ in PHASES]
        with self._lock:
            if phase in names and names.index(phase) + 1 >= self.step:
                self.phase, self.step = phase, names.index(phase) + 1

    def line(self, text: str) -> None:
        with self._lock:
            self.last = text[:200]
            if text.startswith("Get:"):
                self.fetched += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            label = dict(PHASES).get(self.phase, self.phase)
            return {"phase": self.phase, "label": label, "step": self.step, "steps": self.steps,
                    "fetched": self.fetched, "last": self.last}


@dataclass(frozen=True)
class BuildLimits:
    timeout: float = 1800.0
    """Seconds a whole build may take (``[plugins.linux] build_timeout``)."""
    compression_level: int = 6
    """mksquashfs's zstd level (``[plugins.linux] squashfs_level``): 6 is a fair trade on 2 cores."""


_UNKNOWN = (re.compile(r"Unable to locate package (\S+)"),
            re.compile(r"Package '?([^' ]+)'? has no installation candidate"),
            re.compile(r"Couldn't find any package by (?:glob|regex) '([^']+)'"),
            re.compile(r"but it is not installable.*?(\S+)$"))
_UNREACHABLE = re.compile(r"Could not connect|Failed to fetch|Temporary failure resolving|Connection refused|"
                          r"Network is unreachable|No route to host|Connection timed out|Unable to connect|"
                          r"Could not resolve|Release' does not have a Release file|404\s+Not Found")
_DEPENDS = re.compile(r"Depends: .*but it is not (?:installable|going to be installed)")


def classify(log: str, recipe: Recipe) -> tuple[str, str]:
    """``(cause, message)`` for the log of a failed build: what an operator must fix."""
    if "No space left on device" in log or "You don't have enough free space" in log:
        return "disk-full", "the build ran out of disk space (No space left on device)"
    unknown: list[str] = []
    for pattern in _UNKNOWN[:3]:
        unknown += [m.group(1) for m in pattern.finditer(log)]
    if unknown:
        names = ", ".join(sorted(set(unknown)))
        return "unknown-package", f"unknown package {names}: not in {recipe.mirror} {recipe.suite} (main)"
    if _UNREACHABLE.search(log):
        line = next((ln.strip() for ln in log.splitlines() if _UNREACHABLE.search(ln)), "")
        return "archive-unreachable", f"the archive {recipe.mirror} is unreachable or has no suite {recipe.suite}: {line[:300]}"
    if _DEPENDS.search(log):
        line = next(ln.strip() for ln in log.splitlines() if _DEPENDS.search(ln))
        return "failed", f"unsatisfiable dependencies: {line[:300]}"
    errors = [ln.strip() for ln in log.splitlines() if ln.startswith(("E:", "dpkg: error"))]
    return "failed", (errors[0][:300] if errors else "mmdebstrap failed (see the build log)")


def _mode() -> str:
    return "root" if os.geteuid() == 0 else "unshare"


def mmdebstrap_command(recipe: Recipe, target: Path) -> list[str]:
    """The mmdebstrap call. apt hands a local ``.deb`` to dpkg *inside* the chroot by the path it
    has outside, so setup hooks copy each injected ``.deb`` to the same path in the root, and a
    customize hook removes it (and the directories made for it) before the root is squashed."""
    cmd = ["mmdebstrap", "--verbose", f"--mode={_mode()}", "--variant=apt", "--arch=amd64", "--components=main"]
    debs = [str(Path(i.package).resolve()) for i in recipe.injected if i.is_file]
    for deb in debs:
        folder = str(Path(deb).parent)
        cmd.append(f'--setup-hook=mkdir -p "$1{folder}" && cp "{deb}" "$1{deb}"')
        cmd.append(f'--customize-hook=rm -f "$1{deb}" && rmdir -p --ignore-fail-on-non-empty "$1{folder}"')
    packages = sorted({*recipe.packages, *(i.package for i in recipe.injected if not i.is_file)})
    # apt resolves the packages only once the essential set is installed, a minute or more in; ask
    # it as soon as that set is unpacked (outside the chroot, with mmdebstrap's apt config), so an
    # unknown or unsatisfiable package fails the build about half a minute in, with apt's message.
    cmd.append('--extract-hook=APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get --simulate --quiet install '
               + " ".join(shlex.quote(p) for p in packages) + " >/dev/null")
    cmd += [f"--include={item}" for item in [*packages, *debs]]  # one each: a .deb path must stand alone
    cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    cmd += ["--dpkgopt=path-include=/usr/share/doc/*/copyright"]
    return cmd + [recipe.suite, str(target), recipe.mirror]


class Builder:
    """Runs one build at a time (a build uses every core it can get)."""

    def __init__(self, build_dir: Path, limits: BuildLimits = BuildLimits()) -> None:
        self.build_dir = build_dir
        self.limits = limits
        self._lock = threading.Lock()

    def build(self, recipe: Recipe, stage: Path, log_path: Path, progress: Progress) -> dict[str, Any]:
        """Build ``recipe`` into the (new, empty) directory ``stage``; return its manifest.

        Raises :class:`BuildError` naming the cause. The build's root tree is always removed.
        """
        with self._lock:
            started = time.time()
            deadline = time.monotonic() + self.limits.timeout
            self.build_dir.mkdir(parents=True, exist_ok=True)
            work = self.build_dir / f"{recipe.digest[:16]}-{os.getpid()}-{threading.get_ident()}"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("w", encoding="utf-8") as log:
                log.write(f"bootbox linux image build (builder {BUILDER_VERSION}), digest {recipe.digest}\n"
                          f"recipe: {json.dumps(recipe.to_doc(), sort_keys=True)}\n")
                log.flush()
                try:
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    root = work / "root"
                    self._run(mmdebstrap_command(recipe, root), log, progress, deadline, recipe, log_path)
                    progress.enter("finish")
                    kernel_version = self._finish_root(root)
                    packages = self._packages(root)
                    progress.enter("squashfs")
                    stage.mkdir(parents=True)
                    shutil.copyfile(root / "boot" / f"vmlinuz-{kernel_version}", stage / KERNEL)
                    shutil.copyfile(root / "boot" / f"initrd.img-{kernel_version}", stage / INITRD)
                    self._run(["mksquashfs", str(root), str(stage / ROOTFS), "-comp", "zstd", "-Xcompression-level",
                               str(self.limits.compression_level), "-noappend", "-no-progress", "-e", "boot"],
                              log, progress, deadline, recipe, log_path)
                    manifest = {
                        "digest": recipe.digest, "builder": BUILDER_VERSION, "recipe": recipe.to_doc(),
                        "kernel_version": kernel_version, "packages": packages,
                        "sizes": {name: (stage / name).stat().st_size for name in FILES},
                        "built": started, "seconds": round(time.time() - started, 1),
                    }
                    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
                    log.write(f"bootbox: built {recipe.digest} in {manifest['seconds']} s\n")
                    return manifest
                except OSError as exc:
                    shutil.rmtree(stage, ignore_errors=True)
                    cause = "disk-full" if exc.errno == 28 else "failed"
                    message = ("the build ran out of disk space (No space left on device)" if cause == "disk-full"
                               else f"the build failed: {exc}")
                    _note(log, message)
                    raise BuildError(f"{message}; log: {log_path}", cause) from None
                except BuildError as exc:
                    shutil.rmtree(stage, ignore_errors=True)
                    _note(log, str(exc))
                    raise
                finally:
                    shutil.rmtree(work, ignore_errors=True)

    def _run(self, cmd: list[str], log: Any, progress: Progress, deadline: float, recipe: Recipe,
             log_path: Path) -> None:
        """Run ``cmd`` with its output into the log, following mmdebstrap's phases; its own
        process group, so a timeout ends apt and dpkg with it."""
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        tail: list[str] = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _kill, args=(proc,))
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.rstrip("\n")
                tail.append(text)
                progress.line(text)
                for marker, phase in _MARKERS.items():
                    if text.startswith(marker):
                        progress.enter(phase)
            code = proc.wait()
        finally:
            timer.cancel()
        log.flush()
        if code == 0:
            return
        if time.monotonic() >= deadline:
            raise BuildError(f"the build took longer than build_timeout ({self.limits.timeout:g} s); "
                             f"log: {log_path}", "timeout")
        cause, message = classify("\n".join(tail), recipe)
        raise BuildError(f"{message}; log: {log_path}", cause)

    def _finish_root(self, root: Path) -> str:
        """Remove per-host state; return the kernel version the image boots."""
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise BuildError("the image has no kernel (/boot/vmlinuz-*): is linux-image-amd64 installable?")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        if not (root / "boot" / f"initrd.img-{version}").is_file():
            raise BuildError(f"the image has no initramfs for kernel {version} (initramfs-tools failed?)")
        if not (root / "usr/lib/live/boot").is_dir():
            raise BuildError("live-boot is not installed in the image: its initramfs could not fetch the root")
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        if (root / "usr/sbin/sshd").exists():
            dropin = root / "etc/systemd/system/ssh.service.d"
            dropin.mkdir(parents=True, exist_ok=True)
            (dropin / "bootbox-hostkeys.conf").write_text(SSH_DROPIN)
            (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
            (root / "etc/ssh/sshd_config.d/bootbox-hostkeys.conf").write_text(SSHD_HOSTKEYS)
        if (root / "etc/cloud/cloud.cfg.d").is_dir():
            (root / "etc/cloud/cloud.cfg.d/90-bootbox.cfg").write_text(CLOUD_CFG)
        (root / "usr/lib/bootbox").mkdir(parents=True, exist_ok=True)
        (root / "usr/lib/bootbox/report-in").write_text(REPORT_IN)
        (root / "usr/lib/bootbox/report-in").chmod(0o755)
        (root / "etc/systemd/system/bootbox-report-in.service").write_text(REPORT_IN_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "bootbox-report-in.service"
        if not link.is_symlink():
            link.symlink_to("/etc/systemd/system/bootbox-report-in.service")
        (root / "etc/machine-id").write_text("")
        (root / "etc/hostname").write_text("localhost\n")
        return version

    @staticmethod
    def _packages(root: Path) -> list[dict[str, str]]:
        out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                              "-f=${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"],
                             capture_output=True, text=True, check=True, timeout=120)
        rows = []
        for line in out.stdout.splitlines():
            name, version, arch, status = (line.split("\t") + ["", "", ""])[:4]
            if status.strip().startswith("ii"):
                rows.append({"name": name, "version": version, "arch": arch})
        return sorted(rows, key=lambda r: r["name"])


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _note(log: Any, message: str) -> None:
    try:
        log.write(f"bootbox: build failed: {message}\n")
        log.flush()
    except OSError:
        pass


Callback = Callable[[Progress], None]
