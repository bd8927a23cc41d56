"""Rules and rule sets as immutable values, their pure edits, and their dict (YAML/JSON) form.

Auto Deploy treats a rule in a set as immutable and edits by copy-and-replace; bootbox does the
same with frozen dataclasses, so the store can keep the working, active and previous-active sets
side by side without defensive copies, and any thread can read a set while another builds the
next one. See ``bootbox.core.rules`` for the semantics.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Collection, Iterable, Iterator, Mapping

from bootbox.errors import Conflict, NotFound, ValidationError
from bootbox.core.rules.pattern import BUILTIN_ATTRIBUTES, Pattern, parse_patterns

BUILTIN_ITEM_TYPE_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({
    "image": "the profile the host boots (an image profile)",
    "host_profile": "the host profile: configuration templates and per-host answers",
    "group": "a location label: cluster, site, rack",
    "loader": "the first-stage loader kind: ipxe or grub (docs/firmware.md)",
    "secure_boot": "on: the signed chain, shim -> GRUB -> signed kernel (docs/firmware.md)",
})
"""Item types every bootbox understands, with what each chooses; plugins add more through
``bootbox_register_item_types`` (the service keeps both in ``BootService.item_types``)."""

BUILTIN_ITEM_TYPES: frozenset[str] = frozenset(BUILTIN_ITEM_TYPE_DESCRIPTIONS)
"""The names of :data:`BUILTIN_ITEM_TYPE_DESCRIPTIONS`: what rules accept when no plugin added any."""

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_rule_name(name: object) -> str:
    """Return ``name`` if it is a valid rule name, else raise ``ValidationError('name', …)``.

    The character set keeps names usable unquoted in shells, URLs and YAML keys.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            "name",
            f"{name!r} is not a valid rule name (letters, digits, '.', '_', '-'; "
            f"starts with a letter or digit; at most {MAX_NAME_LENGTH} characters)",
        )
    return name


def _check_item(item_type: object, value: object) -> tuple[str, str]:
    if not isinstance(item_type, str) or not item_type:
        raise ValidationError("item", f"item type must be a non-empty string, got {item_type!r}")
    if not isinstance(value, str) or not value or value != value.strip() or _CONTROL.search(value):
        raise ValidationError("item", f"{item_type}: value must be a non-empty single-line string, got {value!r}")
    return item_type, value


def _items_tuple(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(p) for p in items]
    checked = [_check_item(*pair) for pair in pairs]
    types = [t for t, _ in checked]
    duplicates = sorted({t for t in types if types.count(t) > 1})
    if duplicates:
        raise ValidationError("item", f"at most one value per item type; {', '.join(duplicates)} given twice")
    return tuple(sorted(checked))


