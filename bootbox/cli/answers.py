"""``bootbox answer …``: each host's values for its host profile (and plugins' inputs).

Secrets are sent to the appliance, stored encrypted there, and never shown again: ``show``
masks them. ``--prompt KEY`` reads a value without echoing it, so a password stays out of the
shell history. ``import`` sets answers for many hosts from one CSV file, all or nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, print_table, state
from bootbox.errors import ValidationError
from bootbox.model import normalize_mac

MacArg = Annotated[str, typer.Argument(help="The host's boot NIC MAC (the host need not have booted yet).")]


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError(pair, "expected key=value")
        values[key.strip()] = value
    return values


def _print_answers(doc: dict[str, Any]) -> None:
    typer.echo(f"host {doc['mac']}" + (f" (host profile {doc['host_profile']})" if doc["host_profile"] else ""))
    declared = {spec["name"]: spec for spec in doc["inputs"]}
    rows = [[key, value, "secret" if declared.get(key, {}).get("secret") else ""]
            for key, value in sorted(doc["answers"].items())]
    print_table(["input", "value", ""], rows, empty="(no answers)")
    if doc["missing"]:
        typer.echo(f"missing (the host is held until they are set): {', '.join(doc['missing'])}")
    elif not doc["known_host"]:
        typer.echo("this host has not booted yet: its answers wait for it")


def set_answers(
    ctx: typer.Context,
    mac: MacArg,
    pairs: Annotated[Optional[list[str]], typer.Argument(help="key=value (repeatable).")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="Ask for KEY's value without echo (repeatable).")] = None,
    json: JsonOption = False,
) -> None:
    """Set answers of one host; secret inputs are stored encrypted."""
    values = parse_pairs(pairs or [])
    for key in prompt or []:
        values[key] = typer.prompt(key, hide_input=True, confirmation_prompt=True)
    if not values:
        raise ValidationError("pairs", "give at least one key=value or --prompt KEY")
    doc = state(ctx).client().request("PATCH", f"/hosts/{normalize_mac(mac)}/answers", {"values": values})
    print_json(doc) if json else _print_answers(doc)


def show_answers(ctx: typer.Context, mac: MacArg, json: JsonOption = False) -> None:
    """Show a host's answers (secrets masked) and which required ones are missing."""
    doc = state(ctx).client().get(f"/hosts/{normalize_mac(mac)}/answers")
    print_json(doc) if json else _print_answers(doc)


def unset_answers(ctx: typer.Context, mac: MacArg,
                  keys: Annotated[list[str], typer.Argument(help="Input names to remove.")]) -> None:
    """Remove answers of one host."""
    client = state(ctx).client()
    for key in keys:
        client.delete(f"/hosts/{normalize_mac(mac)}/answers/{key}")
    typer.echo(f"removed {', '.join(keys)} from {normalize_mac(mac)}")


def import_answers(ctx: typer.Context,
                   file: Annotated[Path, typer.Argument(help="CSV: a 'mac' column and one column per input.")],
                   json: JsonOption = False) -> None:
    """Set answers for many hosts at once; one bad cell changes nothing."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise ValidationError(str(file), f"cannot read it: {exc.strerror}") from None
    result = state(ctx).client().post("/answers/import", {"csv": text})
    if json:
        print_json(result)
        return
    typer.echo(f"set answers for {len(result['hosts'])} host(s)")


def build() -> typer.Typer:
    """A fresh sub-app for this noun."""
    app = typer.Typer(help="Per-host answers: the values a host profile's templates need.", no_args_is_help=True)
    app.command("set")(set_answers)
    app.command("show")(show_answers)
    app.command("unset")(unset_answers)
    app.command("import")(import_answers)
    return app
