"""What every CLI command shares: global options, the API client, and output as table or JSON.

The options object itself (:class:`~bootbox.client.CliState`) lives in :mod:`bootbox.client`, so
the public API's ``bootbox.api_client(ctx)`` reaches it without importing the CLI.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Iterable, Sequence

import typer

from bootbox.client import CliState, cli_state

__all__ = ["CliState", "JsonOption", "clock", "print_json", "print_table", "state"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def state(ctx: typer.Context) -> CliState:
    """The global options of this command line (:class:`bootbox.client.CliState`)."""
    return cli_state(ctx)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "(none)") -> None:
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not rows:
        typer.echo(empty)
        return
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    typer.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
