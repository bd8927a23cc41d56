"""The lab's authoritative DNS data: one immutable zone built from the managed hosts and config.

ESXi and the tools around it (vCenter above all) expect forward and reverse lookups of a
host's name to agree, and an isolated lab network has no DNS server to provide them. bootbox
therefore answers for one forward domain (``[dns] domain``, e.g. ``lab.example``; RFC 8375's
``home.arpa`` is the name reserved for exactly this use) and for the reverse zones of the
addresses in it. This module is the data and the answering logic only: no sockets, no
threads, no wire format. :mod:`bootbox.net.dns.server` puts it on the network.

What is in the zone
-------------------
* **Managed hosts**, given as ``(hostname, ipv4, ipv6)`` tuples: an ``A``/``AAAA`` record per
  valid address and a ``PTR`` back. A host without a name or without a valid address gets
  nothing. Host data is runtime data, not configuration, so a bad host never raises: it is
  skipped and described in :attr:`Zone.problems` for the caller to log.
* **Static records** from config, ``"NAME TYPE DATA"`` strings (:data:`STATIC_TYPES`); errors
  raise :class:`~bootbox.errors.ConfigError` naming the entry (``dns.records[3]``).
* **The apex**: ``SOA`` and ``NS`` naming the server (``nameserver``, ``ns`` by default), and
  ``A``/``AAAA`` for that name when ``nameserver_addresses`` are given. The SOA serial is a
  CRC-32 of the content: it changes whenever a record does and survives restarts unchanged.
  It is not monotonic, which only secondaries would notice, and without zone transfers there
  are none.

Names: ``@`` is the apex, a single label (``nas``) is relative to the domain, anything with a
dot is absolute (a trailing dot is optional). So ``"www CNAME nas"`` points at
``nas.<domain>`` and ``"www CNAME example.org"`` outside the zone. Owner names must be RFC 1123
host names inside the domain; ``localhost`` is never published (RFC 6761 §6.3).

Precedence, first claim wins: static records, then the name server's own records, then hosts
in the order given; no host may take the apex or the name server's name. A host whose name
is already taken is skipped (two boxes claiming
``esx01`` must not become a round-robin pair); an address already claimed keeps its first
``PTR``, because ESXi needs reverse lookups to return exactly one name.

Reverse zones (the "managed subnets")
-------------------------------------
The zone is authoritative for the ``/24`` (``z.y.x.in-addr.arpa``) around every IPv4 address
it holds and the ``/64`` (16 nibbles of ``ip6.arpa``, RFC 3596 §2.5) around every IPv6 one,
plus any ``reverse_networks`` given (octet/nibble aligned, because reverse zones can only be
cut at label boundaries; a configured network swallows the automatic zones inside it). Inside
those, an address without a host is NXDOMAIN, answered at once rather than forwarded
upstream; reverse names outside them are "not mine" (``None``) and get forwarded. /24 and /64
are what a lab numbers its segments by, and claiming only what we hold addresses in keeps us
from shadowing the upstream's answers for the rest of the address space.

Answers (RFC 1034 §4.3.2, RFC 2308)
-----------------------------------
``answer(qname, qtype)`` returns ``None`` for names outside every apex; otherwise NXDOMAIN
when the name does not exist, NOERROR with no records (NODATA) when it exists without that
type, NOERROR with records otherwise. Negative answers carry the apex SOA in the authority
section so resolvers can cache them (RFC 2308 §3). A name with no records of its own but
records below it (an "empty non-terminal", e.g. the nibbles between a /64 apex and a PTR) is
NODATA, never NXDOMAIN (RFC 8020). CNAMEs are followed inside the zone and the rcode is the
one of the last name in the chain (RFC 6604 §3). ``ANY`` returns every record at the name.
Matching is case-insensitive (RFC 4343). No wildcards, no DNSSEC, no zone transfers.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

from bootbox.errors import ConfigError

__all__ = [
    "DEFAULT_TTL",
    "HostEntry",
    "LiveZone",
    "NOERROR",
    "NXDOMAIN",
    "STATIC_TYPES",
    "Record",
    "Zone",
    "ZoneAnswer",
    "build_zone",
    "parse_static_records",
]

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
DEFAULT_TTL = 60
"""Short on purpose: records follow hosts at once here, and caches should not lag far behind."""
STATIC_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT")
MAX_TTL = 2**31 - 1  # RFC 2181 §8
TXT_CHUNK = 255  # one <character-string> (RFC 1035 §3.3)
SOA_TIMERS = (3600, 600, 86400)  # refresh, retry, expire: unused without secondaries, but required
_TYPE_ORDER = ("SOA", "NS", "CNAME", "A", "AAAA", "PTR", "MX", "TXT")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")  # RFC 1123 §2.1 / RFC 952
_MAX_NAME = 253  # 255 octets on the wire, minus the length byte of the first label and the root

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Record(NamedTuple):
    """One resource record, in plain values.

    ``name`` is absolute, lower case, without the trailing dot. ``data`` by type:
    A/AAAA ``(address,)``; CNAME/NS/PTR ``(target,)``; MX ``(preference, exchange)``;
    TXT ``(chunk, ...)`` of at most 255 characters each; SOA ``(mname, rname, serial,
    refresh, retry, expire, minimum)``.
    """

    name: str
    rtype: str
    ttl: int
    data: tuple[str | int, ...]


class ZoneAnswer(NamedTuple):
    """An authoritative answer: ``rcode`` (``NOERROR``/``NXDOMAIN``), the answer section and
    the authority section (the SOA of negative answers)."""

    rcode: str
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]


HostEntry = tuple[str | None, str | None, str | None]
"""``(hostname, ipv4, ipv6)``; any part may be None or empty."""


# --------------------------------------------------------------------------- the zone
@dataclass(frozen=True)
class Zone:
    """An immutable zone: safe to share between threads and to swap whole when hosts change.

    Build it with :func:`build_zone`. ``problems`` lists the hosts that got no (or fewer)
    records and why.
    """

    domain: str
    ttl: int
    apexes: tuple[str, ...]
    problems: tuple[str, ...]
    _rrsets: Mapping[str, Mapping[str, tuple[Record, ...]]] = field(repr=False)
    _names: frozenset[str] = field(repr=False)

    @property
    def records(self) -> tuple[Record, ...]:
        """Every record, sorted by name and type (for listings and tests)."""
        found = (rec for rrsets in self._rrsets.values() for recs in rrsets.values() for rec in recs)
        return tuple(sorted(found, key=_sort_key))

    def answer(self, qname: str, qtype: str) -> ZoneAnswer | None:
        """The answer for ``qname`` (presentation format, trailing dot optional, ``\\``-escapes
        allowed) and ``qtype`` (a type mnemonic such as ``"AAAA"`` or ``"TYPE65"``), or
        ``None`` when the name is outside every apex and should be forwarded."""
        labels = _query_labels(qname)
        if labels is None:
            return None
        apex = self._apex_of(labels)
        if apex is None:
            return None
        return self._resolve(".".join(labels), apex, qtype.upper())

    def _resolve(self, name: str, apex: str, qtype: str) -> ZoneAnswer:
        return _resolve(self._exists, self._rrsets_of, self._apex_of, self._soa, name, apex, qtype)

    def _exists(self, name: str) -> bool:
        return name in self._names

    def _rrsets_of(self, name: str) -> Mapping[str, tuple[Record, ...]]:
        return self._rrsets.get(name, {})

    def _apex_of(self, labels: tuple[str, ...]) -> str | None:
        return _apex_of(self.apexes, labels)

    def _soa(self, apex: str) -> Record:
        return self._rrsets[apex]["SOA"][0]


def _resolve(exists: Callable[[str], bool], rrsets_of: Callable[[str], Mapping[str, tuple[Record, ...]]],
             apex_of: Callable[[tuple[str, ...]], str | None], soa: Callable[[str], Record],
             name: str, apex: str, qtype: str) -> ZoneAnswer:
    """RFC 1034 §4.3.2 step 3 for one zone: match, follow a CNAME, or say why not (one piece
    of code for :class:`Zone` and :class:`LiveZone`).

    Terminates because CNAMEs only come from static records and
    :func:`parse_static_records` rejects loops among them.
    """
    chain: list[Record] = []
    while True:
        if not exists(name):
            return ZoneAnswer(NXDOMAIN, tuple(chain), (soa(apex),))
        rrsets = rrsets_of(name)
        found = _matching(rrsets, qtype)
        if found:
            return ZoneAnswer(NOERROR, (*chain, *found), ())
        alias = rrsets.get("CNAME")
        if not alias:
            return ZoneAnswer(NOERROR, tuple(chain), (soa(apex),))
        chain.append(alias[0])
        name = str(alias[0].data[0])
        target_apex = apex_of(tuple(name.split(".")))
        if target_apex is None:  # outside: the client's resolver follows it
            return ZoneAnswer(NOERROR, tuple(chain), ())
        apex = target_apex


def _apex_of(apexes: Sequence[str], labels: tuple[str, ...]) -> str | None:
    """The closest enclosing apex (compared label by label, so an escaped dot inside a query
    label can never pass for a label boundary); ``apexes`` longest first."""
    for apex in apexes:
        apex_labels = tuple(apex.split("."))
        if len(labels) >= len(apex_labels) and labels[len(labels) - len(apex_labels) :] == apex_labels:
            return apex
    return None


def _matching(rrsets: Mapping[str, tuple[Record, ...]], qtype: str) -> tuple[Record, ...]:
    if qtype == "ANY":
        return tuple(rec for rtype in sorted(rrsets, key=_type_rank) for rec in rrsets[rtype])
    return rrsets.get(qtype, ())


def _type_rank(rtype: str) -> int:
    return _TYPE_ORDER.index(rtype) if rtype in _TYPE_ORDER else len(_TYPE_ORDER)


def _sort_key(rec: Record) -> tuple[tuple[str, ...], int, str]:
    return tuple(reversed(rec.name.split("."))), _type_rank(rec.rtype), repr(rec.data)


def _query_labels(qname: str) -> tuple[str, ...] | None:
    """Split a presentation-format name into lower-case labels, keeping ``\\X`` and ``\\DDD``
    escapes verbatim inside their label (zone labels never contain a backslash, so an escaped
    label matches nothing). ``None`` for syntax that is not a name (empty label, dangling
    backslash)."""
    if qname in ("", "."):
        return ()
    labels: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(qname):
        char = qname[i]
        if char == "\\":
            digits = qname[i + 1 : i + 4]
            width = 4 if len(digits) == 3 and digits.isascii() and digits.isdigit() else 2
            if i + width > len(qname):
                return None
            current.append(qname[i : i + width])
            i += width
            continue
        if char == ".":
            if not current:
                return None
            labels.append("".join(current).lower())
            current = []
        else:
            current.append(char)
        i += 1
    if current:  # no trailing dot
        labels.append("".join(current).lower())
    return tuple(labels)


# --------------------------------------------------------------------------- names
def _check_domain(domain: str, key: str) -> str:
    """The domain in canonical form (lower case, no trailing dot), or ConfigError."""
    if not isinstance(domain, str):
        raise ConfigError(key, f"expected a domain name such as \"lab.example\", got {domain!r}")
    name = domain.strip().lower().removesuffix(".")
    try:
        _check_hostname(name)
    except ValueError as exc:
        raise ConfigError(key, f"{domain!r}: {exc}") from None
    return name


def _check_hostname(name: str) -> None:
    """Raise ValueError unless ``name`` (canonical form) is an RFC 1123 host name."""
    if not name:
        raise ValueError("empty name")
    if len(name) > _MAX_NAME:
        raise ValueError(f"longer than {_MAX_NAME} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(
                f"label {label!r} is not an RFC 1123 host name label (letters, digits and inner "
                "hyphens, 1 to 63 characters)"
            )


def _qualify(name: str, domain: str) -> str:
    """``@`` → the apex; one label → relative to ``domain``; otherwise absolute. Validated."""
    text = name.strip().lower()
    if text == "@":
        return domain
    if text.endswith("."):
        absolute = text[:-1]
    else:
        absolute = text if "." in text else f"{text}.{domain}"
    _check_hostname(absolute)
    return absolute


def _in_zone(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _owner(name: str, domain: str) -> str:
    """A record owner: qualified, and inside the zone."""
    owner = _qualify(name, domain)
    if not _in_zone(owner, domain):
        raise ValueError(f"{owner} is not inside {domain}")
    if owner == f"localhost.{domain}":
        raise ValueError("localhost is reserved (RFC 6761 §6.3)")
    return owner


def _address(text: object, version: int) -> Address:
    """A global-scope address of the given version, or ValueError."""
    if not isinstance(text, str) or "%" in text:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    return address


def _reverse_apex(address: Address) -> str:
    """The /24 (IPv4) or /64 (IPv6) reverse zone holding ``address``'s PTR name."""
    labels = address.reverse_pointer.split(".")
    keep = 3 if address.version == 4 else 16  # octets / nibbles of the network part
    return ".".join(labels[len(labels) - 2 - keep :])


