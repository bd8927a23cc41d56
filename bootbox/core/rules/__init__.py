"""Deploy rules: which image, host profile and group a booting host gets.

bootbox follows vSphere Auto Deploy's rule model, without vCenter. This module is the pure rules
engine (no I/O, no threads, no plugins); the service keeps the working, active and previous
active rule sets and calls these functions. The text below is written to be pasted into the
README as it stands.

## Rules

A **rule** has a name (`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 characters), one or more
**items** it assigns, and either **patterns** a host must match or `all_hosts` (never both,
never neither). In an export file:

```yaml
rules:
- name: lab-r640
  version: 1
  all_hosts: false
  patterns: [vendor=Dell, "model==PowerEdge R640"]
  items: {image: esxi-8, host_profile: r640}
```

**Patterns** test host attributes: `vendor`, `model`, `serial`, `uuid`, `mac`, `asset`,
`oemstring`, `ipv4`, `ipv6`, `hostname`, `domain`, `arch`, `platform`, and any attribute a
plugin registers. A pattern on an unknown attribute is refused, and so is a malformed MAC, UUID,
address, range or CIDR block.

| pattern | matches |
|---|---|
| `attr=a,b,c` | any of the listed values |
| `attr==value` | exactly one value, which may contain commas |
| `ipv4=10.0.0.10-10.0.0.20` | an inclusive range (`ipv6` too) |
| `ipv4=198.18.0.0/24` | a CIDR block (`ipv6` too); the host bits must be zero |
| `ipv4=198.18.0.5,198.18.1.0/24` | a list may mix addresses, ranges and CIDR blocks |

- **Comparison.** MACs and UUIDs are compared in canonical form, so case and separators do not
  matter (`AA-BB-CC-DD-EE-FF` equals `aabb.ccdd.eeff`). IP addresses are compared as numbers.
  Every other attribute is compared **case-insensitively, ignoring leading and trailing
  spaces**: SMBIOS vendor strings change case between firmware releases (`Dell Inc.` /
  `DELL INC.`), and a rule that silently stopped matching after a BIOS update would be worse
  than a lenient one. There are no wildcards or regular expressions, as in Auto Deploy.
- **Several values.** A host attribute may hold several values (a list, or for `oemstring` one
  OEM string per line); a pattern matches if any of them is a listed value.
- **AND.** A rule matches when all of its patterns match: patterns on different attributes are
  ANDed, and two patterns on the same attribute are ANDed too.
- **Missing attributes.** A host that lacks an attribute, or reports a value that cannot be a
  MAC, UUID or address of the right family, matches no pattern on that attribute.

**Items** are `image` (an image profile), `host_profile`, `group`, and item types that plugins
register. A rule names at least one item and at most one value per item type.

## Rule sets and precedence

A **rule set** is an ordered list of rules; a lower position means a higher priority. For
**each item type separately**, the first matching rule that carries that item type wins. So a
narrow rule early can give a host its host profile while a broad rule later gives the image:

| # | rule | patterns | items |
|---|---|---|---|
| 0 | `rack-7-hp` | `serial=ABC123,ABC124` | `host_profile=rack7` |
| 1 | `dell-8` | `vendor=Dell` | `image=esxi-8`, `host_profile=dell-default` |
| 2 | `default` | all hosts | `image=esxi-7`, `group=unsorted` |

A Dell host with serial ABC123 gets `host_profile=rack7` (rule 0), `image=esxi-8` (rule 1) and
`group=unsorted` (rule 2); an HPE host gets `image=esxi-7` and `group=unsorted`, and no host
profile.

Rules and rule sets are immutable. Every edit makes a new set: `add` (at the end, or at a
position; a duplicate name is a conflict), `remove`, `move`, and `replace` (a new version of a
rule under the same name; its `version` goes up by one). `diff` lists what changed between two
sets (added, removed, changed, moved) so the change can be reviewed before activation. Rule
sets export to YAML and import from it with every pattern in its text form.

## Hosts keep what they got

As in Auto Deploy, a host stores its associations on its first boot and reuses them, so editing
rules does not change hosts that are already known. `compliance` lists, per host, each item type
whose stored value differs from what the set gives now, including items that would appear or
disappear. Repairing writes the new values, which take effect on the next boot. `explain` shows,
rule by rule, which patterns a host matched and which item types each rule won.
"""

from __future__ import annotations

from bootbox.core.rules.diff import DiffKind, RuleDiff, diff
from bootbox.core.rules.evaluate import Choice, CompiledRuleSet, Decision, compile_ruleset, evaluate
from bootbox.core.rules.report import (
    HostDrift,
    ItemDrift,
    PatternCheck,
    RuleExplanation,
    compliance,
    explain,
    format_explanation,
)
from bootbox.core.rules.pattern import (
    BUILTIN_ATTRIBUTES,
    Pattern,
    ValueKind,
    parse_pattern,
    parse_patterns,
)
from bootbox.core.rules.ruleset import (
    BUILTIN_ITEM_TYPES,
    MAX_NAME_LENGTH,
    Rule,
    RuleSet,
    add,
    make_rule,
    move,
    parse_item,
    remove,
    replace,
    rule_from_dict,
    rule_to_dict,
    ruleset_from_dict,
    ruleset_to_dict,
    validate_rule_name,
)

__all__ = [
    "BUILTIN_ATTRIBUTES",
    "BUILTIN_ITEM_TYPES",
    "MAX_NAME_LENGTH",
    "Choice",
    "CompiledRuleSet",
    "Decision",
    "DiffKind",
    "HostDrift",
    "ItemDrift",
    "Pattern",
    "PatternCheck",
    "Rule",
    "RuleDiff",
    "RuleExplanation",
    "RuleSet",
    "ValueKind",
    "add",
    "compile_ruleset",
    "compliance",
    "diff",
    "evaluate",
    "explain",
    "format_explanation",
    "make_rule",
    "move",
    "parse_item",
    "parse_pattern",
    "parse_patterns",
    "remove",
    "replace",
    "rule_from_dict",
    "rule_to_dict",
    "ruleset_from_dict",
    "ruleset_to_dict",
    "validate_rule_name",
]
