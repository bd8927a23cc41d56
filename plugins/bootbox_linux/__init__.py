"""The ``linux`` boot kind: a kernel, initrds and a command line, booted by iPXE over HTTP.

Shipped with bootbox but installed exactly as a third-party plugin is: through the ``bootbox``
entry-point group, importing nothing but ``bootbox``'s public API.

A ``linux`` profile's spec::

    kernel:  absolute path on the appliance, or an http(s) URL iPXE fetches directly
    initrd:  a list of the same (may be empty)
    cmdline: the kernel command line; ``{callback}``, ``{mac}``, ``{base_url}``, ``{up}`` and
             ``{answers}`` are replaced per host (``{callback}`` is where the booted system reports
             in, with this boot's up token; ``{up}`` the same with Auto Deploy's status codes;
             both tokens are new for every boot, docs/security.md; ``{answers}`` the URL of this
             boot's answer files, each served once, ending in ``/``, e.g.
             ``ds=nocloud-net;s={answers}`` or ``url={answers}preseed.cfg``)

Or it names a Linux image built from a Debian archive (``bootbox image build``)::

    image:   the image's name; the host boots its kernel and live-boot initramfs, and fetches its
             root into RAM (docs/linux-images.md, plugins/bootbox_linux/served.py)
    cmdline: extra kernel arguments (default: consoles on tty0 and ttyS0)

It also renders two answer kinds (host-profile kinds): ``cloud-init`` (templates ``user-data``
and optionally ``meta-data``, ``network-config``, ``vendor-data``; a missing ``meta-data`` is
written with this boot's ``instance-id`` so cloud-init runs again on every stateless boot) and
``preseed`` (template ``preseed.cfg``, Debian's installer).

Local files are served by bootbox's HTTP server under names ``kernel`` and ``initrd-N``, with
Range and ETag support; URLs are left to iPXE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from bootbox import (AnswerEnv, BootContext, Host, HostProfile, Profile, ValidationError, asset_urls, grub_linux_config,
                     hookimpl, ipxe_fetch)

from bootbox_linux import served as _served
from bootbox_linux.config import parse_config as _parse_config

__version__ = "0.1.0"

KIND = "linux"


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _check_source(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "expected a file path or an http(s) URL")
    value = value.strip()
    if _is_url(value):
        return value
    path = Path(value)
    if not path.is_absolute():
        raise ValidationError(field, f"{value!r} must be an absolute path on the appliance (or an http URL)")
    if not path.is_file():
        raise ValidationError(field, f"{value} does not exist or is not a regular file")
    return str(path)


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a ``linux`` spec, naming the field that is wrong."""
    if "image" in spec:
        return _served.validate_image_spec(spec)
    unknown = set(spec) - {"kernel", "initrd", "cmdline"}
    if unknown:
        raise ValidationError(f"spec.{sorted(unknown)[0]}", "unknown field; known: kernel, initrd, cmdline")
    if "kernel" not in spec:
        raise ValidationError("spec.kernel", "required")
    initrd = spec.get("initrd", [])
    if isinstance(initrd, str):
        initrd = [initrd]
    if not isinstance(initrd, list):
        raise ValidationError("spec.initrd", "expected a list of file paths or URLs")
    cmdline = spec.get("cmdline", "")
    if not isinstance(cmdline, str) or "\n" in cmdline:
        raise ValidationError("spec.cmdline", "expected a single-line string")
    return {
        "kernel": _check_source("spec.kernel", spec["kernel"]),
        "initrd": [_check_source(f"spec.initrd[{i}]", item) for i, item in enumerate(initrd)],
        "cmdline": cmdline.strip(),
    }


class _KeepUnknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_script(host: Host, profile: Profile, boot: BootContext) -> str:
    """The iPXE script: fetch kernel and initrds, boot, and on any failure retry the script."""
    spec = profile.spec
    if "image" in spec:
        return _served.image_script(host, profile, boot)

    def urls(source: str, asset: str) -> list[str]:
        """A URL as given; a local file from its group's caches, then here (docs/caching.md)."""
        return [source] if _is_url(source) else asset_urls(boot, asset, source)

    initrd_names = [f"initrd-{i}" for i in range(len(spec.get("initrd", [])))]
    cmdline = spec.get("cmdline", "").format_map(
        _KeepUnknown(callback=boot.callback_url, mac=host.mac, base_url=boot.base_url, up=boot.up_url,
                     answers=boot.answer_url(""))
    )
    # EFI-stub kernels find their initrds by name on the command line; BIOS kernels ignore it.
    args = " ".join([f"initrd={name}" for name in initrd_names] + ([cmdline] if cmdline else []))
    lines = [
        "#!ipxe",
        f"echo bootbox: {host.mac} boots profile {profile.name} ({KIND})",
        ipxe_fetch("kernel --name kernel", urls(spec["kernel"], "kernel"), args) + " || goto failed",
    ]
    for name, source in zip(initrd_names, spec.get("initrd", [])):
        lines.append(ipxe_fetch(f"initrd --name {name}", urls(source, name)) + " || goto failed")
    lines += [
        "boot || goto failed",
        ":failed",
        "echo bootbox: loading the boot files failed; retrying in 10 seconds",
        "sleep 10",
        f"chain --replace --autofree {boot.script_url}",
        "",
    ]
    return "\n".join(lines)


