"""Facts from DHCP reach the rules on every loader path, and a missing loader is never offered.

The seam is the service as the protocol servers call it: a client packet (the captures in
tests/data/dhcp, re-encoded with the real codec where a field must change, e.g. option 93 = 11
for an ARM64 client) goes through the real responder (``proxy.respond`` / ``dhcp6.respond``)
with ``service.decide``, and the answer through ``service.dhcp_answered``. Then the loader asks
for what it asks for in the lab: GRUB its per-host config over TFTP (no query string: it knows
only the facts DHCP gave), iPXE its script. The site has the mixed-fleet rule set of issue 15:
``arch=arm64 → image=arm64-profile`` first, ``all hosts → image=x86-profile`` second.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

import bootbox_linux
from bootbox.appliance import Appliance
from bootbox.hooks.manager import make_plugin_manager
from bootbox.model import Machine, Profile
from bootbox.net.dhcp import proxy
from bootbox.net.dhcp.packet import DhcpPacket, Opt, build, parse
from bootbox.net.dhcp6 import server as dhcp6
from bootbox.service.bootfiles import BootFiles
from bootbox.service.bootservice import BootService
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "dhcp"
SERVER = "198.18.0.1"
CLIENT_IP = "198.18.0.171"
UUID = "8c3e4a52-6f1d-4b7a-9e2c-1d5f0a3b7c64"  # QEMU's -uuid in every capture (tests/data/dhcp/README.md)
ARM_MAC = "52:54:00:aa:64:01"


def capture(name: str) -> DhcpPacket:
    return parse((DATA / f"{name}.bin").read_bytes())


def as_client(name: str, *, mac: str, arch: int | None = None, vendor: str | None = None) -> DhcpPacket:
    """A captured packet from another client: new chaddr, and option 93 / 60 rewritten, then
    encoded and decoded again by the real codec (so what the responder sees is wire bytes)."""
    pkt = capture(name)
    options = dict(pkt.options)
    if arch is not None:
        options[Opt.CLIENT_ARCH] = struct.pack("!H", arch)
    if vendor is not None:
        options[Opt.VENDOR_CLASS] = vendor.encode()
    return parse(build(replace(pkt, chaddr=bytes.fromhex(mac.replace(":", "")), options=options)))


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Any]:
    """``site(**overrides)``: a service (proxy mode) with two profiles, the two mixed-fleet
    rules, Debian's loader names mapped to files in tmp_path (the ARM64 ones too, unless
    ``arm64_loaders=False``)."""
    loaders = tmp_path / "signed"
    loaders.mkdir()
    for name in ("shimx64.efi.signed", "grubnetx64.efi.signed", "shimaa64.efi.signed", "grubnetaa64.efi.signed"):
        (loaders / name).write_bytes(name.encode() * 64)
    for name in ("vmlinuz-amd64", "vmlinuz-arm64", "initrd.img"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    services: list[BootService] = []

    def make(*, arm64_loaders: bool = True, **overrides: Any) -> BootService:
        arm = "grubnetaa64.efi.signed" if arm64_loaders else "absent/grubnetaa64.efi.signed"
        files = {"shimx64.efi": str(loaders / "shimx64.efi.signed"), "grubx64.efi": str(loaders / "grubnetx64.efi.signed"),
                 "grubnetx64.efi": str(loaders / "grubnetx64.efi.signed"), "shimaa64.efi": str(loaders / "shimaa64.efi.signed"),
                 "grubaa64.efi": str(loaders / arm), "grubnetaa64.efi": str(loaders / arm)}
        dhcp = {"loader_files": files, **overrides.pop("dhcp", {})}
        # The loaders' requests come from 198.18.0.171, which is in no neighbour table here.
        hosts = {"trusted_networks": ["198.18.0.0/15"]}
        settings = test_settings(tmp_path / f"s{len(services)}", server_address=SERVER, dhcp=dhcp, hosts=hosts,
                                 **overrides)
        journal = Journal(None)
        journal.start()
        pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
        service = BootService(settings, MemoryStore(), journal, pm)
        service.start()
        for arch in ("arm64", "x86"):
            kernel = tmp_path / ("vmlinuz-arm64" if arch == "arm64" else "vmlinuz-amd64")
            service.put_profile(Profile(f"{arch}-profile", "linux", {
                "kernel": str(kernel), "initrd": [str(tmp_path / "initrd.img")],
                "cmdline": f"console=ttyS0 bootbox.profile={arch}-profile bootbox.callback={{callback}}"}))
        service.rules.add(service.rules.make_rule({"name": "arm", "patterns": ["arch=arm64"],
                                                   "items": {"image": "arm64-profile"}}))
        service.rules.add(service.rules.make_rule({"name": "rest", "all_hosts": True,
                                                   "items": {"image": "x86-profile"}}))
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def offer(service: BootService, pkt: DhcpPacket, role: proxy.Role = proxy.Role.SERVER,
          source: tuple[str, int] = ("0.0.0.0", 68)) -> proxy.Outcome:
    """What bootbox's proxy does with ``pkt``: the real responder, with the service deciding
    and recording the answer as the socket server does after sending it."""
    port = service.settings.dhcp.port if role is proxy.Role.SERVER else service.settings.dhcp.boot_server_port
    outcome = proxy.respond(pkt, role=role, source=source, server_ip=SERVER, local_port=port, decide=service.decide)
    if isinstance(outcome, proxy.Reply):
        service.dhcp_answered(outcome.machine, outcome.spec, port)
    return outcome


def boot_file(outcome: proxy.Outcome) -> str:
    assert isinstance(outcome, proxy.Reply), outcome
    return outcome.packet.options[Opt.BOOTFILE_NAME].decode()


def grub_config(service: BootService, mac: str) -> str:
    """GRUB's per-host config as GRUB reads it: over TFTP, with no query string at all."""
    return service.open_tftp(f"/grub/hosts/{mac}.cfg", (CLIENT_IP, 49152)).read().decode()


