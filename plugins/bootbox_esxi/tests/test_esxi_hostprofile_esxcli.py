"""The boot-module path: an ``esxi`` host profile rendered as an ``esxcli``/``vim-cmd`` script.

Golden test of the whole script for a profile with every setting, checks per setting, a syntax
check by ESXi's shell (busybox ``sh -n``), and a run of the script by busybox in a private mount
namespace (its own /etc/shadow, /tmp and /var/log) against a real HTTP server: the steps whose
tools exist only on ESXi fail with exit 127 and say so, root's password (a SHA-512 hash written
into /etc/shadow) changes on the first run and complies on the second, and the report reaches
the server. No ESXi host ran it: the esxcli output formats the checks read are from VMware's
documentation and community scripts, not verified here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bootbox import sha512_crypt
from bootbox_esxi.hostprofile import esxcli
from bootbox_esxi.tests.test_esxi_hostprofile_model import parse
from tests.support.lab_fixtures import lab_unavailable

GOLDEN = Path(__file__).with_name("golden") / "hostprofile-esxcli.sh"
HASHES = {"root": sha512_crypt("Root-1", "goldensaltroot00"), "ops": sha512_crypt("Ops-1", "goldensaltops000")}
REPORT_URL = "http://198.18.0.2:8080/boot/esxi/hosts/525400e50c01/KEY/hostprofile-steps"


def script() -> str:
    return esxcli.render(parse(), hashes=HASHES, report_url=REPORT_URL)


def test_the_script_matches_its_golden_copy() -> None:
    if os.environ.get("BOOTBOX_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(script())
    assert script() == GOLDEN.read_text(), "the rendered script changed: review it, then BOOTBOX_UPDATE_GOLDEN=1"


def step(name: str) -> esxcli.Step:
    return next(s for s in esxcli.steps(parse(), HASHES) if s.name == name)


def test_every_setting_is_a_step_in_apply_order() -> None:
    names = [s.name for s in esxcli.steps(parse(), HASHES)]
    assert names == ["license", "vswitch:vSwitch1", "portgroup:storage", "portgroup:vm", "vmknic:storage", "dns", "ntp",
                     "service:TSM-SSH", "service:TSM", "service:ntpd", "firewall:sshServer", "firewall:CIMSLP",
                     "advanced:Syslog.global.logHost", "advanced:Net.TcpipHeapSize", "nfs:iso", "user:ops",
                     "root_password"]


@pytest.mark.parametrize(("name", "command"), [
    ("license", "vim-cmd vimsvc/license --set AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"),
    ("vswitch:vSwitch1", "esxcli network vswitch standard add -v vSwitch1 -P 128"),
    ("vswitch:vSwitch1", "esxcli network vswitch standard set -v vSwitch1 -m 9000"),
    ("vswitch:vSwitch1", "esxcli network vswitch standard uplink add -v vSwitch1 -u vmnic2"),
    ("portgroup:storage", "esxcli network vswitch standard portgroup set -p storage --vlan-id 20"),
    ("vmknic:storage", "esxcli network ip interface ipv4 set -i vmk1 -t static -I 198.18.1.5 -N 255.255.255.0"),
    ("dns", "esxcli network ip dns server add -s 198.18.0.53"),
    ("dns", "esxcli system hostname set --host esx01"),
    ("ntp", "esxcli system ntp set -s 198.18.0.1 -s pool.ntp.org"),
    ("service:ntpd", "esxcli system ntp set -e yes"),
    ("service:TSM-SSH", "vim-cmd hostsvc/start_ssh"),
    ("service:TSM", "vim-cmd hostsvc/disable_esx_shell"),
    ("firewall:CIMSLP", "esxcli network firewall ruleset set -r CIMSLP -e false"),
    ("advanced:Syslog.global.logHost", "esxcli system settings advanced set -o /Syslog/global/logHost -s udp://198.18.0.9:514"),
    ("advanced:Syslog.global.logHost", "esxcli system syslog reload"),
    ("advanced:Net.TcpipHeapSize", "esxcli system settings advanced set -o /Net/TcpipHeapSize -i 32"),
    ("nfs:iso", "esxcli storage nfs41 add -H 198.18.0.7 -s /export/iso -v iso -r"),
    ("user:ops", "esxcli system account add -i ops"),
    ("root_password", "s|^root:[^:]*:|root:$6$goldensaltroot00$"),
])
def test_each_setting_renders_its_command(name: str, command: str) -> None:
    assert any(command in line for line in step(name).apply), step(name).apply


def test_passwords_travel_only_as_hashes() -> None:
    text = script()
    assert "Root-1" not in text and "Ops-1" not in text
    assert HASHES["root"] in text and HASHES["ops"] in text


def _tools() -> Path:
    busybox = shutil.which("busybox")
    if busybox is None or shutil.which("unshare") is None or os.geteuid() != 0:
        lab_unavailable("the boot-module script test needs root, busybox and unshare")
    assert busybox is not None
    return Path(busybox)


def test_busybox_sh_accepts_the_script() -> None:
    busybox = _tools()
    done = subprocess.run([str(busybox), "sh", "-n", "-c", script()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class _Reports(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_busybox_runs_it_idempotently_and_reports_every_step(tmp_path: Path) -> None:
    busybox = _tools()
    bin_dir = tmp_path / "bin"  # ESXi's userland: busybox applets, and no esxcli/vim-cmd here
    bin_dir.mkdir()
    for applet in ("sh", "sed", "grep", "od", "tr", "tail", "cat", "wget"):
        (bin_dir / applet).symlink_to(busybox)
    etc = tmp_path / "etc"  # a whole /etc of its own: sed -i renames a new file over /etc/shadow
    etc.mkdir()
    shadow = etc / "shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\nops:!:19000:0:99999:7:::\n")
    for name in ("tmp", "log"):
        (tmp_path / name).mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reports)
    _Reports.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/steps"
        script_file = tmp_path / "log" / "run.sh"  # /tmp is covered last, and tmp_path lives under it
        script_file.write_text(esxcli.render(parse(), hashes=HASHES, report_url=url))
        inner = (f"mount --bind {etc} /etc && mount --bind {tmp_path / 'log'} /var/log && "
                 f"mount --bind {tmp_path / 'tmp'} /tmp && PATH={bin_dir} {busybox} sh /var/log/run.sh")
        for _ in range(2):
            done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
    first, second = (dict(line.split(" ", 1) for line in report.splitlines()) for report in _Reports.received)
    assert first["root_password"] == "changed" and second["root_password"] == "complied"
    assert first["vswitch:vSwitch1"].startswith("failed 127") and "not found" in first["vswitch:vSwitch1"]
    assert set(first) == {s.name for s in esxcli.steps(parse(), HASHES)}
    assert shadow.read_text().startswith(f"root:{HASHES['root']}:19000:")
    assert "root:" in Path("/etc/shadow").read_text() and HASHES["root"] not in Path("/etc/shadow").read_text()
    assert (tmp_path / "log" / "bootbox-hostprofile.log").read_text().count("root_password") == 2
