"""The ESXi commands of the ``bootbox`` CLI: nouns ``depot`` and ``vib``, verbs on ``profile``
and ``host``.

Every command except ``vib show FILE`` talks to the running appliance through
``bootbox.api_client(ctx)``: the appliance owns the state dir, so it does the imports and keeps
the catalog. ``depot add`` starts an import job there and draws a progress bar from the job's
bytes done / total until it ends. ``vib show`` on a local file parses and verifies the file
right here, without an appliance.
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from bootbox import BootboxError, api_client
from bootbox_esxi.image import name_modules
from bootbox_esxi.versions import long_name
from bootbox_esxi.vib import Vib
from bootbox_esxi.vibread import read_vib

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
POLL_SECONDS = 0.2


def _json(data: Any) -> None:
    typer.echo(jsonlib.dumps(data, indent=2, default=str))


def _table(headers: list[str], rows: list[list[Any]], empty: str = "(none)") -> None:
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if not cells:
        typer.echo(empty)
        return
    widths = [max(len(headers[i]), *(len(r[i]) for r in cells)) for i in range(len(headers))]
    typer.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------
# depot
# ---------------------------------------------------------------------------------------------

depot_app = typer.Typer(help="ESXi software depots: offline bundles, online depots, VIB folders.",
                        no_args_is_help=True)


class Bar:
    """A plain progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    WIDTH = 30

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.last_decile = -1

    def draw(self, job: dict[str, Any]) -> None:
        total, done = int(job.get("total") or 0), int(job.get("done") or 0)
        fraction = min(1.0, done / total) if total else 0.0
        filled = int(fraction * self.WIDTH)
        line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:3.0f}% "
                f"{_mb(done)}/{_mb(total) if total else '?'} {job.get('phase', '')} {job.get('current', '')}")
        if self.tty:
            self.out.write("\r" + line[:120].ljust(120))
            self.out.flush()
        elif int(fraction * 10) != self.last_decile:
            self.last_decile = int(fraction * 10)
            self.out.write(line + "\n")

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


@depot_app.command("add")
def depot_add(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Offline bundle (.zip), a .vib or a folder of .vib files on the "
                                               "appliance, or an online depot's index.xml URL.")],
    replace: Annotated[bool, typer.Option("--replace", help="Take rebuilt VIBs (an imported VIB ID with other "
                                                          "bytes) in place of the old build.")] = False,
    json: JsonOption = False,
) -> None:
    """Import a depot: verify every VIB and store each payload once."""
    if not source.startswith(("http://", "https://")):
        source = str(Path(source).expanduser().absolute())
    client = api_client(ctx)
    job = client.post("/esxi/depots", {"source": source, "replace": replace})
    bar = Bar()
    while job["state"] == "running":
        bar.draw(job)
        time.sleep(POLL_SECONDS)
        job = client.get(f"/esxi/jobs/{job['id']}")
    bar.draw(job)
    bar.finish()
    if job["state"] != "done":
        raise BootboxError(job["error"] or "the import failed")
    depot = job["result"]
    if json:
        _json(depot)
        return
    typer.echo(f"imported depot {depot['id']}: {len(depot['vibs'])} VIBs, {len(depot['profiles'])} image profiles "
               f"({_mb(depot['bytes'])})")
    for row in depot.get("replaced", []):
        typer.echo(f"replaced {row['vib']}: sha-256 {row['old_sha256'][:16]}… -> {row['new_sha256'][:16]}…")
        typer.echo(f"  image profiles that change: {', '.join(row['profiles']) or '(none)'}")
        typer.echo(f"  hosts now non-compliant until they boot again: {', '.join(row['hosts']) or '(none)'}")


