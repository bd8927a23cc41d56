"""The iPXE scripts that hand a host to VMware's loader with its own boot.cfg.

* **UEFI**: ``chain mboot.efi -c <boot.cfg URL>``. mboot.efi then fetches boot.cfg and every
  module over HTTP through iPXE (VMware: "iPXE is resident and the system has HTTP capability").
* **BIOS**, ``bios = "pxelinux"`` (default): mboot.c32 is a COM32 module, which needs a SYSLINUX
  environment. iPXE sets DHCP options 209 (config file) and 210 (path prefix) to this host's
  PXELINUX config URL and module tree and chains ``pxelinux.0``, which reads its config over HTTP
  through iPXE's PXE file API and runs ``mboot.c32 -c <boot.cfg URL>``. This is VMware's
  documented iPXE + HTTP route for BIOS hosts (with SYSLINUX 3.86, which mboot.c32 is built for).
* **BIOS**, ``bios = "com32"``: ``chain mboot.c32 -c … BOOTIF=01-<mac>`` directly, for iPXE
  builds with COMBOOT support (RackHD booted ESXi 5.5/6.0 this way, on-http PR #231).

With ``cache_urls`` configured, the script first asks each cache (in an order rotated per host,
so hosts spread over the caches) for ``/boot/esxi/health`` through the cache, and tells the
appliance which one answered (``?via=N``), so boot.cfg's ``prefix`` points at a live cache; when
none answers, modules come from the appliance itself, as Auto Deploy falls back to its origin.

Every failure path retries the host's own script rather than exiting (an ``exit 0`` drops UEFI
into its setup screen).
"""

from __future__ import annotations

from dataclasses import dataclass

from bootbox import BootContext


def quote(value: str) -> str:
    """Make text safe to ``echo`` in iPXE (no setting expansion, one line)."""
    return "".join(ch if ch.isprintable() and ch not in "${}" else "?" for ch in value)


@dataclass(frozen=True)
class ScriptInputs:
    """What a script needs besides the host's BootContext."""

    profile: str
    mode: str
    firmware: str
    """``uefi`` or ``bios``."""
    bootcfg_url: str
    pxelinux_cfg_url: str
    cache_urls: tuple[str, ...] = ()
    bios: str = "pxelinux"


def cache_order(mac: str, count: int) -> list[int]:
    """Which cache a host tries first, second, …: rotated by the MAC so load spreads."""
    if count == 0:
        return []
    start = int(mac.replace(":", ""), 16) % count
    return [(start + i) % count for i in range(count)]


def render(boot: BootContext, inputs: ScriptInputs) -> str:
    """The host's ESXi boot script (see the module docstring for the three variants)."""
    label = "UEFI" if inputs.firmware == "uefi" else "BIOS"
    lines = ["#!ipxe", f"echo bootbox: {boot.mac} boots ESXi image profile {quote(inputs.profile)} "
                       f"({inputs.mode}, {label})"]
    if inputs.cache_urls:
        lines.append("clear via ||")  # a retry must not reuse the last attempt's choice
        for n in cache_order(boot.mac, len(inputs.cache_urls)):
            lines.append(f"imgfetch --name probe {inputs.cache_urls[n]}/boot/esxi/health "
                         f"&& set via ?via={n} && goto load ||")
        lines += ["echo bootbox: no cache answered; loading the modules from the appliance", ":load",
                  "imgfree probe ||"]
    via = "${via}" if inputs.cache_urls else ""
    if inputs.firmware == "uefi":
        lines.append(f"chain --autofree {boot.asset_url('mboot.efi')} -c {inputs.bootcfg_url}{via} || goto failed")
    elif inputs.bios == "com32":
        lines.append(f"chain --autofree {boot.asset_url('mboot.c32')} -c {inputs.bootcfg_url}{via} "
                     "BOOTIF=01-${netX/mac:hexhyp} || goto failed")
    else:
        lines += [
            f"set 209:string {inputs.pxelinux_cfg_url}{via}",
            f"set 210:string {boot.asset_url('')}",
            f"chain --autofree {boot.asset_url('pxelinux.0')} || goto failed",
        ]
    loader = "mboot.efi" if inputs.firmware == "uefi" else ("mboot.c32" if inputs.bios == "com32" else "pxelinux.0")
    lines += [
        ":failed",
        f"echo bootbox: starting {loader} failed; retrying in 10 seconds",
        "sleep 10",
        f"chain --replace --autofree {boot.script_url}",
        "",
    ]
    return "\n".join(lines)


def render_error(boot: BootContext, profile: str, reason: str, retry_seconds: int) -> str:
    """Shown when the profile cannot boot right now (a missing loader, a broken image)."""
    return "\n".join(
        [
            "#!ipxe",
            f"echo bootbox: {boot.mac} cannot boot ESXi image profile {quote(profile)}:",
            f"echo bootbox: {quote(reason)}",
            f"echo bootbox: fix it on the appliance; asking again in {retry_seconds} seconds",
            f"sleep {retry_seconds}",
            f"chain --replace --autofree {boot.script_url}",
            "",
        ]
    )
