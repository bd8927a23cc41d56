"""Reports on a rule set for operators: ``explain`` (why a host got what it got) and
``compliance`` (which known hosts would get something else now).

Both exist because stored associations outlive rule edits, as in Auto Deploy: an operator
changing rules needs to see which hosts the change reaches before repairing them, and a host
that got the wrong image needs a rule-by-rule account of its match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from bootbox.core.rules.evaluate import CompiledRuleSet, Decision, compile_ruleset, evaluate
from bootbox.core.rules.pattern import host_facts, raw_host_values
from bootbox.core.rules.ruleset import RuleSet

# --- explain ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatternCheck:
    """One pattern of one rule tested against the host: what it asked, what the host had."""

    pattern: str
    attr: str
    host_values: tuple[str, ...]
    matched: bool


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    """Why one rule did or did not decide anything for a host.

    ``won`` lists the item types this rule decided; a rule can match and win nothing when earlier
    rules already decided all of its item types.
    """

    rule: str
    position: int
    all_hosts: bool
    checks: tuple[PatternCheck, ...]
    matched: bool
    items: tuple[tuple[str, str], ...]
    won: tuple[str, ...]


def explain(rules: RuleSet | CompiledRuleSet, attrs: Mapping[str, Any]) -> list[RuleExplanation]:
    """Every rule in priority order with each pattern's verdict and the item types it won."""
    ruleset = rules.ruleset if isinstance(rules, CompiledRuleSet) else rules
    facts = host_facts(attrs)
    decided: set[str] = set()
    out: list[RuleExplanation] = []
    for position, rule in enumerate(ruleset):
        checks = tuple(
            PatternCheck(p.text, p.attr, raw_host_values(p.attr, attrs.get(p.attr)), p.matches(facts))
            for p in rule.patterns
        )
        matched = all(c.matched for c in checks)
        won = tuple(t for t, _ in rule.items if matched and t not in decided)
        decided.update(won)
        out.append(RuleExplanation(rule.name, position, rule.all_hosts, checks, matched, rule.items, won))
    return out


def format_explanation(explanations: Iterable[RuleExplanation]) -> str:
    """Plain text for ``bootbox host rules MAC``: one block per rule, one line per pattern."""
    lines: list[str] = []
    for ex in explanations:
        verdict = "MATCH" if ex.matched else "no match"
        items = " ".join(f"{t}={v}{' (won)' if t in ex.won else ''}" for t, v in ex.items)
        lines.append(f"{ex.position:>4}  {ex.rule}  {verdict}  {items}")
        if ex.all_hosts:
            lines.append("        all hosts  yes")
        for check in ex.checks:
            have = ", ".join(check.host_values) if check.host_values else "(none)"
            lines.append(f"        {check.pattern}  host: {have}  {'yes' if check.matched else 'no'}")
    return "\n".join(lines)


# --- compliance ---------------------------------------------------------------------------------

DriftRow = tuple[str, str | None, str | None, str | None]
"""``(item_type, stored, expected, rule)`` as a plain tuple; see ``HostDrift``."""


@dataclass(frozen=True, slots=True)
class ItemDrift:
    """One item type whose stored association differs from what the rule set gives now."""

    item_type: str
    stored: str | None
    expected: str | None
    rule: str | None

    @property
    def change(self) -> str:
        """``appears``, ``disappears`` or ``changes``."""
        if self.stored is None:
            return "appears"
        return "disappears" if self.expected is None else "changes"

    def __str__(self) -> str:
        source = f" (rule {self.rule})" if self.rule else ""
        return f"{self.item_type}: {self.stored or '-'} -> {self.expected or '-'}{source}"


@dataclass(frozen=True, slots=True)
class HostDrift:
    """A host whose stored associations are out of date.

    ``rows`` holds one plain tuple per drifting item type and ``items`` views them as
    ``ItemDrift``. Plain tuples of strings are the one container the garbage collector stops
    tracking, and a report on 100,000 drifting hosts holds ~300,000 of them: kept as objects,
    the collector's rescans cost ~0.9 s per report, about a third of the whole run.
    ``expected`` is the complete ``{item_type: value}`` the set gives now: what repair stores.
    """

    host: str
    rows: tuple[DriftRow, ...]
    expected: Mapping[str, str] = field(hash=False)

    @property
    def items(self) -> tuple[ItemDrift, ...]:
        return tuple(ItemDrift(*row) for row in self.rows)


def _drift(stored: Mapping[str, str], decision: Decision) -> tuple[DriftRow, ...]:
    out: list[DriftRow] = []
    for item_type in sorted(set(stored) | set(decision)):
        have = stored.get(item_type) or None
        choice = decision.get(item_type)
        want = choice.value if choice else None
        if have != want:
            out.append((item_type, have, want, choice.rule if choice else None))
    return tuple(out)


def compliance(
    rules: RuleSet | CompiledRuleSet,
    hosts: Iterable[tuple[str, Mapping[str, Any], Mapping[str, str]]],
) -> list[HostDrift]:
    """Hosts whose stored associations differ from the set's decision, in input order.

    ``hosts`` yields ``(host id, attributes, stored associations)``; a blank stored value counts
    as absent. A plain RuleSet is compiled once here, since compliance always covers many hosts.
    """
    compiled = rules if isinstance(rules, CompiledRuleSet) else compile_ruleset(rules)
    out: list[HostDrift] = []
    for host, attrs, stored in hosts:
        decision = evaluate(compiled, attrs)
        rows = _drift(stored, decision)
        if rows:
            out.append(HostDrift(host, rows, decision.associations))
    return out
