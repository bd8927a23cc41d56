"""End to end: a QEMU client's iPXE fetches the ESXi script, boot.cfg and every module it lists.

Real firmware (SeaBIOS with its iPXE ROM; OVMF with EDK2's PXE, then bootbox's snponly.efi)
boots from ``bootbox serve`` on a lab segment, beside the site's own DHCP server. No real
mboot.efi / mboot.c32 exists here, so the loader bootbox serves is a stand-in written by this
test: an iPXE script (iPXE runs a chained file by its content) that does what mboot does
first — fetch this host's boot.cfg and then ``prefix/<kernel>`` and ``prefix/<module>`` for
every module boot.cfg lists, and the absolute URL of the last one, the host's call-in module.
The list comes from the boot.cfg bootbox serves this host (the stand-in asks a small helper
here, which reads it, as mboot would). The boot.cfg URL carries tokens of the boot, which mboot
gets on its command line; an iPXE script cannot read its own, so the helper asks bootbox for
the host's script again and takes the URL from it (that is a new boot, with new tokens, for
bootbox). The modules are fakes and boot nothing; the test asserts that every one was fetched,
from the host's own tree, and that the byte counts iPXE reports match the files.

BIOS uses ``bios = "com32"`` here, so iPXE chains the stand-in "mboot.c32" directly; the
``pxelinux`` route needs SYSLINUX, which is not installed in this environment (see docs/esxi.md).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bootbox.lab.netns import LabError
from bootbox_esxi.tests.esxi_builder import depot_files, driver, esx_base, write_bundle
from tests.support.e2e_bootbox import start_bootbox
from tests.support.lab_fixtures import BOOT_TIMEOUT, LabSegment, lab_unavailable, require_qemu, segment_fixture

__all__ = ["segment_fixture"]

HELPER_PORT = 8082
DONE = "ESXI-STANDIN-FETCHED-ALL"


class StandIn:
    """The helper the stand-in loader chains to: it turns the host's boot.cfg into imgfetches."""

    def __init__(self, lab: LabSegment, bootbox_url: str) -> None:
        self.served: dict[str, list[str]] = {}
        stand_in = self

        def get(url: str) -> str:
            return lab.net.call(lab.server, lambda: urllib.request.urlopen(url, timeout=10).read().decode())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                mac = query["mac"][0].replace("-", "").replace(":", "")
                script = get(f"{bootbox_url}/boot/hosts/{mac}/script.ipxe?platform={query['platform'][0]}")
                cfg_url = re.search(r" -c (\S+/boot\.cfg)", script).group(1)  # type: ignore[union-attr]
                cfg = dict(line.split("=", 1) for line in get(cfg_url).splitlines() if "=" in line)
                modules = [cfg["kernel"], *cfg["modules"].split(" --- ")]
                urls = [m if m.startswith("http://") else f"{cfg['prefix']}/{m}" for m in modules]
                names = [url.rsplit("/", 1)[1] for url in urls]
                stand_in.served[mac] = names
                lines = ["#!ipxe", f"imgfetch --name boot.cfg {cfg_url}"]
                lines += [f"imgfetch --name {name} {url}" for name, url in zip(names, urls)]
                lines += ["imgstat", f"echo {DONE}", "sleep 600", ""]
                body = "\n".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._httpd = lab.net.call(lab.server, lambda: ThreadingHTTPServer((lab.server.ip, HELPER_PORT), Handler))
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        lab.net.defer(self.close)
        self.url = f"http://{lab.server.ip}:{HELPER_PORT}"

    def loader(self) -> str:
        return (f"#!ipxe\necho mboot stand-in\n"
                f"chain {self.url}/standin?mac=${{netX/mac:hexhyp}}&platform=${{platform}}\n")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.parametrize("firmware", ["uefi", "bios"])
