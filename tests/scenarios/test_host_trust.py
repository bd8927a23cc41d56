"""Issue 16's check on a real bridge: a host's secrets, report-in and records belong to that host.

Three namespaces on one bridge: the appliance (``bootbox serve``, proxyDHCP, TFTP, HTTP and DNS),
host B (its own MAC on its interface, an address leased by the site's DHCP) and an attacker with
another MAC and address. The kernel's neighbour table in the appliance's namespace is the only
evidence bootbox uses (bootbox.service.identity); nothing here fakes it. docs/security.md says
what this protects against and what it does not (a machine that takes both B's MAC and an
address on the same segment passes, as B would).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from bootbox.lab.netns import Member
from bootbox.net.dhcp.packet import DhcpPacket, build, parse
from tests.support.e2e_bootbox import HTTP_PORT, BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import LabSegment, require_tools, segment_fixture

__all__ = ["segment_fixture"]
pytestmark = pytest.mark.netns

SECRET = "api-key-of-b-7f3e"
DOMAIN = "lab.example"
ATTACKER_ADDR = "198.18.0.66/24"
PXE_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) ip addr add "$ip/${mask:-24}" dev "$interface" && echo "$ip" > "$0.lease" ;;
esac
"""


def _api(lab: LabSegment, bootbox: BootboxOnSegment, method: str, path: str, body: Any = None) -> Any:
    return bootbox.api(method, path, body)


def _curl(lab: LabSegment, who: Member, url: str, *args: str, source: str = "") -> tuple[int, str]:
    """``curl`` in ``who``'s namespace: (HTTP status, or -exit code for TFTP and errors; body)."""
    argv = ["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", *args]
    if source:
        argv += ["--interface", source]
    done = lab.net.run(who, [*argv, url], check=False, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    if url.startswith("tftp://"):
        return (200 if done.returncode == 0 else -done.returncode), body
    return int(code or 0), body


def _dig(lab: LabSegment, *query: str) -> str:
    return lab.net.run(lab.server, ["dig", f"@{lab.server.ip}", "+short", "+time=2", "+tries=1", *query],
                       timeout=20).stdout.strip()


def _pxe_discover(chaddr: str, requested: str) -> bool:
    """A PXE DHCPDISCOVER for ``chaddr`` (whatever the sender's own MAC), asking for ``requested``
    (option 50); True when the proxy's OFFER for it came back. Runs in a member's namespace."""
    mac = bytes.fromhex(chaddr.replace(":", ""))
    packet = DhcpPacket(op=1, xid=0x16B00B, chaddr=mac, flags=0x8000,
                        options={53: b"\x01", 60: PXE_CLASS, 93: b"\x00\x00", 50: socket.inet_aton(requested)})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")  # no default route in a member
        sock.bind(("0.0.0.0", 68))
        sock.settimeout(0.5)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            sock.sendto(build(packet), ("255.255.255.255", 67))
            try:
                while True:
                    reply = parse(sock.recv(4096))
                    if reply.op == 2 and reply.chaddr == mac and reply.options.get(60, b"").startswith(b"PXEClient"):
                        return True
            except (TimeoutError, socket.timeout, ValueError):
                continue
    return False


def _lease(lab: LabSegment, who: Member) -> str:
    """B's boot starts with DHCP: a lease from the site's DHCP server (busybox udhcpc), added to
    its interface, then the PXE exchange with bootbox from that interface."""
    script = lab.workdir / f"udhcpc-{who.role}.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    lab.net.run(who, ["busybox", "udhcpc", "-i", who.ifname, "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", str(script)])
    return Path(f"{script}.lease").read_text().strip()


def _configure(lab: LabSegment, bootbox: BootboxOnSegment, b_mac: str) -> None:
    kernel = lab.workdir / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    _api(lab, bootbox, "POST", "/profiles", {"name": "deb", "kind": "linux", "spec": {
        "kernel": str(kernel), "cmdline": "console=ttyS0 ds=nocloud-net;s={answers} cb={callback} up={up}"}})
    _api(lab, bootbox, "POST", "/hostprofiles", {
        "name": "web", "kind": "cloud-init",
        "inputs": [{"name": "api_key", "secret": True}, {"name": "hostname"}],
        "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\napi_key: {{ answers.api_key }}\n"}})
    for name, patterns in (("dell", ["vendor=Dell"]), ("everyone", [])):
        rule: dict[str, Any] = {"name": name, "items": {"image": "deb", "host_profile": "web", "group": name}}
        rule.update({"patterns": patterns} if patterns else {"all_hosts": True})
        _api(lab, bootbox, "POST", "/rules", rule)
    _api(lab, bootbox, "PATCH", f"/hosts/{b_mac}/answers", {"values": {"api_key": SECRET, "hostname": "b01"}})


