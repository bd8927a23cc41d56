"""What changed between two rule sets, in words an operator reviews before activating.

A rule counts as *moved* only when its order relative to the other surviving rules changed:
inserting a rule at the top shifts every index but moves nothing. The moved rules are those
outside a longest run of surviving rules that kept their relative order, which is the fewest
moves that explain the new order.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from enum import StrEnum

from bootbox.core.rules.ruleset import Rule, RuleSet


class DiffKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    MOVED = "moved"


@dataclass(frozen=True, slots=True)
class RuleDiff:
    """One difference. A rule both edited and reordered yields a CHANGED and a MOVED entry.

    ``old_position``/``new_position`` are indexes in the first and second set (None where the rule
    is absent); ``details`` lists the content changes of a CHANGED entry.
    """

    kind: DiffKind
    name: str
    before: Rule | None
    after: Rule | None
    old_position: int | None
    new_position: int | None
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        rule = self.after or self.before
        summary = rule.describe() if rule else ""
        if self.kind is DiffKind.ADDED:
            return f"added rule {self.name!r} at {self.new_position}: {summary}"
        if self.kind is DiffKind.REMOVED:
            return f"removed rule {self.name!r} (was at {self.old_position}): {summary}"
        if self.kind is DiffKind.MOVED:
            return f"moved rule {self.name!r} from {self.old_position} to {self.new_position}"
        return f"changed rule {self.name!r}: {'; '.join(self.details)}"


def _pattern_changes(before: Rule, after: Rule) -> list[str]:
    old = [p.text for p in before.patterns]
    new = [p.text for p in after.patterns]
    changes = [f"-{t}" for t in old if t not in new] + [f"+{t}" for t in new if t not in old]
    if changes:
        return [f"patterns {' '.join(changes)}"]
    return ["patterns reordered"] if old != new else []


def _item_changes(before: Rule, after: Rule) -> list[str]:
    old, new = before.item_map, after.item_map
    out: list[str] = []
    for item_type in sorted(set(old) | set(new)):
        was, now = old.get(item_type), new.get(item_type)
        if was == now:
            continue
        if was is None:
            out.append(f"+{item_type}={now}")
        elif now is None:
            out.append(f"-{item_type}={was}")
        else:
            out.append(f"{item_type} {was} -> {now}")
    return out


def _content_changes(before: Rule, after: Rule) -> tuple[str, ...]:
    out: list[str] = []
    if before.version != after.version:
        out.append(f"version {before.version} -> {after.version}")
    if before.all_hosts != after.all_hosts:
        out.append(f"all_hosts {str(before.all_hosts).lower()} -> {str(after.all_hosts).lower()}")
    out += _pattern_changes(before, after)
    out += _item_changes(before, after)
    return tuple(out)


def _kept_in_order(sequence: list[int]) -> set[int]:
    """Indexes into ``sequence`` of one longest strictly increasing subsequence (O(n log n))."""
    tails: list[int] = []
    tail_at: list[int] = []
    parent = [-1] * len(sequence)
    for i, value in enumerate(sequence):
        slot = bisect_left(tails, value)
        if slot == len(tails):
            tails.append(value)
            tail_at.append(i)
        else:
            tails[slot] = value
            tail_at[slot] = i
        parent[i] = tail_at[slot - 1] if slot else -1
    kept: set[int] = set()
    i = tail_at[-1] if tail_at else -1
    while i != -1:
        kept.add(i)
        i = parent[i]
    return kept


def diff(a: RuleSet, b: RuleSet) -> list[RuleDiff]:
    """Differences from ``a`` to ``b``: removals in ``a``'s order, then the rest in ``b``'s order."""
    old_at = {rule.name: i for i, rule in enumerate(a)}
    new_at = {rule.name: i for i, rule in enumerate(b)}
    out = [
        RuleDiff(DiffKind.REMOVED, r.name, r, None, i, None) for i, r in enumerate(a) if r.name not in new_at
    ]
    common = [r.name for r in b if r.name in old_at]
    kept = _kept_in_order([old_at[name] for name in common])
    moved = {name for i, name in enumerate(common) if i not in kept}
    for j, rule in enumerate(b):
        if rule.name not in old_at:
            out.append(RuleDiff(DiffKind.ADDED, rule.name, None, rule, None, j))
            continue
        i = old_at[rule.name]
        before = a[i]
        if before != rule:
            out.append(RuleDiff(DiffKind.CHANGED, rule.name, before, rule, i, j, _content_changes(before, rule)))
        if rule.name in moved:
            out.append(RuleDiff(DiffKind.MOVED, rule.name, before, rule, i, j))
    return out
