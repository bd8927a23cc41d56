"""Rules: the working and the active set side by side, edits to the working set, the dry run,
activate and roll back. Edits never activate by themselves: the operator looks at the dry run
(which known hosts would change) and then activates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response, request

from bootbox.core import rules
from bootbox.errors import BootboxError, ValidationError
from bootbox.model import Host
from bootbox.web.console import session
from bootbox.web.console.common import back, blueprint, page
from bootbox.web.deps import get_service


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _fields(form: Mapping[str, str], name: str | None = None) -> dict[str, Any]:
    """A rule's fields from the form: patterns and items one per line (or comma-separated)."""
    return {"name": name or form.get("name", "").strip(), "patterns": _lines(form.get("patterns", "")),
            "items": _lines(form.get("items", "")), "all_hosts": form.get("all_hosts") == "on"}


def _position(form: Mapping[str, str], field: str = "at") -> int | None:
    raw = form.get(field, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 6:
        raise ValidationError(field, "expected a position: a whole number from 0")
    return int(raw)


@dataclass(frozen=True)
class Change:
    """A known host whose rule items would differ under the working set."""

    host: Host
    now: Mapping[str, str]
    then: Mapping[str, str]
    why: str


def _decision(explanations: list[rules.RuleExplanation]) -> dict[str, str]:
    items: dict[str, str] = {}
    for e in explanations:
        for item in e.won:
            items[item] = dict(e.items)[item]
    return items


def dry_run() -> list[Change]:
    """Which known hosts the working set would change: hosts with associations whose items
    differ under it (what ``repair`` would then rewrite), and hosts still without an image
    whose next boot would decide differently."""
    service = get_service()
    changes: list[Change] = []
    drifting = {d.host: d for d in service.compliance("working")}
    for host in service.list_hosts():
        if host.mac in drifting:
            changes.append(Change(host, dict(host.associations), dict(drifting[host.mac].expected),
                                  "associated; repair after activating applies it"))
        elif not host.associations.get("image"):
            now, then = _decision(service.explain(host.attrs, "active")), _decision(service.explain(host.attrs, "working"))
            if now != then:
                changes.append(Change(host, now, then, "not associated yet; its next boot decides"))
    return changes


def _rules_page(status: int = 200, *, form: Mapping[str, str] | None = None, form_error: str = "") -> tuple[str, int]:
    service = get_service()
    working, active = service.ruleset("working"), service.ruleset("active")
    active_names = {r.name: rules.rule_to_dict(r) for r in active}
    return page("console/rules.html", working=list(working), active=list(active), active_docs=active_names,
                diff=service.ruleset_diff(), previous=len(service.ruleset("previous")), form=form or {},
                form_error=form_error, to_dict=rules.rule_to_dict), status


@blueprint.get("/rules")
def rules_page() -> tuple[str, int]:
    return _rules_page()


@blueprint.get("/rules/dry-run")
def rules_dry_run() -> str:
    service = get_service()
    return page("console/dryrun.html", diff=service.ruleset_diff(), changes=dry_run())


@blueprint.post("/rules/add")
def add_rule() -> Response | tuple[str, int]:
    session.require_writer()
    service = get_service()
    try:
        rule = service.make_rule(_fields(request.form))
        service.add_rule(rule, at=_position(request.form), activate=False)
    except BootboxError as exc:
        field = f"{exc.field}: " if isinstance(exc, ValidationError) else ""
        return _rules_page(422, form=request.form, form_error=f"{field}{exc}")
    return back("console.rules_page", msg=f"added rule {rule.name} to the working set; see the dry run, then activate")


@blueprint.get("/rules/<name>/edit")
def edit_rule(name: str) -> str:
    rule = get_service().ruleset("working").get(name)
    return page("console/rule_edit.html", rule=rules.rule_to_dict(rule), form_error="")


@blueprint.post("/rules/<name>/edit")
def edit_rule_post(name: str) -> Response | tuple[str, int]:
    session.require_writer()
    service = get_service()
    try:
        service.replace_rule(service.make_rule(_fields(request.form, name)), activate=False)
    except BootboxError as exc:
        doc = {"name": name, **_fields(request.form, name)}
        return page("console/rule_edit.html", rule=doc, form_error=str(exc)), 422
    return back("console.rules_page", msg=f"changed rule {name} in the working set")


@blueprint.post("/rules/<name>/move")
def move_rule(name: str) -> Response:
    session.require_writer()
    try:
        at = _position(request.form)
        if at is None:
            raise ValidationError("at", "required: the new position")
        get_service().move_rule(name, at, activate=False)
    except BootboxError as exc:
        return back("console.rules_page", err=str(exc))
    return back("console.rules_page", msg=f"moved rule {name} to position {at} in the working set")


@blueprint.post("/rules/<name>/remove")
def remove_rule(name: str) -> Response:
    session.require_writer()
    try:
        get_service().remove_rule(name, activate=False)
    except BootboxError as exc:
        return back("console.rules_page", err=str(exc))
    return back("console.rules_page", msg=f"removed rule {name} from the working set")


@blueprint.post("/rules/activate")
def activate() -> Response:
    session.require_writer()
    changes = get_service().activate_rules()
    text = "; ".join(str(c) for c in changes) or "no changes"
    return back("console.rules_page", msg=f"activated the working set ({text})")


@blueprint.post("/rules/rollback")
def rollback() -> Response:
    session.require_writer()
    try:
        active = get_service().rollback_rules()
    except BootboxError as exc:
        return back("console.rules_page", err=str(exc))
    return back("console.rules_page", msg=f"rolled back: the previous set ({len(active)} rules) is active again")
