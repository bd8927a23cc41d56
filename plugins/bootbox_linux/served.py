"""The ``linux`` plugin's running part: its image service, image profiles, and image drift.

A ``linux`` profile may name a built image instead of a kernel and initrds::

    bootbox profile add debian --kind linux --spec '{"image": "debian-ssh"}'

and the rules then boot it like any other profile (``--item image=debian``; ``image build``
also makes a profile named after the image when there is none, so ``image=NAME`` works at
once). Such a host gets the image's kernel and live-boot initramfs, and a command line that
fetches the image's squashfs into RAM (``boot=live fetch=…``), reports in
(``bootbox.callback=``) and points cloud-init at the host's answers (``ds=nocloud-net;s=…``).

**Drift.** The asset names carry the image's digest (``<digest>-filesystem.squashfs``), so a
host fetches one consistent build even while the name is rebuilt, and each boot records the
digest in the plugin's store. When a rebuild points the name at a new digest, every host
running the old one is reported non-compliant (``bootbox host list``'s COMPLIANCE column, a
timeline step, ``bootbox image compliance``) until its next boot loads the new build: Auto
Deploy's image drift, for images that bootbox builds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bootbox import (
    BootContext,
    EventKind,
    Host,
    NotFound,
    PluginContext,
    Profile,
    ValidationError,
    asset_urls,
    ipxe_fetch,
)
from bootbox_linux.build import FILES, ROOTFS, Builder, BuildLimits
from bootbox_linux.config import LinuxConfig
from bootbox_linux.image import check_name, host_mirror
from bootbox_linux.images import ImageService, not_started
from bootbox_linux.imagestore import ImageStore

BOOTED = "booted"
CHECK_COMPLIANT, CHECK_DRIFT = "compliant", "non-compliant"
DEFAULT_CONSOLE = "console=tty0 console=ttyS0,115200n8"
"""An image profile's command line when its spec gives none (the last console is /dev/console)."""
DRIFT = "image_drift"


def _key(mac: str) -> str:
    return mac.replace(":", "")


def asset_name(digest: str, file: str) -> str:
    return f"{digest}-{file}"


def split_asset(name: str) -> tuple[str, str] | None:
    digest, _, file = name.partition("-")
    if len(digest) == 64 and file in FILES:
        return digest, file
    return None


class Served:
    """What exists between ``bootbox_startup`` and ``bootbox_shutdown``."""

    def __init__(self, context: PluginContext, config: LinuxConfig) -> None:
        self.context = context
        self.config = config
        root = config.images_dir or (context.data_dir / "images")
        self.store = ImageStore(root)
        builder = Builder(config.build_dir or (root / "tmp"),  # "tmp": backups leave it out
                          BuildLimits(timeout=config.build_timeout, compression_level=config.squashfs_level))
        self.images = ImageService(self.store, builder, config.mirror or host_mirror(),
                                   inject=lambda name: context.image_injections("linux", name, None),
                                   used_by=self.used_by, repointed=self.repointed, built=self.ensure_profile)

    # ------------------------------------------------------------------ profiles and rules

    def image_profiles(self, name: str) -> list[Profile]:
        return [p for p in self.context.profiles() if p.kind == "linux" and p.spec.get("image") == name]

    def used_by(self, name: str) -> dict[str, list[str]]:
        profiles = [p.name for p in self.image_profiles(name)]
        rules = sorted({rule for p in profiles for rule in self.context.rules_using("image", p)})
        return {"profiles": profiles, "rules": rules}

    def ensure_profile(self, name: str) -> str:
        """Make a profile named after the image if there is none (``rule add --item image=NAME``)."""
        try:
            existing = self.context.profile(name)
        except NotFound:
            self.context.put_profile(Profile(name=name, kind="linux", spec={"image": name},
                                             description=f"Linux image {name} (bootbox image build)"))
            return "created"
        if existing.kind == "linux" and existing.spec.get("image") == name:
            return "exists"
        return "taken"

    # ------------------------------------------------------------------ booting

    def current(self, name: str) -> str:
        return str(self.store.ref(name)["digest"])

    def booted(self, host: Host, profile: Profile, digest: str) -> None:
        """Record the digest this boot loads; a host that boots the current build is compliant."""
        name = profile.spec["image"]
        self.context.store.put(BOOTED, _key(host.mac), {"mac": host.mac, "image": name, "profile": profile.name,
                                                         "digest": digest, "time": time.time()})
        self.context.record(host.mac, EventKind.STATE, f"linux: boots image {name} (digest {digest[:12]})",
                            image=name, digest=digest)
        self.context.report_check(host.mac, CHECK_COMPLIANT, f"runs image {name} {digest[:12]}")

    def repointed(self, name: str, old: str, new: str) -> None:
        """A rebuild changed the image: hosts running the old build drift until they reboot."""
        for doc in self.context.store.all(BOOTED).values():
            if doc.get("image") != name or doc.get("digest") != old:
                continue
            message = (f"image {name} was rebuilt since this host booted (digest {old[:12]} -> {new[:12]}); "
                       "reboot it to load the new build")
            self.context.report_check(doc["mac"], CHECK_DRIFT, message)
            self.context.record(doc["mac"], EventKind.STATE, f"linux: {message}", image=name, digest=new)

    def compliance(self) -> list[dict[str, Any]]:
        """Every host that booted an image: the digest it runs against the image's current one."""
        rows = []
        for doc in self.context.store.all(BOOTED).values():
            try:
                current = self.current(doc["image"])
            except NotFound:
                current = ""
            rows.append({**doc, "current": current, "compliant": current == doc["digest"]})
        return sorted(rows, key=lambda r: r["mac"])

    def asset(self, profile: Profile, name: str) -> Path | None:
        """A file of the image a profile names, by digest: the current build or a previous one
        (a host that fetched its kernel just before a rebuild still gets a matching root)."""
        split = split_asset(name)
        if split is None:
            return None
        digest, file = split
        try:
            ref = self.store.ref(profile.spec["image"])
        except NotFound:  # removed since the host got its script
            return None
        if digest != ref["digest"] and digest not in ref.get("previous", []):
            return None
        path = self.store.object_dir(digest) / file
        return path if path.is_file() else None


