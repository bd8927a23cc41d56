"""What the demo payload is: its files, console markers, kernel modules and kernel arguments.

The vocabulary every other module of :mod:`bootbox.assets.demo` shares, and what callers outside
it (the appliance, the lab, the tests) read: :class:`DemoAssets` and the markers /init prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootbox.errors import BootboxError

__all__ = [
    "ARCH_CMDLINE",
    "ARCH_MODULES",
    "DEFAULT_CMDLINE",
    "INITRD_NAME",
    "KERNEL_NAME",
    "MANIFEST_NAME",
    "MARKER_FAIL",
    "MARKER_OK",
    "MARKER_START",
    "MODULES",
    "DemoAssets",
    "DemoError",
]

MODULES: tuple[str, ...] = ("e1000", "e1000e", "virtio_net", "virtio_pci", "efivarfs")
"""NIC drivers in the initramfs: QEMU's e1000 (pc), e1000e (q35's default) and virtio-net; and
efivarfs, through which /init reads the SecureBoot variable it reports."""
ARCH_MODULES: dict[str, tuple[str, ...]] = {"amd64": MODULES, "arm64": ("virtio_net", "virtio_pci", "efivarfs")}
"""Modules per Debian architecture: the arm64 ``virt`` machine has only virtio NICs."""
ARCH_CMDLINE: dict[str, str] = {"arm64": "console=ttyAMA0 quiet panic=-1"}
"""Kernel arguments where DEFAULT_CMDLINE's serial console is wrong (``virt``'s PL011 UART)."""

MARKER_START = "BOOTBOX-DEMO: init started"
MARKER_OK = "BOOTBOX-DEMO: reported in"
MARKER_FAIL = "BOOTBOX-DEMO: callback failed"

DEFAULT_CMDLINE = "console=ttyS0,115200n8 quiet panic=-1"
"""Serial console for the lab's logs; ``quiet`` because every console byte is slow under TCG;
``panic=-1`` so a broken payload reboots at once, which ``qemu -no-reboot`` turns into an exit."""

KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "demo.json"


class DemoError(BootboxError):
    """The demo assets could not be built; the message says which tool or file is missing."""


@dataclass(frozen=True)
class DemoAssets:
    """A bootable demo payload.

    :ivar kernel: the Linux kernel image (bzImage with EFI stub).
    :ivar initrd: the gzip'd cpio initramfs.
    :ivar kernel_version: ``uname -r`` of that kernel, e.g. ``6.1.0-28-amd64``.
    :ivar cmdline: suggested kernel arguments, without the MAC and callback parts.
    """

    kernel: Path
    initrd: Path
    kernel_version: str
    cmdline: str

    def kernel_args(self, callback_url: str, mac: str | None = None) -> str:
        """The full kernel command line for one boot.

        ``initrd=`` names the initrd for EFI boots: iPXE before 2021 hands the initrd to Linux's
        EFI stub only through a file that the stub opens by that name. BIOS boots ignore it.
        Without ``mac`` the iPXE variable ``${netX/mac}`` is used, i.e. the NIC iPXE booted from.
        """
        if " " in callback_url:
            raise ValueError("the callback URL must not contain spaces")
        mac_arg = mac if mac is not None else "${netX/mac}"
        return (
            f"initrd={self.initrd.name} {self.cmdline} "
            f"bootbox.mac={mac_arg} bootbox.callback={callback_url}"
        )

    def ipxe_script(self, base_url: str, callback_url: str) -> str:
        """An iPXE script that boots these assets from ``base_url``/<file name>."""
        base = base_url.rstrip("/")
        return (
            "#!ipxe\n"
            f"kernel {base}/{self.kernel.name} {self.kernel_args(callback_url)}\n"
            f"initrd {base}/{self.initrd.name}\n"
            "boot\n"
        )
