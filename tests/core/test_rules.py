"""The rules engine: parsing, matching, per-item-type precedence, edits, diff, export, explain,
compliance, and the property that the compiled index decides exactly like the plain definition."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bootbox.errors import Conflict, NotFound, ValidationError
from bootbox.core.rules import (
    BUILTIN_ATTRIBUTES,
    BUILTIN_ITEM_TYPES,
    Choice,
    DiffKind,
    ItemDrift,
    Pattern,
    Rule,
    RuleSet,
    add,
    compile_ruleset,
    compliance,
    diff,
    evaluate,
    explain,
    format_explanation,
    make_rule,
    move,
    parse_item,
    parse_pattern,
    remove,
    replace,
    rule_from_dict,
    rule_to_dict,
    ruleset_from_dict,
    ruleset_to_dict,
)
from bootbox.core.rules.evaluate import _cidr_blocks


def both(ruleset: RuleSet, attrs: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Evaluate through the definition and the index; they must agree, and the result is returned."""
    plain = evaluate(ruleset, attrs)
    indexed = evaluate(compile_ruleset(ruleset), attrs)
    assert plain == indexed
    return {t: (c.value, c.rule) for t, c in plain.items()}


def matches(pattern: str, attrs: dict[str, Any], attributes: frozenset[str] = BUILTIN_ATTRIBUTES) -> bool:
    rule = make_rule("r", [pattern], ["image=x"], attributes=attributes)
    return both(RuleSet((rule,)), attrs) == {"image": ("x", "r")}