def _network_apex(text: object, key: str) -> str:
    """The reverse zone of a configured network; it must end on a label boundary."""
    try:
        network = ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(key, f"{text!r} is not a network: {exc}") from None
    step = 8 if network.version == 4 else 4
    if network.prefixlen % step or network.prefixlen == 0:
        unit = "a multiple of 8 (octets)" if network.version == 4 else "a multiple of 4 (nibbles)"
        raise ConfigError(key, f"{text!r}: the prefix length must be {unit} and not 0, because "
                               "reverse zones are cut at label boundaries")  # fmt: skip
    labels = network.network_address.reverse_pointer.split(".")
    return ".".join(labels[len(labels) - 2 - network.prefixlen // step :])


# --------------------------------------------------------------------------- static records
def parse_static_records(entries: Iterable[object], domain: str, ttl: int = DEFAULT_TTL) -> tuple[Record, ...]:
    """Parse and validate ``[dns] records`` (``"NAME TYPE DATA"`` strings) for ``domain``.

    Rejected with :class:`~bootbox.errors.ConfigError` naming ``dns.records[i]``: anything not
    a string, a type outside :data:`STATIC_TYPES`, bad data, an owner outside the zone, a
    CNAME beside other records or at the apex (RFC 1034 §3.6.2, RFC 2181 §10.1) and a loop of
    CNAMEs. Exact duplicates are merged (RFC 2181 §5: an RRset has no duplicate records).
    """
    domain = _check_domain(domain, "dns.domain")
    parsed: list[tuple[int, Record]] = []
    for index, entry in enumerate(entries):
        record = _parse_entry(index, entry, domain, ttl)
        if all(record != seen for _, seen in parsed):
            parsed.append((index, record))
    _check_aliases(parsed, domain)
    return tuple(record for _, record in parsed)


def _parse_entry(index: int, entry: object, domain: str, ttl: int) -> Record:
    key = f"dns.records[{index}]"
    if not isinstance(entry, str):
        raise ConfigError(key, f"expected a string such as \"nas A 198.18.0.9\", got {entry!r}")
    parts = entry.split(None, 2)
    if len(parts) < 3:
        raise ConfigError(key, f"{entry!r}: expected \"NAME TYPE DATA\", such as \"nas A 198.18.0.9\"")
    name, rtype, data = parts[0], parts[1].upper(), parts[2].strip()
    parser = _DATA_PARSERS.get(rtype)
    if parser is None:
        raise ConfigError(key, f"{entry!r}: type {parts[1]!r} is not supported; use one of {', '.join(STATIC_TYPES)}")
    try:
        return Record(_owner(name, domain), rtype, ttl, parser(data, domain))
    except ValueError as exc:
        raise ConfigError(key, f"{entry!r}: {exc}") from None


def _data_a(text: str, domain: str) -> tuple[str | int, ...]:
    return (str(_address(text, 4)),)


def _data_aaaa(text: str, domain: str) -> tuple[str | int, ...]:
    return (str(_address(text, 6)),)


def _data_target(text: str, domain: str) -> tuple[str | int, ...]:
    if len(text.split()) != 1:
        raise ValueError(f"expected one target name, got {text!r}")
    return (_qualify(text, domain),)


def _data_mx(text: str, domain: str) -> tuple[str | int, ...]:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 65535:
        raise ValueError(f"expected \"PREFERENCE EXCHANGE\" with a preference of 0..65535, got {text!r}")
    return int(parts[0]), _qualify(parts[1], domain)


def _data_txt(text: str, domain: str) -> tuple[str | int, ...]:
    """The rest of the entry, one pair of surrounding quotes removed, cut into 255-character
    strings (RFC 1035 §3.3.14: TXT is one or more <character-string>s)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text.isascii() or not text.isprintable():
        raise ValueError("TXT data must be printable ASCII")
    if not text:
        raise ValueError("TXT data is empty")
    return tuple(text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK))


_DATA_PARSERS: dict[str, Callable[[str, str], tuple[str | int, ...]]] = {
    "A": _data_a,
    "AAAA": _data_aaaa,
    "CNAME": _data_target,
    "MX": _data_mx,
    "TXT": _data_txt,
}


def _check_aliases(parsed: Sequence[tuple[int, Record]], domain: str) -> None:
    """A CNAME owner has nothing else (RFC 1034 §3.6.2), not even a second CNAME, and never
    sits at the apex, which holds the SOA and NS (RFC 2181 §10.1); chains must end."""
    first: dict[str, tuple[int, str]] = {}
    for index, record in parsed:
        key = f"dns.records[{index}]"
        if record.rtype == "CNAME" and record.name == domain:
            raise ConfigError(key, f"a CNAME cannot be at the apex {domain}: it holds the SOA and NS records")
        if record.name in first:
            other_index, other_type = first[record.name]
            if "CNAME" in (record.rtype, other_type):
                raise ConfigError(key, f"{record.name} already has a {other_type} record (dns.records[{other_index}]) "
                                       "and a CNAME must be the only record of its name")  # fmt: skip
        else:
            first[record.name] = (index, record.rtype)
    aliases = {rec.name: (index, str(rec.data[0])) for index, rec in parsed if rec.rtype == "CNAME"}
    for start in aliases:
        _walk_chain(start, aliases)


def _walk_chain(start: str, aliases: Mapping[str, tuple[int, str]]) -> None:
    path = [start]
    name = aliases[start][1]
    while name in aliases:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"dns.records[{aliases[start][0]}]", f"CNAME loop: {cycle}")
        path.append(name)
        name = aliases[name][1]


# --------------------------------------------------------------------------- building
class _Builder:
    """Mutable scratch space for :func:`build_zone`; never escapes it."""

    def __init__(self, domain: str, ttl: int) -> None:
        self.domain = domain
        self.ttl = ttl
        self.rrsets: dict[str, dict[str, list[Record]]] = {}
        self.ptr_names: dict[Address, str] = {}
        self.reverse_apexes: set[str] = set()
        self.problems: list[str] = []
        self.reserved = {domain}  # names no host may take, whether or not they hold records yet

    def add(self, record: Record) -> None:
        rrset = self.rrsets.setdefault(record.name, {}).setdefault(record.rtype, [])
        if record not in rrset:
            rrset.append(record)
        if record.rtype in ("A", "AAAA"):
            address = ipaddress.ip_address(str(record.data[0]))
            self.ptr_names.setdefault(address, record.name)
            self.reverse_apexes.add(_reverse_apex(address))

    def add_nameserver(self, nameserver: str, addresses: Iterable[str]) -> str:
        """Add the server's own address records (unless config already has that name) and
        return its absolute name for the SOA MNAME and the NS records."""
        try:
            name = _qualify(nameserver, self.domain)
        except ValueError as exc:
            raise ConfigError("dns.nameserver", f"{nameserver!r}: {exc}") from None
        if "CNAME" in self.rrsets.get(name, {}):
            raise ConfigError("dns.nameserver", f"{name} is a CNAME in dns.records; an NS target must not be an "
                                                "alias (RFC 2181 §10.3)")  # fmt: skip
        parsed = [_nameserver_address(text) for text in addresses]
        self.reserved.add(name)
        if name in self.rrsets or not _in_zone(name, self.domain):
            return name
        for address in parsed:
            self.add(Record(name, "A" if address.version == 4 else "AAAA", self.ttl, (str(address),)))
        return name

    def add_host(self, hostname: str | None, ipv4: str | None, ipv6: str | None) -> None:
        if not hostname:
            return
        try:
            if not isinstance(hostname, str):
                raise ValueError("not a string")
            name = _owner(hostname, self.domain)
        except ValueError as exc:
            self.problems.append(f"host {hostname!r}: no DNS records: {exc}")
            return
        if name in self.rrsets or name in self.reserved:
            self.problems.append(f"host {hostname!r}: no DNS records: {name} is already taken (by the apex, a "
                                 "static record, the name server or an earlier host)")  # fmt: skip
            return
        for text, version in ((ipv4, 4), (ipv6, 6)):
            if not text:
                continue
            try:
                address = _address(text, version)
            except ValueError as exc:
                self.problems.append(f"host {hostname!r}: address skipped: {exc}")
                continue
            self.add(Record(name, "A" if version == 4 else "AAAA", self.ttl, (str(address),)))

    def finish(self, nameserver: str, extra_apexes: Iterable[str]) -> Zone:
        for address, name in self.ptr_names.items():
            self.add(Record(address.reverse_pointer, "PTR", self.ttl, (name,)))
        apexes = _outermost({*self.reverse_apexes, *extra_apexes}) | {self.domain}
        serial = zlib.crc32(repr(sorted(_all(self.rrsets), key=_sort_key)).encode())
        for apex in apexes:
            self.add(Record(apex, "SOA", self.ttl, (nameserver, f"hostmaster.{self.domain}", serial,
                                                    *SOA_TIMERS, self.ttl)))  # fmt: skip
            self.add(Record(apex, "NS", self.ttl, (nameserver,)))
        return Zone(
            domain=self.domain,
            ttl=self.ttl,
            apexes=tuple(sorted(apexes, key=lambda a: (-a.count("."), a))),
            problems=tuple(self.problems),
            _rrsets=MappingProxyType({
                name: MappingProxyType({rtype: tuple(recs) for rtype, recs in rrsets.items()})
                for name, rrsets in self.rrsets.items()
            }),
            _names=frozenset(_with_ancestors(self.rrsets, apexes)),
        )  # fmt: skip


def _nameserver_address(text: object) -> Address:
    try:
        return _address(text, 6 if isinstance(text, str) and ":" in text else 4)
    except ValueError as exc:
        raise ConfigError("dns.nameserver_addresses", str(exc)) from None


def _all(rrsets: Mapping[str, Mapping[str, Sequence[Record]]]) -> list[Record]:
    return [rec for by_type in rrsets.values() for recs in by_type.values() for rec in recs]


def _outermost(apexes: Iterable[str]) -> set[str]:
    """Drop reverse apexes nested inside another one: the outer zone already answers for them."""
    unique = set(apexes)
    return {a for a in unique if not any(a != b and a.endswith("." + b) for b in unique)}


def _with_ancestors(rrsets: Mapping[str, object], apexes: Iterable[str]) -> set[str]:
    """Every owner name plus each name between it and its apex: empty non-terminals exist
    (RFC 8020), so they must be NODATA rather than NXDOMAIN."""
    names: set[str] = set()
    apex_set = set(apexes)
    for owner in rrsets:
        labels = owner.split(".")
        for i in range(len(labels)):
            name = ".".join(labels[i:])
            names.add(name)
            if name in apex_set:
                break
    return names


def build_zone(
    domain: str,
    hosts: Iterable[HostEntry],
    static_records: Iterable[object] = (),
    *,
    ttl: int = DEFAULT_TTL,
    nameserver: str = "ns",
    nameserver_addresses: Iterable[str] = (),
    reverse_networks: Iterable[str] = (),
) -> Zone:
    """Build the zone for ``domain`` from ``hosts`` and the ``[dns] records`` strings.

    Raises :class:`~bootbox.errors.ConfigError` for bad configuration (domain, ttl, records,
    nameserver, reverse networks) and never for host data: call it once at startup with no
    hosts to validate the config. It is O(hosts + records); rebuild when hosts change and
    share the result (it is immutable).
    """
    domain = _check_domain(domain, "dns.domain")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise ConfigError("dns.ttl", f"expected seconds in 0..{MAX_TTL} (RFC 2181 §8), got {ttl!r}")
    builder = _Builder(domain, ttl)
    for record in parse_static_records(static_records, domain, ttl):
        builder.add(record)
    ns_name = builder.add_nameserver(nameserver, nameserver_addresses)
    extra = [_network_apex(net, f"dns.reverse_networks[{i}]") for i, net in enumerate(reverse_networks)]
    for host in hosts:
        builder.add_host(*host)
    return builder.finish(ns_name, extra)


# --------------------------------------------------------------------------- the live zone
class _Claim(NamedTuple):
    name: str
    ipv4: Address | None
    ipv6: Address | None
    rank: tuple[int, float, str]
    """Who wins a contested name: (priority, first seen, key); the smallest."""


class LiveZone:
    """The zone with host records that change one host at a time (``set_host``), never rebuilt.

    The configuration part (static records, the name server, configured reverse networks) is a
    :class:`Zone` built once; hosts are kept as claims on names and addresses, so a change
    touches the host's old and new name, its addresses, their reverse names and their parents:
    O(labels), whatever the number of hosts. Answers follow the same rules as :class:`Zone`
    (one :func:`_resolve`), with the same precedence: static records and the name server first,
    then among hosts the lowest ``priority`` (an operator's or a host profile's name before a
    reported one), then the earliest ``first_seen``; an address's PTR names its first publisher.
    The SOA serial counts changes. Not thread-safe by itself (the core takes no threads): the
    service's :class:`~bootbox.service.dnsview.ZoneView` holds a lock around changes and answers.
    """

    def __init__(self, domain: str, static_records: Iterable[object] = (), *, ttl: int = DEFAULT_TTL,
                 nameserver: str = "ns", nameserver_addresses: Iterable[str] = (),
                 reverse_networks: Iterable[str] = ()) -> None:
        self._base = build_zone(domain, (), static_records, ttl=ttl, nameserver=nameserver,
                                nameserver_addresses=nameserver_addresses, reverse_networks=reverse_networks)
        self.domain = self._base.domain
        self.ttl = self._base.ttl
        base_soa = self._base._soa(self.domain)
        self._nameserver = str(base_soa.data[0])
        self._serial = int(base_soa.data[2])
        self._taken = set(self._base._rrsets) | {self.domain, self._nameserver}
        self._hosts: dict[str, _Claim] = {}
        self._claims: dict[str, dict[str, _Claim]] = {}  # name → claimants
        self._ptrs: dict[str, dict[str, tuple[tuple[int, float, str], str]]] = {}  # reverse name → publishers
        self._names: dict[str, int] = {}  # host-layer names and their parents → references
        self._reverse: dict[str, int] = {}  # automatic reverse apexes → addresses in them
        self._apexes = self._base.apexes
        self.problems: dict[str, str] = {}
        self.changes = 0

    # -- changes ------------------------------------------------------------------------------

    def set_host(self, key: str, hostname: str | None, ipv4: str | None, ipv6: str | None, *,
                 priority: int = 0, first_seen: float = 0.0) -> None:
        """Make ``key``'s records say ``hostname`` → ``ipv4``/``ipv6`` (None or "" removes them)."""
        claim = self._claim(key, hostname, ipv4, ipv6, (priority, first_seen, key))
        old = self._hosts.get(key)
        if old == claim:
            return
        touched = {c.name for c in (old, claim) if c is not None}
        before = {name: self._published(name) for name in touched}
        if old is not None:
            del self._hosts[key]
            self._claims[old.name].pop(key, None)
            if not self._claims[old.name]:
                del self._claims[old.name]
        if claim is not None:
            self._hosts[key] = claim
            self._claims.setdefault(claim.name, {})[key] = claim
        for name in touched:
            self._republish(name, before[name], self._published(name))
        self.changes += 1
        self._serial = (self._serial + 1) % 2**32

    def remove_host(self, key: str) -> None:
        self.set_host(key, None, None, None)
        self.problems.pop(key, None)

    def _claim(self, key: str, hostname: str | None, ipv4: str | None, ipv6: str | None,
               rank: tuple[int, float, str]) -> _Claim | None:
        self.problems.pop(key, None)
        if not hostname:
            return None
        try:
            name = _owner(hostname, self.domain)
        except ValueError as exc:
            self.problems[key] = f"host {hostname!r}: no DNS records: {exc}"
            return None
        if name in self._taken:
            self.problems[key] = f"host {hostname!r}: no DNS records: {name} belongs to the apex, a static record or the name server"
            return None
        addresses: list[Address | None] = []
        for text, version in ((ipv4, 4), (ipv6, 6)):
            try:
                addresses.append(_address(text, version) if text else None)
            except ValueError as exc:
                self.problems[key] = f"host {hostname!r}: address skipped: {exc}"
                addresses.append(None)
        return _Claim(name, addresses[0], addresses[1], rank)

    def _published(self, name: str) -> _Claim | None:
        claimants = self._claims.get(name)
        return min(claimants.values(), key=lambda c: c.rank) if claimants else None

    def _republish(self, name: str, before: _Claim | None, after: _Claim | None) -> None:
        if before == after:
            return
        if before is not None:
            self._unref(name)
            for address in (before.ipv4, before.ipv6):
                if address is not None:
                    self._unpublish_ptr(address, before)
        if after is not None:
            self._ref(name)
            for address in (after.ipv4, after.ipv6):
                if address is not None:
                    self._publish_ptr(address, after)

    def _publish_ptr(self, address: Address, claim: _Claim) -> None:
        rname = address.reverse_pointer
        publishers = self._ptrs.setdefault(rname, {})
        if not publishers:
            self._ref(rname)
            apex = _reverse_apex(address)
            self._reverse[apex] = self._reverse.get(apex, 0) + 1
            if self._reverse[apex] == 1:
                self._recompute_apexes()
        publishers[claim.rank[2]] = (claim.rank, claim.name)

    def _unpublish_ptr(self, address: Address, claim: _Claim) -> None:
        rname = address.reverse_pointer
        publishers = self._ptrs.get(rname, {})
        publishers.pop(claim.rank[2], None)
        if not publishers:
            self._ptrs.pop(rname, None)
            self._unref(rname)
            apex = _reverse_apex(address)
            self._reverse[apex] -= 1
            if not self._reverse[apex]:
                del self._reverse[apex]
                self._recompute_apexes()

    def _ref(self, owner: str) -> None:
        labels = owner.split(".")
        for i in range(len(labels) - 1):
            name = ".".join(labels[i:])
            self._names[name] = self._names.get(name, 0) + 1

    def _unref(self, owner: str) -> None:
        labels = owner.split(".")
        for i in range(len(labels) - 1):
            name = ".".join(labels[i:])
            self._names[name] -= 1
            if not self._names[name]:
                del self._names[name]

    def _recompute_apexes(self) -> None:
        apexes = _outermost({*self._base.apexes, *self._reverse}) | {self.domain}
        self._apexes = tuple(sorted(apexes, key=lambda a: (-a.count("."), a)))

    # -- answers ------------------------------------------------------------------------------

    @property
    def apexes(self) -> tuple[str, ...]:
        return self._apexes

    def answer(self, qname: str, qtype: str) -> ZoneAnswer | None:
        """As :meth:`Zone.answer`, over the configuration and the hosts as they are now."""
        labels = _query_labels(qname)
        if labels is None:
            return None
        apex = _apex_of(self._apexes, labels)
        if apex is None:
            return None
        return _resolve(self._exists, self._rrsets_of, lambda ls: _apex_of(self._apexes, ls), self._soa,
                        ".".join(labels), apex, qtype.upper())

    def _exists(self, name: str) -> bool:
        return self._base._exists(name) or name in self._names or name in self._apexes

    def _rrsets_of(self, name: str) -> Mapping[str, tuple[Record, ...]]:
        base = self._base._rrsets_of(name)
        if base:
            return {**base, **self._apex_records(name)} if name in self._base.apexes else base
        rrsets: dict[str, tuple[Record, ...]] = dict(self._apex_records(name))
        claim = self._published(name)
        if claim is not None:
            if claim.ipv4 is not None:
                rrsets["A"] = (Record(name, "A", self.ttl, (str(claim.ipv4),)),)
            if claim.ipv6 is not None:
                rrsets["AAAA"] = (Record(name, "AAAA", self.ttl, (str(claim.ipv6),)),)
        publishers = self._ptrs.get(name)
        if publishers:
            rrsets["PTR"] = (Record(name, "PTR", self.ttl, (min(publishers.values())[1],)),)
        return rrsets

    def _apex_records(self, name: str) -> dict[str, tuple[Record, ...]]:
        if name not in self._apexes:
            return {}
        return {"SOA": (self._soa(name),), "NS": (Record(name, "NS", self.ttl, (self._nameserver,)),)}

    def _soa(self, apex: str) -> Record:
        return Record(apex, "SOA", self.ttl, (self._nameserver, f"hostmaster.{self.domain}", self._serial,
                                             *SOA_TIMERS, self.ttl))

    @property
    def records(self) -> tuple[Record, ...]:
        """Every record, sorted by name and type (for listings and tests)."""
        names = set(self._base._rrsets) | set(self._claims) | set(self._ptrs) | set(self._apexes)
        found = [rec for name in names for recs in self._rrsets_of(name).values() for rec in recs]
        return tuple(sorted(found, key=_sort_key))
