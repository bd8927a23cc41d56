"""``/api/v1/rules``, ``/api/v1/rulesets``, ``/api/v1/compliance``: deploy rules over HTTP.

Every edit changes the working set and activates it unless ``activate`` is false; every write
is validated completely before it is stored, in one atomic write, so nothing is half-applied.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from bootbox.core import rules
from bootbox.errors import ValidationError
from bootbox.model import normalize_mac
from bootbox.web.auth import read_only
from bootbox.web.deps import flag_arg, get_service, json_object

blueprint = Blueprint("rules", __name__, url_prefix="/api/v1")


def _position(body: dict[str, Any], required: bool = False) -> int | None:
    at = body.get("at")
    if at is None and not required:
        return None
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ValidationError("at", "expected a position: a whole number from 0")
    return at


def _which(default: str = "working") -> str:
    which = request.args.get("set", default)
    if which not in ("working", "active", "previous"):
        raise ValidationError("set", "use working, active or previous")
    return which


def rule_json(rule: rules.Rule, position: int | None = None) -> dict[str, Any]:
    doc = rules.rule_to_dict(rule)
    if position is not None:
        doc["position"] = position
    doc["description"] = rule.describe()
    return doc


def _ruleset_json(ruleset: rules.RuleSet) -> list[dict[str, Any]]:
    return [rule_json(rule, i) for i, rule in enumerate(ruleset)]


def _diff_json(diffs: list[rules.RuleDiff]) -> list[dict[str, Any]]:
    return [
        {"change": str(d.kind), "name": d.name, "text": str(d), "old_position": d.old_position, "new_position": d.new_position,
         "details": list(d.details),
         "before": rules.rule_to_dict(d.before) if d.before else None,
         "after": rules.rule_to_dict(d.after) if d.after else None}
        for d in diffs
    ]


def _drift_json(drifts: list[rules.HostDrift]) -> list[dict[str, Any]]:
    return [
        {"host": d.host, "expected": dict(d.expected),
         "items": [{"item": i.item_type, "stored": i.stored, "expected": i.expected, "rule": i.rule, "change": i.change}
                   for i in d.items]}
        for d in drifts
    ]


def _explain_json(explanations: list[rules.RuleExplanation]) -> list[dict[str, Any]]:
    return [
        {"rule": e.rule, "position": e.position, "all_hosts": e.all_hosts, "matched": e.matched,
         "items": dict(e.items), "won": list(e.won),
         "patterns": [{"pattern": c.pattern, "attr": c.attr, "host_values": list(c.host_values), "matched": c.matched}
                      for c in e.checks]}
        for e in explanations
    ]


# ------------------------------------------------------------------ rules


@blueprint.get("/rules")
def list_rules() -> Response:
    return jsonify(_ruleset_json(get_service().ruleset(_which())))


@blueprint.get("/rules/<name>")
def show_rule(name: str) -> Response:
    ruleset = get_service().ruleset(_which())
    return jsonify(rule_json(ruleset.get(name), ruleset.index(name)))


@blueprint.post("/rules")
def add_rule() -> Response:
    body = json_object()
    service = get_service()
    fields = {k: v for k, v in body.items() if k not in ("at", "activate")}
    rule = service.make_rule(fields)
    working = service.add_rule(rule, at=_position(body), activate=flag_arg("activate", True, body))
    response = jsonify(rule_json(rule, working.index(rule.name)))
    response.status_code = 201
    return response


@blueprint.put("/rules/<name>")
def replace_rule(name: str) -> Response:
    body = json_object()
    service = get_service()
    fields = {k: v for k, v in body.items() if k not in ("at", "activate")}
    fields["name"] = name
    working = service.replace_rule(service.make_rule(fields), activate=flag_arg("activate", True, body))
    return jsonify(rule_json(working.get(name), working.index(name)))


@blueprint.delete("/rules/<name>")
def remove_rule(name: str) -> Response:
    get_service().remove_rule(name, activate=flag_arg("activate", True))
    return jsonify({"removed": name})


@blueprint.post("/rules/<name>/move")
def move_rule(name: str) -> Response:
    body = json_object()
    working = get_service().move_rule(name, _position(body, required=True), activate=flag_arg("activate", True, body))  # type: ignore[arg-type]
    return jsonify(_ruleset_json(working))


@blueprint.post("/rules/explain")
@read_only
def explain_attrs() -> Response:
    body = json_object()
    attrs = body.get("attrs")
    if not isinstance(attrs, dict) or not all(isinstance(v, (str, list)) for v in attrs.values()):
        raise ValidationError("attrs", "expected an object of attribute: value")
    if "mac" in attrs and isinstance(attrs["mac"], str):
        attrs["mac"] = normalize_mac(attrs["mac"], "attrs.mac")
    return jsonify(_explain_json(get_service().explain(attrs, _which("active"))))


@blueprint.get("/hosts/<mac>/rules")
def explain_host(mac: str) -> Response:
    service = get_service()
    host = service.host(mac)
    return jsonify({"host": host.mac, "associations": dict(host.associations),
                    "rules": _explain_json(service.explain(host.attrs, _which("active")))})


# ------------------------------------------------------------------ rule sets


@blueprint.get("/rulesets/<which>")
def show_ruleset(which: str) -> Response:
    return jsonify(rules.ruleset_to_dict(get_service().ruleset(which)))


@blueprint.put("/rulesets/working")
def import_ruleset() -> Response:
    body = json_object()
    activate = flag_arg("activate", True)
    ruleset = get_service().load_ruleset(body, activate=activate)
    return jsonify({"rules": len(ruleset), "activated": activate})


@blueprint.post("/rulesets/activate")
def activate() -> Response:
    changes = get_service().activate_rules()
    return jsonify({"activated": True, "changes": _diff_json(changes)})


@blueprint.post("/rulesets/rollback")
def rollback() -> Response:
    return jsonify({"active": _ruleset_json(get_service().rollback_rules())})


@blueprint.get("/rulesets/diff")
def diff() -> Response:
    return jsonify(_diff_json(get_service().ruleset_diff()))


# ------------------------------------------------------------------ compliance


@blueprint.get("/compliance")
def compliance() -> Response:
    return jsonify(_drift_json(get_service().compliance(_which("active"))))


@blueprint.post("/compliance/repair")
def repair() -> Response:
    body = json_object()
    hosts = body.get("hosts")
    if hosts is not None and (not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts)):
        raise ValidationError("hosts", "expected a list of MAC addresses")
    which = body.get("set", "active")
    if which not in ("active", "working"):
        raise ValidationError("set", "use active or working")
    return jsonify(_drift_json(get_service().repair(hosts or None, which)))
