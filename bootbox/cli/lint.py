"""``bootbox lint``: host profiles should carry no host-specific values.

With file arguments it lints host-profile files before they are added (no appliance needed);
without, every host profile stored in the running appliance. A literal address or host name
in a template is a warning: it belongs in the answers. ``--strict`` makes warnings fail (CI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, state
from bootbox.cli.hostprofiles import load_profile_file
from bootbox.core.lint import lint_template


def lint(
    ctx: typer.Context,
    files: Annotated[Optional[list[Path]], typer.Argument(help="Host-profile files (default: the appliance's).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with status 1 when there are warnings.")] = False,
    json: JsonOption = False,
) -> None:
    """Warn when a host profile's template hard-codes an address or a host name."""
    if files:
        warnings = []
        for path in files:
            doc = load_profile_file(path)
            name = str(doc.get("name") or path.stem)
            for file_name, text in sorted(doc["templates"].items()):
                if isinstance(text, str):
                    warnings += [w.to_dict() for w in lint_template(name, file_name, text)]
    else:
        warnings = state(ctx).client().get("/lint")
    if json:
        print_json(warnings)
    else:
        for w in warnings:
            typer.echo(f"{w['profile']}/{w['file']}:{w['line']}: warning: {w['message']}")
        typer.echo(f"{len(warnings)} warning(s)")
    if strict and warnings:
        raise typer.Exit(1)