@depot_app.command("remove")
def depot_remove(
    ctx: typer.Context,
    depot: Annotated[str, typer.Argument(help="The depot's ID (bootbox depot list).")],
    json: JsonOption = False,
) -> None:
    """Forget a depot and the VIBs only it brought (refused while an image profile in use needs them)."""
    result = api_client(ctx).delete(f"/esxi/depots/{depot}")
    if json:
        _json(result)
        return
    kept = f"; {len(result['kept_vibs'])} kept (other depots bring them)" if result["kept_vibs"] else ""
    typer.echo(f"removed depot {result['id']}: {len(result['removed_vibs'])} VIBs and their payloads{kept}")
    for name in result.get("unresolved_injections", []):
        typer.echo(f"note: [plugins.esxi.inject] names {name}, which no imported depot brings now; hosts boot "
                   "without it (their timeline says so)")


@depot_app.command("compliance")
def depot_compliance(ctx: typer.Context, json: JsonOption = False) -> None:
    """Hosts running an image whose VIBs were rebuilt (depot add --replace) since they booted."""
    rows = api_client(ctx).get("/esxi/compliance")
    if json:
        _json(rows)
        return
    _table(["host", "profile", "rebuilt vibs", "since boot"],
           [[r["mac"], r["profile"], ", ".join(r["vibs"]), r["boot_id"] or "-"] for r in rows],
           empty="Every host runs the current build of its image's VIBs.")


@depot_app.command("list")
def depot_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """List imported depots."""
    depots = api_client(ctx).get("/esxi/depots")
    if json:
        _json(depots)
        return
    _table(["id", "kind", "vibs", "profiles", "source"],
           [[d["id"], d["kind"], d["vib_count"], len(d["profiles"]), d["source"]] for d in depots],
           empty="No depot imported yet: bootbox depot add PATH_OR_URL")


@depot_app.command("profiles")
def depot_profiles(
    ctx: typer.Context,
    depot: Annotated[Optional[str], typer.Argument(help="Only this depot's profiles.")] = None,
    json: JsonOption = False,
) -> None:
    """List the image profiles depots bring (clone one with `bootbox profile clone`)."""
    profiles = api_client(ctx).get("/esxi/depot-profiles", depot=depot)
    if json:
        _json(profiles)
        return
    _table(["profile", "vendor", "acceptance", "vibs", "missing"],
           [[p["key"], p["vendor"], long_name(p["acceptance"]), len(p["vibs"]), len(p["missing"])] for p in profiles],
           empty="No depot brings an image profile (bundles built with vibauthor carry none).")


# ---------------------------------------------------------------------------------------------
# vib
# ---------------------------------------------------------------------------------------------

vib_app = typer.Typer(help="VIBs: the packages image profiles are made of.", no_args_is_help=True)


@vib_app.command("list")
def vib_list(
    ctx: typer.Context,
    depot: Annotated[Optional[str], typer.Option(help="Only VIBs of this depot.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Only VIBs whose name contains this.")] = None,
    vendor: Annotated[Optional[str], typer.Option(help="Only this vendor's VIBs.")] = None,
    acceptance: Annotated[Optional[str], typer.Option(help="Only VIBs at this level or above.")] = None,
    stateless: Annotated[Optional[bool], typer.Option("--stateless/--not-stateless",
                                                      help="Only (not) stateless-ready VIBs.")] = None,
    json: JsonOption = False,
) -> None:
    """List imported VIBs, with filters."""
    query = {"depot": depot, "name": name, "vendor": vendor, "acceptance": acceptance,
             "stateless": None if stateless is None else str(stateless).lower()}
    vibs = api_client(ctx).get("/esxi/vibs", **{k: v for k, v in query.items() if v is not None})
    if json:
        _json(vibs)
        return
    _table(["name", "version", "vendor", "acceptance", "stateless", "id"],
           [[v["name"], v["version"], v["vendor"], long_name(v["acceptance"]),
             "yes" if v["stateless_ready"] else "no", v["id"]] for v in vibs],
           empty="No VIB matches.")


