"""Full-DHCP answers (bootbox.net.dhcp.answer), the probe's frame parser, and the full-mode config."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from bootbox.config import load_settings
from bootbox.errors import ConfigError
from bootbox.store.leases import lease_callables
from bootbox.model import BootSpec, Machine
from bootbox.net.dhcp.packet import BOOTREQUEST, DhcpPacket, MessageType, Opt, build, parse
from bootbox.net.dhcp.answer import Answer, FullDhcpOptions, LeaseChange, Silence, answer, dns_list
from bootbox.net.dhcp.probe import discover_packet, parse_offer_frame
from bootbox.net.dhcp.leases import LeasePool, LeaseState
from bootbox.store.memory import MemoryStore

MAC = "52:54:00:aa:bb:cc"
SERVER = "198.18.0.1"
T0 = 1_700_000_000.0
OPTIONS = FullDhcpOptions(server_ip=SERVER, network=ipaddress.IPv4Network("198.18.0.0/24"), router="198.18.0.254",
                          dns_servers=("198.18.0.1",), domain="lab.example")  # fmt: skip


def new_pool() -> LeasePool:
    return LeasePool(network="198.18.0.0/24", range_start="198.18.0.100", range_end="198.18.0.199",
                     lease_seconds=600, excluded=[SERVER])  # fmt: skip


def request(kind: MessageType, *, vendor: bytes = b"", ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0",
            **options: bytes) -> DhcpPacket:  # fmt: skip
    opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((kind,))}
    if vendor:
        opts[Opt.VENDOR_CLASS] = vendor
        opts[Opt.CLIENT_ARCH] = b"\x00\x00"
    for name, value in options.items():
        opts[int(name.removeprefix("o"))] = value
    pkt = DhcpPacket(op=BOOTREQUEST, xid=0xC0FFEE, chaddr=bytes.fromhex(MAC.replace(":", "")), flags=0x8000,
                     ciaddr=ciaddr, giaddr=giaddr, options=opts)  # fmt: skip
    return parse(build(pkt))  # through the codec, as the server sees it


class Decider:
    def __init__(self, spec: BootSpec | None = BootSpec("undionly.kpxe", SERVER, reason="arch 0")) -> None:
        self.spec = spec
        self.machines: list[Machine] = []

    def __call__(self, machine: Machine) -> BootSpec | None:
        self.machines.append(machine)
        return self.spec


def run(pkt: DhcpPacket, pool: LeasePool, decide: Decider | None = None, now: float = T0) -> object:
    return answer(pkt, pool=pool, options=OPTIONS, now=now, decide=decide or Decider())


def test_plain_client_gets_an_address_and_the_network_options_but_no_boot_file() -> None:
    pool, decide = new_pool(), Decider()
    offer = run(request(MessageType.DISCOVER), pool, decide)
    assert isinstance(offer, Answer) and offer.kind == MessageType.OFFER
    pkt = parse(build(offer.packet))
    assert pkt.yiaddr == "198.18.0.100" and pkt.siaddr == "0.0.0.0" and pkt.file == b""
    assert offer.address == ("255.255.255.255", 68)
    o = pkt.options
    assert o[Opt.SERVER_ID] == socket.inet_aton(SERVER)
    assert o[Opt.SUBNET_MASK] == socket.inet_aton("255.255.255.0")
    assert o[Opt.ROUTER] == socket.inet_aton("198.18.0.254")
    assert o[Opt.DNS_SERVERS] == socket.inet_aton("198.18.0.1")
    assert o[15] == b"lab.example" and o[28] == socket.inet_aton("198.18.0.255")
    assert struct.unpack("!I", o[Opt.LEASE_TIME])[0] == 600
    assert struct.unpack("!I", o[58])[0] == 300 and struct.unpack("!I", o[59])[0] == 525
    assert Opt.BOOTFILE_NAME not in o and Opt.VENDOR_CLASS not in o
    assert decide.machines == []  # not a boot client: nobody is asked


def test_pxe_client_gets_address_boot_file_and_next_server_in_one_answer() -> None:
    pool, decide = new_pool(), Decider()
    offer = run(request(MessageType.DISCOVER, vendor=b"PXEClient:Arch:00000:UNDI:002001", o97=b"\0" + bytes(range(16))),
                pool, decide)  # fmt: skip
    assert isinstance(offer, Answer)
    pkt = parse(build(offer.packet))
    assert pkt.yiaddr == "198.18.0.100"
    assert pkt.siaddr == SERVER  # GRUB takes its TFTP server from here (facts §9)
    assert pkt.file == b"undionly.kpxe" and pkt.options[Opt.BOOTFILE_NAME] == b"undionly.kpxe"
    assert Opt.VENDOR_CLASS not in pkt.options  # a plain DHCP answer: no proxy/boot-server detour
    assert pkt.options[Opt.CLIENT_UUID] == b"\0" + bytes(range(16))
    ack = run(request(MessageType.REQUEST, vendor=b"PXEClient:Arch:00000:UNDI:002001",
                      o50=socket.inet_aton(pkt.yiaddr), o54=socket.inet_aton(SERVER)), pool, decide)  # fmt: skip
    assert isinstance(ack, Answer) and ack.kind == MessageType.ACK
    assert ack.packet.siaddr == SERVER and ack.packet.options[Opt.BOOTFILE_NAME] == b"undionly.kpxe"
    assert ack.lease is not None and ack.lease.state is LeaseState.BOUND
    assert decide.machines[-1].client_ip == "198.18.0.100" and decide.machines[-1].server_ip == SERVER


def test_http_boot_client_gets_its_class_echoed_and_a_long_url_only_in_option_67() -> None:
    url = "http://198.18.0.1:8080/boot/loaders/" + "x" * 120 + ".efi"
    offer = run(request(MessageType.DISCOVER, vendor=b"HTTPClient:Arch:00016:UNDI:003000"), new_pool(),
                Decider(BootSpec(url, SERVER, vendor_class="HTTPClient")))  # fmt: skip
    assert isinstance(offer, Answer)
    assert offer.packet.options[Opt.VENDOR_CLASS] == b"HTTPClient"
    assert offer.packet.options[Opt.BOOTFILE_NAME] == url.encode() and offer.packet.file == b""


def test_a_failing_decide_costs_the_boot_file_not_the_address() -> None:
    def broken(machine: Machine) -> BootSpec | None:
        raise RuntimeError("plugin bug")

    offer = answer(request(MessageType.DISCOVER, vendor=b"PXEClient:Arch:00007:UNDI:003000"), pool=new_pool(),
                   options=OPTIONS, now=T0, decide=broken)  # fmt: skip
    assert isinstance(offer, Answer) and offer.packet.yiaddr == "198.18.0.100"
    assert Opt.BOOTFILE_NAME not in offer.packet.options and "plugin bug" in offer.reason


def test_request_for_another_server_withdraws_our_offer_silently() -> None:
    pool = new_pool()
    run(request(MessageType.DISCOVER), pool)
    outcome = run(request(MessageType.REQUEST, o50=socket.inet_aton("198.18.0.100"),
                          o54=socket.inet_aton("198.18.0.2")), pool)  # fmt: skip
    assert isinstance(outcome, Silence) and "198.18.0.2" in outcome.reason
    assert pool.leases() == []


def test_wrong_address_gets_a_broadcast_nak_with_the_reason() -> None:
    outcome = run(request(MessageType.REQUEST, o50=socket.inet_aton("10.9.8.7")), new_pool())
    assert isinstance(outcome, Answer) and outcome.kind == MessageType.NAK
    pkt = parse(build(outcome.packet))
    assert pkt.yiaddr == "0.0.0.0" and outcome.address == ("255.255.255.255", 68)
    assert b"not on this network" in pkt.options[56]
    assert Opt.LEASE_TIME not in pkt.options


def test_renewal_is_unicast_to_the_client() -> None:
    pool = new_pool()
    run(request(MessageType.REQUEST, o50=socket.inet_aton("198.18.0.150")), pool)
    renew = run(request(MessageType.REQUEST, ciaddr="198.18.0.150"), pool, now=T0 + 300)
    assert isinstance(renew, Answer) and renew.kind == MessageType.ACK
    assert renew.address == ("198.18.0.150", 68) and renew.packet.ciaddr == "198.18.0.150"
    assert renew.lease is not None and renew.lease.expires == T0 + 900


def test_inform_gets_options_without_a_lease() -> None:
    outcome = run(request(MessageType.INFORM, ciaddr="198.18.0.7"), new_pool())
    assert isinstance(outcome, Answer) and outcome.kind == MessageType.ACK
    assert outcome.packet.yiaddr == "0.0.0.0" and Opt.LEASE_TIME not in outcome.packet.options
    assert outcome.packet.options[Opt.DNS_SERVERS] == socket.inet_aton("198.18.0.1")
    assert outcome.address == ("198.18.0.7", 68)


def test_release_and_decline_change_the_pool_without_an_answer() -> None:
    pool = new_pool()
    run(request(MessageType.REQUEST, o50=socket.inet_aton("198.18.0.100")), pool)
    released = run(request(MessageType.RELEASE, ciaddr="198.18.0.100", o54=socket.inet_aton(SERVER)), pool)
    assert isinstance(released, LeaseChange) and released.lease.state is LeaseState.RELEASED
    run(request(MessageType.REQUEST, o50=socket.inet_aton("198.18.0.100")), pool)
    declined = run(request(MessageType.DECLINE, o50=socket.inet_aton("198.18.0.100")), pool)
    assert isinstance(declined, LeaseChange) and declined.lease.state is LeaseState.DECLINED
    assert isinstance(run(request(MessageType.RELEASE, ciaddr="198.18.0.120"), pool), Silence)


@pytest.mark.parametrize("pkt", [
    request(MessageType.DISCOVER, giaddr="10.0.0.1"),
    request(MessageType.REQUEST),
    request(MessageType.INFORM),
    request(MessageType.OFFER),
])  # fmt: skip
def test_what_full_mode_stays_silent_about(pkt: DhcpPacket) -> None:
    assert isinstance(run(pkt, new_pool()), Silence)


def test_dns_defaults_to_bootbox_only_when_its_dns_server_runs() -> None:
    assert dns_list((), SERVER, True) == (SERVER,)
    assert dns_list((), SERVER, False) == ()
    assert dns_list(("9.9.9.9",), SERVER, True) == ("9.9.9.9",)


def test_lease_store_round_trip() -> None:
    store = MemoryStore()
    load, save = lease_callables(store)
    assert load() == {}
    pool = new_pool()
    run(request(MessageType.REQUEST, o50=socket.inet_aton("198.18.0.100")), pool)
    save(pool.to_dict())
    again = new_pool()
    assert again.load(load()) == [] and again.leases() == pool.leases()


# ------------------------------------------------------------------------- the probe's parser
def _frame(payload: bytes, *, dport: int = 68, proto: int = 17, frag: int = 0) -> bytes:
    udp = struct.pack("!HHHH", 67, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, frag, 64, proto, 0,
                     socket.inet_aton("198.18.0.2"), socket.inet_aton("255.255.255.255"))  # fmt: skip
    return b"\xff" * 6 + bytes.fromhex("020000000002") + b"\x08\x00" + ip + udp


def test_probe_parser_reads_an_offer_and_ignores_everything_else() -> None:
    mac = bytes.fromhex("02aabbccddee")
    discover = discover_packet(mac, 0x1234)
    assert discover.broadcast and Opt.VENDOR_CLASS not in discover.options  # proxies stay quiet
    offer = DhcpPacket(op=2, xid=0x1234, chaddr=mac, yiaddr="198.18.0.150", siaddr="198.18.0.9",
                       options={Opt.MESSAGE_TYPE: bytes((MessageType.OFFER,)),
                                Opt.SERVER_ID: socket.inet_aton("198.18.0.2")})  # fmt: skip
    heard = parse_offer_frame(_frame(build(offer)), 0x1234)
    assert heard is not None
    assert (heard.server_id, heard.offered, heard.next_server, heard.source_mac) == (
        "198.18.0.2", "198.18.0.150", "198.18.0.9", "02:00:00:00:00:02")
    assert parse_offer_frame(_frame(build(offer)), 0x9999) is None  # someone else's transaction
    assert parse_offer_frame(_frame(build(offer), dport=67), 0x1234) is None
    assert parse_offer_frame(_frame(build(offer), proto=6), 0x1234) is None
    assert parse_offer_frame(_frame(build(offer), frag=0x2000), 0x1234) is None
    assert parse_offer_frame(_frame(b"garbage" * 50), 0x1234) is None
    assert parse_offer_frame(b"\x00" * 20, 0x1234) is None


# ------------------------------------------------------------------------- configuration
FULL = '[dhcp]\nmode = "full"\ninterface = "eth1"\nrange_start = "198.18.0.100"\nrange_end = "198.18.0.199"\n'


def test_full_mode_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "bootbox.toml"
    path.write_text(FULL + 'subnet_mask = "255.255.255.0"\nrouter = "198.18.0.254"\ndns_servers = ["198.18.0.53"]\n'
                    'domain = "lab.example"\nlease_seconds = 600\n[dhcp.reservations]\n"52:54:00:AA:BB:CC" = "198.18.0.50"\n')
    dhcp = load_settings(path, env={"BOOTBOX_DHCP_IGNORE_OTHER_SERVERS": "true"}).dhcp
    assert (dhcp.mode, dhcp.interface, dhcp.range_start, dhcp.range_end) == ("full", "eth1", "198.18.0.100", "198.18.0.199")
    assert dhcp.dns_servers == ("198.18.0.53",) and dhcp.lease_seconds == 600 and dhcp.ignore_other_servers
    assert dict(dhcp.reservations) == {"52:54:00:AA:BB:CC": "198.18.0.50"}


@pytest.mark.parametrize(("text", "field"), [
    ('[dhcp]\nmode = "relay"\n', "dhcp.mode"),
    ('[dhcp]\nmode = "full"\n', "dhcp.interface"),
    ('[dhcp]\nmode = "full"\ninterface = "eth1"\nrange_start = "198.18.0.100"\n', "dhcp.range_end"),
    (FULL.replace('"198.18.0.199"', '"198.18.0.99"'), "dhcp.range_end"),
    (FULL.replace('"198.18.0.100"', '"198.18.0.x"'), "dhcp.range_start"),
    (FULL + 'subnet_mask = "255.0.255.0"\n', "dhcp.subnet_mask"),
    (FULL + 'subnet_mask = "255.255.255.128"\n', "dhcp.range_end"),
    (FULL + 'router = "gateway"\n', "dhcp.router"),
    (FULL + 'dns_servers = ["198.18.0.53", "dns"]\n', "dhcp.dns_servers[1]"),
    (FULL + 'lease_seconds = 5\n', "dhcp.lease_seconds"),
    (FULL + 'domain = "bad_domain!"\n', "dhcp.domain"),
    (FULL + '[dhcp.reservations]\n"nic1" = "198.18.0.50"\n', "dhcp.reservations.nic1"),
    (FULL + 'subnet_mask = "255.255.255.0"\n[dhcp.reservations]\n"52:54:00:aa:bb:cc" = "10.0.0.1"\n',
     "dhcp.reservations.52:54:00:aa:bb:cc"),
])  # fmt: skip
def test_full_mode_errors_name_the_key(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bootbox.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.field == field
