"""``bootbox image …``: build Linux images from a Debian archive and look at them.

Every command talks to the running appliance (it owns the images directory); ``build`` starts
a build job and draws its progress on stderr until it ends.
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
from typing import Annotated, Any

import typer

from bootbox import BootboxError, api_client

POLL_SECONDS = 1.0

image_app = typer.Typer(help="Linux images built from a Debian archive: build, list, show, diff, remove.",
                        no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _json(doc: Any) -> None:
    typer.echo(jsonlib.dumps(doc, indent=2, sort_keys=True))


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


class Bar:
    """The build's phase as a bar on stderr: redrawn in place on a terminal, a line per phase otherwise."""

    WIDTH = 24

    def __init__(self) -> None:
        self.out = sys.stderr
        self.tty = self.out.isatty()
        self.last = ""

    def draw(self, job: dict[str, Any]) -> None:
        steps, step = int(job.get("steps") or 1), int(job.get("step") or 0)
        filled = int(self.WIDTH * step / steps)
        fetched = f" ({job['fetched']} fetched)" if job.get("fetched") else ""
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {step}/{steps} {job.get('label', '')}{fetched}"
        if self.tty:
            self.out.write("\r" + line[:110].ljust(110))
            self.out.flush()
        elif job.get("phase") != self.last:
            self.last = job.get("phase", "")
            self.out.write(line + "\n")

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


@image_app.command("build")
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The image's name (a profile of that name is made if there is none).")],
    suite: Annotated[str, typer.Option("--suite", help="Debian suite, e.g. bookworm.")] = "bookworm",
    package: Annotated[list[str], typer.Option("--package", "-p", help="A package to install (repeat). "
                                               "linux-image-amd64, live-boot, systemd-sysv and busybox are "
                                               "always in.")] = [],  # noqa: B006 (typer's way)
    mirror: Annotated[str, typer.Option("--mirror", help="Archive URL (default: plugins.linux.mirror, else the "
                                                         "appliance's apt sources).")] = "",
    json: JsonOption = False,
) -> None:
    """Build an image with mmdebstrap (or find it built: images are cached by content digest)."""
    client = api_client(ctx)
    job = client.post("/linux/images", {"name": name, "suite": suite, "packages": list(package), "mirror": mirror})
    bar = Bar()
    while job["state"] == "running":
        bar.draw(job)
        time.sleep(POLL_SECONDS)
        job = client.get(f"/linux/jobs/{job['id']}")
    bar.draw(job)
    bar.finish()
    if job["state"] != "done":
        raise BootboxError(job["error"] or "the build failed")
    image = job["result"]
    if json:
        _json(image)
        return
    how = "already built (cached)" if image["cached"] else f"built in {image['build_seconds']:.0f} s"
    typer.echo(f"image {image['name']} {image['digest'][:12]}: {how}; {image['package_count']} packages, "
               f"kernel {image['kernel_version']}, root {_mb(image['sizes']['filesystem.squashfs'])}")
    for inj in image["injected"]:
        typer.echo(f"  injected {inj['package']} by plugin {inj['plugin']}")
    if image.get("profile") == "created":
        typer.echo(f"profile {name} made: boot it with a rule (bootbox rule add NAME --item image={name} …)")
    elif image.get("profile") == "taken":
        typer.echo(f"a profile named {name} exists for something else: make one with --spec image={name}")


@image_app.command("list")
def list_images(ctx: typer.Context, json: JsonOption = False) -> None:
    """Built images: digest, suite, packages, size."""
    images = api_client(ctx).get("/linux/images")
    if json:
        _json(images)
        return
    if not images:
        typer.echo("no Linux images (bootbox image build NAME --suite bookworm --package openssh-server …)")
    for i in images:
        typer.echo(f"{i['name']:<20} {i['digest'][:12]}  {i['suite']:<10} {i['package_count']:>4} packages  "
                   f"kernel {i['kernel_version']}  {_mb(i['sizes']['filesystem.squashfs'])}")


@image_app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The image's name.")],
         json: JsonOption = False) -> None:
    """One image: its recipe, every package with its version, what plugins injected, who uses it."""
    image = api_client(ctx).get(f"/linux/images/{name}")
    if json:
        _json(image)
        return
    typer.echo(f"image {image['name']}  digest {image['digest']}")
    typer.echo(f"  suite {image['suite']} from {image['mirror']}; kernel {image['kernel_version']}")
    typer.echo(f"  requested: {', '.join(image['requested'])}")
    for inj in image["injected"]:
        typer.echo(f"  injected: {inj['package']} by plugin {inj['plugin']} ({inj['source']})")
    used = image["used_by"]
    typer.echo(f"  profiles: {', '.join(used['profiles']) or '-'}; rules: {', '.join(used['rules']) or '-'}")
    typer.echo(f"  build log: {image['log']}")
    for p in image["packages"]:
        mark = f"  (injected by {p['injected_by']})" if p.get("injected_by") else ""
        typer.echo(f"  {p['name']:<36} {p['version']}{mark}")


@image_app.command("diff")
def diff(ctx: typer.Context, a: Annotated[str, typer.Argument(help="An image name.")],
         b: Annotated[str, typer.Argument(help="Another image, or NAME@previous: its build before the last.")],
         json: JsonOption = False) -> None:
    """Packages added, removed and changed in version from A to B."""
    result = api_client(ctx).get("/linux/diff", a=a, b=b)
    if json:
        _json(result)
        return
    for row in result["added"]:
        typer.echo(f"+ {row['name']} {row['version']}")
    for row in result["removed"]:
        typer.echo(f"- {row['name']} {row['version']}")
    for row in result["changed"]:
        typer.echo(f"~ {row['name']} {row['from']} -> {row['to']}")
    if not (result["added"] or result["removed"] or result["changed"]):
        typer.echo("same packages and versions")


@image_app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The image's name.")],
           json: JsonOption = False) -> None:
    """Remove an image (refused while a profile boots it: the error names the profiles and rules)."""
    result = api_client(ctx).delete(f"/linux/images/{name}")
    if json:
        _json(result)
        return
    typer.echo(f"removed image {name} ({len(result['removed_digests'])} builds deleted)")


@image_app.command("compliance")
def compliance(ctx: typer.Context, json: JsonOption = False) -> None:
    """Hosts running an image build that is no longer the image's current one (reboot them)."""
    rows = api_client(ctx).get("/linux/compliance")
    if json:
        _json(rows)
        return
    for row in rows:
        state = "compliant" if row["compliant"] else f"drift: image now {row['current'][:12] or '(removed)'}"
        typer.echo(f"{row['mac']}  {row['image']}  runs {row['digest'][:12]}  {state}")


@image_app.command("log")
def log(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The image's name.")]) -> None:
    """The last build log of an image (kept when a build fails)."""
    typer.echo(api_client(ctx).get(f"/linux/images/{name}/log")["log"], nl=False)
