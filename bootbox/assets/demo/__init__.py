"""The demo boot payload: a Debian kernel plus a tiny busybox initramfs that reports in.

A newcomer needs *something* to network-boot before they have images of their own, and the test
suite needs a payload whose success is visible from outside the VM. This package builds both from
Debian packages:

* the kernel comes from Debian's ``linux-image-<version>-amd64`` (``apt-get download`` +
  ``dpkg -x``), or from an installed ``/boot/vmlinuz-*`` when apt cannot fetch it;
* the initramfs (gzip'd cpio "newc", written here, not by the ``cpio`` tool) holds busybox-static,
  the e1000/e1000e/virtio_net/virtio_pci modules with their dependencies, and an ``/init`` that
  brings up the NIC named on the kernel command line (``bootbox.mac=`` or ``BOOTIF=``), runs
  ``udhcpc``, POSTs ``mac=..&ip=..&boot_id=..&kernel=..`` to ``bootbox.callback=<url>``, prints
  :data:`MARKER_OK` or :data:`MARKER_FAIL` on the console and powers off.

Everything is cached and the build is reproducible (fixed mtimes, sorted entries), so
:func:`build_demo_assets` returns at once when the result already exists.

One module per job, each importing only those before it:

* ``payload``   what the payload is: :class:`DemoAssets`, :class:`DemoError`, markers, modules
* ``cpio``      the cpio "newc" writer
* ``kmod``      kernel-module dependencies: modules.dep, or one synthesized from modinfo
* ``scripts``   ``/init`` and the udhcpc hook, shipped as the files in ``scripts/``
* ``kernel``    Debian's kernel package (through :mod:`bootbox.assets.debian`), trimmed and cached
* ``busybox``   a static busybox and its applet list
* ``initramfs`` the archive's entries
* ``build``     :func:`build_demo_assets`: the cached, reproducible build
* ``cli``       ``python -m bootbox.assets.demo`` (alias: ``python -m bootbox.demo``)
"""

from bootbox.assets.demo.build import build_demo_assets, default_cache_dir
from bootbox.assets.demo.cpio import CpioEntry, write_cpio
from bootbox.assets.demo.kmod import module_load_order, synthesize_modules_dep
from bootbox.assets.demo.payload import (
    DEFAULT_CMDLINE,
    MARKER_FAIL,
    MARKER_OK,
    MARKER_START,
    MODULES,
    DemoAssets,
    DemoError,
)
from bootbox.assets.demo.scripts import init_script

__all__ = [
    "DEFAULT_CMDLINE",
    "MARKER_FAIL",
    "MARKER_OK",
    "MARKER_START",
    "MODULES",
    "CpioEntry",
    "DemoAssets",
    "DemoError",
    "build_demo_assets",
    "default_cache_dir",
    "init_script",
    "module_load_order",
    "synthesize_modules_dep",
    "write_cpio",
]
