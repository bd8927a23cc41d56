"""The pure lease allocator of full-DHCP mode (bootbox.net.dhcp.leases)."""

from __future__ import annotations

import json

import pytest

from bootbox.net.dhcp.leases import Lease, LeasePool, LeaseState, Nak, NoAddress

A, B, C = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
T0 = 1_700_000_000.0


def pool(**kwargs: object) -> LeasePool:
    args: dict[str, object] = dict(network="198.18.0.0/24", range_start="198.18.0.100", range_end="198.18.0.102",
                                   lease_seconds=3600, offer_seconds=60, quarantine_seconds=600,
                                   excluded=["198.18.0.1"])
    args.update(kwargs)
    return LeasePool(**args)  # type: ignore[arg-type]


def bind(p: LeasePool, mac: str, now: float = T0) -> Lease:
    offer = p.discover(mac, now)
    assert isinstance(offer, Lease)
    bound = p.request(mac, offer.ip, now)
    assert isinstance(bound, Lease)
    return bound


def test_offer_then_request_binds_the_offered_address() -> None:
    p = pool()
    offer = p.discover(A, T0, hostname="alpha")
    assert isinstance(offer, Lease)
    assert (offer.ip, offer.state, offer.expires) == ("198.18.0.100", LeaseState.OFFERED, T0 + 60)
    ack = p.request(A, offer.ip, T0 + 1)
    assert isinstance(ack, Lease)
    assert (ack.ip, ack.state, ack.expires, ack.hostname) == ("198.18.0.100", LeaseState.BOUND, T0 + 3601, "alpha")
    assert p.active_count() == 1


def test_each_client_gets_its_own_address_and_a_retry_gets_the_same_one() -> None:
    p = pool()
    first = p.discover(A, T0)
    again = p.discover(A, T0 + 2)
    other = p.discover(B, T0 + 2)
    assert isinstance(first, Lease) and isinstance(again, Lease) and isinstance(other, Lease)
    assert first.ip == again.ip != other.ip


def test_requested_address_is_honoured_when_free_and_in_range() -> None:
    p = pool()
    offer = p.discover(A, T0, requested="198.18.0.102")
    assert isinstance(offer, Lease) and offer.ip == "198.18.0.102"
    outside = p.discover(B, T0, requested="198.18.0.7")
    assert isinstance(outside, Lease) and outside.ip == "198.18.0.100"


def test_exhausted_range_offers_nothing() -> None:
    p = pool()
    for mac in (A, B, C):
        bind(p, mac)
    result = p.discover("52:54:00:00:00:0d", T0)
    assert isinstance(result, NoAddress) and "no free address" in result.reason


def test_renewal_extends_and_a_stranger_gets_a_nak() -> None:
    p = pool()
    lease = bind(p, A)
    renewed = p.request(A, lease.ip, T0 + 1800)
    assert isinstance(renewed, Lease) and renewed.expires == T0 + 1800 + 3600
    stolen = p.request(B, lease.ip, T0 + 1800)
    assert isinstance(stolen, Nak) and "in use" in stolen.reason


def test_request_outside_the_range_or_network_is_refused() -> None:
    p = pool()
    assert isinstance(p.request(A, "10.1.2.3", T0), Nak)
    assert isinstance(p.request(A, "198.18.0.50", T0), Nak)
    assert isinstance(p.request(A, "198.18.0.1", T0), Nak)  # the server's own address
    assert isinstance(p.request(A, "not-an-ip", T0), Nak)


def test_init_reboot_for_a_free_address_is_acknowledged() -> None:
    """Full mode is the only server of its network, so it acts authoritatively."""
    p = pool()
    ack = p.request(A, "198.18.0.101", T0)
    assert isinstance(ack, Lease) and ack.state is LeaseState.BOUND


def test_release_frees_the_address_but_remembers_the_client() -> None:
    p = pool()
    lease = bind(p, A)
    released = p.release(A, lease.ip, T0 + 10)
    assert released is not None and released.state is LeaseState.RELEASED
    assert p.active_count() == 0
    assert p.release(B, lease.ip, T0 + 10) is None  # not B's to release
    back = p.discover(A, T0 + 20)
    assert isinstance(back, Lease) and back.ip == lease.ip


def test_released_address_goes_to_others_only_when_nothing_fresh_is_left() -> None:
    p = pool()
    lease = bind(p, A)
    p.release(A, lease.ip, T0 + 1)
    b, c = bind(p, B), bind(p, C)
    assert lease.ip not in (b.ip, c.ip)
    d = p.discover("52:54:00:00:00:0d", T0 + 2)
    assert isinstance(d, Lease) and d.ip == lease.ip
    assert p.lease_for(A) is None  # A's memory went with the address