def render_grub(host: Host, profile: Profile, boot: BootContext) -> str:
    """The GRUB config (the ``grub`` loader: ARM64, Secure Boot): kernel and initrds from the boot
    server over the protocol GRUB came in on. ``initrd=`` names are left out: GRUB hands the
    initrd to the kernel itself, and an EFI stub given a name would look for a file that is not
    there. GRUB cannot fetch the http(s) URLs iPXE can, so a profile naming one raises (the
    host's timeline then says why it waits)."""
    spec = profile.spec
    if "image" in spec:
        return grub_linux_config(*_served.image_grub(host, profile, boot))
    urls = [source for source in [spec["kernel"], *spec.get("initrd", [])] if _is_url(source)]
    if urls:
        raise ValidationError("spec", f"profile {profile.name} names {urls[0]}, which GRUB cannot fetch; "
                                      "give a file on the appliance")
    cmdline = spec.get("cmdline", "").format_map(
        _KeepUnknown(callback=boot.callback_url, mac=host.mac, base_url=boot.base_url, up=boot.up_url,
                     answers=boot.answer_url(""))
    )
    initrds = [boot.asset_path(f"initrd-{i}") for i in range(len(spec.get("initrd", [])))]
    return grub_linux_config(f"bootbox: {host.mac} boots profile {profile.name} ({KIND}) with GRUB",
                             boot.asset_path("kernel"), initrds, cmdline.split())


@hookimpl
def bootbox_grub_config(host: Host, profile: Profile, boot: BootContext) -> str | None:
    if profile.kind != KIND:
        return None
    return render_grub(host, profile, boot)


@hookimpl
def bootbox_configure(settings: Any) -> None:
    _served.configure(_parse_config(settings.plugins.get(KIND)))


@hookimpl
def bootbox_startup(context: Any) -> None:
    _served.start(context)


@hookimpl
def bootbox_shutdown() -> None:
    _served.stop()


@hookimpl
def bootbox_register_routes(register: Callable[..., None]) -> None:
    from bootbox_linux.api import blueprint

    register(blueprint())


@hookimpl
def bootbox_register_commands(register: Callable[..., None]) -> None:
    from bootbox_linux.cli import image_app

    register(image_app, name="image")


@hookimpl
def bootbox_register_profile_kinds(register: Callable[..., None]) -> None:
    register(KIND, validate=validate_spec, description="Linux kernel + initrd + command line, over HTTP")


DEMO_REPORT_ARGS = "bootbox.mac={mac} bootbox.callback={callback}"
"""What bootbox's demo initramfs reads from the kernel command line, filled in per host above."""


@hookimpl
def bootbox_demo_profile(name: str, kernel: Path, initrd: Path, cmdline: str, description: str) -> Profile:
    """The demo payload is a kernel + initrd: a ``linux`` profile boots it, reporting in."""
    return Profile(name=name, kind=KIND, description=description,
                   spec={"kernel": str(kernel), "initrd": [str(initrd)], "cmdline": f"{cmdline} {DEMO_REPORT_ARGS}".strip()})


@hookimpl
def bootbox_boot_script(host: Host, profile: Profile, boot: BootContext) -> str | None:
    if profile.kind != KIND:
        return None
    return render_script(host, profile, boot)


@hookimpl
def bootbox_profile_asset(profile: Profile, name: str) -> Path | None:
    if profile.kind != KIND:
        return None
    spec = profile.spec
    if "image" in spec:
        return _served.served().asset(profile, name)
    if name == "kernel":
        source = spec.get("kernel", "")
    elif name.startswith("initrd-") and name[7:].isdigit() and int(name[7:]) < len(spec.get("initrd", [])):
        source = spec["initrd"][int(name[7:])]
    else:
        return None
    return None if _is_url(source) else Path(source)


# ------------------------------------------------------------------------------ answer files

CLOUD_INIT = "cloud-init"
PRESEED = "preseed"
_CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config", "vendor-data")


@hookimpl
def bootbox_register_answer_kinds(register: Callable[..., None]) -> None:
    register(CLOUD_INIT, files=("user-data",), description="cloud-init NoCloud: user-data (+ meta-data, network-config)")
    register(PRESEED, files=("preseed.cfg",), description="Debian installer preseed")


def _check_cloud_config(name: str, text: str) -> None:
    """A ``#cloud-config`` document must be YAML mapping, or cloud-init ignores it silently."""
    if not text.startswith("#cloud-config"):
        return
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"templates.{name}", f"renders to invalid YAML: {exc}") from None
    if doc is not None and not isinstance(doc, dict):
        raise ValidationError(f"templates.{name}", "a #cloud-config document must be a mapping")


def render_cloud_init(host: Host, profile: HostProfile, answers: Mapping[str, Any], env: AnswerEnv) -> dict[str, str]:
    """``user-data`` and ``meta-data`` (and the optional files the profile has) for NoCloud."""
    unknown = sorted(set(profile.templates) - set(_CLOUD_INIT_FILES))
    if unknown:
        raise ValidationError(f"templates.{unknown[0]}", f"cloud-init reads only {', '.join(_CLOUD_INIT_FILES)}")
    files = {name: env.render(name) for name in profile.templates}
    _check_cloud_config("user-data", files["user-data"])
    if "meta-data" not in files:
        hostname = answers.get("hostname") or host.attrs.get("hostname") or "host-" + host.mac.replace(":", "")
        files["meta-data"] = yaml.safe_dump({"instance-id": env.instance_id, "local-hostname": str(hostname)},
                                            sort_keys=False)
    return files


@hookimpl
def bootbox_render_answer_file(kind: str, host: Host, profile: HostProfile, answers: Mapping[str, Any],
                               env: AnswerEnv) -> dict[str, str] | None:
    if kind == CLOUD_INIT:
        return render_cloud_init(host, profile, answers, env)
    if kind == PRESEED:
        extra = sorted(set(profile.templates) - {"preseed.cfg"})
        if extra:
            raise ValidationError(f"templates.{extra[0]}", "a preseed host profile has one template, preseed.cfg")
        return {"preseed.cfg": env.render("preseed.cfg")}
    return None
