"""``bootbox host compliance MAC`` and ``bootbox hostprofile extract --from HOST``."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from bootbox import BootboxError, api_client, normalize_mac

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def host_compliance(ctx: typer.Context, mac: Annotated[str, typer.Argument(help="The host's MAC.")],
                    last: Annotated[bool, typer.Option("--last", help="The last known result; do not contact the host.")] = False,
                    json: JsonOption = False) -> None:
    """Check an ESXi host against its host profile (nothing is changed); exit 1 if it does not comply."""
    path = f"/esxi/hosts/{normalize_mac(mac)}/hostprofile/compliance"
    result = api_client(ctx).get(path) if last else api_client(ctx).post(path, {})
    if json:
        typer.echo(jsonlib.dumps(result, indent=2))
    else:
        verdict = "compliant" if result["compliant"] else "NOT compliant"
        typer.echo(f"host {result['mac']} is {verdict} with host profile {result['host_profile']} "
                   f"(boot {result['boot_time'] or '?'})")
        for setting in result["settings"]:
            mark = "ok " if setting["action"] == "none" else "-- "
            detail = setting["want"] if setting["action"] == "none" else f"want {setting['want']}; has {setting['have']}"
            typer.echo(f"  {mark}{setting['setting']}: {detail}")
    if not result["compliant"]:
        raise typer.Exit(1)


def hostprofile_extract(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", help="The reference host: HOST or HOST:PORT.")],
    name: Annotated[str, typer.Option("--name", help="The new host profile's name.")] = "extracted",
    user: Annotated[str, typer.Option("--user", help="The account to log in with.")] = "root",
    password_file: Annotated[Optional[Path], typer.Option("--password-file", help="A file holding its password.")] = None,
    thumbprint: Annotated[Optional[str], typer.Option("--thumbprint", help="The SHA-256 thumbprint to trust (else the one the host presents now, shown).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Build an esxi host profile (YAML) from a configured reference host, per-host values as answers."""
    from bootbox_esxi.hostprofile.extract import extract  # pyVmomi only when asked
    from bootbox_esxi.hostprofile.vsphere import HostApiError

    password = password_file.read_text().rstrip("\n") if password_file else ""
    try:
        text, answers, seen = extract(source, user=user, password=password, name=name, pin=thumbprint)
    except HostApiError as exc:
        raise BootboxError(f"hostprofile extract: {exc}") from None
    if thumbprint is None:
        typer.echo(f"trusted the certificate {source} presented: SHA-256 {seen}", err=True)
    if output:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)
    if answers:
        typer.echo("answers for that host: bootbox answer set MAC " +
                   " ".join(f"{k}={v}" for k, v in answers.items()), err=True)
