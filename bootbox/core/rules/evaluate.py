"""Evaluating a rule set for a host: the plain definition and the compiled index.

``evaluate(ruleset, attrs)`` is the definition: walk the rules in priority order and, for each
item type, keep the first matching rule that carries it. That walk costs O(rules) per host, far too
slow for 10,000 rules, so ``compile_ruleset`` builds indexes that find the few rules a host can
possibly match:

* every rule without ``all_hosts`` has at least one pattern, and a host can only match the rule if
  it matches that pattern. One pattern per rule is chosen as its *key* (the most selective kind,
  e.g. ``mac`` before ``vendor``) and the rule is filed under each key value;
* string key values are filed in ``attr → normalised value → rule positions``;
* IP key spans (addresses, ranges, CIDRs) are cut into aligned CIDR blocks and filed in
  ``attr → prefix length → network → rule positions``; a host address is looked up once per
  prefix length in use (at most 33 for IPv4, 129 for IPv6), so ranges need no linear scan;
* ``all_hosts`` rules are candidates for every host.

A host's candidates are merged in priority order and checked against their other patterns (the
lookup already proved the key), and the walk stops once every item type the set assigns is
decided. Because a non-candidate cannot match,
the result is the definition's result; ``tests/test_rules.py`` checks that with hypothesis.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, NamedTuple

from bootbox.core.rules.pattern import HostFacts, Pattern, ValueKind, host_facts, kind_of
from bootbox.core.rules.ruleset import Rule, RuleSet


class Choice(NamedTuple):
    """The value chosen for one item type and the rule that gave it."""

    value: str
    rule: str


class Decision(Mapping[str, Choice]):
    """Item type → ``Choice``; item types no matching rule carries are absent.

    An immutable mapping so callers can pass it around threads; ``associations`` is the form the
    store keeps on a host (``{"image": "esxi-8", …}``).
    """

    __slots__ = ("_choices",)

    def __init__(self, choices: Mapping[str, Choice] | None = None) -> None:
        self._choices: dict[str, Choice] = dict(choices or {})

    def __getitem__(self, item_type: str) -> Choice:
        return self._choices[item_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def __len__(self) -> int:
        return len(self._choices)

    def __repr__(self) -> str:
        return f"Decision({self._choices!r})"

    @property
    def associations(self) -> dict[str, str]:
        """``{item_type: value}``: what a host stores after its first boot."""
        return {t: c.value for t, c in self._choices.items()}


# --- the definition -----------------------------------------------------------------------------


def rule_matches(rule: Rule, facts: HostFacts) -> bool:
    """A rule matches when it is ``all_hosts`` or every one of its patterns matches."""
    for pattern in rule.patterns:
        if not pattern.matches(facts):
            return False
    return True


def _evaluate_plain(ruleset: RuleSet, attrs: Mapping[str, Any]) -> Decision:
    facts = host_facts(attrs)
    chosen: dict[str, Choice] = {}
    for rule in ruleset:
        if rule_matches(rule, facts):
            for item_type, value in rule.items:
                chosen.setdefault(item_type, Choice(value, rule.name))
    return Decision(chosen)


# --- the compiled form --------------------------------------------------------------------------

_IP_BITS = {ValueKind.IPV4: 32, ValueKind.IPV6: 128}

# How many hosts a value of each attribute typically singles out, best first. Only the choice of
# key depends on it (never the result): a rule keyed on its MAC is a candidate for one host, a
# rule keyed on its vendor for a whole rack.
_KEY_RANK = {
    "mac": 0,
    "uuid": 0,
    "serial": 1,
    "asset": 1,
    "hostname": 2,
    "ipv4": 3,
    "ipv6": 3,
    "oemstring": 4,
    "model": 6,
    "domain": 6,
    "vendor": 7,
    "arch": 8,
    "platform": 8,
}
_PLUGIN_ATTRIBUTE_RANK = 5


def _key_cost(pattern: Pattern) -> tuple[int, int]:
    return _KEY_RANK.get(pattern.attr, _PLUGIN_ATTRIBUTE_RANK), len(pattern.values)


def _cidr_blocks(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    """Cover ``[lo, hi]`` exactly with aligned blocks, as ``(prefix length, network >> host bits)``."""
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        host_bits = size.bit_length() - 1
        yield bits - host_bits, lo >> host_bits
        lo += size


def _append_once(bucket: list[int], position: int) -> None:
    # Positions arrive in increasing order, so a repeat can only be the last element.
    if not bucket or bucket[-1] != position:
        bucket.append(position)


def _freeze(table: Mapping[Any, list[int]]) -> dict[Any, tuple[int, ...]]:
    return {key: tuple(positions) for key, positions in table.items()}


@dataclass(frozen=True, eq=False)
class CompiledRuleSet:
    """A rule set plus the indexes that make one decision cost O(candidates), not O(rules).

    Build it with ``compile_ruleset`` whenever the set changes; it is never mutated, so many
    threads may evaluate against it at once. The index tables are private.
    """

    ruleset: RuleSet
    item_types: frozenset[str]
    attributes: frozenset[str]
    _exact: Mapping[str, Mapping[Any, tuple[int, ...]]] = field(repr=False)
    _ip: Mapping[str, tuple[tuple[int, Mapping[int, tuple[int, ...]]], ...]] = field(repr=False)
    _always: tuple[int, ...] = field(repr=False)
    _types: tuple[frozenset[str], ...] = field(repr=False)
    _residual: tuple[tuple[Pattern, ...], ...] = field(repr=False)


def compile_ruleset(ruleset: RuleSet) -> CompiledRuleSet:
    """Index ``ruleset`` for fast evaluation (see the module docstring for the layout)."""
    exact: defaultdict[str, defaultdict[Any, list[int]]] = defaultdict(lambda: defaultdict(list))
    spans: defaultdict[str, defaultdict[int, defaultdict[int, list[int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    always: list[int] = []
    residual: list[tuple[Pattern, ...]] = []
    for position, rule in enumerate(ruleset):
        if rule.all_hosts:
            always.append(position)
            residual.append(())
            continue
        key = min(rule.patterns, key=_key_cost)
        # Reaching the rule through its key already proves the key pattern matched: the exact
        # table holds the pattern's own normalised values and the CIDR blocks tile its spans.
        residual.append(tuple(p for p in rule.patterns if p is not key))
        if key.spans:
            bits = _IP_BITS[key.kind]
            for lo, hi in key.spans:
                for prefix_len, network in _cidr_blocks(lo, hi, bits):
                    _append_once(spans[key.attr][prefix_len][network], position)
        else:
            for value in key.match_set:
                _append_once(exact[key.attr][value], position)
    ip_tables = {
        attr: tuple(
            (_IP_BITS[kind_of(attr)] - prefix_len, _freeze(table))
            for prefix_len, table in sorted(by_len.items())
        )
        for attr, by_len in spans.items()
    }
    return CompiledRuleSet(
        ruleset=ruleset,
        item_types=ruleset.item_types,
        attributes=frozenset(p.attr for rule in ruleset for p in rule.patterns),
        _exact={attr: _freeze(table) for attr, table in exact.items()},
        _ip=ip_tables,
        _always=tuple(always),
        _types=tuple(rule.item_types for rule in ruleset),
        _residual=tuple(residual),
    )


def _candidates(compiled: CompiledRuleSet, facts: HostFacts) -> list[int]:
    """Positions of every rule the host could match, in priority order (a superset of matches).

    A position may appear twice in a row (a host with two values both filed for one rule); the
    caller skips repeats. Concatenating the sorted hit lists and sorting once is about twice as
    fast as a set union here, because the sort merges the already-sorted runs.
    """
    found = list(compiled._always)
    exact, spans = compiled._exact, compiled._ip
    for attr, values in facts.items():
        table = exact.get(attr)
        if table is not None:
            for value in values:
                hit = table.get(value)
                if hit:
                    found += hit
        levels = spans.get(attr)
        if levels is not None:
            for value in values:
                for shift, networks in levels:
                    hit = networks.get(value >> shift)
                    if hit:
                        found += hit
    found.sort()
    return found


def _evaluate_compiled(compiled: CompiledRuleSet, attrs: Mapping[str, Any]) -> Decision:
    facts = host_facts(attrs, compiled.attributes)
    rules = compiled.ruleset.rules
    types = compiled._types
    residual = compiled._residual
    undecided = set(compiled.item_types)
    chosen: dict[str, Choice] = {}
    previous = -1
    for position in _candidates(compiled, facts):
        if position == previous or undecided.isdisjoint(types[position]):
            continue
        previous = position
        rest = residual[position]
        if rest and not all(p.matches(facts) for p in rest):
            continue
        rule = rules[position]
        for item_type, value in rule.items:
            if item_type in undecided:
                chosen[item_type] = Choice(value, rule.name)
                undecided.discard(item_type)
        if not undecided:
            break
    return Decision(chosen)


def evaluate(rules: RuleSet | CompiledRuleSet, attrs: Mapping[str, Any]) -> Decision:
    """Decide each item type for a host with attributes ``attrs``.

    With a ``CompiledRuleSet`` this uses the index (the boot path); with a plain ``RuleSet`` it
    walks every rule (the definition; fine for a handful of rules or a one-off CLI query). Both
    give the same Decision. ``attrs`` maps lower-case attribute names to a string or a list of
    strings; attributes no rule tests are ignored.
    """
    if isinstance(rules, CompiledRuleSet):
        return _evaluate_compiled(rules, attrs)
    return _evaluate_plain(rules, attrs)