def facts(service: BootService, mac: str) -> dict[str, str]:
    attrs = dict(service.host(mac).attrs)
    return {key: attrs[key] for key in ("arch", "platform", "firmware", "vendor_class", "user_class", "uuid")
            if key in attrs}


# --------------------------------------------------------------------------------------------- loader paths


def test_arm64_uefi_pxe_grub_gets_the_arm64_profile_from_its_dhcp_facts(site: Any) -> None:
    """The reported bug: AAVMF → GRUB, whose config request carries nothing but its MAC."""
    service = site()
    pkt = as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=11, vendor="PXEClient:Arch:00011:UNDI:003000")
    assert boot_file(offer(service, pkt)) == "grubnetaa64.efi"
    assert facts(service, ARM_MAC) == {"arch": "arm64", "platform": "efi", "firmware": "uefi",
                                       "vendor_class": "PXEClient:Arch:00011:UNDI:003000", "uuid": UUID}
    config = grub_config(service, ARM_MAC)
    assert "bootbox.profile=arm64-profile" in config, config
    host = service.host(ARM_MAC)
    assert host.associations == {"image": "arm64-profile"} and host.profile == "arm64-profile"
    assert [e.message for e in service.host_events(ARM_MAC) if e.kind == "rules"] == [
        "first boot: associated image=arm64-profile (rule arm)"]


def test_x86_uefi_pxe_then_ipxe_gets_the_x86_profile(site: Any) -> None:
    """OVMF's EDK2 PXE (arch 7) → snponly.efi → iPXE's own DISCOVER and 4011 REQUEST → script."""
    service = site()
    mac = capture("ovmf-edk2-discover").mac
    assert boot_file(offer(service, capture("ovmf-edk2-discover"))) == "snponly.efi"
    assert boot_file(offer(service, capture("ovmf-edk2-request-4011"), proxy.Role.BOOT_SERVER,
                           (CLIENT_IP, 4011))) == "snponly.efi"
    assert facts(service, mac) == {"arch": "x86_64", "platform": "efi", "firmware": "uefi",
                                   "vendor_class": "PXEClient:Arch:00007:UNDI:003000", "uuid": UUID}
    assert service.host(mac).attrs["ipv4"] == CLIENT_IP  # the 4011 REQUEST's ciaddr
    script_url = boot_file(offer(service, capture("ovmf-snponly-ipxe-discover")))
    assert script_url.endswith("/boot.ipxe")
    assert facts(service, mac)["user_class"] == "iPXE"
    script = service.host_script(mac, {}, CLIENT_IP, f"http://{SERVER}:8080")  # nothing but the MAC, too
    assert "bootbox.profile=x86-profile" in script and service.host(mac).associations == {"image": "x86-profile"}