# --- pattern parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "attr", "op", "values", "canonical"),
    [
        ("vendor=Dell", "vendor", "=", ("Dell",), "vendor=Dell"),
        ("  Vendor = Dell Inc. , HPE ", "vendor", "=", ("Dell Inc.", "HPE"), "vendor=Dell Inc.,HPE"),
        ("model==PowerEdge R640, rev A", "model", "==", ("PowerEdge R640, rev A",), "model==PowerEdge R640, rev A"),
        ("ipv4=10.0.0.10-10.0.0.20", "ipv4", "=", ("10.0.0.10-10.0.0.20",), "ipv4=10.0.0.10-10.0.0.20"),
        ("ipv4=10.0.0.10 - 10.0.0.20", "ipv4", "=", ("10.0.0.10 - 10.0.0.20",), "ipv4=10.0.0.10 - 10.0.0.20"),
        ("ipv4=198.18.0.0/24", "ipv4", "=", ("198.18.0.0/24",), "ipv4=198.18.0.0/24"),
        ("ipv4=198.18.0.5,198.18.1.0/24", "ipv4", "=", ("198.18.0.5", "198.18.1.0/24"), "ipv4=198.18.0.5,198.18.1.0/24"),
        ("ipv6=2001:db8::/32", "ipv6", "=", ("2001:db8::/32",), "ipv6=2001:db8::/32"),
        ("ipv6=2001:db8::1-2001:db8::ff", "ipv6", "=", ("2001:db8::1-2001:db8::ff",), "ipv6=2001:db8::1-2001:db8::ff"),
        ("mac=AA-BB-CC-DD-EE-FF", "mac", "=", ("AA-BB-CC-DD-EE-FF",), "mac=AA-BB-CC-DD-EE-FF"),
        ("uuid==4C4C4544-0042-3610-8052-B4C04F4C4B32", "uuid", "==", ("4C4C4544-0042-3610-8052-B4C04F4C4B32",),
         "uuid==4C4C4544-0042-3610-8052-B4C04F4C4B32"),
        ("oemstring==Dell System, slot 3", "oemstring", "==", ("Dell System, slot 3",), "oemstring==Dell System, slot 3"),
        ("hostname===odd", "hostname", "==", ("=odd",), "hostname===odd"),
    ],
)
def test_pattern_parses(text: str, attr: str, op: str, values: tuple[str, ...], canonical: str) -> None:
    pattern = parse_pattern(text)
    assert (pattern.attr, pattern.op, pattern.values, pattern.text) == (attr, op, values, canonical)
    assert parse_pattern(pattern.text) == pattern  # the text form round-trips exactly


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("vendor", "expected attr=value"),
        ("=Dell", "missing attribute name"),
        ("vendor=", "empty value"),
        ("vendor==", "empty value"),
        ("vendor=Dell,,HPE", "empty value in list"),
        ("vendor=Dell,", "empty value in list"),
        ("ipv4=10.0.0.20-10.0.0.10", "ends before it starts"),
        ("ipv4=10.0.0.1-10.0.0", "'10.0.0' is not an IPv4 address"),
        ("ipv4=10.0.0.01", "is not an IPv4 address"),
        ("ipv4=198.18.0.5/24", "is not a valid CIDR block"),
        ("ipv4=198.18.0.0/33", "is not a valid CIDR block"),
        ("ipv4=2001:db8::1", "is not an IPv4 address"),
        ("ipv4==10.0.0.1,10.0.0.2", "is not an IPv4 address"),
        ("ipv6=10.0.0.0/8", "is not an IPv6 network"),
        ("ipv6=2001:db8::9-2001:db8::1", "ends before it starts"),
        ("mac=aa:bb:cc", "is not a MAC address"),
        ("mac=aa:bb:cc:dd:ee:ff,zz:bb:cc:dd:ee:ff", "is not a MAC address"),
        ("uuid=1234", "is not a UUID"),
    ],
)
def test_malformed_pattern_names_the_pattern(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_pattern(text)
    assert caught.value.field == "pattern"
    assert fragment in caught.value.message
    assert repr(text.strip()) in caught.value.message


def test_unknown_attribute_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_pattern("foo=bar")
    assert caught.value.field == "pattern"
    assert caught.value.message == "unknown attribute 'foo'; known: " + ", ".join(sorted(BUILTIN_ATTRIBUTES))


def test_plugin_attribute_is_known_only_when_registered() -> None:
    attributes = BUILTIN_ATTRIBUTES | {"rack"}
    assert parse_pattern("rack=R1", attributes).attr == "rack"
    assert matches("rack=R1", {"rack": " r1"}, attributes)
    with pytest.raises(ValidationError, match="unknown attribute 'rack'"):
        parse_pattern("rack=R1")


def test_pattern_must_be_text() -> None:
    with pytest.raises(ValidationError, match="expected a string"):
        parse_pattern(42)  # type: ignore[arg-type]


def test_built_pattern_refuses_a_comma_it_could_not_write_back() -> None:
    with pytest.raises(ValidationError, match="needs '=='"):
        Pattern("model", "=", ("a,b",))
    assert Pattern("model", "==", ("a,b",)).text == "model==a,b"


# --- matching -----------------------------------------------------------------------------------

DELL_MAC = "aa:bb:cc:dd:ee:ff"
DELL_UUID = "4c4c4544-0042-3610-8052-b4c04f4c4b32"


@pytest.mark.parametrize(
    ("pattern", "attrs", "expected"),
    [
        ("vendor=Dell", {"vendor": "DELL"}, True),
        ("vendor=Dell", {"vendor": "  dell  "}, True),
        ("vendor=Dell", {"vendor": "Dell Inc."}, False),
        ("vendor=Dell", {}, False),
        ("vendor=Dell", {"vendor": ""}, False),
        ("vendor=Dell", {"model": "Dell"}, False),
        ("vendor=Dell,HPE", {"vendor": "hpe"}, True),
        ("vendor=Dell,HPE", {"vendor": "Lenovo"}, False),
        ("model==A, B", {"model": "a, b"}, True),
        ("model==A, B", {"model": "A"}, False),
        ("ipv4=10.0.0.10-10.0.0.20", {"ipv4": "10.0.0.10"}, True),
        ("ipv4=10.0.0.10-10.0.0.20", {"ipv4": "10.0.0.20"}, True),
        ("ipv4=10.0.0.10-10.0.0.20", {"ipv4": "10.0.0.9"}, False),
        ("ipv4=10.0.0.10-10.0.0.20", {"ipv4": "10.0.0.21"}, False),
        ("ipv4=198.18.0.0/24", {"ipv4": "198.18.0.0"}, True),
        ("ipv4=198.18.0.0/24", {"ipv4": "198.18.0.255"}, True),
        ("ipv4=198.18.0.0/24", {"ipv4": "198.18.1.0"}, False),
        ("ipv4=198.18.0.5,198.18.1.0/24", {"ipv4": "198.18.0.5"}, True),
        ("ipv4=198.18.0.5,198.18.1.0/24", {"ipv4": "198.18.1.77"}, True),
        ("ipv4=198.18.0.5,198.18.1.0/24", {"ipv4": "198.18.0.6"}, False),
        ("ipv4=0.0.0.0/0", {"ipv4": "203.0.113.9"}, True),
        ("ipv4=10.0.0.15", {"ipv4": ["192.0.2.1", "10.0.0.15"]}, True),
        ("ipv4=10.0.0.10", {"ipv4": "10.0.0.010"}, False),
        ("ipv4=10.0.0.10", {"ipv4": "not-an-address"}, False),
        ("ipv4=0.0.0.0/0", {"ipv4": "2001:db8::1"}, False),
        ("ipv6=2001:db8::/32", {"ipv6": "2001:DB8::5"}, True),
        ("ipv6=2001:db8::/32", {"ipv6": "2001:db9::"}, False),
        ("ipv6=2001:db8::1-2001:db8::ff", {"ipv6": "2001:db8:0:0::80"}, True),
        ("ipv6=::/0", {"ipv6": "10.0.0.1"}, False),
        ("mac=AA:BB:CC:DD:EE:FF", {"mac": "aa-bb-cc-dd-ee-ff"}, True),
        ("mac=aabb.ccdd.eeff", {"mac": DELL_MAC}, True),
        ("mac=aa:bb:cc:dd:ee:ff", {"mac": "AABBCCDDEEFF"}, True),
        ("mac=aa:bb:cc:dd:ee:ff", {"mac": "aa:bb:cc:dd:ee:fe"}, False),
        ("mac=aa:bb:cc:dd:ee:ff", {"mac": "garbage"}, False),
        ("uuid=" + DELL_UUID, {"uuid": DELL_UUID.upper().replace("-", "")}, True),
        ("uuid=" + DELL_UUID.upper(), {"uuid": "{" + DELL_UUID + "}"}, True),
        ("uuid=" + DELL_UUID, {"uuid": "00000000-0000-0000-0000-000000000000"}, False),
        ("oemstring=slot 3", {"oemstring": "Dell System\nslot 3"}, True),
        ("oemstring=slot 3", {"oemstring": ["Dell System", "SLOT 3"]}, True),
        ("oemstring=slot 3", {"oemstring": "Dell System, slot 3"}, False),
        ("oemstring==Dell System, slot 3", {"oemstring": "Dell System, slot 3"}, True),
        ("hostname=esx-01", {"hostname": "ESX-01"}, True),
        ("serial=ABC123", {"serial": ["xyz", "abc123"]}, True),
    ],
)
def test_pattern_matching(pattern: str, attrs: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, attrs) is expected


def test_patterns_are_anded_across_and_within_attributes() -> None:
    rule = make_rule("r", ["vendor=Dell,HPE", "vendor=HPE,Lenovo", "model=G10"], ["image=x"])
    ruleset = RuleSet((rule,))
    assert both(ruleset, {"vendor": "HPE", "model": "g10"}) == {"image": ("x", "r")}
    assert both(ruleset, {"vendor": "Dell", "model": "G10"}) == {}
    assert both(ruleset, {"vendor": "HPE"}) == {}


# --- rules and items ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a b", "caf\u00e9", "a" * 65, "x/y", None])
def test_bad_rule_names(name: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        make_rule(name, ["vendor=Dell"], ["image=x"])
    assert caught.value.field == "name"


def test_longest_rule_name_is_accepted() -> None:
    assert make_rule("a" * 64, ["vendor=Dell"], ["image=x"]).name == "a" * 64


@pytest.mark.parametrize(
    ("patterns", "items", "all_hosts", "field", "fragment"),
    [
        (["vendor=Dell"], ["image=x"], True, "patterns", "not both"),
        ([], ["image=x"], False, "patterns", "at least one pattern"),
        (["vendor=Dell"], [], False, "items", "at least one item"),
        (["vendor=Dell"], ["image=x", "image=y"], False, "item", "image given twice"),
        (["vendor=Dell"], ["location=dc1"], False, "item", "unknown item type 'location'"),
        (["vendor=Dell"], ["image"], False, "item", "expected type=value"),
        (["vendor=Dell"], ["image="], False, "item", "non-empty"),
        (["vendor=Dell"], {"image": "a\nb"}, False, "item", "single-line"),
        (["vendor=Dell"], {"image": 7}, False, "item", "non-empty single-line string"),
    ],
)
def test_invalid_rules(patterns: list[str], items: Any, all_hosts: bool, field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_rule("r", patterns, items, all_hosts=all_hosts)
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_items_from_cli_or_mapping_are_the_same_rule() -> None:
    from_cli = make_rule("r", "vendor=Dell", ["group=lab", " Image = esxi-8 "])
    from_api = make_rule("r", ["vendor=Dell"], {"image": "esxi-8", "group": "lab"})
    assert from_cli == from_api
    assert from_cli.items == (("group", "lab"), ("image", "esxi-8"))
    assert parse_item("host_profile=hp 1") == ("host_profile", "hp 1")


def test_plugin_item_type_is_known_only_when_registered() -> None:
    item_types = BUILTIN_ITEM_TYPES | {"vcd_agent"}
    rule = make_rule("r", ["vendor=Dell"], ["vcd_agent=on"], item_types=item_types)
    assert both(RuleSet((rule,)), {"vendor": "dell"}) == {"vcd_agent": ("on", "r")}
    with pytest.raises(ValidationError, match="unknown item type 'vcd_agent'"):
        make_rule("r", ["vendor=Dell"], ["vcd_agent=on"])


def test_rule_only_accepts_parsed_patterns_and_positive_versions() -> None:
    with pytest.raises(ValidationError, match="parsed Pattern"):
        Rule("r", ("vendor=Dell",), (("image", "x"),))  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as caught:
        make_rule("r", ["vendor=Dell"], ["image=x"], version=0)
    assert caught.value.field == "version"


# --- precedence ---------------------------------------------------------------------------------

NARROW_EARLY = RuleSet(
    (
        make_rule("rack-7-hp", ["serial=ABC123,ABC124"], ["host_profile=rack7"]),
        make_rule("dell-8", ["vendor=Dell"], ["image=esxi-8", "host_profile=dell-default"]),
        make_rule("default", [], ["image=esxi-7", "group=unsorted"], all_hosts=True),
    )
)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        (
            {"vendor": "Dell", "serial": "abc123"},
            {"host_profile": ("rack7", "rack-7-hp"), "image": ("esxi-8", "dell-8"), "group": ("unsorted", "default")},
        ),
        (
            {"vendor": "DELL", "serial": "zzz"},
            {"host_profile": ("dell-default", "dell-8"), "image": ("esxi-8", "dell-8"), "group": ("unsorted", "default")},
        ),
        (
            {"vendor": "HPE", "serial": "ABC124"},
            {"host_profile": ("rack7", "rack-7-hp"), "image": ("esxi-7", "default"), "group": ("unsorted", "default")},
        ),
        ({}, {"image": ("esxi-7", "default"), "group": ("unsorted", "default")}),
    ],
)
def test_each_item_type_takes_the_first_matching_rule_that_has_it(attrs: dict[str, str], expected: dict) -> None:
    assert both(NARROW_EARLY, attrs) == expected


def test_empty_rule_set_decides_nothing() -> None:
    assert both(RuleSet(), {"vendor": "Dell"}) == {}


def test_decision_is_a_read_only_mapping_with_associations() -> None:
    decision = evaluate(compile_ruleset(NARROW_EARLY), {"vendor": "Dell", "serial": "ABC123"})
    assert decision["image"] == Choice("esxi-8", "dell-8")
    assert decision.associations == {"group": "unsorted", "host_profile": "rack7", "image": "esxi-8"}
    with pytest.raises(TypeError):
        decision["image"] = Choice("x", "y")  # type: ignore[index]


# --- edits --------------------------------------------------------------------------------------

A = make_rule("a", ["vendor=A"], ["image=a"])
B = make_rule("b", ["vendor=B"], ["image=b"])
C = make_rule("c", ["vendor=C"], ["image=c"])
ABC = RuleSet((A, B, C))


def names(ruleset: RuleSet) -> list[str]:
    return list(ruleset.names)


def test_add_appends_or_inserts_and_leaves_the_original_alone() -> None:
    d = make_rule("d", ["vendor=D"], ["image=d"])
    assert names(add(ABC, d)) == ["a", "b", "c", "d"]
    assert names(add(ABC, d, at=0)) == ["d", "a", "b", "c"]
    assert names(add(ABC, d, at=3)) == ["a", "b", "c", "d"]
    assert names(ABC) == ["a", "b", "c"]


@pytest.mark.parametrize("at", [-1, 4, True, "1"])
def test_add_refuses_positions_outside_the_set(at: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        add(ABC, make_rule("d", ["vendor=D"], ["image=d"]), at=at)
    assert caught.value.field == "at"


def test_add_duplicate_name_conflicts() -> None:
    with pytest.raises(Conflict, match="'b' already exists"):
        add(ABC, make_rule("b", ["vendor=X"], ["image=x"]))


def test_remove() -> None:
    assert names(remove(ABC, "b")) == ["a", "c"]
    with pytest.raises(NotFound):
        remove(ABC, "zz")


@pytest.mark.parametrize(("name", "at", "expected"), [("c", 0, "cab"), ("a", 2, "bca"), ("b", 1, "abc"), ("a", 1, "bac")])
def test_move(name: str, at: int, expected: str) -> None:
    assert "".join(names(move(ABC, name, at))) == expected


def test_move_refuses_missing_rules_and_bad_positions() -> None:
    with pytest.raises(NotFound):
        move(ABC, "zz", 0)
    with pytest.raises(ValidationError):
        move(ABC, "a", 3)


def test_replace_bumps_the_version_in_place() -> None:
    new_b = make_rule("b", ["vendor=B,BB"], ["image=b2"])
    once = replace(ABC, new_b)
    twice = replace(once, make_rule("b", ["vendor=B"], ["image=b3"]))
    assert names(twice) == ["a", "b", "c"]
    assert (once.get("b").version, twice.get("b").version) == (2, 3)
    assert twice.get("b").item_map == {"image": "b3"}
    assert ABC.get("b").version == 1


def test_replace_with_same_content_is_a_no_op() -> None:
    assert replace(ABC, make_rule("b", ["vendor=B"], ["image=b"])) is ABC
    with pytest.raises(NotFound):
        replace(ABC, make_rule("zz", ["vendor=B"], ["image=b"]))


def test_rule_set_refuses_duplicate_names() -> None:
    with pytest.raises(ValidationError, match="duplicate rule name 'a'"):
        RuleSet((A, A))


# --- diff ---------------------------------------------------------------------------------------


def summary(a: RuleSet, b: RuleSet) -> list[tuple[str, str]]:
    return [(str(d.kind), d.name) for d in diff(a, b)]


def test_identical_sets_have_no_diff() -> None:
    assert diff(ABC, RuleSet((A, B, C))) == []


def test_insert_at_top_is_an_addition_not_a_move_of_everything() -> None:
    d = make_rule("d", ["vendor=D"], ["image=d"])
    entries = diff(ABC, add(ABC, d, at=0))
    assert [(str(e.kind), e.name) for e in entries] == [("added", "d")]
    assert str(entries[0]) == "added rule 'd' at 0: vendor=D -> image=d"


def test_removal_and_move() -> None:
    assert summary(ABC, remove(ABC, "b")) == [("removed", "b")]
    assert str(diff(ABC, remove(ABC, "b"))[0]) == "removed rule 'b' (was at 1): vendor=B -> image=b"
    moved = diff(ABC, move(ABC, "c", 0))
    assert [(str(e.kind), e.name, e.old_position, e.new_position) for e in moved] == [("moved", "c", 2, 0)]
    assert str(moved[0]) == "moved rule 'c' from 2 to 0"


def test_change_lists_what_changed() -> None:
    edited = replace(ABC, make_rule("b", ["vendor=B,BB"], ["image=b2", "group=lab"]))
    (entry,) = diff(ABC, edited)
    assert entry.kind is DiffKind.CHANGED
    assert entry.details == ("version 1 -> 2", "patterns -vendor=B +vendor=B,BB", "+group=lab", "image b -> b2")
    assert str(entry) == "changed rule 'b': version 1 -> 2; patterns -vendor=B +vendor=B,BB; +group=lab; image b -> b2"


def test_change_to_all_hosts_and_reordered_patterns() -> None:
    two = RuleSet((make_rule("r", ["vendor=A", "model=M"], ["image=a"]),))
    reordered = RuleSet((make_rule("r", ["model=M", "vendor=A"], ["image=a"]),))
    everyone = RuleSet((make_rule("r", [], ["image=a"], all_hosts=True),))
    assert diff(two, reordered)[0].details == ("patterns reordered",)
    assert diff(two, everyone)[0].details == ("all_hosts false -> true", "patterns -vendor=A -model=M")


def test_a_rule_both_edited_and_moved_reports_both() -> None:
    after = move(replace(ABC, make_rule("a", ["vendor=A"], ["image=a2"])), "a", 2)
    assert summary(ABC, after) == [("changed", "a"), ("moved", "a")]


def longest_kept_order(sequence: list[int]) -> int:
    """Length of the longest increasing subsequence, by the quadratic textbook method."""
    best = [1] * len(sequence)
    for i in range(len(sequence)):
        for j in range(i):
            if sequence[j] < sequence[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best, default=0)


@given(st.permutations(list("abcdefgh")))
def test_reordering_reports_the_fewest_moves(order: list[str]) -> None:
    rules = {n: make_rule(n, [f"vendor={n}"], [f"image={n}"]) for n in "abcdefgh"}
    before = RuleSet(tuple(rules[n] for n in "abcdefgh"))
    after = RuleSet(tuple(rules[n] for n in order))
    entries = diff(before, after)
    assert all(e.kind is DiffKind.MOVED for e in entries)
    assert [e.new_position for e in entries] == [after.index(e.name) for e in entries]
    assert len(entries) == 8 - longest_kept_order(["abcdefgh".index(n) for n in order])
    moved = {e.name for e in entries}
    assert [n for n in order if n not in moved] == [n for n in "abcdefgh" if n not in moved]


# --- serialisation ------------------------------------------------------------------------------


def test_rule_to_dict_keeps_patterns_as_text() -> None:
    rule = make_rule("r1", ["mac=AA-BB-CC-DD-EE-FF", "ipv4=10.0.0.1-10.0.0.9"], ["image=esxi-8", "group=lab"])
    assert rule_to_dict(rule) == {
        "name": "r1",
        "version": 1,
        "all_hosts": False,
        "patterns": ["mac=AA-BB-CC-DD-EE-FF", "ipv4=10.0.0.1-10.0.0.9"],
        "items": {"group": "lab", "image": "esxi-8"},
    }
    assert rule_from_dict(rule_to_dict(rule)) == rule


def test_rule_set_round_trips_through_yaml_exactly() -> None:
    ruleset = replace(NARROW_EARLY, make_rule("dell-8", ["vendor==Dell, Inc."], ["image=esxi-8u1"]))
    text = yaml.safe_dump(ruleset_to_dict(ruleset), sort_keys=False)
    again = ruleset_from_dict(yaml.safe_load(text))
    assert again == ruleset
    assert again.get("dell-8").version == 2
    assert yaml.safe_dump(ruleset_to_dict(again), sort_keys=False) == text


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        ({"name": "r", "patterns": ["vendor=A"], "items": {"image": "a"}, "pattern": []}, "rule", "unknown key(s) pattern"),
        ({"name": "r", "patterns": "vendor=A", "items": {"image": "a"}}, "patterns", "expected a list"),
        ({"name": "r", "patterns": ["vendor=A"], "items": ["image=a"]}, "items", "expected a mapping"),
        ({"patterns": ["vendor=A"], "items": {"image": "a"}}, "name", "not a valid rule name"),
        ({"name": "r", "patterns": ["vendor=A"], "items": {"image": "a"}, "all_hosts": "yes"}, "all_hosts", "true or false"),
        ({"name": "r", "patterns": [7], "items": {"image": "a"}}, "pattern", "expected a string"),
        ("r", "rule", "expected a mapping"),
    ],
)
def test_rule_from_dict_refuses_bad_documents(doc: Any, field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        rule_from_dict(doc)
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_rule_set_from_dict_refuses_bad_documents() -> None:
    with pytest.raises(ValidationError, match="single key 'rules'"):
        ruleset_from_dict({"rules": [], "extra": 1})
    with pytest.raises(ValidationError, match="expected a list of rules"):
        ruleset_from_dict({"rules": {"a": 1}})
    with pytest.raises(ValidationError, match="duplicate rule name 'a'"):
        ruleset_from_dict({"rules": [rule_to_dict(A), rule_to_dict(A)]})


# --- explain ------------------------------------------------------------------------------------


def test_explain_shows_each_pattern_and_what_each_rule_won() -> None:
    attrs = {"vendor": "DELL", "serial": ["X1", "ABC123"]}
    report = explain(NARROW_EARLY, attrs)
    assert [(e.rule, e.position, e.matched, e.won) for e in report] == [
        ("rack-7-hp", 0, True, ("host_profile",)),
        ("dell-8", 1, True, ("image",)),
        ("default", 2, True, ("group",)),
    ]
    (check,) = report[0].checks
    assert (check.pattern, check.attr, check.host_values, check.matched) == (
        "serial=ABC123,ABC124",
        "serial",
        ("X1", "ABC123"),
        True,
    )
    assert report[2].all_hosts and report[2].checks == ()


def test_explain_a_rule_that_does_not_match() -> None:
    report = explain(compile_ruleset(NARROW_EARLY), {"vendor": "HPE"})
    assert [(e.matched, e.won) for e in report] == [(False, ()), (False, ()), (True, ("group", "image"))]
    assert report[0].checks[0].host_values == () and not report[0].checks[0].matched
    text = format_explanation(report)
    assert "   0  rack-7-hp  no match  host_profile=rack7" in text
    assert "serial=ABC123,ABC124  host: (none)  no" in text
    assert "vendor=Dell  host: HPE  no" in text
    assert "   2  default  MATCH  group=unsorted (won) image=esxi-7 (won)" in text


# --- compliance ---------------------------------------------------------------------------------


def test_compliance_lists_only_drifting_hosts_with_each_changed_item() -> None:
    hosts = [
        ("ok", {"vendor": "Dell"}, {"image": "esxi-8", "host_profile": "dell-default", "group": "unsorted"}),
        ("changed", {"vendor": "Dell", "serial": "ABC123"}, {"image": "esxi-8", "host_profile": "dell-default", "group": "unsorted"}),
        ("appears", {"vendor": "HPE"}, {"image": "esxi-7", "group": ""}),
        ("disappears", {"vendor": "HPE"}, {"image": "esxi-7", "group": "unsorted", "host_profile": "old"}),
    ]
    for rules in (NARROW_EARLY, compile_ruleset(NARROW_EARLY)):
        report = compliance(rules, hosts)
        assert [(d.host, d.items, d.expected) for d in report] == [
            (
                "changed",
                (ItemDrift("host_profile", "dell-default", "rack7", "rack-7-hp"),),
                {"group": "unsorted", "host_profile": "rack7", "image": "esxi-8"},
            ),
            ("appears", (ItemDrift("group", None, "unsorted", "default"),), {"group": "unsorted", "image": "esxi-7"}),
            ("disappears", (ItemDrift("host_profile", "old", None, None),), {"group": "unsorted", "image": "esxi-7"}),
        ]
        assert all(type(row) is tuple for drift in report for row in drift.rows)  # untracked by the GC
    changes = [item.change for drift in compliance(NARROW_EARLY, hosts) for item in drift.items]
    assert changes == ["changes", "appears", "disappears"]
    assert str(ItemDrift("host_profile", "old", None, None)) == "host_profile: old -> -"
    assert str(ItemDrift("image", "a", "b", "r")) == "image: a -> b (rule r)"


# --- properties: the index decides exactly like the definition ----------------------------------

MACS = ("52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03")
UUIDS = ("4c4c4544-0042-3610-8052-b4c04f4c4b32", "00000000-0000-0000-0000-0000000000aa")
TEXT_VALUES = {
    "vendor": ("Dell", "HPE", "Lenovo"),
    "model": ("R640", "DL360", "A, B"),
    "serial": ("S1", "S2", "S3"),
    "asset": ("A1", "A2"),
    "hostname": ("esx-1", "esx-2"),
    "oemstring": ("slot 1", "slot 2"),
}
IPV4_BASE = "10.0.0."
IPV6_BASE = "2001:db8::"


@st.composite
def respelled_mac(draw: st.DrawFn, mac: str) -> str:
    hexdigits = mac.replace(":", "")
    form = draw(st.sampled_from(["colon", "dash", "dot", "bare"]))
    spelled = {
        "colon": mac,
        "dash": mac.replace(":", "-"),
        "dot": ".".join(hexdigits[i : i + 4] for i in (0, 4, 8)),
        "bare": hexdigits,
    }[form]
    return spelled.upper() if draw(st.booleans()) else spelled


@st.composite
def respelled_uuid(draw: st.DrawFn, value: str) -> str:
    spelled = draw(st.sampled_from([value, value.replace("-", ""), "{" + value + "}"]))
    return spelled.upper() if draw(st.booleans()) else spelled


@st.composite
def ip_spec(draw: st.DrawFn, base: str, width: int) -> str:
    """An address, an a-b range or an aligned CIDR inside a block of 2**width addresses."""
    fmt = (lambda n: f"{base}{n}") if base == IPV4_BASE else (lambda n: f"{base}{n:x}")
    bits = 32 if base == IPV4_BASE else 128
    kind = draw(st.sampled_from(["address", "range", "cidr"]))
    if kind == "address":
        return fmt(draw(st.integers(0, 2**width - 1)))
    if kind == "range":
        lo = draw(st.integers(0, 2**width - 1))
        return f"{fmt(lo)}-{fmt(draw(st.integers(lo, 2**width - 1)))}"
    host_bits = draw(st.integers(0, width))
    network = draw(st.integers(0, 2 ** (width - host_bits) - 1)) << host_bits
    return f"{fmt(network)}/{bits - host_bits}"


@st.composite
def pattern_text(draw: st.DrawFn) -> str:
    attr = draw(st.sampled_from(sorted(TEXT_VALUES) + ["mac", "uuid", "ipv4", "ipv6"]))
    if attr == "ipv4":
        specs = draw(st.lists(ip_spec(IPV4_BASE, 5), min_size=1, max_size=3))
    elif attr == "ipv6":
        specs = draw(st.lists(ip_spec(IPV6_BASE, 4), min_size=1, max_size=2))
    elif attr == "mac":
        specs = [draw(respelled_mac(m)) for m in draw(st.lists(st.sampled_from(MACS), min_size=1, max_size=2))]
    elif attr == "uuid":
        specs = [draw(respelled_uuid(u)) for u in draw(st.lists(st.sampled_from(UUIDS), min_size=1, max_size=2))]
    else:
        values = draw(st.lists(st.sampled_from(TEXT_VALUES[attr]), min_size=1, max_size=2))
        if any("," in v for v in values):
            return f"{attr}=={values[0]}"
        specs = [draw(st.sampled_from([v, v.upper(), f" {v.lower()} "])) for v in values]
    return f"{attr}={','.join(specs)}"


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    rules = []
    for n in range(draw(st.integers(0, 12))):
        item_types = draw(st.sets(st.sampled_from(sorted(BUILTIN_ITEM_TYPES)), min_size=1))
        items = {t: f"{t}-{draw(st.integers(0, 3))}" for t in item_types}
        if draw(st.integers(0, 9)) == 0:
            rules.append(make_rule(f"r{n}", [], items, all_hosts=True))
        else:
            rules.append(make_rule(f"r{n}", draw(st.lists(pattern_text(), min_size=1, max_size=3)), items))
    return RuleSet(tuple(rules))


@st.composite
def host_attrs(draw: st.DrawFn) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr, values in TEXT_VALUES.items():
        if draw(st.booleans()):
            picked = draw(st.lists(st.sampled_from(values + ("other",)), min_size=1, max_size=2))
            attrs[attr] = picked if len(picked) > 1 or draw(st.booleans()) else picked[0]
    if draw(st.booleans()):
        attrs["mac"] = draw(respelled_mac(draw(st.sampled_from(MACS))))
    if draw(st.booleans()):
        attrs["uuid"] = draw(respelled_uuid(draw(st.sampled_from(UUIDS))))
    if draw(st.booleans()):
        attrs["ipv4"] = [f"{IPV4_BASE}{n}" for n in draw(st.lists(st.integers(0, 33), min_size=1, max_size=2))]
    if draw(st.booleans()):
        attrs["ipv6"] = f"{IPV6_BASE}{draw(st.integers(0, 17)):x}"
    return attrs


@settings(max_examples=400, deadline=None)
@given(rule_sets(), st.lists(host_attrs(), min_size=1, max_size=5))
def test_compiled_decision_equals_the_definition(ruleset: RuleSet, hosts: list[dict[str, Any]]) -> None:
    compiled = compile_ruleset(ruleset)
    for attrs in hosts:
        assert evaluate(compiled, attrs) == evaluate(ruleset, attrs)


@settings(max_examples=200, deadline=None)
@given(rule_sets(), host_attrs(), st.randoms(use_true_random=False))
def test_decision_does_not_depend_on_attribute_order(ruleset: RuleSet, attrs: dict[str, Any], rnd: random.Random) -> None:
    keys = list(attrs)
    rnd.shuffle(keys)
    shuffled = {k: attrs[k] for k in keys}
    compiled = compile_ruleset(ruleset)
    assert evaluate(compiled, shuffled) == evaluate(compiled, attrs) == evaluate(ruleset, shuffled)


@settings(max_examples=200, deadline=None)
@given(rule_sets(), st.sampled_from(MACS), st.sampled_from(UUIDS), st.data())
def test_mac_and_uuid_spelling_does_not_matter(ruleset: RuleSet, mac: str, uuid: str, data: st.DataObject) -> None:
    canonical = {"mac": mac, "uuid": uuid}
    respelled = {"mac": data.draw(respelled_mac(mac)), "uuid": data.draw(respelled_uuid(uuid))}
    compiled = compile_ruleset(ruleset)
    assert evaluate(compiled, respelled) == evaluate(compiled, canonical) == evaluate(ruleset, respelled)


@settings(max_examples=200, deadline=None)
@given(rule_sets(), host_attrs())
def test_explain_agrees_with_evaluate(ruleset: RuleSet, attrs: dict[str, Any]) -> None:
    decision = evaluate(ruleset, attrs)
    won = {t: (dict(e.items)[t], e.rule) for e in explain(ruleset, attrs) for t in e.won}
    assert won == {t: (c.value, c.rule) for t, c in decision.items()}


@settings(max_examples=100, deadline=None)
@given(rule_sets())
def test_any_rule_set_round_trips_through_its_dict_form(ruleset: RuleSet) -> None:
    doc = ruleset_to_dict(ruleset)
    assert ruleset_from_dict(json.loads(json.dumps(doc))) == ruleset


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**12))
def test_cidr_blocks_tile_a_range_exactly(lo: int, length: int) -> None:
    hi = min(lo + length, 2**32 - 1)
    blocks = list(_cidr_blocks(lo, hi, 32))
    spans = [(network << (32 - plen), ((network + 1) << (32 - plen)) - 1) for plen, network in blocks]
    assert spans[0][0] == lo and spans[-1][1] == hi
    assert all(end + 1 == start for (_, end), (start, _) in zip(spans, spans[1:]))


# --- the benchmark runs at a tiny size ----------------------------------------------------------


def test_benchmark_smoke_run_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "rules.json"
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "bench.rules", "--rules", "60", "--hosts", "300", "--sample", "50", "--json", str(out)]
    run = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "decision p99" in run.stdout
    doc = json.loads(out.read_text())
    assert doc["parameters"] == {"rules": 60, "hosts": 300, "sample": 50, "seed": 1}
    figures = {f["figure"]: f for f in doc["figures"]}
    assert {"compile 60 rules", "decision p50", "decision p99", "compliance, 300 hosts", "peak RSS"} <= set(figures)
    assert figures["decision p99"]["target"] == 1000.0
    assert figures["hosts drifted"]["value"] > 0
