"""``bootbox doctor``: explain what would stop network boot here, with the fix for each problem.

Exit status 1 when any check fails (warnings do not count), so scripts and CI can gate on it.
"""

from __future__ import annotations

import json as jsonlib
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bootbox.cli.common import JsonOption, print_json, state

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def doctor(
    ctx: typer.Context,
    client: Annotated[bool, typer.Option("--client", help="Also act as a PXE client against the running appliance.")] = False,
    interface: Annotated[Optional[str], typer.Option(help="With --client: broadcast on this interface instead of using loopback.")] = None,
    arch: Annotated[int, typer.Option(help="With --client: the client architecture to claim (0 BIOS, 7 x64 UEFI).")] = 0,
    mac: Annotated[Optional[str], typer.Option(help="With --client: the MAC to claim (default 02:b0:07:d0:c7:00).")] = None,
    no_network: Annotated[bool, typer.Option("--no-network", help="Do not send the DHCP probe.")] = False,
    only_client: Annotated[bool, typer.Option("--only-client", help="Only the PXE client walk (from another machine on the network).")] = False,
    json: JsonOption = False,
) -> None:
    """Check ports, capabilities, loaders, addresses, the store and the network's DHCP servers."""
    from bootbox.doctor.checks import Status, run_checks  # imported here: `bootbox --help` stays light
    from bootbox.doctor.client import DOCTOR_MAC, pxe_walk
    from bootbox.service.bootservice import DOCTOR_RESULT_FILE

    settings = state(ctx).settings()
    checks = [] if only_client else run_checks(settings, network=not no_network)
    steps = pxe_walk(settings, interface=interface, mac=mac or DOCTOR_MAC, arch=arch) if client or only_client else []
    failed = any(c.status is Status.FAIL for c in checks) or any(not s.ok for s in steps)
    result = {"ok": not failed, "time": time.time(), "checks": [c.to_dict() for c in checks],
              "client": [s.to_dict() for s in steps]}
    _keep(settings.state_path / DOCTOR_RESULT_FILE, result)
    if json:
        print_json({k: v for k, v in result.items() if k != "time"})
    else:
        for check in checks:
            typer.echo(f"[{_MARK[str(check.status)]}] {check.name}: {check.summary}")
            if check.fix and check.status in (Status.FAIL, Status.WARN):
                typer.echo(f"       fix: {check.fix}")
        if steps:
            typer.echo("PXE client walk" + (f" on {interface}" if interface else " over loopback") + ":")
            for step in steps:
                typer.echo(f"[{'ok  ' if step.ok else 'FAIL'}] {step.name}: {step.detail}")
    if failed:
        raise typer.Exit(1)


def _keep(path: Path, result: dict[str, Any]) -> None:
    """Keep the result in the state dir for the console's Health page; best effort (a doctor run
    by a user who cannot write there still prints its result)."""
    from bootbox.runtime.atomic import atomic_write_bytes

    try:
        if path.parent.is_dir():
            atomic_write_bytes(path, jsonlib.dumps(result, default=str).encode(), mode=0o644)  # no secrets; root-run, appliance-read
    except OSError:
        pass