def test_bios_ipxe_rom_facts_are_on_the_host(site: Any) -> None:
    """SeaBIOS + iPXE ROM (arch 0, user class iPXE): spelled as iPXE's ${buildarch}/${platform}."""
    service = site()
    pkt = capture("seabios-ipxe-discover")
    assert boot_file(offer(service, pkt)).endswith("/boot.ipxe")
    assert facts(service, pkt.mac) == {"arch": "i386", "platform": "pcbios", "firmware": "bios",
                                       "vendor_class": "PXEClient:Arch:00000:UNDI:002001", "user_class": "iPXE",
                                       "uuid": UUID}
    service.host_script(pkt.mac, {"buildarch": "i386", "platform": "pcbios"}, CLIENT_IP, f"http://{SERVER}:8080")
    assert service.host(pkt.mac).associations == {"image": "x86-profile"}


@pytest.mark.parametrize(("arch", "loader", "profile", "platform"), [
    (16, "snponly.efi", "x86-profile", "x86_64"),
    (19, "grubnetaa64.efi", "arm64-profile", "arm64"),
])
def test_uefi_http_boot_facts_decide_the_profile(site: Any, arch: int, loader: str, profile: str,
                                                 platform: str) -> None:
    """OVMF's HTTPClient DISCOVER (captured, arch 16) and its ARM64 twin (arch 19)."""
    service = site()
    vendor = f"HTTPClient:Arch:{arch:05d}:UNDI:003000"
    pkt = as_client("ovmf-httpclient-discover", mac="52:54:00:aa:16:%02x" % arch, arch=arch, vendor=vendor)
    assert boot_file(offer(service, pkt)) == f"http://{SERVER}:{service.settings.http.port}/boot/loaders/{loader}"
    assert facts(service, pkt.mac) == {"arch": platform, "platform": "efi", "firmware": "uefi-http",
                                       "vendor_class": vendor, "uuid": UUID}
    if loader.startswith("grub"):  # GRUB booted over HTTP reads the same generated config over HTTP
        text = service.grub_file(f"grub/hosts/{pkt.mac}.cfg", CLIENT_IP, f"http://{SERVER}")
    else:
        text = service.host_script(pkt.mac, {}, CLIENT_IP, f"http://{SERVER}:8080")
    assert text is not None and f"bootbox.profile={profile}" in text
    assert service.host(pkt.mac).associations == {"image": profile}


def test_secure_boot_shim_is_chosen_at_dhcp_time_by_a_rule_on_arch(site: Any) -> None:
    """The loader decision itself (before any config is asked for) sees the arch: a rule on
    ``arch=arm64`` putting the host in a Secure Boot group gets it shimaa64.efi, not GRUB."""
    service = site(groups={"signed": {"secure_boot": True}})
    service.rules.replace(service.rules.make_rule({"name": "arm", "patterns": ["arch=arm64"],
                                                   "items": {"image": "arm64-profile", "group": "signed"}}))
    pkt = as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=11, vendor="PXEClient:Arch:00011:UNDI:003000")
    outcome = offer(service, pkt)
    assert boot_file(outcome) == "shimaa64.efi" and "group signed" in outcome.spec.reason  # type: ignore[union-attr]
    assert "bootbox.profile=arm64-profile" in grub_config(service, ARM_MAC)
    assert service.host(ARM_MAC).associations == {"image": "arm64-profile", "group": "signed"}
    x86 = capture("ovmf-edk2-discover")
    assert boot_file(offer(service, x86)) == "snponly.efi"  # not in the group: no Secure Boot