def test_qemu_ipxe_fetches_the_esxi_script_boot_cfg_and_every_module(segment: LabSegment, firmware: str) -> None:
    require_qemu()
    segment.start_site_dhcp()
    segment.start_ra()
    work = segment.workdir
    stand_in_file = work / "mboot-standin.ipxe"
    vibs = [esx_base(), driver("net-a"), driver("nvme-b")]
    bundle = write_bundle(work / "lab-depot.zip", depot_files(vibs))
    extra = (f'[plugins.esxi]\nbios = "com32"\n[plugins.esxi.loaders]\nefi = "{stand_in_file}"\n'
             f'c32 = "{stand_in_file}"\n')
    stand_in_file.write_text("#!ipxe\n")  # the config checks that loaders exist at start-up
    bootbox = start_bootbox(segment, extra_toml=extra)
    stand_in = StandIn(segment, bootbox.url)
    stand_in_file.write_text(stand_in.loader())
    assert "imported depot lab-depot: 3 VIBs" in bootbox.cli("depot", "add", str(bundle)).stdout
    bootbox.cli("profile", "add", "esxi-lab", "--kind", "esxi", "--spec",
                '{"vibs": ["esx-base", "net-a", "nvme-b"]}')
    bootbox.cli("rule", "add", "esxi", "--all-hosts", "--item", "image=esxi-lab")

    vm = segment.boot(firmware)  # type: ignore[arg-type]
    mac = vm.mac.replace(":", "")
    try:
        vm.wait_for(DONE, BOOT_TIMEOUT)
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(40)}")
    finally:
        vm.stop()

    names = stand_in.served[mac]
    assert names[0] == "b.b00" and names[-2:] == ["imgdb.tgz", "bbcallin.tgz"]
    assert "net_a.v00" in names and "nvme_b.v00" in names
    events = bootbox.events(vm.mac)
    fetched = [e["data"].get("file") for e in events if e["kind"] == "http.file"]
    loader = "mboot.efi" if firmware == "uefi" else "mboot.c32"
    assert fetched[0] == loader and "boot.cfg" in fetched
    assert [f for f in fetched if f in names] == names  # every module, in boot.cfg's order
    script = next(e for e in events if e["kind"] == "http.script")
    assert script["data"]["profile"] == "esxi-lab"
    # iPXE's imgstat lists each image with its size: compare with the files bootbox served.
    image = bootbox.json("host", "image", vm.mac)
    sizes = {m["name"]: m["size"] for m in image["modules"]}
    console = vm.serial_text()
    for name, size in sizes.items():
        assert re.search(rf"{re.escape(name)} : {size} bytes", console), (name, size, vm.console_tail(40))
    assert re.search(r"bbcallin\.tgz : [1-9][0-9]* bytes", console), vm.console_tail(40)
    assert image["firmware"] == firmware


PXELINUX = Path("/usr/lib/PXELINUX/lpxelinux.0")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")


@pytest.mark.qemu
@pytest.mark.netns
def test_qemu_bios_reaches_mboot_c32_through_pxelinux(segment: LabSegment) -> None:
    """The default BIOS route as far as it can go without VMware's mboot.c32.

    iPXE sets options 209/210 and chains Debian's lpxelinux.0 (SYSLINUX 6.04), which loads
    ldlinux.c32 and this host's pxelinux.cfg over HTTP and then asks for mboot.c32 with
    ``-c <boot.cfg URL>``. The mboot.c32 served is a fake, so SYSLINUX refuses to run it; what
    VMware's real one does next (fetch boot.cfg and the modules) is not exercised here.
    """
    require_qemu()
    if not (PXELINUX.is_file() and LDLINUX.is_file()):
        lab_unavailable("Debian's pxelinux and syslinux-common packages are not installed")
    segment.start_site_dhcp()
    segment.start_ra()
    work = segment.workdir
    fake_c32 = work / "mboot.c32"
    fake_c32.write_bytes(b"not a COM32 module")
    bundle = write_bundle(work / "lab-depot.zip", depot_files([esx_base()]))
    extra = (f'[plugins.esxi]\nbios = "pxelinux"\n[plugins.esxi.loaders]\nc32 = "{fake_c32}"\n'
             f'pxelinux = "{PXELINUX}"\nldlinux = "{LDLINUX}"\n')
    bootbox = start_bootbox(segment, extra_toml=extra)
    bootbox.cli("depot", "add", str(bundle))
    bootbox.cli("profile", "add", "esxi-lab", "--kind", "esxi", "--spec", '{"vibs": ["esx-base"]}')
    bootbox.cli("rule", "add", "esxi", "--all-hosts", "--item", "image=esxi-lab")
    vm = segment.boot("bios")
    try:
        bootbox.wait_for_event(vm.mac, "http.file", BOOT_TIMEOUT)
        deadline_events = _wait_for_file(bootbox, vm.mac, "mboot.c32")
    except (TimeoutError, LabError) as exc:
        pytest.fail(f"{exc}\nconsole:\n{vm.console_tail(60)}\nbootbox log:\n{bootbox.log_tail(40)}")
    finally:
        vm.stop()
    fetched = [e["data"].get("file") for e in deadline_events if e["kind"] == "http.file"]
    assert fetched[:4] == ["pxelinux.0", "ldlinux.c32", "pxelinux.cfg", "mboot.c32"], fetched


def _wait_for_file(bootbox: Any, mac: str, name: str, timeout: float = BOOT_TIMEOUT) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        events = bootbox.events(mac)
        if any(e["data"].get("file") == name for e in events if e["kind"] == "http.file"):
            return events  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mac} never fetched {name}")
        time.sleep(1)