def _urls(script: str) -> tuple[str, str, str]:
    """The answer directory, the /booted and the /up URL of one boot, from B's script."""
    answers = re.search(r";s=(http://\S+/answers/[\w-]+/)", script)
    callback = re.search(r" cb=(http://\S+)", script)
    up = re.search(r" up=(http://\S+)", script)
    assert answers and callback and up, script
    return answers.group(1), callback.group(1), up.group(1)


def _snapshot(lab: LabSegment, bootbox: BootboxOnSegment, mac: str) -> dict[str, Any]:
    host = _api(lab, bootbox, "GET", f"/hosts/{mac}")
    return {key: host[key] for key in ("state", "associations", "profile", "verified", "name", "boot_id", "adopted")}


def test_only_the_host_itself_gets_its_secrets_report_in_and_records(segment: LabSegment) -> None:
    require_tools("curl", "busybox", "dig", "dnsmasq")
    segment.start_site_dhcp()
    attacker = segment.net.add_namespace("attacker", ATTACKER_ADDR)
    b = segment.client
    server = segment.server.ip
    bootbox = start_bootbox(segment, extra_toml=(
        f'[dns]\nenabled = true\nbind_address = "{server}"\nport = 53\ndomain = "{DOMAIN}"\n'
        f'records = ["vcenter A 198.18.0.9"]\n'))
    _configure(segment, bootbox, b.mac)
    machex = b.mac.replace(":", "")
    base = f"http://{server}:{HTTP_PORT}"

    # B boots: DHCP (a site lease, bootbox's PXE offer), its script, GRUB config, answers.
    b_ip = _lease(segment, b)
    assert segment.net.call(b, _pxe_discover, b.mac, b_ip)
    status, script = _curl(segment, b, f"{base}/boot/hosts/{b.mac}/script.ipxe?manufacturer=HPE&hostname=b01",
                           source=b_ip)
    assert status == 200, script
    answers, callback, up = _urls(script)
    assert _curl(segment, b, f"{base}/boot/hosts/{b.mac}/script.ipxe", source=b_ip)[1] == script  # a retry
    assert _curl(segment, b, f"tftp://{server}/grub/hosts/{machex}.cfg", source=b_ip)[0] == 200
    assert _curl(segment, b, f"{base}/grub/hosts/{machex}.cfg", source=b_ip)[0] == 200
    status, meta = _curl(segment, b, answers + "meta-data", source=b_ip)
    assert status == 200 and meta.startswith("instance-id:")
    before = _snapshot(segment, bootbox, b.mac)
    assert before["associations"]["group"] == "everyone" and before["verified"]["ipv4"] == b_ip
    attrs_before = _api(segment, bootbox, "GET", f"/hosts/{b.mac}")["attrs"]
    assert _dig(segment, f"b01.{DOMAIN}", "A") == b_ip and _dig(segment, "-x", b_ip) == f"b01.{DOMAIN}."

    # The attacker asks for all of it, names B's MAC everywhere, and tries to rename and
    # re-address B and to pin its group: 403 each time, and nothing of B's changes.
    refused = [
        _curl(segment, attacker, f"{base}/boot/hosts/{b.mac}/script.ipxe?manufacturer=Dell&hostname=vcenter"
                                 f"&ip=198.18.0.66"),
        _curl(segment, attacker, answers + "user-data"),
        _curl(segment, attacker, f"{base}/grub/hosts/{machex}.cfg"),
        _curl(segment, attacker, f"{base}/boot/esxi/hosts/{machex}/{'A' * 32}/bbcallin.tgz"),  # the call-in module
        _curl(segment, attacker, callback, "-d", "ip=6.6.6.6&boot_id=evil1&hostname=vcenter"),
        _curl(segment, attacker, up, "-d", "ip=6.6.6.6&boot_id=evil2"),
    ]
    assert [status for status, _ in refused] == [403] * 6, refused
    assert SECRET not in "".join(body for _, body in refused)
    tftp_status, _ = _curl(segment, attacker, f"tftp://{server}/grub/hosts/{machex}.cfg")
    assert tftp_status != 200  # TFTP error 2, access violation
    assert _snapshot(segment, bootbox, b.mac) == before
    assert _api(segment, bootbox, "GET", f"/hosts/{b.mac}")["attrs"] == attrs_before
    # DHCP proves nothing: the attacker forges B's chaddr (and asks for its own address) from its
    # own interface. bootbox answers DHCP as always, and B's boot, records and DNS stay B's.
    segment.net.call(attacker, _pxe_discover, b.mac, attacker.ip)
    assert _snapshot(segment, bootbox, b.mac) == before
    assert _dig(segment, f"b01.{DOMAIN}", "A") == b_ip and _dig(segment, "-x", b_ip) == f"b01.{DOMAIN}."
    assert _dig(segment, f"vcenter.{DOMAIN}", "A") == "198.18.0.9" and _dig(segment, "-x", "198.18.0.66") == ""
    audits = [e for e in bootbox.events(b.mac) if e["kind"] == "audit"]
    assert len(audits) >= 7 and all(attacker.ip in e["message"] for e in audits)
    assert _api(segment, bootbox, "GET", "/status")["refused"]["identity"] >= 7
    assert "refused: identity=" in bootbox.cli("status").stdout

    # B's own fetches still work: its answers (once each) and its report-in with its token.
    status, user_data = _curl(segment, b, answers + "user-data", source=b_ip)
    assert status == 200 and SECRET in user_data and "hostname: b01" in user_data
    assert _curl(segment, b, callback, "-d", "boot_id=boot-1", source=b_ip)[0] == 200
    # The after-boot round (no pushes configured here) ends on the push pool, not in the request.
    deadline = time.monotonic() + 20
    while (state := _api(segment, bootbox, "GET", f"/hosts/{b.mac}")["state"]) != "configured":
        assert state in ("booted", "up", "configuring") and time.monotonic() < deadline, state
        time.sleep(0.1)

    # B's second boot: new tokens; the first boot's are refused.
    status, second = _curl(segment, b, f"{base}/boot/hosts/{b.mac}/script.ipxe", source=b_ip)
    answers2, callback2, up2 = _urls(second)
    assert answers2 != answers and callback2 != callback and up2 != up
    assert _curl(segment, b, answers + "meta-data", source=b_ip)[0] == 403
    assert _curl(segment, b, callback, "-d", "boot_id=boot-2", source=b_ip)[0] == 401
    assert _curl(segment, b, up, "-d", "boot_id=boot-2", source=b_ip)[0] == 401
    assert _curl(segment, b, answers2 + "meta-data", source=b_ip)[0] == 200
    assert _curl(segment, b, up2, "-d", "boot_id=boot-2", source=b_ip)[0] in (200, 503)  # 503: pushes run


