"""What every CLI command shares: global options, the API client, and output as table or JSON."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Sequence

import typer

from bootbox.client import ApiClient
from bootbox.config import Settings, load_settings
from bootbox.store.apitoken import read_token

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclass
class CliState:
    """Global options, resolved lazily so `--help` works without a config file."""

    config: Path | None = None
    url: str | None = None
    state_dir: Path | None = None

    def settings(self, **overrides: Any) -> Settings:
        extra: dict[str, Any] = dict(overrides)
        if self.state_dir is not None:
            extra["state_dir"] = str(self.state_dir)
        return load_settings(self.config, overrides=extra)

    def client(self) -> ApiClient:
        settings = self.settings()
        url = self.url or os.environ.get("BOOTBOX_URL") or f"http://127.0.0.1:{settings.http.port}"
        token = os.environ.get("BOOTBOX_TOKEN") or read_token(settings.state_path)
        return ApiClient(url, token)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


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
