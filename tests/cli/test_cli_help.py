"""Help texts render as written: Typer parses them as Rich markup, which swallows a
``[section]`` (``[hosts] adopt`` printed as ``adopt``), so help names config keys as ``hosts.adopt``."""

from __future__ import annotations

import re

from typing import Any

import typer

from bootbox.cli import build_cli

_MARKUP_TAG = re.compile(r"(?<!\\)\[[A-Za-z_][\w.]*\]")


def _texts(command: Any, path: str) -> list[tuple[str, str]]:
    """Every help text of ``command`` and its subcommands (Typer builds them on its own copy of
    click, hence duck typing)."""
    out = [(path, command.help or ""), (path, command.short_help or "")]
    out += [(f"{path} {param.name}", getattr(param, "help", None) or "") for param in command.params]
    for name, sub in getattr(command, "commands", {}).items():
        out += _texts(sub, f"{path} {name}")
    return out


def test_no_help_text_holds_a_bracketed_word_rich_would_swallow() -> None:
    root = typer.main.get_command(build_cli())
    texts = _texts(root, "bootbox")
    assert any(where.startswith("bootbox host adopt") for where, _ in texts)  # the walk reaches subcommands
    swallowed = [(where, tag) for where, text in texts for tag in _MARKUP_TAG.findall(text)]
    assert swallowed == []
