"""DNS as a view of the hosts: updated one host at a time, and only with what is a host's own."""

from __future__ import annotations

import random

from bootbox.config import DnsSettings
from bootbox.core.dnszone import LiveZone, build_zone
from bootbox.model import Host
from bootbox.service.dnsview import ZoneView
from bootbox.service.hostindex import HostIndex

SETTINGS = DnsSettings(enabled=True, domain="lab.example", records=("vcenter A 198.18.0.5", "www CNAME nas",
                                                                    "nas A 198.18.0.9"))


def _host(n: int, name: str = "", reported: str = "", ip: str = "", **kw: object) -> Host:
    attrs = {"hostname": reported} if reported else {}
    attrs["ipv4"] = "6.6.6.6"  # what a report-in *said*: never published
    return Host(mac=f"52:54:00:00:{n // 256:02x}:{n % 256:02x}", attrs=attrs, name=name, first_seen=float(n),
                verified={"ipv4": ip} if ip else {}, **kw)  # type: ignore[arg-type]


def _strip_soa(records: tuple) -> list:  # type: ignore[type-arg]
    return sorted(r for r in records if r.rtype != "SOA")


def test_the_live_zone_answers_as_a_rebuilt_zone_would() -> None:
    rng = random.Random(16)
    entries = []
    for n in range(300):
        name = rng.choice([f"h{n}", f"h{n % 40}", "nas", "vcenter", "a.b", "", "localhost", "bad_name"])
        entries.append((name, f"198.18.{rng.randrange(3)}.{rng.randrange(1, 250)}",
                        rng.choice(["", f"2001:db8::{n:x}"])))
    static = list(SETTINGS.records)
    built = build_zone("lab.example", entries, static)
    live = LiveZone("lab.example", static)
    for n, entry in enumerate(entries):
        live.set_host(f"k{n:04d}", *entry, first_seen=float(n))
    assert _strip_soa(live.records) == _strip_soa(built.records)
    for name, qtype in [("h1.lab.example", "A"), ("nope.lab.example", "A"), ("b.lab.example", "A"),
                        ("www.lab.example", "A"), ("5.0.18.198.in-addr.arpa", "PTR"), ("0.18.198.in-addr.arpa", "NS"),
                        ("lab.example", "SOA"), ("example.org", "A")]:
        got, want = live.answer(name, qtype), built.answer(name, qtype)
        assert (got is None) == (want is None), name
        if got and want:
            assert got.rcode == want.rcode and _strip_soa(got.answer) == _strip_soa(want.answer), name
    # Taking hosts away again leaves the configuration alone.
    for n, entry in enumerate(entries):
        live.remove_host(f"k{n:04d}")
    assert _strip_soa(live.records) == _strip_soa(build_zone("lab.example", [], static).records)


def test_a_host_change_updates_that_host_only_not_the_whole_zone() -> None:
    index = HostIndex(_host(n, reported=f"h{n}", ip=f"198.18.{n // 250}.{n % 250 + 1}") for n in range(10_000))
    view = ZoneView(SETTINGS, index)
    assert view.full_syncs == 1 and view.host_updates == 10_000
    assert view.lookup("h42.lab.example", "A").answer[0].data == ("198.18.0.43",)  # type: ignore[union-attr]
    changed = _host(42, reported="renamed", ip="198.18.99.1")
    index.update(changed.mac, lambda h: changed)
    answer = view.lookup("renamed.lab.example", "A")
    assert answer is not None and answer.answer[0].data == ("198.18.99.1",)
    assert view.lookup("h42.lab.example", "A").rcode == "NXDOMAIN"  # type: ignore[union-attr]
    assert view.full_syncs == 1 and view.host_updates == 10_001  # one host applied, no rebuild
    index.remove(changed.mac)
    assert view.lookup("renamed.lab.example", "A").rcode == "NXDOMAIN"  # type: ignore[union-attr]
    assert view.full_syncs == 1 and view.host_updates == 10_002


def test_a_host_gets_its_own_name_and_verified_address_only() -> None:
    index = HostIndex([
        _host(1, reported="vcenter", ip="198.18.1.1"),  # a static record owns vcenter
        _host(2, reported="ns", ip="198.18.1.2"),  # the name server owns ns
        _host(3, reported="esx01", ip="198.18.1.3"),  # reported first
        _host(4, name="esx01", ip="198.18.1.4"),  # an operator gave it esx01: it wins
        _host(5, reported="web", ip=""),  # never verified: no address, so no record
        _host(6, name="db", reported="evil", ip="198.18.1.6"),  # the configured name, not the reported one
    ])
    view = ZoneView(SETTINGS, index, configured_name=lambda host: "")
    a = lambda name: view.lookup(f"{name}.lab.example", "A")  # noqa: E731
    assert a("vcenter").answer[0].data == ("198.18.0.5",)  # type: ignore[union-attr]
    assert a("esx01").answer[0].data == ("198.18.1.4",)  # type: ignore[union-attr]
    assert a("db").answer[0].data == ("198.18.1.6",) and a("evil").rcode == "NXDOMAIN"  # type: ignore[union-attr]
    assert a("web").answer == ()  # type: ignore[union-attr]
    assert all("6.6.6.6" not in str(r.data) for r in view.zone().records)  # the reported ip= is never published
    ptr = view.lookup("4.1.18.198.in-addr.arpa", "PTR")
    assert ptr is not None and ptr.answer[0].data == ("esx01.lab.example",)
    # The host profile's hostname answer is a configured name too.
    view2 = ZoneView(SETTINGS, HostIndex([_host(7, reported="x", ip="198.18.1.7")]),
                     configured_name=lambda host: "esx07")
    assert view2.lookup("esx07.lab.example", "A").answer[0].data == ("198.18.1.7",)  # type: ignore[union-attr]
