"""Boot a QEMU guest on a lab tap and watch its serial console.

The guest stands for a bare-metal machine doing a network boot, with two firmware flavours:

* ``bios``: ``-machine pc``, SeaBIOS with the NIC's iPXE option ROM (Debian ``ipxe-qemu``),
  ``-device sga`` so the firmware's text screen is copied to the serial port;
* ``uefi``: ``-machine q35``, OVMF from two pflash drives (the read-only code and a per-VM copy
  of the variable store), and by default ``virtio-net-pci`` with an *empty* ``romfile=`` so
  EDK2's own VirtioNetDxe + PxeBcDxe do the PXE boot instead of an iPXE ROM (pxe-dhcp.md §7);
* ``uefi-http`` / ``uefi-pxe6``: the same with EDK2's IPv4 (and IPv6) PXE switched off by
  fw_cfg, so UEFI HTTP boot / PXE over IPv6 goes first (pxe-dhcp.md §9);
* ``uefi-secure``: OVMF's Secure Boot build with Microsoft's keys enrolled (SMM on);
* ``arm64``: ``qemu-system-aarch64 -machine virt`` with AAVMF (EDK2 PXE sends arch 11);
  ``arm64-secure``: its Secure Boot build with Microsoft's keys.

By default the guest runs under TCG: slow (tens of seconds to a Linux userland) but the same
everywhere. ``accel="auto"`` uses KVM instead where hardware KVM is usable (:func:`kvm_unusable`),
for guests that boot a full distribution (minutes under TCG); QEMU still falls back to TCG if KVM
fails to start. Hardware KVM, because some sandboxes offer a ``/dev/kvm`` that is not: under
PVM (``kvm_pvm``, a shadow-paging hypervisor for sandboxed VMs) SeaBIOS runs, but a stock
Debian kernel does not get past its decompressor in minutes (it looks hung after "Probing EDD"). The guest's only network is a tap in the lab's switch
namespace, so QEMU itself runs in that namespace (a tap is opened by name in the opener's
namespace). ``-no-reboot`` turns the payload's poweroff, and a kernel panic with ``panic=-1``,
into QEMU exiting.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from bootbox.lab.netns import LabError, Segment, StartStop, spawn_in_netns, stop_process

__all__ = ["AAVMF_CODE", "AAVMF_SECURE_CODE", "ACCELS", "FIRMWARES", "OVMF_CODE", "OVMF_SECURE_CODE", "OVMF_VARS", "Accel",
           "Firmware", "QemuClient", "kvm_unusable", "random_mac"]

Firmware = Literal["bios", "uefi", "uefi-http", "uefi-secure", "uefi-pxe6", "arm64", "arm64-secure"]
FIRMWARES: tuple[Firmware, ...] = ("bios", "uefi", "uefi-http", "uefi-secure", "uefi-pxe6", "arm64", "arm64-secure")
Accel = Literal["tcg", "kvm", "auto"]
ACCELS: tuple[Accel, ...] = ("tcg", "kvm", "auto")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = "qemu-system-x86_64"
QEMU_ARM64 = "qemu-system-aarch64"
OVMF_SECURE_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_SECURE_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
"""Secure Boot build (needs SMM) with Microsoft's keys enrolled (Debian ``ovmf``)."""
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
"""EDK2 for qemu-system-aarch64 ``virt`` (Debian ``qemu-efi-aarch64``)."""
AAVMF_SECURE_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.ms.fd")
AAVMF_SECURE_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.ms.fd")
"""The same with Secure Boot on and Microsoft's keys enrolled."""


def _no_pxe(*versions: str) -> tuple[str, ...]:
    """fw_cfg switches that remove EDK2's native PXE boot entries (so HTTP boot, or PXE over the
    other IP version, goes first; facts/pxe-dhcp.md §9)."""
    args: list[str] = []
    for version in versions:
        args += ["-fw_cfg", f"name=opt/org.tianocore/{version}PXESupport,string=no"]
    return tuple(args)


# firmware → (emulator, code, variables template, extra arguments); "bios" is SeaBIOS, built in.
_EFI: dict[str, tuple[str, Path, Path, tuple[str, ...]]] = {
    "uefi": (QEMU, OVMF_CODE, OVMF_VARS, ("-machine", "q35")),
    "uefi-http": (QEMU, OVMF_CODE, OVMF_VARS, ("-machine", "q35", *_no_pxe("IPv4", "IPv6"))),
    "uefi-pxe6": (QEMU, OVMF_CODE, OVMF_VARS, ("-machine", "q35", *_no_pxe("IPv4"))),
    # SMM is required by the Secure Boot build, and the variable store must be SMM-protected.
    "uefi-secure": (QEMU, OVMF_SECURE_CODE, OVMF_SECURE_VARS,
                    ("-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
                     *_no_pxe("IPv6"))),
    "arm64": (QEMU_ARM64, AAVMF_CODE, AAVMF_VARS, ("-machine", "virt", "-cpu", "cortex-a57")),
    "arm64-secure": (QEMU_ARM64, AAVMF_SECURE_CODE, AAVMF_SECURE_VARS, ("-machine", "virt", "-cpu", "cortex-a57")),
}