def test_a_manual_adoption_site_gives_a_new_mac_no_secrets_until_adopted(segment: LabSegment) -> None:
    require_tools("curl", "busybox", "dnsmasq")
    segment.start_site_dhcp()
    b = segment.client
    bootbox = start_bootbox(segment, extra_toml='[hosts]\nadopt = "manual"\n')
    _configure(segment, bootbox, b.mac)
    b_ip = _lease(segment, b)
    script_url = f"http://{segment.server.ip}:{HTTP_PORT}/boot/hosts/{b.mac}/script.ipxe?manufacturer=Dell"
    status, waiting = _curl(segment, b, script_url, source=b_ip)
    assert status == 200 and "awaits adoption" in waiting and "/answers/" not in waiting and SECRET not in waiting
    host = _api(segment, bootbox, "GET", f"/hosts/{b.mac}")
    assert host["state"] == "discovered" and host["associations"] == {} and not host["adopted"]
    assert "discovered" in bootbox.cli("host", "list").stdout
    assert "adopted" in bootbox.cli("host", "adopt", b.mac, "--hostname", "b01").stdout
    status, script = _curl(segment, b, script_url, source=b_ip)
    answers, _, _ = _urls(script)
    status, user_data = _curl(segment, b, answers + "user-data", source=b_ip)
    assert status == 200 and SECRET in user_data
    assert _api(segment, bootbox, "GET", f"/hosts/{b.mac}")["associations"]["group"] == "dell"