def test_dhcpv6_solicit_facts_are_on_the_host(site: Any) -> None:
    """EDK2's SOLICIT (arch 11 in option 61, vendor class in 16), then iPXE's (user class 15)."""
    service = site()
    duid = struct.pack("!HHI", 1, 1, 836623271) + bytes.fromhex(ARM_MAC.replace(":", ""))

    def solicit(arch: int, vendor: str, user: str | None = None) -> dhcp6.Reply6 | str:
        def items(*values: bytes) -> bytes:
            return b"".join(struct.pack("!H", len(v)) + v for v in values)
        options = [(dhcp6.Opt6.CLIENTID, duid), (dhcp6.Opt6.IA_NA, struct.pack("!III", 7, 0, 0)),
                   (dhcp6.Opt6.CLIENT_ARCH, struct.pack("!H", arch)),
                   (dhcp6.Opt6.VENDOR_CLASS, struct.pack("!I", 343) + items(vendor.encode()))]
        if user:
            options.append((dhcp6.Opt6.USER_CLASS, items(user.encode())))
        pkt = dhcp6.parse(dhcp6.build(dhcp6.Dhcp6Packet(dhcp6.Msg.SOLICIT, b"\x01\x02\x03", tuple(options))))
        outcome = dhcp6.respond(pkt, source="fe80::1", server_ip="fd42:b007::1", server_duid=dhcp6.duid_ll(
            "02:00:00:00:00:01"), decide=service.decide, port=service.settings.dhcp6.port)
        if isinstance(outcome, dhcp6.Reply6) and outcome.spec is not None:
            service.dhcp_answered(outcome.machine, outcome.spec, service.settings.dhcp6.port)
        return outcome

    answer = solicit(11, "PXEClient:Arch:00011:UNDI:003000")
    assert isinstance(answer, dhcp6.Reply6) and answer.spec is not None
    assert answer.spec.boot_file == "grubnetaa64.efi"
    assert facts(service, ARM_MAC) == {"arch": "arm64", "platform": "efi", "firmware": "uefi",
                                       "vendor_class": "PXEClient:Arch:00011:UNDI:003000"}
    assert "bootbox.profile=arm64-profile" in grub_config(service, ARM_MAC)
    assert service.host(ARM_MAC).associations == {"image": "arm64-profile"}
    ipxe = solicit(7, "PXEClient:Arch:00007:UNDI:003000", user="iPXE")
    assert isinstance(ipxe, dhcp6.Reply6) and ipxe.spec is not None and ipxe.spec.boot_file.endswith("/boot.ipxe")
    assert facts(service, ARM_MAC)["user_class"] == "iPXE"


def test_a_packet_fact_that_is_absent_is_cleared_and_the_latest_packet_wins(site: Any) -> None:
    """iPXE (user class iPXE), then, at the next boot, the PXE ROM without one."""
    service = site()
    mac = capture("ovmf-edk2-discover").mac
    offer(service, capture("ovmf-snponly-ipxe-discover"))
    assert facts(service, mac)["user_class"] == "iPXE"
    offer(service, capture("ovmf-edk2-discover"))
    assert "user_class" not in facts(service, mac) and facts(service, mac)["arch"] == "x86_64"


def test_facts_are_recorded_even_for_a_client_that_is_not_answered(site: Any) -> None:
    service = site()
    pkt = as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=10, vendor="PXEClient:Arch:00010:UNDI:003000")
    assert isinstance(offer(service, pkt), proxy.Ignored)  # no ARM32 loader
    assert facts(service, ARM_MAC)["arch"] == "arm32" and service.host(ARM_MAC).state == "discovered"


def test_a_rule_may_match_the_new_dhcp_facts(site: Any) -> None:
    service = site()
    service.rules.add(service.rules.make_rule({"name": "legacy", "patterns": ["firmware=bios", "user_class=iPXE"],
                                               "items": {"image": "arm64-profile"}}), at=0)
    pkt = capture("seabios-ipxe-discover")
    offer(service, pkt)
    service.host_script(pkt.mac, {}, CLIENT_IP, f"http://{SERVER}:8080")
    assert service.host(pkt.mac).associations == {"image": "arm64-profile"}
    assert Machine(mac=ARM_MAC, arch=None, vendor_class="PXEClient").facts() == {
        "firmware": "bios", "vendor_class": "PXEClient", "user_class": ""}  # no arch code: no arch invented


# --------------------------------------------------------------------------------------------- missing loaders


def test_a_missing_loader_is_never_offered_logged_once_counted_and_on_the_timeline(
    site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service = site(arm64_loaders=False)
    first = as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=11, vendor="PXEClient:Arch:00011:UNDI:003000")
    second = as_client("ovmf-edk2-discover", mac="52:54:00:aa:64:02", arch=11, vendor="PXEClient:Arch:00011:UNDI:003000")
    with caplog.at_level(logging.WARNING):
        outcomes = [offer(service, pkt) for pkt in (first, first, first, second, second)]
    assert all(isinstance(o, proxy.Ignored) and o.reason == "decide() declined this client" for o in outcomes)
    # Said once, at start-up (every configured file is checked then); not again per packet.
    logged = [r.getMessage() for r in caplog.records if "loader grubnetaa64.efi" in r.getMessage()]
    assert len(logged) == 1 and "absent/grubnetaa64.efi.signed" in logged[0] and "bootbox doctor" in logged[0]
    assert service.boot_stats() == {"loader_missing": 5}
    for mac in (ARM_MAC, "52:54:00:aa:64:02"):
        told = [e for e in service.host_events(mac) if e.kind == "dhcp.ignored"]
        assert len(told) == 1, told  # once per host, not per packet
        assert "grubnetaa64.efi is not there" in told[0].message and told[0].data["loader"] == "grubnetaa64.efi"
        assert "grubnetaa64.efi is not there" in service.host(mac).reason
        assert facts(service, mac)["arch"] == "arm64"
    # Other clients are not affected: their loaders are there.
    assert boot_file(offer(service, capture("ovmf-edk2-discover"))) == "snponly.efi"
    assert service.boot_stats() == {"loader_missing": 5}


