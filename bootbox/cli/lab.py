"""``bootbox lab up|boot|down``: a real network boot on this machine, in private namespaces.

``up`` builds the segment (198.18.0.0/15 only, never the machine's own interfaces) and runs the
appliance on it, ``boot`` PXE-boots a QEMU client and prints bootbox's timeline as it goes,
``down`` removes everything ``up`` made. State lives in ``--dir`` (default /run/bootbox-lab),
so the three can run from different shells. Needs root, iproute2, QEMU, OVMF and iPXE.

``up --images-dir DIR`` lets the lab's appliance serve Linux images built with ``bootbox image
build`` (the lab reaches no archive, so it does not build them), and ``boot --image NAME`` boots
one instead of the demo (docs/lab.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bootbox.cli.common import JsonOption, print_json

DirOption = Annotated[Path, typer.Option("--dir", help="Where the lab keeps its state, config and logs.")]
_DEFAULT_DIR = Path("/run/bootbox-lab")


def build() -> typer.Typer:
    app = typer.Typer(help="A private lab segment with the appliance and QEMU clients (needs root).", no_args_is_help=True)

    @app.command("up")
    def up(
        lab_dir: DirOption = _DEFAULT_DIR,
        mode: Annotated[str, typer.Option(help="full: bootbox leases addresses (no other DHCP); proxy: a site dnsmasq does.")] = "full",
        images_dir: Annotated[Path | None, typer.Option(
            "--images-dir", help="Serve the Linux images built in this directory (where `bootbox image build` "
                                 "put them, default <state dir>/plugins/linux/images) for `lab boot --image`.")] = None,
        json: JsonOption = False,
    ) -> None:
        """Build the segment and start the appliance on it (returns once it answers)."""
        from bootbox.lab.session import up as lab_up

        state = lab_up(lab_dir, mode, images_dir=images_dir)
        if json:
            print_json(state.__dict__)
            return
        typer.echo(f"lab up in {lab_dir} ({mode} DHCP): appliance at {state.http_url} in namespace "
                   f"{state.members['server']}, log {state.log}")
        typer.echo("next: bootbox lab boot --firmware bios   (or uefi); bootbox lab down")
        if state.images_dir:
            typer.echo(f"Linux images from {state.images_dir}: bootbox lab boot --image NAME")

    @app.command("boot")
    def boot(
        lab_dir: DirOption = _DEFAULT_DIR,
        firmware: Annotated[str, typer.Option(help="bios (SeaBIOS + iPXE ROM) or uefi (OVMF, native PXE).")] = "bios",
        timeout: Annotated[float | None, typer.Option(
            help="Seconds to wait for the client to report in (default 240; 900 with --image).")] = None,
        image: Annotated[str | None, typer.Option(
            "--image", help="Boot this built Linux image instead of the demo (needs `lab up --images-dir`).")] = None,
        host_profile: Annotated[str | None, typer.Option(
            "--host-profile", help="With --image: the host profile that configures it (cloud-init).")] = None,
        json: JsonOption = False,
    ) -> None:
        """PXE-boot one QEMU client on the lab and print the timeline until it reports in.

        With --image, the client boots that Linux image (its root in RAM, 1.5 GiB) through a rule
        for its MAC and is done when the image reports in after cloud-init."""
        from bootbox.lab.labboot import boot as lab_boot
        from bootbox.lab.netns import LabError

        if firmware not in ("bios", "uefi"):
            raise LabError(f"--firmware must be bios or uefi, not {firmware!r}")
        wait = timeout if timeout is not None else (900.0 if image else 240.0)
        result = lab_boot(lab_dir, firmware, timeout=wait, out=(lambda line: None) if json else typer.echo,  # type: ignore[arg-type]
                          image=image, host_profile=host_profile)
        if json:
            print_json({**result.__dict__, "timeline": [e.__dict__ for e in result.timeline]})
        if not result.booted:
            raise typer.Exit(1)

    @app.command("down")
    def down(lab_dir: DirOption = _DEFAULT_DIR) -> None:
        """Stop the lab and remove everything it made."""
        from bootbox.lab.session import down as lab_down

        done = lab_down(lab_dir)
        for line in done or [f"no lab in {lab_dir}"]:
            typer.echo(line)

    return app