_DEFAULT_NIC: dict[str, str] = {"bios": "e1000", **{name: "virtio-net-pci" for name in _EFI}}


def kvm_unusable(emulator: str = QEMU) -> str | None:
    """Why ``emulator`` cannot use hardware KVM on this machine, or None when it can.

    Checked: an x86-64 emulator on an x86-64 machine, ``/dev/kvm`` open to us, and the KVM
    module a hardware one (``kvm_intel``/``kvm_amd``), not PVM's (see the module docstring).
    """
    if emulator != QEMU or platform.machine() not in ("x86_64", "AMD64"):
        return f"{emulator} on {platform.machine()} has no KVM here"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not readable and writable"
    modules = Path("/sys/module")
    if not any((modules / name).is_dir() for name in ("kvm_intel", "kvm_amd")):
        if (modules / "kvm_pvm").is_dir():
            return "/dev/kvm is PVM (kvm_pvm), which runs a stock kernel far slower than TCG"
        return "no hardware KVM module (kvm_intel / kvm_amd) is loaded"
    return None


def random_mac() -> str:
    """A random locally administered unicast MAC (first octet 0x02), unique per test guest."""
    tail = secrets.token_bytes(4)
    return "02:" + ":".join(f"{b:02x}" for b in (0x42, *tail))


