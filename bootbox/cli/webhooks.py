"""``bootbox webhook …``: the ``[[webhooks]]`` hooks, their deliveries, a test delivery.

Each command asks the running appliance (``/api/v1/webhooks``): the queue and the delivery log
are its files, written by its threads. Secrets never show: ``***``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bootbox.cli.common import JsonOption, clock, print_json, print_table, state

NameArg = Annotated[str, typer.Argument(help="The hook's name (its name = ... in bootbox.toml).")]


def _last(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry.get('outcome')} {clock(entry.get('time'))}"


def list_webhooks(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the configured hooks: URL, event kinds and hosts they take, deliveries waiting, tries by outcome."""
    hooks = state(ctx).client().get("/webhooks")
    if json:
        print_json(hooks)
        return
    print_table(
        ["name", "url", "events", "hosts", "pending", "ok", "retry", "failed", "dropped", "last try"],
        [[h["name"], h["url"], ",".join(h["events"]) or "(all)", ",".join(h["hosts"]) or "(all)", h["pending"],
          h["counts"].get("ok", 0), h["counts"].get("retry", 0), h["counts"].get("failed", 0),
          h["counts"].get("dropped", 0), _last(h.get("last"))] for h in hooks],
        empty="No webhooks are configured (a [[webhooks]] table in bootbox.toml; docs/events.md).",
    )


def test_webhook(ctx: typer.Context, name: NameArg, json: JsonOption = False) -> None:
    """POST a signed `webhook.test` delivery to the hook now and show what the receiver answered."""
    entry = state(ctx).client().post(f"/webhooks/{name}/test", {})
    if json:
        print_json(entry)
    else:
        answer = f"HTTP {entry['status']}" if entry.get("status") else (entry.get("error") or "no answer")
        typer.echo(f"{name}: {entry['outcome']} ({answer}), delivery {entry['delivery']}")
        if entry["outcome"] != "ok" and entry.get("error") and entry.get("status"):
            typer.echo(f"  {entry['error']}")
    if entry["outcome"] != "ok":
        raise typer.Exit(1)


def webhook_deliveries(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the newest N log entries (default 100).")] = None,
    json: JsonOption = False,
) -> None:
    """The hook's deliveries waiting to be sent (oldest first) and its delivery log (newest first)."""
    data = state(ctx).client().get(f"/webhooks/{name}/deliveries", limit=limit)
    if json:
        print_json(data)
        return
    typer.echo(f"pending ({len(data['pending'])}):")
    print_table(["delivery", "event id", "kind", "host", "made"],
                [[d["delivery"], d["event_id"], d["kind"], d["mac"] or "-", clock(d["created"])] for d in data["pending"]])
    typer.echo("log:")
    print_table(["time", "delivery", "kind", "host", "try", "status", "outcome", "error / next try"],
                [[clock(e["time"]), e["delivery"], e["kind"], e["mac"] or "-", e["attempt"], e["status"] or "-",
                  e["outcome"], e.get("error") or (f"next {clock(e['next_try'])}" if e.get("next_try") else "")]
                 for e in data["log"]])


def build() -> typer.Typer:
    """A fresh sub-app for this noun (plugins may add verbs to it)."""
    app = typer.Typer(help="Webhooks: boot events POSTed, signed, to the receivers bootbox.toml names (docs/events.md).",
                      no_args_is_help=True)
    app.command("list")(list_webhooks)
    app.command("test")(test_webhook)
    app.command("deliveries")(webhook_deliveries)
    return app
