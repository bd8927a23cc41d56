"""The rule book: the working, active and previous active rule sets, kept in the store.

Edits change the working set and (unless told not to) activate it, in ONE atomic store write,
so a crash never leaves a half-applied edit. The active set is compiled once per change into
the indexes ``bootbox.core.rules`` builds, so a boot decision is a few dict lookups, never a scan.
``rollback`` swaps the active set with the previous one (twice undoes it).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Collection, Mapping

from bootbox.core import rules
from bootbox.errors import ValidationError
from bootbox.store.records import load_records
from bootbox.core.rules import CompiledRuleSet, Decision, Rule, RuleSet
from bootbox.store import Store

RULESETS_TABLE = "rulesets"
WORKING, ACTIVE, PREVIOUS = "working", "active", "previous"


class RuleBook:
    """Thread-safe owner of the rule sets; every change is validated, then written, then swapped in."""

    def __init__(
        self,
        store: Store,
        *,
        attributes: Callable[[], Collection[str]],
        item_types: Callable[[], Collection[str]],
        profile_exists: Callable[[str], bool],
    ) -> None:
        self._store = store
        self._attributes = attributes
        self._item_types = item_types
        self._profile_exists = profile_exists
        self._lock = threading.RLock()
        self._sets: dict[str, RuleSet] = {}
        self._compiled: CompiledRuleSet = rules.compile_ruleset(RuleSet())

    def load(self) -> None:
        """Read the sets from the store (plugins' attributes and item types must be registered)."""
        loaded = load_records(self._store, RULESETS_TABLE, self._from_doc)  # a damaged set is skipped and kept aside
        with self._lock:
            self._sets = {name: loaded.get(name, RuleSet()) for name in (WORKING, ACTIVE, PREVIOUS)}
            self._compiled = rules.compile_ruleset(self._sets[ACTIVE])

    def _from_doc(self, doc: Mapping[str, Any]) -> RuleSet:
        return rules.ruleset_from_dict(doc, attributes=self._attributes(), item_types=self._item_types())

    # ------------------------------------------------------------------ reading

    def get(self, which: str = WORKING) -> RuleSet:
        if which not in (WORKING, ACTIVE, PREVIOUS):
            raise ValidationError("set", f"{which!r} is not a rule set; use working, active or previous")
        with self._lock:
            return self._sets.get(which, RuleSet())

    def decide(self, attrs: Mapping[str, Any], which: str = ACTIVE) -> Decision:
        """Evaluate the active set (compiled) or another one for a host's attributes."""
        if which == ACTIVE:
            with self._lock:
                compiled = self._compiled
            return rules.evaluate(compiled, attrs)
        return rules.evaluate(self.get(which), attrs)

    def compiled(self, which: str = ACTIVE) -> CompiledRuleSet:
        with self._lock:
            return self._compiled if which == ACTIVE else rules.compile_ruleset(self.get(which))

    # ------------------------------------------------------------------ building rules

    def make_rule(self, doc: Mapping[str, Any]) -> Rule:
        """A rule from API/CLI input, checked against registered attributes, item types, profiles."""
        if not isinstance(doc, Mapping):
            raise ValidationError("rule", "expected an object with name, patterns, items, all_hosts")
        patterns = doc.get("patterns") or []
        items = doc.get("items") or {}
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ValidationError("patterns", "expected a list of pattern strings such as vendor=Dell")
        if not isinstance(items, (Mapping, list)):
            raise ValidationError("items", "expected image=NAME items")
        all_hosts = doc.get("all_hosts", False)
        if not isinstance(all_hosts, bool):
            raise ValidationError("all_hosts", "expected true or false")
        rule = rules.make_rule(
            doc.get("name"),  # type: ignore[arg-type]  # validated by make_rule
            patterns,
            items,
            all_hosts=all_hosts,
            attributes=self._attributes(),
            item_types=self._item_types(),
        )
        self._check_profiles(rule)
        return rule

    def _check_profiles(self, rule: Rule) -> None:
        image = rule.item_map.get("image")
        if image is not None and not self._profile_exists(image):
            raise ValidationError("items.image", f"profile {image!r} does not exist; add it first (bootbox profile add)")

    # ------------------------------------------------------------------ editing

    def _commit(self, working: RuleSet, *, activate: bool) -> None:
        """Write the new working set (and, activating, the active and previous ones) atomically."""
        with self._lock:
            new = dict(self._sets)
            new[WORKING] = working
            if activate:
                new[PREVIOUS], new[ACTIVE] = new[ACTIVE], working
            compiled = rules.compile_ruleset(new[ACTIVE])
            changed = {name: rules.ruleset_to_dict(rs) for name, rs in new.items() if rs is not self._sets.get(name)}
            self._store.put_many(RULESETS_TABLE, changed)
            self._sets, self._compiled = new, compiled

    def add(self, rule: Rule, *, at: int | None = None, activate: bool = True) -> RuleSet:
        with self._lock:
            working = rules.add(self.get(WORKING), rule, at)
            self._commit(working, activate=activate)
            return working

    def remove(self, name: str, *, activate: bool = True) -> RuleSet:
        with self._lock:
            working = rules.remove(self.get(WORKING), name)
            self._commit(working, activate=activate)
            return working

    def move(self, name: str, at: int, *, activate: bool = True) -> RuleSet:
        with self._lock:
            working = rules.move(self.get(WORKING), name, at)
            self._commit(working, activate=activate)
            return working

    def replace(self, rule: Rule, *, activate: bool = True) -> RuleSet:
        with self._lock:
            working = rules.replace(self.get(WORKING), rule)
            self._commit(working, activate=activate)
            return working

    def load_working(self, doc: Mapping[str, Any], *, activate: bool = True) -> RuleSet:
        """Import a whole rule set (an export); every rule is validated before anything lands."""
        ruleset = self._from_doc(doc)
        for rule in ruleset:
            self._check_profiles(rule)
        self._commit(ruleset, activate=activate)
        return ruleset

    def activate(self) -> RuleSet:
        with self._lock:
            working = self.get(WORKING)
            self._commit(working, activate=True)
            return working

    def rollback(self) -> RuleSet:
        """Make the previous active set active again (the current one becomes the previous)."""
        with self._lock:
            previous, active = self.get(PREVIOUS), self.get(ACTIVE)
            new = {**self._sets, ACTIVE: previous, PREVIOUS: active}
            self._store.put_many(RULESETS_TABLE, {ACTIVE: rules.ruleset_to_dict(previous), PREVIOUS: rules.ruleset_to_dict(active)})
            self._sets, self._compiled = new, rules.compile_ruleset(previous)
            return previous

    def diff(self) -> list[rules.RuleDiff]:
        """What activating the working set would change (active → working)."""
        return rules.diff(self.get(ACTIVE), self.get(WORKING))

    def is_empty(self) -> bool:
        with self._lock:
            return not self._sets.get(WORKING) and not self._sets.get(ACTIVE)