def _show(doc: dict[str, Any], module_names: dict[str, str]) -> None:
    rel = lambda items: ", ".join(  # noqa: E731
        f"{r['name']} {r['relation']} {r['version']}".strip() if r["relation"] else r["name"] for r in items
    ) or "(none)"
    rows = [
        ("VIB ID", doc["id"]), ("name", doc["name"]), ("version", doc["version"]), ("vendor", doc["vendor"]),
        ("type", doc["type"]), ("summary", doc["summary"]), ("release date", doc["release_date"] or "-"),
        ("acceptance", f"{long_name(doc['acceptance'])} ({doc['acceptance']})"),
        ("stateless-ready", "yes" if doc["stateless_ready"] else "no"),
        ("signature", "present" if doc["signed"] else "none (empty or absent sig.pkcs7)"),
        ("size", f"{doc['size']} bytes, sha-256 {doc['sha256']}"),
        ("depends", rel(doc["depends"])), ("conflicts", rel(doc["conflicts"])),
        ("replaces", rel(doc["replaces"])), ("provides", rel(doc["provides"])),
        ("files", str(doc["files"])),
    ]
    if "depots" in doc:
        rows.append(("depots", ", ".join(doc["depots"]) or "-"))
    for key, value in rows:
        typer.echo(f"{key + ':':<17}{value}")
    typer.echo("payloads:")
    _table(["name", "type", "size", "module", "checksums"],
           [[p["name"], p["type"], p["size"], module_names.get(p["name"], "-"),
             ", ".join(f"{c['kind']}{'(gunzip)' if c['gunzip'] else ''} {c['value'][:16]}…"
                       for c in p["checksums"])] for p in doc["payloads"]])


@vib_app.command("show")
def vib_show(
    ctx: typer.Context,
    vib: Annotated[str, typer.Argument(help="A .vib file here (read and verified locally), or an imported "
                                            "VIB's ID or name.")],
    json: JsonOption = False,
) -> None:
    """Show a VIB's descriptor: identity, acceptance, relationships, payloads and module names."""
    path = Path(vib)
    if path.is_file():
        with path.open("rb") as stream:
            parsed = read_vib(stream, f"VIB file {path.name}", limit=1 << 40)
        doc = parsed.to_doc()
    else:
        doc = api_client(ctx).get(f"/esxi/vibs/{vib}")
        parsed = Vib.from_doc({k: v for k, v in doc.items() if k not in ("depots", "file_list")})
    if json:
        _json(doc)
        return
    _show(doc, {m.payload: m.name for m in name_modules([parsed])})


# ---------------------------------------------------------------------------------------------
# verbs on profile and host
# ---------------------------------------------------------------------------------------------


def _write_profile(ctx: typer.Context, name: str, spec: dict[str, Any], description: str, create: bool) -> None:
    client = api_client(ctx)
    body = {"name": name, "kind": "esxi", "spec": spec, "description": description}
    client.post("/profiles", body) if create else client.put(f"/profiles/{name}", body)


def profile_clone(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An ESXi profile, or a depot's image profile (DEPOT/NAME).")],
    name: Annotated[str, typer.Argument(help="Name of the new profile.")],
    mode: Annotated[Optional[str], typer.Option(help="stateless (default) or install.")] = None,
    acceptance: Annotated[Optional[str], typer.Option(help="The new profile's acceptance level.")] = None,
    description: Annotated[str, typer.Option(help="A line for people.")] = "",
) -> None:
    """Clone an image profile into a new ESXi profile hosts can boot."""
    plan = api_client(ctx).post("/esxi/plans/clone", {"source": source, "mode": mode, "acceptance": acceptance})
    _write_profile(ctx, name, plan["spec"], description or f"clone of {source}", create=True)
    typer.echo(f"added profile {name}: {len(plan['spec']['vibs'])} VIBs, {long_name(plan['spec']['acceptance'])}, "
               f"{plan['spec']['mode']}")


def _change(ctx: typer.Context, action: str, profile: str, body: dict[str, Any]) -> None:
    client = api_client(ctx)
    current = client.get(f"/profiles/{profile}")
    plan = client.post(f"/esxi/plans/{action}", {"profile": profile, **body})
    _write_profile(ctx, profile, plan["spec"], current.get("description", ""), create=False)
    for change in plan["changes"]:
        typer.echo(f"{profile}: {change}")


