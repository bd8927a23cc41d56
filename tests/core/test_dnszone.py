"""The lab zone, pure: what it holds, what it answers, and which configuration it refuses."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from bootbox.core.dnszone import NOERROR, NXDOMAIN, Record, Zone, ZoneAnswer, build_zone, parse_static_records
from bootbox.errors import ConfigError

DOMAIN = "lab.example"
HOSTS = [
    ("esx01", "198.18.0.11", "2001:db8:0:1::11"),
    ("esx02.lab.example.", "198.18.0.12", None),
    ("ESX03", None, "2001:db8:0:1::13"),
    (None, "198.18.0.50", None),  # no name: nothing
    ("", "198.18.0.51", None),  # no name: nothing
    ("nas", "198.18.0.99", None),  # the static record owns nas
    ("esx01", "198.18.0.14", None),  # a second esx01: the first one keeps the name
    ("bad_name", "198.18.0.15", None),
    ("esx04.corp.example", "198.18.0.16", None),  # another domain: not ours to publish
    ("localhost", "127.0.0.1", None),
    ("esx05", "not-an-ip", "198.18.0.17"),  # neither address usable
    ("esx06", "198.18.0.9", None),  # shares nas's address: nas keeps the PTR
]
STATIC = [
    "nas A 198.18.0.9",
    "www CNAME nas",
    "chain CNAME www",
    "ext CNAME example.org",
    "dangling CNAME gone",
    "@ MX 10 nas",
    'info TXT "hello lab"',
    "deep.sub.lab.example A 198.18.0.20",
]
ZONE = build_zone(DOMAIN, HOSTS, STATIC, nameserver_addresses=["198.18.0.1"])
NET6 = "1.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"  # 2001:db8:0:1::/64
SOA_FWD = ("SOA", DOMAIN)
SOA_REV4 = ("SOA", "0.18.198.in-addr.arpa")
SOA_REV6 = ("SOA", NET6)


def ptr(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


Shape = tuple[str, list[tuple[str, str, tuple[str | int, ...]]], list[tuple[str, str]]]


def shape(found: ZoneAnswer | None) -> Shape | None:
    """An answer as (rcode, [(name, type, data)], [(type, owner)]) for compact expectations."""
    if found is None:
        return None
    answer = [(r.name, r.rtype, r.data) for r in found.answer]
    authority = [(r.rtype, r.name) for r in found.authority]
    return found.rcode, answer, authority


ANSWERS = [
    # forward, managed hosts
    ("esx01.lab.example", "A", (NOERROR, [("esx01.lab.example", "A", ("198.18.0.11",))], [])),
    ("ESX01.Lab.Example.", "AAAA", (NOERROR, [("esx01.lab.example", "AAAA", ("2001:db8:0:1::11",))], [])),
    ("esx02.lab.example", "A", (NOERROR, [("esx02.lab.example", "A", ("198.18.0.12",))], [])),
    ("esx03.lab.example", "AAAA", (NOERROR, [("esx03.lab.example", "AAAA", ("2001:db8:0:1::13",))], [])),
    ("esx06.lab.example", "A", (NOERROR, [("esx06.lab.example", "A", ("198.18.0.9",))], [])),
    ("esx01.lab.example", "ANY", (NOERROR, [("esx01.lab.example", "A", ("198.18.0.11",)),
                                            ("esx01.lab.example", "AAAA", ("2001:db8:0:1::11",))], [])),
    # NODATA: the name exists, the type does not
    ("esx03.lab.example", "A", (NOERROR, [], [SOA_FWD])),
    ("esx01.lab.example", "MX", (NOERROR, [], [SOA_FWD])),
    ("esx01.lab.example", "type65", (NOERROR, [], [SOA_FWD])),
    ("sub.lab.example", "A", (NOERROR, [], [SOA_FWD])),  # empty non-terminal (RFC 8020)
    ("lab.example", "A", (NOERROR, [], [SOA_FWD])),
    # NXDOMAIN: no such name
    ("nope.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),
    ("esx05.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),
    ("bad_name.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),
    ("localhost.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),
    ("x.esx01.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),
    ("a\\.b.lab.example", "A", (NXDOMAIN, [], [SOA_FWD])),  # one label "a.b": still inside the zone
    # static records and the apex
    ("nas.lab.example", "A", (NOERROR, [("nas.lab.example", "A", ("198.18.0.9",))], [])),
    ("deep.sub.lab.example", "A", (NOERROR, [("deep.sub.lab.example", "A", ("198.18.0.20",))], [])),
    ("info.lab.example", "TXT", (NOERROR, [("info.lab.example", "TXT", ("hello lab",))], [])),
    ("lab.example", "MX", (NOERROR, [("lab.example", "MX", (10, "nas.lab.example"))], [])),
    ("lab.example", "NS", (NOERROR, [("lab.example", "NS", ("ns.lab.example",))], [])),
    ("ns.lab.example", "A", (NOERROR, [("ns.lab.example", "A", ("198.18.0.1",))], [])),
    # CNAMEs: followed inside the zone; the rcode belongs to the last name (RFC 6604)
    ("www.lab.example", "A", (NOERROR, [("www.lab.example", "CNAME", ("nas.lab.example",)),
                                        ("nas.lab.example", "A", ("198.18.0.9",))], [])),
    ("chain.lab.example", "A", (NOERROR, [("chain.lab.example", "CNAME", ("www.lab.example",)),
                                          ("www.lab.example", "CNAME", ("nas.lab.example",)),
                                          ("nas.lab.example", "A", ("198.18.0.9",))], [])),
    ("www.lab.example", "CNAME", (NOERROR, [("www.lab.example", "CNAME", ("nas.lab.example",))], [])),
    ("www.lab.example", "ANY", (NOERROR, [("www.lab.example", "CNAME", ("nas.lab.example",))], [])),
    ("www.lab.example", "MX", (NOERROR, [("www.lab.example", "CNAME", ("nas.lab.example",))], [SOA_FWD])),
    ("ext.lab.example", "A", (NOERROR, [("ext.lab.example", "CNAME", ("example.org",))], [])),
    ("dangling.lab.example", "A", (NXDOMAIN, [("dangling.lab.example", "CNAME", ("gone.lab.example",))], [SOA_FWD])),
    # reverse, IPv4: the /24 around the addresses is ours
    (ptr("198.18.0.11"), "PTR", (NOERROR, [(ptr("198.18.0.11"), "PTR", ("esx01.lab.example",))], [])),
    (ptr("198.18.0.9"), "PTR", (NOERROR, [(ptr("198.18.0.9"), "PTR", ("nas.lab.example",))], [])),
    (ptr("198.18.0.1"), "PTR", (NOERROR, [(ptr("198.18.0.1"), "PTR", ("ns.lab.example",))], [])),
    (ptr("198.18.0.14").upper(), "PTR", (NXDOMAIN, [], [SOA_REV4])),  # the skipped second esx01
    (ptr("198.18.0.200"), "PTR", (NXDOMAIN, [], [SOA_REV4])),
    (ptr("198.18.0.11"), "A", (NOERROR, [], [SOA_REV4])),
    ("0.18.198.in-addr.arpa", "NS", (NOERROR, [("0.18.198.in-addr.arpa", "NS", ("ns.lab.example",))], [])),
    # reverse, IPv6: the /64
    (ptr("2001:db8:0:1::11"), "PTR", (NOERROR, [(ptr("2001:db8:0:1::11"), "PTR", ("esx01.lab.example",))], [])),
    (ptr("2001:db8:0:1::13"), "PTR", (NOERROR, [(ptr("2001:db8:0:1::13"), "PTR", ("esx03.lab.example",))], [])),
    (ptr("2001:db8:0:1::11").split(".", 1)[1], "PTR", (NOERROR, [], [SOA_REV6])),  # nibble non-terminal
    (ptr("2001:db8:0:1::99"), "PTR", (NXDOMAIN, [], [SOA_REV6])),
    # not ours: forward it
    ("example.org", "A", None),
    ("xlab.example", "A", None),  # a suffix, but not at a label boundary
    ("example", "NS", None),
    (".", "NS", None),
    ("x\\.lab.example", "A", None),  # labels "x.lab" + "example": outside
    ("bad..name.lab.example", "A", None),
    (".lab.example", "A", None),
    ("lab.example\\", "A", None),  # a dangling escape
    ("esx01\\046lab.example.", "A", None),  # "esx01.lab" + "example": an escaped dot is not a boundary
    ("ESX01.LAB.EXAMPLE", "A", (NOERROR, [("esx01.lab.example", "A", ("198.18.0.11",))], [])),  # no trailing dot
    ("x\\032y.lab.example.", "A", (NXDOMAIN, [], [SOA_FWD])),  # "x y": inside, and no such name
    (ptr("198.18.1.1"), "PTR", None),  # another /24
    ("18.198.in-addr.arpa", "NS", None),  # above our reverse zone
    (ptr("2001:db8:0:2::1"), "PTR", None),  # another /64
]


@pytest.mark.parametrize(("qname", "qtype", "expected"), ANSWERS, ids=[f"{q} {t}" for q, t, _ in ANSWERS])
def test_answers(qname: str, qtype: str, expected: object) -> None:
    assert shape(ZONE.answer(qname, qtype)) == expected


def test_the_apexes_are_the_domain_and_the_reverse_zones_of_its_addresses() -> None:
    assert set(ZONE.apexes) == {DOMAIN, "0.18.198.in-addr.arpa", NET6}


def test_hosts_without_records_are_explained() -> None:
    problems = "\n".join(ZONE.problems)
    for fragment in ("'bad_name'", "'nas': no DNS records: nas.lab.example is already taken",
                     "'esx01': no DNS records", "esx04.corp.example is not inside lab.example",
                     "'localhost'", "'not-an-ip' is not an IPv4 address", "'198.18.0.17' is not an IPv6 address"):
        assert fragment in problems
    assert len(ZONE.problems) == 7  # nothing about the hosts without a name


def test_soa_names_the_server_and_uses_the_ttl_as_negative_ttl() -> None:
    zone = build_zone(DOMAIN, [], [], ttl=120, nameserver="dns1")
    soa = zone.answer(DOMAIN, "SOA")
    assert soa is not None
    (record,) = soa.answer
    mname, rname, _serial, refresh, retry, expire, minimum = record.data
    assert (mname, rname, minimum, record.ttl) == ("dns1.lab.example", "hostmaster.lab.example", 120, 120)
    assert isinstance(refresh, int) and isinstance(retry, int) and isinstance(expire, int)
    assert refresh > retry and expire > refresh
    assert {r.ttl for r in zone.records} == {120}


def test_an_empty_zone_has_only_its_apex() -> None:
    zone = build_zone(DOMAIN, [], [])
    assert zone.apexes == (DOMAIN,)
    assert [(r.name, r.rtype) for r in zone.records] == [(DOMAIN, "SOA"), (DOMAIN, "NS")]


def test_serial_follows_content_and_nothing_else() -> None:
    def serial(hosts: list[tuple[str, str, None]]) -> object:
        found = build_zone(DOMAIN, hosts, []).answer(DOMAIN, "SOA")
        assert found is not None
        return found.answer[0].data[2]

    one = [("esx01", "198.18.0.11", None)]
    assert serial(one) == serial(list(one))
    assert serial(one) != serial([("esx01", "198.18.0.21", None)])
    assert serial(one) != serial([("esx09", "198.18.0.11", None)])


def test_configured_reverse_networks_swallow_the_automatic_ones() -> None:
    zone = build_zone(DOMAIN, [("esx01", "198.18.0.11", None)], [], reverse_networks=["198.18.0.0/16", "2001:db8::/48"])
    assert set(zone.apexes) == {DOMAIN, "18.198.in-addr.arpa", "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"}
    assert shape(zone.answer(ptr("198.18.7.5"), "PTR")) == (NXDOMAIN, [], [("SOA", "18.198.in-addr.arpa")])
    assert shape(zone.answer(ptr("198.18.0.11"), "PTR")) == (
        NOERROR, [(ptr("198.18.0.11"), "PTR", ("esx01.lab.example",))], [])  # fmt: skip
    assert shape(zone.answer("0.18.198.in-addr.arpa", "SOA")) == (NOERROR, [], [("SOA", "18.198.in-addr.arpa")])
    assert zone.answer(ptr("2001:db8::1"), "PTR") is not None
    assert zone.answer(ptr("198.19.0.1"), "PTR") is None


def test_static_records_win_over_the_nameserver_addresses() -> None:
    zone = build_zone(DOMAIN, [], ["ns A 198.18.0.53"], nameserver_addresses=["198.18.0.1", "2001:db8::1"])
    assert shape(zone.answer("ns.lab.example", "ANY")) == (NOERROR, [("ns.lab.example", "A", ("198.18.0.53",))], [])


def test_nameserver_outside_the_zone_gets_no_address_records() -> None:
    zone = build_zone(DOMAIN, [], [], nameserver="dns.corp.example.", nameserver_addresses=["198.18.0.1"])
    assert shape(zone.answer(DOMAIN, "NS")) == (NOERROR, [(DOMAIN, "NS", ("dns.corp.example",))], [])
    assert zone.answer(ptr("198.18.0.1"), "PTR") is None
    assert len(zone.records) == 2


def test_nameserver_ipv6_address() -> None:
    zone = build_zone(DOMAIN, [], [], nameserver_addresses=["2001:db8::53"])
    assert shape(zone.answer("ns.lab.example", "AAAA")) == (
        NOERROR, [("ns.lab.example", "AAAA", ("2001:db8::53",))], [])  # fmt: skip
    assert shape(zone.answer(ptr("2001:db8::53"), "PTR")) == (
        NOERROR, [(ptr("2001:db8::53"), "PTR", ("ns.lab.example",))], [])  # fmt: skip


def test_the_zone_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ZONE.domain = "other.example"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ZONE._rrsets["x"] = {}  # type: ignore[index]
    assert isinstance(ZONE, Zone)


def test_records_lists_everything_sorted_by_name() -> None:
    names = [r.name for r in ZONE.records]
    keys = [tuple(reversed(n.split("."))) for n in names]
    assert keys == sorted(keys)
    assert ("esx06.lab.example", "A") in {(r.name, r.rtype) for r in ZONE.records}
    assert not any(r.name.startswith(("esx04", "esx05", "bad_name", "localhost")) for r in ZONE.records)


# --------------------------------------------------------------------------- static records
PARSED = [
    ("nas.lab.example A 198.18.0.9", Record("nas.lab.example", "A", 60, ("198.18.0.9",))),
    ("NAS.Lab.Example. a 198.18.0.9", Record("nas.lab.example", "A", 60, ("198.18.0.9",))),
    ("@ A 198.18.0.2", Record("lab.example", "A", 60, ("198.18.0.2",))),
    ("v6 AAAA 2001:DB8::0001", Record("v6.lab.example", "AAAA", 60, ("2001:db8::1",))),
    ("www CNAME nas", Record("www.lab.example", "CNAME", 60, ("nas.lab.example",))),
    ("ext CNAME example.org.", Record("ext.lab.example", "CNAME", 60, ("example.org",))),
    ("ext CNAME example.org", Record("ext.lab.example", "CNAME", 60, ("example.org",))),
    ("@ MX 10 mail", Record("lab.example", "MX", 60, (10, "mail.lab.example"))),
    ("t TXT hello  world", Record("t.lab.example", "TXT", 60, ("hello  world",))),
    ('t TXT "quoted text"', Record("t.lab.example", "TXT", 60, ("quoted text",))),
    ("t TXT " + "x" * 300, Record("t.lab.example", "TXT", 60, ("x" * 255, "x" * 45))),
]


@pytest.mark.parametrize(("entry", "record"), PARSED, ids=[e[:30] for e, _ in PARSED])
def test_static_records_parse(entry: str, record: Record) -> None:
    assert parse_static_records([entry], DOMAIN) == (record,)


def test_duplicate_static_records_are_merged() -> None:
    assert len(parse_static_records(["a A 198.18.0.1", "a A 198.18.0.1", "a A 198.18.0.2"], DOMAIN)) == 2


BAD_STATIC = [
    ([42], "dns.records[0]", "expected a string"),
    (["nas"], "dns.records[0]", "NAME TYPE DATA"),
    (["nas A"], "dns.records[0]", "NAME TYPE DATA"),
    (["nas SRV 0 0 1 x"], "dns.records[0]", "'SRV' is not supported"),
    (["nas PTR x"], "dns.records[0]", "is not supported"),
    (["ok A 198.18.0.1", "nas A 300.1.1.1"], "dns.records[1]", "not an IPv4 address"),
    (["nas A 2001:db8::1"], "dns.records[0]", "not an IPv4 address"),
    (["nas A 1.2.3.4 5.6.7.8"], "dns.records[0]", "not an IPv4 address"),
    (["nas AAAA 198.18.0.1"], "dns.records[0]", "not an IPv6 address"),
    (["nas AAAA fe80::1%eth0"], "dns.records[0]", "not an IPv6 address"),
    (["bad_name A 198.18.0.1"], "dns.records[0]", "RFC 1123"),
    (["a" * 64 + " A 198.18.0.1"], "dns.records[0]", "RFC 1123"),
    (["-x A 198.18.0.1"], "dns.records[0]", "RFC 1123"),
    (["nas.other.example A 198.18.0.1"], "dns.records[0]", "not inside lab.example"),
    (["localhost A 127.0.0.1"], "dns.records[0]", "reserved"),
    (["ok A 198.18.0.1", "@ CNAME ok"], "dns.records[1]", "apex"),
    (["www A 198.18.0.1", "www CNAME nas"], "dns.records[1]", "already has a A record (dns.records[0])"),
    (["www CNAME nas", "www A 198.18.0.1"], "dns.records[1]", "already has a CNAME record (dns.records[0])"),
    (["www CNAME a", "www CNAME b"], "dns.records[1]", "must be the only record"),
    (["a CNAME b", "b CNAME c", "c CNAME a"], "dns.records[0]", "CNAME loop: a.lab.example -> b.lab.example"),
    (["a CNAME a"], "dns.records[0]", "CNAME loop"),
    (["www CNAME two words"], "dns.records[0]", "one target"),
    (["www CNAME bad_target"], "dns.records[0]", "RFC 1123"),
    (["mx MX ten mail"], "dns.records[0]", "PREFERENCE EXCHANGE"),
    (["mx MX 70000 mail"], "dns.records[0]", "0..65535"),
    (["mx MX 10"], "dns.records[0]", "PREFERENCE EXCHANGE"),
    (['t TXT ""'], "dns.records[0]", "empty"),
    (["t TXT café"], "dns.records[0]", "printable ASCII"),
]


@pytest.mark.parametrize(("entries", "key", "fragment"), BAD_STATIC, ids=[str(e)[:40] for e, _, _ in BAD_STATIC])
def test_bad_static_records_name_the_entry(entries: list[object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_zone(DOMAIN, [], entries)
    assert caught.value.field == key
    assert fragment in caught.value.message


BAD_CONFIG: list[tuple[dict[str, object], str, str]] = [
    ({"domain": ""}, "dns.domain", "empty"),
    ({"domain": "bad_domain.example"}, "dns.domain", "RFC 1123"),
    ({"domain": 42}, "dns.domain", "expected a domain name"),
    ({"ttl": -1}, "dns.ttl", "0..2147483647"),
    ({"ttl": 2**31}, "dns.ttl", "0..2147483647"),
    ({"ttl": "60"}, "dns.ttl", "0..2147483647"),
    ({"ttl": True}, "dns.ttl", "0..2147483647"),
    ({"nameserver": "bad ns"}, "dns.nameserver", "RFC 1123"),
    ({"static_records": ["ns CNAME nas", "nas A 198.18.0.9"]}, "dns.nameserver", "must not be an alias"),
    ({"nameserver_addresses": ["nope"]}, "dns.nameserver_addresses", "'nope'"),
    ({"reverse_networks": ["198.18.0.0/23"]}, "dns.reverse_networks[0]", "multiple of 8"),
    ({"reverse_networks": ["10.0.0.0/8", "10.0.0.1/24"]}, "dns.reverse_networks[1]", "not a network"),
    ({"reverse_networks": ["2001:db8::/62"]}, "dns.reverse_networks[0]", "multiple of 4"),
    ({"reverse_networks": ["0.0.0.0/0"]}, "dns.reverse_networks[0]", "not 0"),
]


@pytest.mark.parametrize(("overrides", "key", "fragment"), BAD_CONFIG, ids=[str(o)[:40] for o, _, _ in BAD_CONFIG])
def test_bad_configuration_names_the_key(overrides: dict[str, object], key: str, fragment: str) -> None:
    args: dict[str, object] = {"domain": DOMAIN, "hosts": [], "static_records": [], **overrides}
    with pytest.raises(ConfigError) as caught:
        build_zone(**args)  # type: ignore[arg-type]
    assert caught.value.field == key
    assert fragment in caught.value.message


def test_hosts_cannot_take_the_apex_or_the_name_servers_name() -> None:
    zone = build_zone(DOMAIN, [("lab.example", "198.18.0.5", None), ("ns", "198.18.0.6", None)], [])
    assert len(zone.problems) == 2 and all("already taken" in p for p in zone.problems)
    assert shape(zone.answer(DOMAIN, "A")) == (NOERROR, [], [SOA_FWD])
    assert shape(zone.answer("ns.lab.example", "A")) == (NXDOMAIN, [], [SOA_FWD])


def test_bad_hosts_never_raise() -> None:
    hosts = [("esx01", 42, None), (42, "198.18.0.1", None), ("x" * 300, "198.18.0.2", None)]
    zone = build_zone(DOMAIN, hosts, [])  # type: ignore[arg-type]
    assert len(zone.problems) == 3
    assert len(zone.records) == 2  # SOA and NS only
