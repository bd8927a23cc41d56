"""``bootbox profile …``: boot recipes (a kernel + initrd, an ESXi image, …) hosts boot with."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, print_table, state
from bootbox.errors import ValidationError


NameArg = Annotated[str, typer.Argument(help="Profile name (letters, digits, '.', '_', '-').")]


def list_profiles(ctx: typer.Context, json: JsonOption = False) -> None:
    """List profiles."""
    profiles = state(ctx).client().get("/profiles")
    if json:
        print_json(profiles)
        return
    print_table(["name", "kind", "description"], [[p["name"], p["kind"], p["description"]] for p in profiles])


def show_profile(ctx: typer.Context, name: NameArg, json: JsonOption = False) -> None:
    """Show one profile and its spec."""
    profile = state(ctx).client().get(f"/profiles/{name}")
    if json:
        print_json(profile)
        return
    typer.echo(f"name:        {profile['name']}\nkind:        {profile['kind']}\ndescription: {profile['description']}")
    typer.echo("spec:")
    for key, value in profile["spec"].items():
        typer.echo(f"  {key}: {value}")


def add_profile(
    ctx: typer.Context,
    name: NameArg,
    kind: Annotated[str, typer.Option(help="Profile kind; `bootbox profile kinds` lists them.")] = "linux",
    kernel: Annotated[Optional[str], typer.Option(help="linux: kernel path on the appliance, or URL.")] = None,
    initrd: Annotated[Optional[list[str]], typer.Option(help="linux: initrd path or URL (repeatable).")] = None,
    cmdline: Annotated[str, typer.Option(help="linux: command line; {callback} and {mac} are filled in.")] = "",
    spec: Annotated[Optional[str], typer.Option(help="The whole spec as JSON (any kind).")] = None,
    description: Annotated[str, typer.Option(help="A line for people.")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Replace a profile of the same name.")] = False,
    json: JsonOption = False,
) -> None:
    """Add (or with --replace, replace) a profile."""
    if spec is not None:
        try:
            body_spec = jsonlib.loads(spec)
        except ValueError as exc:
            raise ValidationError("--spec", f"not valid JSON: {exc}") from None
    else:
        body_spec = {"kernel": kernel, "initrd": initrd or [], "cmdline": cmdline} if kernel else {}
    body = {"name": name, "kind": kind, "spec": body_spec, "description": description}
    client = state(ctx).client()
    profile = client.put(f"/profiles/{name}", body) if replace else client.post("/profiles", body)
    print_json(profile) if json else typer.echo(f"{'replaced' if replace else 'added'} profile {profile['name']}")


def remove_profile(ctx: typer.Context, name: NameArg) -> None:
    """Remove a profile."""
    state(ctx).client().delete(f"/profiles/{name}")
    typer.echo(f"removed profile {name}")


def profile_kinds(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the profile kinds the appliance's plugins provide."""
    kinds = state(ctx).client().get("/profile-kinds")
    if json:
        print_json(kinds)
        return
    print_table(["kind", "plugin", "description"], [[k["kind"], k["plugin"], k["description"]] for k in kinds])


def build() -> typer.Typer:
    """A fresh sub-app for this noun (plugins may add verbs to it)."""
    app = typer.Typer(help="Boot profiles: what a host boots.", no_args_is_help=True)
    app.command("list")(list_profiles)
    app.command("show")(show_profile)
    app.command("add")(add_profile)
    app.command("remove")(remove_profile)
    app.command("kinds")(profile_kinds)
    return app