@dataclass(frozen=True, slots=True)
class Rule:
    """A named rule: patterns (ANDed) or ``all_hosts``, and the items it assigns.

    ``items`` is kept as a tuple of ``(item_type, value)`` pairs sorted by type (a mapping may be
    passed in), so two rules with the same content are equal whatever order they were written in.
    ``version`` starts at 1 and grows by one each time ``replace`` installs a new content.
    """

    name: str
    patterns: tuple[Pattern, ...] = ()
    items: tuple[tuple[str, str], ...] = ()
    all_hosts: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        validate_rule_name(self.name)
        patterns = tuple(self.patterns)
        if not all(isinstance(p, Pattern) for p in patterns):
            raise ValidationError("patterns", "patterns must be parsed Pattern values (use make_rule or parse_pattern)")
        object.__setattr__(self, "patterns", patterns)
        object.__setattr__(self, "items", _items_tuple(self.items))
        if not isinstance(self.all_hosts, bool):
            raise ValidationError("all_hosts", f"must be true or false, got {self.all_hosts!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValidationError("version", f"must be a positive integer, got {self.version!r}")
        if self.all_hosts and patterns:
            raise ValidationError("patterns", f"rule {self.name!r}: give patterns or all_hosts, not both")
        if not self.all_hosts and not patterns:
            raise ValidationError("patterns", f"rule {self.name!r}: needs at least one pattern, or all_hosts")
        if not self.items:
            raise ValidationError("items", f"rule {self.name!r}: needs at least one item (e.g. image=NAME)")

    @property
    def item_map(self) -> dict[str, str]:
        """The items as a fresh ``{item_type: value}`` dict."""
        return dict(self.items)

    @property
    def item_types(self) -> frozenset[str]:
        return frozenset(t for t, _ in self.items)

    def same_content(self, other: Rule) -> bool:
        """True when both rules would assign the same items to the same hosts (version ignored)."""
        return (self.name, self.patterns, self.items, self.all_hosts) == (
            other.name,
            other.patterns,
            other.items,
            other.all_hosts,
        )

    def describe(self) -> str:
        """One line for humans: ``vendor=Dell model=R640 -> image=esxi-8``."""
        when = "all hosts" if self.all_hosts else " ".join(p.text for p in self.patterns)
        return f"{when} -> {' '.join(f'{t}={v}' for t, v in self.items)}"


def parse_item(text: str, item_types: Collection[str] = BUILTIN_ITEM_TYPES) -> tuple[str, str]:
    """Parse the CLI form ``image=esxi-8`` into ``("image", "esxi-8")``."""
    if not isinstance(text, str) or "=" not in text:
        raise ValidationError("item", f"{text!r}: expected type=value, e.g. image=esxi-8")
    item_type, _, value = text.partition("=")
    item_type, value = item_type.strip().lower(), value.strip()
    _check_known_item(item_type, item_types)
    return _check_item(item_type, value)


def _check_known_item(item_type: str, item_types: Collection[str]) -> None:
    if item_type not in item_types:
        raise ValidationError("item", f"unknown item type {item_type!r}; known: {', '.join(sorted(item_types))}")


def _parse_items(
    items: Mapping[str, str] | Iterable[str] | str, item_types: Collection[str]
) -> tuple[tuple[str, str], ...]:
    if isinstance(items, str):
        items = [items]
    if isinstance(items, Mapping):
        pairs = [(str(t).strip().lower(), v.strip() if isinstance(v, str) else v) for t, v in items.items()]
        for item_type, _ in pairs:
            _check_known_item(item_type, item_types)
        return _items_tuple(pairs)
    return _items_tuple(parse_item(text, item_types) for text in items)


def make_rule(
    name: str,
    patterns: Iterable[str | Pattern] = (),
    items: Mapping[str, str] | Iterable[str] | str = (),
    *,
    all_hosts: bool = False,
    version: int = 1,
    attributes: Collection[str] = BUILTIN_ATTRIBUTES,
    item_types: Collection[str] = BUILTIN_ITEM_TYPES,
) -> Rule:
    """Build a validated rule from text, the way the CLI and the API receive it.

    ``items`` is a mapping ``{"image": "esxi-8"}`` or CLI strings ``["image=esxi-8"]``;
    ``attributes`` and ``item_types`` are what the running plugins registered.
    """
    parsed = parse_patterns([patterns] if isinstance(patterns, str) else patterns, attributes)
    return Rule(validate_rule_name(name), parsed, _parse_items(items, item_types), all_hosts, version)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An ordered tuple of rules with unique names; index 0 has the highest priority."""

    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        object.__setattr__(self, "rules", rules)
        seen: set[str] = set()
        for rule in rules:
            if not isinstance(rule, Rule):
                raise ValidationError("rules", f"expected Rule values, got {type(rule).__name__}")
            if rule.name in seen:
                raise ValidationError("rules", f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, index: int) -> Rule:
        return self.rules[index]

    def __contains__(self, name: object) -> bool:
        return any(rule.name == name for rule in self.rules)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)

    @property
    def item_types(self) -> frozenset[str]:
        """Every item type some rule in the set assigns."""
        return frozenset(t for rule in self.rules for t, _ in rule.items)

    def index(self, name: str) -> int:
        """Position of the rule called ``name``; ``NotFound`` if there is none."""
        for i, rule in enumerate(self.rules):
            if rule.name == name:
                return i
        raise NotFound(f"no rule named {name!r} in the rule set")

    def get(self, name: str) -> Rule:
        return self.rules[self.index(name)]


# --- edits: pure functions, each returns a new RuleSet ------------------------------------------


def _check_position(at: int, upper: int) -> int:
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= upper:
        raise ValidationError("at", f"position must be an integer from 0 to {upper}, got {at!r}")
    return at


def add(ruleset: RuleSet, rule: Rule, at: int | None = None) -> RuleSet:
    """Insert ``rule`` at position ``at`` (0 = highest priority), or at the end by default."""
    if rule.name in ruleset:
        raise Conflict(f"a rule named {rule.name!r} already exists; use replace to change it")
    position = len(ruleset) if at is None else _check_position(at, len(ruleset))
    rules = ruleset.rules
    return RuleSet(rules[:position] + (rule,) + rules[position:])


def remove(ruleset: RuleSet, name: str) -> RuleSet:
    """Drop the rule called ``name`` (``NotFound`` if absent)."""
    position = ruleset.index(name)
    return RuleSet(ruleset.rules[:position] + ruleset.rules[position + 1 :])


def move(ruleset: RuleSet, name: str, at: int) -> RuleSet:
    """Move the rule called ``name`` so that it ends up at position ``at``."""
    position = ruleset.index(name)
    target = _check_position(at, len(ruleset) - 1)
    rules = list(ruleset.rules)
    rules.insert(target, rules.pop(position))
    return RuleSet(tuple(rules))


def replace(ruleset: RuleSet, rule: Rule) -> RuleSet:
    """Install a new version of an existing rule in place: its version becomes old + 1.

    Replacing a rule with identical content returns the set unchanged, so re-applying an export
    does not inflate versions or show up in ``diff``.
    """
    position = ruleset.index(rule.name)
    old = ruleset.rules[position]
    if old.same_content(rule):
        return ruleset
    new = dataclasses.replace(rule, version=old.version + 1)
    return RuleSet(ruleset.rules[:position] + (new,) + ruleset.rules[position + 1 :])


# --- serialisation ------------------------------------------------------------------------------

_RULE_KEYS = ("name", "version", "all_hosts", "patterns", "items")


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """A plain dict with patterns in text form, ready for YAML or JSON."""
    return {
        "name": rule.name,
        "version": rule.version,
        "all_hosts": rule.all_hosts,
        "patterns": [p.text for p in rule.patterns],
        "items": dict(rule.items),
    }


def rule_from_dict(
    doc: Mapping[str, Any],
    *,
    attributes: Collection[str] = BUILTIN_ATTRIBUTES,
    item_types: Collection[str] = BUILTIN_ITEM_TYPES,
) -> Rule:
    """Read back what ``rule_to_dict`` wrote; unknown keys are refused so typos do not vanish."""
    if not isinstance(doc, Mapping):
        raise ValidationError("rule", f"expected a mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_RULE_KEYS))
    if unknown:
        raise ValidationError("rule", f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(_RULE_KEYS)}")
    patterns = doc.get("patterns") or []
    items = doc.get("items") or {}
    if not isinstance(patterns, list):
        raise ValidationError("patterns", f"expected a list of pattern strings, got {type(patterns).__name__}")
    if not isinstance(items, Mapping):
        raise ValidationError("items", f"expected a mapping of item type to value, got {type(items).__name__}")
    return make_rule(
        doc.get("name"),  # type: ignore[arg-type]  # validated by make_rule
        patterns,
        items,
        all_hosts=doc.get("all_hosts", False),
        version=doc.get("version", 1),
        attributes=attributes,
        item_types=item_types,
    )


def ruleset_to_dict(ruleset: RuleSet) -> dict[str, Any]:
    """``{"rules": [...]}`` in priority order."""
    return {"rules": [rule_to_dict(rule) for rule in ruleset]}


def ruleset_from_dict(
    doc: Mapping[str, Any],
    *,
    attributes: Collection[str] = BUILTIN_ATTRIBUTES,
    item_types: Collection[str] = BUILTIN_ITEM_TYPES,
) -> RuleSet:
    """Read back what ``ruleset_to_dict`` wrote (e.g. a YAML export from git)."""
    if not isinstance(doc, Mapping) or set(doc) - {"rules"}:
        raise ValidationError("ruleset", "expected a mapping with a single key 'rules'")
    rules = doc.get("rules") or []
    if not isinstance(rules, list):
        raise ValidationError("rules", f"expected a list of rules, got {type(rules).__name__}")
    return RuleSet(tuple(rule_from_dict(r, attributes=attributes, item_types=item_types) for r in rules))
