"""``bootbox host …``: the hosts bootbox has seen and each one's boot timeline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, clock, print_json, print_table, state
from bootbox.model import normalize_mac

app = typer.Typer(help="Hosts that network-booted, their state and boot steps.", no_args_is_help=True)

MacArg = Annotated[str, typer.Argument(help="The host's boot NIC MAC, any spelling (aa:bb:.., AA-BB-.., aabb..).")]


@app.command("list")
def list_hosts(ctx: typer.Context, json: JsonOption = False) -> None:
    """List every known host with its state, profile and address."""
    hosts = state(ctx).client().get("/hosts")
    if json:
        print_json(hosts)
        return
    print_table(
        ["mac", "state", "profile", "ipv4", "firmware", "last seen"],
        [
            [h["mac"], h["state"], h["associations"].get("profile", "-"), h["attrs"].get("ipv4", "-"),
             h["attrs"].get("firmware", "-"), clock(h["last_seen"])]
            for h in hosts
        ],
        empty="No host has asked to boot yet.",
    )


@app.command("show")
def show_host(ctx: typer.Context, mac: MacArg, json: JsonOption = False) -> None:
    """Show one host: attributes, state, cached associations."""
    host = state(ctx).client().get(f"/hosts/{normalize_mac(mac)}")
    if json:
        print_json(host)
        return
    typer.echo(f"mac:        {host['mac']}\nstate:      {host['state']}\nboot id:    {host['boot_id'] or '-'}")
    typer.echo(f"first seen: {clock(host['first_seen'])}\nlast seen:  {clock(host['last_seen'])}")
    typer.echo("associations:")
    for key, value in sorted(host["associations"].items()) or [("(none)", "")]:
        typer.echo(f"  {key} {value}".rstrip())
    typer.echo("attributes:")
    for key, value in sorted(host["attrs"].items()):
        typer.echo(f"  {key}={value}")


@app.command("events")
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
    print_table(["time", "step", "what happened"], [[clock(e["time"]), e["kind"], e["message"]] for e in events])


@app.command("remove")
def remove_host(ctx: typer.Context, mac: MacArg) -> None:
    """Forget a host (its next boot starts from scratch)."""
    state(ctx).client().delete(f"/hosts/{normalize_mac(mac)}")
    typer.echo(f"removed {normalize_mac(mac)}")
