"""``boot.cfg`` (what mboot loads) and the PXELINUX config that starts ``mboot.c32`` on BIOS.

boot.cfg keys (facts §4): ``title``, ``prefix``, ``kernel``, ``kernelopt`` and ``modules``
(joined by `` --- ``) are documented by VMware; ``bootstate``, ``timeout``, ``build`` and
``updated`` are what the installer writes, in the order a 7.0.3 ISO has them. With an http
``prefix``, module names carry no leading ``/`` so they resolve under it (Foreman PR #1386).

* **stateless** (the default): ``kernelopt`` has no ``runweasel``, so ESXi runs from memory;
  ``modules=`` ends with the host's call-in module, an absolute ``http://`` URL of the appliance
  carrying this boot's key (``callin.py``): boot.cfg's ``prefix`` is prepended only to names
  that start with neither ``/`` nor ``http://`` (facts §4), and the prefix may be a cache's
  shared per-image tree, where a per-host file has no place;
* **install**: ``runweasel ks=<this boot's single-use answer URL>`` starts the scripted
  installer (no ``ks=`` when the host has no host profile: the installer then asks).

``updated=0`` and ``bootstate=0``: these matter only for choosing between two bootbanks on disk,
and a network-booted host has none (the installer writes its own boot.cfg to disk).
"""

from __future__ import annotations

from bootbox_esxi.image import IMGDB, Image


def _clean(value: str) -> str:
    """One boot.cfg line must stay one line."""
    return " ".join(value.split())


def kernelopt(image: Image, ks_url: str | None) -> str:
    """``runweasel`` in install mode (with ``ks=`` when the host has a kickstart), then the profile's own."""
    parts = []
    if image.mode == "install":
        parts = ["runweasel", f"ks={ks_url}"] if ks_url else ["runweasel"]
    if image.kernelopt:
        parts.append(image.kernelopt)
    return _clean(" ".join(parts))


def render_bootcfg(image: Image, *, mac: str, prefix: str, ks_url: str | None = None,
                   callin_url: str | None = None) -> str:
    """The boot.cfg for one host; ``prefix`` is the absolute http URL of its module tree and
    ``callin_url`` (stateless only) the absolute URL of its call-in module, loaded last."""
    modules = [m.name for m in image.modules] + [IMGDB]
    if callin_url and image.mode == "stateless":
        modules.append(callin_url)
    lines = [
        "bootstate=0",
        f"title={_clean(f'bootbox: ESXi image profile {image.profile} ({image.mode}) for {mac}')}",
        "timeout=5",
        f"prefix={prefix.rstrip('/')}",
        f"kernel={image.kernel.name}",
        f"kernelopt={kernelopt(image, ks_url)}",
        f"modules={' --- '.join(modules)}",
        f"build={_clean(image.build)}",
        "updated=0",
        "",
    ]
    return "\n".join(lines)


def render_pxelinux_cfg(*, mboot_c32_url: str, bootcfg_url: str) -> str:
    """PXELINUX config for BIOS hosts: run mboot.c32 on this host's boot.cfg.

    ``IPAPPEND 2`` adds ``BOOTIF=01-<mac>``: mboot.c32 needs it to know the boot NIC when its
    PXE stack is iPXE rather than the ROM's (RackHD found the same, on-http PR #231).
    """
    return "\n".join(
        [
            "DEFAULT esxi",
            "PROMPT 0",
            "TIMEOUT 1",
            "LABEL esxi",
            f"  KERNEL {mboot_c32_url}",
            f"  APPEND -c {bootcfg_url}",
            "  IPAPPEND 2",
            "",
        ]
    )
