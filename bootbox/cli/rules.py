"""``bootbox rule …``: deploy rules, Auto Deploy style, with the dry runs it lacks.

Edits change the working rule set and activate it unless ``--no-activate`` is given; ``diff``
shows working vs active, ``test`` which hosts' cached associations no longer match, ``repair``
rewrites them (they apply at each host's next boot), ``rollback`` restores the previous active set.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from bootbox.cli.common import JsonOption, print_json, print_table, state
from bootbox.errors import ValidationError

NameArg = Annotated[str, typer.Argument(help="Rule name.")]
PatternOpt = Annotated[Optional[list[str]], typer.Option("--pattern", "-p", help="attr=a,b | attr==exact | ipv4=a-b | ipv4=cidr (repeatable; ANDed).")]
ItemOpt = Annotated[Optional[list[str]], typer.Option("--item", "-i", help="image=NAME, host_profile=NAME, group=NAME (repeatable).")]
AllHostsOpt = Annotated[bool, typer.Option("--all-hosts", help="Match every host instead of patterns.")]
AtOpt = Annotated[Optional[int], typer.Option("--at", min=0, help="Position in the rule set (0 = highest priority; default: last).")]
NoActivateOpt = Annotated[bool, typer.Option("--no-activate", help="Change the working set only; activate later with `bootbox rule activate`.")]
SetOpt = Annotated[str, typer.Option("--set", help="working, active or previous.")]


def _rule_body(name: str, pattern: list[str] | None, item: list[str] | None, all_hosts: bool) -> dict[str, Any]:
    items: dict[str, str] = {}
    for text in item or []:
        key, sep, value = text.partition("=")
        if not sep:
            raise ValidationError("--item", f"{text!r}: expected type=value, e.g. image=esxi-8")
        items[key.strip()] = value.strip()
    return {"name": name, "patterns": pattern or [], "items": items, "all_hosts": all_hosts}


def _print_rules(rules: list[dict[str, Any]]) -> None:
    print_table(
        ["#", "name", "v", "when", "items"],
        [[r["position"], r["name"], r["version"], "all hosts" if r["all_hosts"] else " ".join(r["patterns"]),
          " ".join(f"{k}={v}" for k, v in r["items"].items())] for r in rules],
        empty="No rules. Add one: bootbox rule add NAME --pattern vendor=Dell --item image=PROFILE",
    )


def add_rule(ctx: typer.Context, name: NameArg, pattern: PatternOpt = None, item: ItemOpt = None,
             all_hosts: AllHostsOpt = False, at: AtOpt = None, no_activate: NoActivateOpt = False,
             json: JsonOption = False) -> None:
    """Add a rule (at the end, or --at N) and activate the working set."""
    body = {**_rule_body(name, pattern, item, all_hosts), "at": at, "activate": not no_activate}
    rule = state(ctx).client().post("/rules", body)
    print_json(rule) if json else typer.echo(f"added rule {rule['name']} at {rule['position']}: {rule['description']}"
                                            + ("" if not no_activate else " (working set only)"))


def list_rules(ctx: typer.Context, set: SetOpt = "working", json: JsonOption = False) -> None:
    """List the rules of a set in priority order (default: the working set)."""
    rules = state(ctx).client().get("/rules", set=set)
    print_json(rules) if json else _print_rules(rules)


def show_rule(ctx: typer.Context, name: NameArg, set: SetOpt = "working", json: JsonOption = False) -> None:
    """Show one rule."""
    rule = state(ctx).client().get(f"/rules/{name}", set=set)
    if json:
        print_json(rule)
        return
    typer.echo(f"name:     {rule['name']} (version {rule['version']}, position {rule['position']})")
    typer.echo("when:     " + ("all hosts" if rule["all_hosts"] else " AND ".join(rule["patterns"])))
    typer.echo("items:    " + " ".join(f"{k}={v}" for k, v in rule["items"].items()))


def replace_rule(ctx: typer.Context, name: NameArg, pattern: PatternOpt = None, item: ItemOpt = None,
                 all_hosts: AllHostsOpt = False, no_activate: NoActivateOpt = False, json: JsonOption = False) -> None:
    """Replace a rule with a new version (same name and position)."""
    body = {**_rule_body(name, pattern, item, all_hosts), "activate": not no_activate}
    rule = state(ctx).client().put(f"/rules/{name}", body)
    print_json(rule) if json else typer.echo(f"rule {rule['name']} is now version {rule['version']}: {rule['description']}")


def remove_rule(ctx: typer.Context, name: NameArg, no_activate: NoActivateOpt = False) -> None:
    """Remove a rule."""
    state(ctx).client().request("DELETE", f"/rules/{name}", query={"activate": str(not no_activate).lower()})
    typer.echo(f"removed rule {name}")


def move_rule(ctx: typer.Context, name: NameArg, at: Annotated[int, typer.Option("--at", min=0, help="New position.")],
              no_activate: NoActivateOpt = False, json: JsonOption = False) -> None:
    """Move a rule to another position (0 = highest priority)."""
    rules = state(ctx).client().post(f"/rules/{name}/move", {"at": at, "activate": not no_activate})
    print_json(rules) if json else _print_rules(rules)


def activate(ctx: typer.Context, json: JsonOption = False) -> None:
    """Make the working set the active one (new boots use it)."""
    result = state(ctx).client().post("/rulesets/activate", {})
    if json:
        print_json(result)
        return
    for change in result["changes"]:
        typer.echo(change["text"])
    typer.echo(f"activated the working set ({len(result['changes'])} change(s))")


def diff(ctx: typer.Context, json: JsonOption = False) -> None:
    """What activating the working set would change."""
    changes = state(ctx).client().get("/rulesets/diff")
    if json:
        print_json(changes)
        return
    for change in changes:
        typer.echo(change["text"])
    if not changes:
        typer.echo("The working and active rule sets are the same.")


def _print_drift(drifts: list[dict[str, Any]], verb: str) -> None:
    rows = [[d["host"], i["item"], i["stored"] or "-", i["expected"] or "-", i["rule"] or "-"]
            for d in drifts for i in d["items"]]
    print_table(["host", "item", "stored", verb, "rule"], rows, empty="Every known host complies.")


def test(ctx: typer.Context, working: Annotated[bool, typer.Option("--working", help="Test against the working set instead of the active one.")] = False,
         json: JsonOption = False) -> None:
    """Compliance: hosts whose cached associations differ from what the rules give them now."""
    drifts = state(ctx).client().get("/compliance", set="working" if working else "active")
    print_json(drifts) if json else _print_drift(drifts, "expected")


def repair(ctx: typer.Context,
           host: Annotated[Optional[list[str]], typer.Option("--host", help="Only this host (MAC; repeatable).")] = None,
           working: Annotated[bool, typer.Option("--working", help="Repair to the working set's answer.")] = False,
           json: JsonOption = False) -> None:
    """Rewrite drifted hosts' associations; each takes effect at that host's next boot."""
    drifts = state(ctx).client().post("/compliance/repair", {"hosts": host or None, "set": "working" if working else "active"})
    if json:
        print_json(drifts)
        return
    _print_drift(drifts, "now")
    if drifts:
        typer.echo(f"repaired {len(drifts)} host(s); the change applies at each one's next boot")


def rollback(ctx: typer.Context, json: JsonOption = False) -> None:
    """Make the previous active rule set active again (run twice to undo)."""
    result = state(ctx).client().post("/rulesets/rollback", {})
    print_json(result) if json else (_print_rules(result["active"]), typer.echo("rolled back the active rule set"))


def export(ctx: typer.Context,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
           format: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
           set: SetOpt = "active") -> None:
    """Write a whole rule set as YAML or JSON (keep it in git)."""
    if format not in ("yaml", "json"):
        raise ValidationError("--format", "use yaml or json")
    doc = state(ctx).client().get(f"/rulesets/{set}")
    text = yaml.safe_dump(doc, sort_keys=False) if format == "yaml" else jsonlib.dumps(doc, indent=2) + "\n"
    if output:
        output.write_text(text)
        typer.echo(f"wrote {len(doc['rules'])} rule(s) to {output}", err=True)
    else:
        sys.stdout.write(text)


def import_(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A YAML or JSON export; - for stdin.", allow_dash=True)],
            no_activate: NoActivateOpt = False) -> None:
    """Replace the working set with a file's rules (validated whole) and activate it."""
    text = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError("file", f"not valid YAML or JSON: {exc}") from None
    result = state(ctx).client().request("PUT", "/rulesets/working", doc, query={"activate": str(not no_activate).lower()})
    typer.echo(f"imported {result['rules']} rule(s)" + (" and activated them" if result["activated"] else " into the working set"))


def build() -> typer.Typer:
    """A fresh ``rule`` sub-app."""
    app = typer.Typer(help="Deploy rules: which image, host profile and group each host gets.", no_args_is_help=True)
    for name, command in (("add", add_rule), ("list", list_rules), ("show", show_rule), ("replace", replace_rule),
                          ("remove", remove_rule), ("move", move_rule), ("activate", activate), ("diff", diff),
                          ("test", test), ("repair", repair), ("rollback", rollback), ("export", export),
                          ("import", import_)):
        app.command(name)(command)
    return app
