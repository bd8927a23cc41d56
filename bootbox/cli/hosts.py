"""``bootbox host …``: the hosts bootbox has seen and each one's boot timeline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, clock, print_json, print_table, state
from bootbox.errors import ValidationError
from bootbox.model import normalize_mac


MacArg = Annotated[str, typer.Argument(help="The host's boot NIC MAC, any spelling (aa:bb:.., AA-BB-.., aabb..).")]


def last_push(host: dict) -> str:
    """``vcd ok, cmdb failed`` from the host's last push per plugin (``-`` if none)."""
    pushes = host.get("pushes") or {}
    return ", ".join(f"{name} {push.get('result', '?')}" for name, push in sorted(pushes.items())) or "-"


def last_checks(host: dict) -> str:
    """``esxi compliant`` from the host's last compliance check per plugin (``-`` if none)."""
    checks = host.get("checks") or {}
    return ", ".join(f"{name} {check.get('result', '?')}" for name, check in sorted(checks.items())) or "-"


def list_hosts(ctx: typer.Context, json: JsonOption = False) -> None:
    """List every known host with its state, profile and address."""
    hosts = state(ctx).client().get("/hosts")
    if json:
        print_json(hosts)
        return
    print_table(
        ["mac", "state", "adopted", "profile", "ipv4", "firmware", "last seen", "last push", "compliance"],
        [
            [h["mac"], h["state"], "yes" if h.get("adopted") else "-", h["profile"] or "-", h["attrs"].get("ipv4", "-"),
             h["attrs"].get("firmware", "-"), clock(h["last_seen"]), last_push(h), last_checks(h)]
            for h in hosts
        ],
        empty="No host has asked to boot yet.",
    )


def show_host(ctx: typer.Context, mac: MacArg, json: JsonOption = False) -> None:
    """Show one host: attributes, state, cached associations."""
    host = state(ctx).client().get(f"/hosts/{normalize_mac(mac)}")
    if json:
        print_json(host)
        return
    typer.echo(f"mac:        {host['mac']}\nstate:      {host['state']}\nprofile:    {host['profile'] or '-'}")
    typer.echo(f"boot id:    {host['boot_id'] or '-'}")
    typer.echo(f"adopted:    {'yes' if host.get('adopted') else 'no'}")
    if host.get("reason"):
        typer.echo(f"reason:     {host['reason']}")
    typer.echo(f"first seen: {clock(host['first_seen'])}\nlast seen:  {clock(host['last_seen'])}")
    typer.echo("associations:")
    for key, value in sorted(host["associations"].items()) or [("(none)", "")]:
        typer.echo(f"  {key} {value}".rstrip())
    typer.echo("attributes:")
    for key, value in sorted(host["attrs"].items()):
        typer.echo(f"  {key}={value}")


def host_events(
    ctx: typer.Context,
    mac: MacArg,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the newest N events.")] = None,
    json: JsonOption = False,
) -> None:
    """The host's boot timeline: DHCP offer, TFTP, script, files, report-in — where a boot stopped."""
    events = state(ctx).client().get(f"/hosts/{normalize_mac(mac)}/events", limit=limit)
    if json:
        print_json(events)
        return
    if any((e.get("data") or {}).get("appliance") for e in events):  # which appliance served each step (issue 20)
        print_table(["time", "appliance", "step", "what happened"],
                    [[clock(e["time"]), (e.get("data") or {}).get("appliance", ""), e["kind"], e["message"]] for e in events])
        return
    print_table(["time", "step", "what happened"], [[clock(e["time"]), e["kind"], e["message"]] for e in events])


def adopt_host(
    ctx: typer.Context,
    mac: MacArg,
    hostname: Annotated[str, typer.Option("--hostname", help="Its DNS name (under dns.domain).")] = "",
    json: JsonOption = False,
) -> None:
    """Vouch for a host (hosts.adopt = "manual"): it gets its profile and secrets from its next
    boot; also clears a conflict."""
    host = state(ctx).client().post(f"/hosts/{normalize_mac(mac)}/adopt", {"hostname": hostname})
    if json:
        print_json(host)
        return
    typer.echo(f"adopted {host['mac']}{f' as {hostname}' if hostname else ''} (state {host['state']})")


def resolve_host(ctx: typer.Context, mac: MacArg, json: JsonOption = False) -> None:
    """Clear a host's conflict (two machines claimed its MAC): its next boot binds afresh."""
    host = state(ctx).client().post(f"/hosts/{normalize_mac(mac)}/resolve", {})
    if json:
        print_json(host)
        return
    typer.echo(f"resolved {host['mac']} (state {host['state']}); its next verified boot binds its UUID")


def remove_host(
    ctx: typer.Context,
    mac: MacArg,
    answers: Annotated[bool, typer.Option("--answers", help="Delete the host's answers too (secrets included); "
                                          "by default they stay for when it boots again.")] = False,
) -> None:
    """Forget a host (its next boot starts from scratch; its answers stay unless --answers)."""
    state(ctx).client().delete(f"/hosts/{normalize_mac(mac)}" + ("?answers=true" if answers else ""))
    typer.echo(f"removed {normalize_mac(mac)}" + (" and its answers" if answers else ""))


def host_rules(
    ctx: typer.Context,
    mac: Annotated[Optional[str], typer.Argument(help="A known host's MAC (or give --attr instead).")] = None,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", help="attr=value to test instead of a known host (repeatable).")] = None,
    working: Annotated[bool, typer.Option("--working", help="Explain against the working set.")] = False,
    json: JsonOption = False,
) -> None:
    """Which rules a host matches and why: each pattern, the host's value, and the items each rule won."""
    client = state(ctx).client()
    which = "working" if working else "active"
    if attr:
        attrs: dict[str, str] = {}
        for text in attr:
            key, sep, value = text.partition("=")
            if not sep:
                raise ValidationError("--attr", f"{text!r}: expected attr=value")
            attrs[key.strip()] = value.strip()
        result = {"host": attrs.get("mac", "(attributes)"), "associations": {},
                  "rules": client.request("POST", "/rules/explain", {"attrs": attrs}, query={"set": which})}
    elif mac:
        result = client.get(f"/hosts/{normalize_mac(mac)}/rules", set=which)
    else:
        raise ValidationError("mac", "give a host's MAC, or --attr attr=value")
    if json:
        print_json(result)
        return
    if result["associations"]:
        typer.echo("cached associations: " + " ".join(f"{k}={v}" for k, v in sorted(result["associations"].items())))
    for rule in result["rules"]:
        verdict = "MATCH" if rule["matched"] else "no match"
        won = f"  -> wins {', '.join(rule['won'])}" if rule["won"] else ""
        typer.echo(f"[{rule['position']}] {rule['rule']}: {verdict}{won}")
        if rule["all_hosts"]:
            typer.echo("      all hosts")
        for check in rule["patterns"]:
            mark = "yes" if check["matched"] else "no "
            have = ",".join(check["host_values"]) or "(missing)"
            typer.echo(f"      {mark}  {check['pattern']}   host has {check['attr']}={have}")
    if not result["rules"]:
        typer.echo("The rule set is empty.")


def build() -> typer.Typer:
    """A fresh sub-app for this noun (plugins may add verbs to it)."""
    app = typer.Typer(help="Hosts that network-booted, their state and boot steps.", no_args_is_help=True)
    app.command("list")(list_hosts)
    app.command("show")(show_host)
    app.command("events")(host_events)
    app.command("remove")(remove_host)
    app.command("adopt")(adopt_host)
    app.command("resolve")(resolve_host)
    app.command("rules")(host_rules)
    return app