def profile_add_vib(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="The ESXi profile.")],
    vib: Annotated[str, typer.Argument(help="VIB ID, or a name (its newest imported version).")],
    acceptance: Annotated[Optional[str], typer.Option(help="Lower the profile to this level to admit the VIB.")] = None,
) -> None:
    """Add a VIB (a newer version replaces the profile's older one)."""
    _change(ctx, "add-vib", profile, {"vib": vib, "acceptance": acceptance})


def profile_remove_vib(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="The ESXi profile.")],
    vib: Annotated[str, typer.Argument(help="VIB ID or name.")],
) -> None:
    """Remove a VIB (refused while another VIB depends on it)."""
    _change(ctx, "remove-vib", profile, {"vib": vib})


def profile_diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="First profile (ESXi or DEPOT/NAME).")],
    b: Annotated[str, typer.Argument(help="Second profile.")],
    json: JsonOption = False,
) -> None:
    """Compare two image profiles: VIBs only in one, versions that differ, settings."""
    diff = api_client(ctx).get("/esxi/diff", a=a, b=b)
    if json:
        _json(diff)
        return
    for label, key in ((f"only in {diff['a']}", "only_a"), (f"only in {diff['b']}", "only_b"),
                       ("different versions", "changed")):
        typer.echo(f"{label}:")
        for line in diff[key] or ["(none)"]:
            typer.echo(f"  {line}")
    for key, (left, right) in diff["settings"].items():
        typer.echo(f"{key}: {left} -> {right}")
    typer.echo(f"{diff['same']} VIBs identical")


def profile_export(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="ESXi profile or DEPOT/NAME.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Offline bundle to write (FILE.zip).")],
) -> None:
    """Export an image profile as an offline bundle (index.xml, metadata.zip, vib20/)."""
    client = api_client(ctx)
    request = urllib.request.Request(f"{client.base_url}/api/v1/esxi/bundles/{profile}")
    partial = bundle.with_name(bundle.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=600) as response, partial.open("wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        client.get(f"/esxi/profiles/{profile}")  # turns a 404/422 into the appliance's own message
        raise BootboxError(f"export failed: {exc}") from None
    partial.replace(bundle)
    typer.echo(f"wrote {bundle} ({_mb(bundle.stat().st_size)})")


def host_image(ctx: typer.Context, mac: Annotated[str, typer.Argument(help="The host's MAC.")],
               json: JsonOption = False) -> None:
    """What an ESXi host boots: its profile's VIBs plus those plugins injected."""
    image = api_client(ctx).get(f"/esxi/hosts/{mac}/image")
    if json:
        _json(image)
        return
    typer.echo(f"host {image['mac']} boots image profile {image['profile']} ({image['mode']}, "
               f"{long_name(image['acceptance'])}, {image['firmware']}); image {image['id']}")
    _table(["vib", "version", "acceptance", "from"],
           [[v["name"], v["version"], long_name(v["acceptance"]), "injected" if v["injected"] else "profile"]
            for v in image["vibs"]])
    for refused in image["refused"]:
        typer.echo(f"left out: {refused['vib']}: {refused['reason']}")
    callin = f" + {image['callin_module']} (its call-in, made for each boot)" if image.get("callin_module") else ""
    typer.echo(f"kernel {image['kernel']}, {len(image['modules'])} modules + imgdb.tgz{callin}")


def register_commands(register: Callable[..., None]) -> None:
    register(depot_app, name="depot")
    register(vib_app, name="vib")
    register(profile_clone, noun="profile", name="clone")
    register(profile_add_vib, noun="profile", name="add-vib")
    register(profile_remove_vib, noun="profile", name="remove-vib")
    register(profile_diff, noun="profile", name="diff")
    register(profile_export, noun="profile", name="export")
    register(host_image, noun="host", name="image")
    from bootbox_esxi.hostprofile.cli import host_compliance, hostprofile_extract

    register(host_compliance, noun="host", name="compliance")
    register(hostprofile_extract, noun="hostprofile", name="extract")