_served: Served | None = None
_config = LinuxConfig()


def configure(config: LinuxConfig) -> None:
    global _config
    _config = config


def start(context: PluginContext) -> Served:
    global _served
    _served = Served(context, _config)
    return _served


def stop() -> None:
    global _served
    _served = None


def served() -> Served:
    if _served is None:
        raise not_started()
    return _served


def validate_image_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(spec) - {"image", "cmdline"}
    if unknown:
        field = sorted(unknown)[0]
        hint = "; a profile names an image or a kernel, not both" if field in ("kernel", "initrd") else ""
        raise ValidationError(f"spec.{field}", f"unknown field for an image profile; known: image, cmdline{hint}")
    name = check_name(spec["image"], "spec.image")
    if _served is not None:
        try:
            _served.store.ref(name)
        except NotFound:
            raise ValidationError("spec.image", f"no Linux image named {name!r} is built (bootbox image build "
                                                f"{name} --suite bookworm --package …)") from None
    cmdline = spec.get("cmdline", "")
    if not isinstance(cmdline, str) or "\n" in cmdline:
        raise ValidationError("spec.cmdline", "expected a single-line string")
    return {"image": name, "cmdline": cmdline.strip()}


def image_cmdline(host: Host, profile: Profile, boot: BootContext, squashfs_url: str) -> list[str]:
    """The kernel arguments of an image boot: live-boot fetches the root into RAM; the host
    reports in; cloud-init reads this boot's answers (when the host has a host profile)."""
    args = ["boot=live", f"fetch={squashfs_url}", "ip=dhcp", f"BOOTIF=01-{host.mac.replace(':', '-')}",
            f"bootbox.mac={host.mac}", f"bootbox.callback={boot.callback_url}"]
    answers = boot.answer_url("")
    if answers:
        args.append(f"ds=nocloud-net;s={answers}")
    return args + (profile.spec.get("cmdline") or DEFAULT_CONSOLE).split()


def image_urls(served_: Served, boot: BootContext, digest: str, file: str) -> list[str]:
    """Where a host fetches one file of an image, in the order to try: its group's caches
    (``[groups.NAME] cache_urls``, content-addressed ``/boot/blobs/<sha256>/…`` URLs), then the
    appliance; just the appliance for a host without caches (docs/caching.md).

    iPXE tries every URL of the kernel and the initrd in turn. live-boot's ``fetch=`` takes one
    URL, so the root image comes from the first entry alone: the group's first cache when it
    has one (the big file is the one worth caching), with no fallback if that cache is down."""
    return asset_urls(boot, asset_name(digest, file), served_.store.object_dir(digest) / file)


def image_script(host: Host, profile: Profile, boot: BootContext) -> str:
    served_ = served()
    name = profile.spec["image"]
    try:
        digest = served_.current(name)
    except NotFound:
        return "\n".join([
            "#!ipxe", f"echo bootbox: profile {profile.name} names Linux image {name}, which is not built",
            "sleep 30", f"chain --replace --autofree {boot.script_url}", ""])
    kernel, initrd, rootfs = (image_urls(served_, boot, digest, f) for f in FILES)
    args = " ".join(["initrd=initrd.img", *image_cmdline(host, profile, boot, rootfs[0])])
    served_.booted(host, profile, digest)
    return "\n".join([
        "#!ipxe",
        f"echo bootbox: {host.mac} boots profile {profile.name} (Linux image {name} {digest[:12]})",
        ipxe_fetch("kernel --name kernel", kernel, args) + " || goto failed",
        ipxe_fetch("initrd --name initrd.img", initrd) + " || goto failed",
        "boot || goto failed",
        ":failed",
        "echo bootbox: loading the boot files failed; retrying in 10 seconds",
        "sleep 10",
        f"chain --replace --autofree {boot.script_url}",
        "",
    ])


def image_grub(host: Host, profile: Profile, boot: BootContext) -> tuple[str, str, list[str], list[str]]:
    """``(title, kernel path, [initrd path], args)`` for ``grub_linux_config``."""
    served_ = served()
    name = profile.spec["image"]
    try:
        digest = served_.current(name)
    except NotFound:
        raise ValidationError("spec.image", f"profile {profile.name} names Linux image {name}, which is not "
                                            "built") from None
    kernel, initrd, _ = (asset_name(digest, f) for f in FILES)
    rootfs = image_urls(served_, boot, digest, ROOTFS)[0]  # live-boot fetches it, not GRUB: caches apply
    served_.booted(host, profile, digest)
    return (f"bootbox: {host.mac} boots Linux image {name} with GRUB", boot.asset_path(kernel),
            [boot.asset_path(initrd)], image_cmdline(host, profile, boot, rootfs))