def test_a_loader_that_appears_is_offered_after_the_recheck(site: Any, caplog: pytest.LogCaptureFixture) -> None:
    service = site(arm64_loaders=False)
    now = [1000.0]
    firmware = service.firmware
    firmware.files = BootFiles(service.settings.tftp.root, service.settings.dhcp.loader_files,
                               service.settings.state_path, clock=lambda: now[0])
    pkt = as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=11, vendor="PXEClient:Arch:00011:UNDI:003000")
    assert isinstance(offer(service, pkt), proxy.Ignored)
    target = Path(service.settings.dhcp.loader_files["grubnetaa64.efi"])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"grub")
    assert isinstance(offer(service, pkt), proxy.Ignored)  # cached: no stat per packet
    now[0] += 5.0
    assert boot_file(offer(service, pkt)) == "grubnetaa64.efi"
    target.unlink()
    now[0] += 5.0
    with caplog.at_level(logging.WARNING, logger="bootbox.firmware"):
        assert isinstance(offer(service, pkt), proxy.Ignored)
        assert isinstance(offer(service, pkt), proxy.Ignored)
    told = [e for e in service.host_events(ARM_MAC) if e.kind == "dhcp.ignored"]
    assert len(told) == 2  # gone again: told again (once)
    assert [r.getMessage() for r in caplog.records if r.name == "bootbox.firmware" and "is not there" in r.getMessage()] == [
        f"loader grubnetaa64.efi is not there ({target}): clients that need it (arch 11 first) get no offer until "
        "it is; `bootbox doctor` says how to fetch it"]


def test_a_missing_ipxe_loader_in_tftp_root_is_not_offered_either(site: Any) -> None:
    service = site()
    (Path(service.settings.tftp.root) / "snponly.efi").unlink()
    assert isinstance(offer(service, capture("ovmf-edk2-discover")), proxy.Ignored)
    # iPXE itself needs no loader file: it gets its script URL.
    assert boot_file(offer(service, capture("ovmf-snponly-ipxe-discover"))).endswith("/boot.ipxe")


def test_the_running_proxy_sends_no_offer_for_a_missing_loader_and_status_counts_it(tmp_path: Path) -> None:
    """Real sockets: the appliance's proxyDHCP on loopback, the default settings (ARM64 loaders
    expected under state_dir/loaders/arm64, not there). The ARM64 DISCOVER goes first; the
    proxy handles packets in order on one thread, so the first reply being the x86 client's
    proves the ARM64 one got none."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(10)
        settings = test_settings(tmp_path, dhcp={"client_port": client.getsockname()[1]})
        appliance = Appliance(settings, load_entrypoints=False)
        appliance.start()
        try:
            for xid, pkt in ((0xA64, as_client("ovmf-edk2-discover", mac=ARM_MAC, arch=11,
                                                vendor="PXEClient:Arch:00011:UNDI:003000")),
                             (0x864, capture("ovmf-edk2-discover"))):
                unicast = replace(pkt, xid=xid, flags=0, ciaddr="127.0.0.1")  # the OFFER comes back to us
                client.sendto(build(unicast), ("127.0.0.1", settings.dhcp.port))
            reply = parse(client.recvfrom(2048)[0])
            assert (reply.xid, reply.file) == (0x864, b"snponly.efi")
            status = appliance.status()
            assert status["boot"] == {"loader_missing": 1}
            assert status["dhcp"]["ignored"] == 1  # counted before the next packet is read ("answered" after it is sent)
            assert appliance.service is not None
            assert "grubnetaa64.efi is not there" in appliance.service.host(ARM_MAC).reason
        finally:
            appliance.stop()
