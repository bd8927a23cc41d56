"""``bootbox user …``: console users and their password hashes (``[ui.users]``, docs/console.md).

``passwd`` prints the line to put under ``[ui.users]`` in the config; it never writes the config
itself (the config is the operator's file, often under configuration management). The password
comes from a prompt on a terminal (asked twice), else ``--password-file`` (``-``: standard input)
or the first line of standard input, so it never appears in the process list or shell history.
"""

from __future__ import annotations

import getpass
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, print_table, state

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def _read_password(password_file: Optional[Path]) -> str:
    if password_file is not None:
        text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text()
        return text.splitlines()[0] if text.splitlines() else ""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Again: "):
            raise typer.BadParameter("the two passwords differ", param_hint="password")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def passwd(
    name: Annotated[str, typer.Argument(help="The user name (letters, digits, '_', '.', '-').")],
    password_file: Annotated[Optional[Path], typer.Option("--password-file", help="Read the password from the first line of this file ('-': standard input).")] = None,
    json: JsonOption = False,
) -> None:
    """Print the line for NAME to put under ui.users in the config: a scrypt hash of a new password."""
    from bootbox.web.console.passwords import (
        hash_password,  # here: `bootbox --help` stays light
    )

    if not _NAME.fullmatch(name):
        raise typer.BadParameter(f"{name!r}: use letters, digits, '_', '.', '-' (at most 64)", param_hint="NAME")
    password = _read_password(password_file)
    if len(password) < 8:
        raise typer.BadParameter("use a password of at least 8 characters", param_hint="password")
    hashed = hash_password(password)
    if json:
        print_json({"user": name, "hash": hashed})
        return
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'
    typer.echo(f"# under [ui.users] in bootbox.toml, then restart bootbox:\n{key} = \"{hashed}\"")


def list_users(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the console users the config defines (names only; the hashes stay in the config)."""
    users = sorted(state(ctx).settings().ui.users)
    if json:
        print_json(users)
        return
    print_table(["user"], [[u] for u in users], empty="(no [ui.users]; log in to the console with the API token)")


def build() -> typer.Typer:
    """A fresh sub-app for this noun."""
    app = typer.Typer(help="Console users (the ui.users table of the config) and their password hashes.", no_args_is_help=True)
    app.command("passwd")(passwd)
    app.command("list")(list_users)
    return app