class QemuClient(StartStop):
    """One QEMU guest network-booting from a tap; its serial console goes to a log file.

    :param tap: tap device name (in ``netns``), e.g. from :meth:`Segment.add_tap`.
    :param netns: namespace QEMU runs in (the segment's switch); None for the current one.
    :param mac: the guest NIC's MAC, lowercase with colons.
    :param firmware: ``"bios"`` or ``"uefi"``.
    :param workdir: where ``serial.log``, the OVMF variable copy and QEMU's stderr go.
    :param nic: QEMU NIC model; default ``e1000`` (BIOS) or ``virtio-net-pci`` (UEFI).
    :param nic_rom: option ROM for the NIC. None keeps QEMU's default (the iPXE ROM) for BIOS
        and uses an empty ROM for UEFI virtio, so EDK2's native PXE runs.
    :param memory_mb: guest RAM; the demo initramfs and kernel fit in far less than 768.
    :param extra_args: appended to the QEMU command line verbatim.
    :param accel: ``"tcg"`` (the default), ``"kvm"`` (KVM, TCG only if KVM fails to start), or
        ``"auto"``: ``"kvm"`` when :func:`kvm_unusable` finds no reason against it, else TCG.
    """

    def __init__(
        self,
        *,
        tap: str,
        netns: str | None,
        mac: str,
        firmware: Firmware,
        workdir: Path,
        nic: str | None = None,
        nic_rom: str | None = None,
        memory_mb: int = 768,
        extra_args: Sequence[str] = (),
        accel: Accel = "tcg",
    ) -> None:
        if firmware not in FIRMWARES:
            raise LabError(f"firmware must be one of {FIRMWARES}, not {firmware!r}")
        if accel not in ACCELS:
            raise LabError(f"accel must be one of {ACCELS}, not {accel!r}")
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
            raise LabError(f"MAC must be lowercase with colons: {mac!r}")
        self.tap = tap
        self.netns = netns
        self.mac = mac
        self.firmware: Firmware = firmware
        self.workdir = Path(workdir)
        self.nic = nic or _DEFAULT_NIC[firmware]
        if nic_rom is None and firmware != "bios" and self.nic.startswith("virtio"):
            nic_rom = ""
        self.nic_rom = nic_rom
        self.memory_mb = memory_mb
        self.extra_args = tuple(extra_args)
        emulator = _EFI[firmware][0] if firmware in _EFI else QEMU
        if accel == "auto":
            accel = "tcg" if kvm_unusable(emulator) else "kvm"
        self.accel: Accel = accel
        """The accelerator asked for, ``"auto"`` resolved (QEMU may still fall back to TCG)."""
        self.serial_log = self.workdir / "serial.log"
        self.stderr_log = self.workdir / "qemu.stderr"
        self.vars_copy = self.workdir / "OVMF_VARS.fd"
        self.started_at: float | None = None
        """``time.monotonic()`` just before QEMU was started; boot times count from here."""
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_segment(
        cls,
        segment: Segment,
        *,
        mac: str,
        firmware: Firmware,
        workdir: Path,
        nic: str | None = None,
        nic_rom: str | None = None,
        memory_mb: int = 768,
        extra_args: Sequence[str] = (),
        accel: Accel = "tcg",
    ) -> QemuClient:
        """A client on a new tap of ``segment``, stopped by the segment's close()."""
        client = cls(
            tap=segment.add_tap(),
            netns=segment.switch,
            mac=mac,
            firmware=firmware,
            workdir=workdir,
            nic=nic,
            nic_rom=nic_rom,
            memory_mb=memory_mb,
            extra_args=extra_args,
            accel=accel,
        )
        segment.defer(client.stop)
        return client

    def argv(self) -> list[str]:
        """The QEMU command line (pure; no files are touched)."""
        nic = f"{self.nic},netdev=n0,mac={self.mac},bootindex=1"
        if self.nic_rom is not None:
            nic += f",romfile={self.nic_rom}"
        args = [
            _EFI[self.firmware][0] if self.firmware in _EFI else QEMU,
            "-name", f"bootbox-lab-{self.mac}",
            *(("-accel", "kvm", "-accel", "tcg", "-cpu", "max") if self.accel == "kvm" else ("-accel", "tcg")),
            "-smp", "1",
            "-m", str(self.memory_mb),
            "-nographic",
            "-monitor", "none",
            "-no-reboot",
            "-serial", f"file:{self.serial_log}",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device", nic,
        ]  # fmt: skip
        if self.firmware == "bios":
            args += ["-machine", "pc", "-device", "sga"]
        else:
            _, code, _, extra = _EFI[self.firmware]
            args += [
                *extra,
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_copy}",
            ]  # fmt: skip
        return [*args, *self.extra_args]

    def start(self) -> None:
        """Start the guest; returns at once. :attr:`started_at` is set just before the spawn."""
        if self._proc is not None and self._proc.poll() is None:
            raise LabError("guest already running")
        emulator, code, variables, _ = _EFI.get(self.firmware, (QEMU, None, None, ()))
        if shutil.which(emulator) is None:
            raise LabError(f"{emulator} is not installed (Debian: qemu-system-x86 / qemu-system-arm)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if code is not None and variables is not None:
            for path in (code, variables):
                if not path.is_file():
                    raise LabError(f"{path} is missing (Debian: ovmf / qemu-efi-aarch64)")
            # Each guest gets its own writable variable store; the boot order EDK2 writes there
            # must not leak between tests.
            shutil.copyfile(variables, self.vars_copy)
        self.serial_log.write_bytes(b"")
        with self.stderr_log.open("wb") as stderr:
            self.started_at = time.monotonic()
            self._proc = spawn_in_netns(self.netns, self.argv(), stderr=stderr)

    @property
    def pid(self) -> int | None:
        """QEMU's PID while it is (or was last) running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while QEMU has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited (0 after the payload powered off)."""
        return self._proc.poll() if self._proc is not None else None

    def serial_text(self) -> str:
        """Everything the guest printed on its serial port so far, without escape sequences.

        SeaBIOS's sga and iPXE position the cursor between words, so a marker is only found
        in the text once the sequences are gone.
        """
        try:
            raw = self.serial_log.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return _ESCAPES.sub("", raw)

    def wait_for(self, marker: str | re.Pattern[str], timeout: float) -> float:
        """Wait until ``marker`` (a substring or a regex) appears on the serial console.

        Returns the seconds since :meth:`start`. Raises LabError with the console's tail when
        the time runs out or QEMU exits first, so a failed boot explains itself in the test log.
        """
        if self.started_at is None:
            raise LabError("guest not started")
        pattern = marker if isinstance(marker, re.Pattern) else re.compile(re.escape(marker))
        deadline = time.monotonic() + timeout
        while True:
            if pattern.search(self.serial_text()):
                return time.monotonic() - self.started_at
            if not self.running:
                # One more read: QEMU may have flushed the marker right before exiting.
                if pattern.search(self.serial_text()):
                    return time.monotonic() - self.started_at
                raise LabError(
                    f"QEMU exited ({self.returncode}) before {pattern.pattern!r}; "
                    f"stderr: {self._stderr_tail()}; console tail:\n{self.console_tail()}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"{pattern.pattern!r} not seen within {timeout:.0f} s; "
                    f"console tail:\n{self.console_tail()}"
                )
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (the payload powers off); return its status."""
        if self._proc is None:
            raise LabError("guest not started")
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"QEMU still running after {timeout:.0f} s") from None

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of the serial console, with escape sequences stripped."""
        return "\n".join(self.serial_text().splitlines()[-lines:])

    def _stderr_tail(self) -> str:
        try:
            return self.stderr_log.read_text(errors="replace").strip()[-1000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        """Stop QEMU by its PID (SIGTERM, then SIGKILL); safe to call when already gone."""
        if self._proc is None:
            return None
        return stop_process(self._proc)