def test_decline_quarantines_the_address_until_it_expires() -> None:
    p = pool()
    lease = bind(p, A)
    declined = p.decline(A, lease.ip, T0 + 5)
    assert declined is not None and declined.state is LeaseState.DECLINED and declined.mac == ""
    offer = p.discover(A, T0 + 6)
    assert isinstance(offer, Lease) and offer.ip != lease.ip
    assert isinstance(p.request(B, lease.ip, T0 + 6), Nak)
    p.expire(T0 + 5 + 601)
    assert all(entry.ip != lease.ip for entry in p.leases())
    assert p.decline(B, "198.18.0.100", T0) is None  # only the holder can decline


def test_expiry_ages_bound_leases_and_drops_unanswered_offers() -> None:
    p = pool()
    lease = bind(p, A)
    offer = p.discover(B, T0)
    assert isinstance(offer, Lease)
    ended = p.expire(T0 + 3601)
    assert [e.ip for e in ended] == [lease.ip]
    assert p.lease_for(A) is not None and p.lease_for(A).state is LeaseState.EXPIRED  # type: ignore[union-attr]
    assert p.lease_for(B) is None
    assert p.active_count() == 0
    renewed = p.request(A, lease.ip, T0 + 3700)  # an expired lease can be taken up again
    assert isinstance(renewed, Lease) and renewed.state is LeaseState.BOUND


def test_reservation_is_given_to_its_mac_only() -> None:
    p = pool(reservations={A.upper(): "198.18.0.50"})
    offer = p.discover(A, T0)
    assert isinstance(offer, Lease) and offer.ip == "198.18.0.50"
    assert isinstance(p.request(B, "198.18.0.50", T0), Nak)
    wrong = p.request(A, "198.18.0.101", T0)
    assert isinstance(wrong, Nak) and "198.18.0.50" in wrong.reason
    other = p.discover(B, T0, requested="198.18.0.50")
    assert isinstance(other, Lease) and other.ip != "198.18.0.50"


def test_new_reservation_moves_a_client_at_its_next_renewal() -> None:
    p = pool()
    lease = bind(p, A)
    p.set_reservations({A: "198.18.0.60"})
    assert isinstance(p.request(A, lease.ip, T0 + 100), Nak)
    offer = p.discover(A, T0 + 101)
    assert isinstance(offer, Lease) and offer.ip == "198.18.0.60"
    assert isinstance(p.request(A, "198.18.0.60", T0 + 102), Lease)
    assert all(entry.ip != lease.ip for entry in p.leases())  # one record per client


def test_client_that_chose_another_server_frees_our_offer() -> None:
    p = pool()
    offer = p.discover(A, T0)
    assert isinstance(offer, Lease)
    p.forget_offer(A)
    assert p.leases() == []


def test_state_round_trips_through_json_without_pending_offers() -> None:
    p = pool(reservations={C: "198.18.0.70"})
    lease = bind(p, A)
    p.discover(B, T0)
    snapshot = json.loads(json.dumps(p.to_dict()))
    q = pool(reservations={C: "198.18.0.70"})
    assert q.load(snapshot) == []
    assert q.leases() == [lease]
    back = q.discover(A, T0 + 5)
    assert isinstance(back, Lease) and back.ip == lease.ip and back.state is LeaseState.BOUND


def test_load_skips_bad_records_and_other_networks() -> None:
    p = pool()
    state = {"version": 1, "leases": [
        {"ip": "198.18.0.100", "mac": A, "state": "bound", "expires": T0},
        {"ip": "10.0.0.5", "mac": B, "state": "bound", "expires": T0},
        {"ip": "198.18.0.101", "mac": C, "state": "weird", "expires": T0},
        {"mac": C},
    ]}  # fmt: skip
    problems = p.load(state)
    assert len(problems) == 3 and "outside" in problems[0]
    assert [lease.mac for lease in p.leases()] == [A]
    assert pool().load({"version": 99}) != []
    assert pool().load({}) == []


@pytest.mark.parametrize("bad", [
    dict(range_start="198.18.1.1"),
    dict(range_start="198.18.0.200", range_end="198.18.0.100"),
    dict(reservations={A: "10.0.0.1"}),
])  # fmt: skip
def test_inconsistent_configuration_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        pool(**bad)
