"""``bootbox hostprofile …``, and the host verbs ``host push`` and ``host render``.

A host profile is written as one YAML (or JSON) file, kept in git next to the rules::

    name: web
    kind: cloud-init
    description: web servers
    inputs:
      - {name: hostname, validation: hostname}
      - {name: root_password, type: password}
    templates:
      user-data: {file: user-data.j2}     # relative to this file; or the text inline

``add`` stores version 1; ``replace`` stores the next version (hosts get it at their next boot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from bootbox.cli.common import JsonOption, print_json, print_table, state
from bootbox.errors import ValidationError
from bootbox.model import normalize_mac

NameArg = Annotated[str, typer.Argument(help="Host profile name.")]
FileArg = Annotated[Path, typer.Argument(help="The host profile as YAML or JSON (see `bootbox hostprofile --help`).")]
TemplateOption = Annotated[Optional[list[str]], typer.Option(
    "--template", "-t", help="NAME=PATH: a template from a file (repeatable; overrides the file's).")]


def load_profile_file(path: Path, templates: list[str] | None = None) -> dict[str, Any]:
    """Read a host-profile document; ``{file: PATH}`` templates are read relative to it."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValidationError(str(path), f"cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValidationError(str(path), f"not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError(str(path), "expected a mapping with name, kind, inputs, templates")
    resolved: dict[str, Any] = {}
    for name, value in (doc.get("templates") or {}).items():
        if isinstance(value, dict) and set(value) == {"file"}:
            value = _read(path.parent / str(value["file"]), f"templates.{name}.file")
        resolved[str(name)] = value
    for item in templates or []:
        name, sep, file_name = item.partition("=")
        if not sep or not name:
            raise ValidationError("--template", f"{item!r}: expected NAME=PATH")
        resolved[name.strip()] = _read(Path(file_name), f"--template {name}")
    doc["templates"] = resolved
    return doc


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ValidationError(where, f"cannot read {path}: {exc.strerror}") from None


def _report(profile: dict[str, Any], verb: str) -> None:
    typer.echo(f"{verb} host profile {profile['name']} version {profile['version']} ({profile['kind']})")
    for warning in profile.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)


def list_hostprofiles(ctx: typer.Context, json: JsonOption = False) -> None:
    """List host profiles: kind, version, the inputs each host must answer."""
    profiles = state(ctx).client().get("/hostprofiles")
    if json:
        print_json(profiles)
        return
    print_table(["name", "kind", "version", "inputs", "description"],
                [[p["name"], p["kind"], p["version"], ", ".join(p["inputs"]) or "-", p["description"]] for p in profiles],
                empty="No host profile yet: bootbox hostprofile add FILE.yaml")


def show_hostprofile(ctx: typer.Context, name: NameArg,
                     version: Annotated[Optional[int], typer.Option(help="An older version.")] = None,
                     json: JsonOption = False) -> None:
    """Show a host profile: its inputs and templates."""
    profile = state(ctx).client().get(f"/hostprofiles/{name}", version=version)
    if json:
        print_json(profile)
        return
    typer.echo(f"name: {profile['name']}\nkind: {profile['kind']}\nversion: {profile['version']}")
    typer.echo(f"description: {profile['description'] or '-'}\ninputs:")
    for spec in profile["inputs"]:
        flags = [spec["type"]] + (["required"] if spec["required"] else []) + (["secret"] if spec["secret"] else [])
        extra = f" validation={spec['validation']}" if spec.get("validation") else ""
        extra += f" default={spec['default']!r}" if "default" in spec else ""
        typer.echo(f"  {spec['name']} ({', '.join(flags)}){extra}")
    for file_name, text in sorted(profile["templates"].items()):
        typer.echo(f"--- {file_name}\n{text.rstrip()}")


def add_hostprofile(ctx: typer.Context, file: FileArg, template: TemplateOption = None, json: JsonOption = False) -> None:
    """Add a host profile from a file (version 1); lint warnings are printed."""
    profile = state(ctx).client().post("/hostprofiles", load_profile_file(file, template))
    print_json(profile) if json else _report(profile, "added")


def replace_hostprofile(ctx: typer.Context, file: FileArg, template: TemplateOption = None,
                        json: JsonOption = False) -> None:
    """Store a new version of a host profile (hosts get it at their next boot)."""
    doc = load_profile_file(file, template)
    if not isinstance(doc.get("name"), str):
        raise ValidationError("name", "required")
    profile = state(ctx).client().put(f"/hostprofiles/{doc['name']}", doc)
    print_json(profile) if json else _report(profile, "replaced")


def remove_hostprofile(ctx: typer.Context, name: NameArg) -> None:
    """Remove a host profile that no host uses."""
    state(ctx).client().delete(f"/hostprofiles/{name}")
    typer.echo(f"removed host profile {name}")


def answer_kinds(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the answer kinds plugins render (kickstart, cloud-init, preseed, …)."""
    kinds = state(ctx).client().get("/answer-kinds")
    if json:
        print_json(kinds)
        return
    print_table(["kind", "plugin", "required templates", "description"],
                [[k["kind"], k["plugin"], ", ".join(k["files"]), k["description"]] for k in kinds])


# ------------------------------------------------------------------ host verbs


MacArg = Annotated[str, typer.Argument(help="The host's boot NIC MAC.")]


def host_render(
    ctx: typer.Context,
    mac: MacArg,
    kind: Annotated[str, typer.Argument(help="The answer kind (the host profile's kind), e.g. cloud-init.")],
    profile: Annotated[Optional[str], typer.Option(help="Render another host profile instead (a dry run).")] = None,
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Print only this file.")] = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Show secrets and password hashes (needs the token).")] = False,
    json: JsonOption = False,
) -> None:
    """Print the answer files a host would get, without booting it (secrets masked)."""
    client = state(ctx).client()
    path = f"/hosts/{normalize_mac(mac)}/render/{kind}"
    query = {"profile": profile} if profile else None
    result = client.request("POST" if reveal else "GET", path, {} if reveal else None, query=query)
    if json:
        print_json(result)
        return
    files = result["files"]
    if file is not None:
        if file not in files:
            raise ValidationError("--file", f"{file!r} is not one of {', '.join(sorted(files))}")
        typer.echo(files[file], nl=False)
        return
    for name in sorted(files):
        typer.echo(f"--- {name} (host profile {result['host_profile']} v{result['version']})")
        typer.echo(files[name], nl=not files[name].endswith("\n"))


def host_push(ctx: typer.Context, mac: MacArg, json: JsonOption = False) -> None:
    """Run every plugin's after-boot push again for the host's current boot."""
    host = state(ctx).client().post(f"/hosts/{normalize_mac(mac)}/push", {})
    if json:
        print_json(host)
        return
    typer.echo(f"pushing to {host['mac']} (state {host['state']}); follow it with: bootbox host events {host['mac']}")


def build() -> typer.Typer:
    """A fresh sub-app for this noun."""
    app = typer.Typer(help="Host profiles: answer-file templates and the per-host inputs they ask for.",
                      no_args_is_help=True)
    app.command("list")(list_hostprofiles)
    app.command("show")(show_hostprofile)
    app.command("add")(add_hostprofile)
    app.command("replace")(replace_hostprofile)
    app.command("remove")(remove_hostprofile)
    app.command("kinds")(answer_kinds)
    return app


def add_host_verbs(host_app: typer.Typer) -> None:
    """``bootbox host render`` and ``bootbox host push``."""
    host_app.command("render")(host_render)
    host_app.command("push")(host_push)


def plugin_new(
    name: Annotated[str, typer.Argument(help="Plugin name: a-z, 0-9, '_' (the package is bootbox_NAME).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create bootbox-NAME/.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the skeleton's files if the directory exists.")] = False,
) -> None:
    """Write a working plugin skeleton: pyproject with the entry point, a hook, a passing test."""
    from bootbox.cli.scaffold import scaffold

    root = scaffold(name, directory, force=force)
    typer.echo(f"created {root}\n  cd {root} && pip install -e '.[test]' && pytest\n  bootbox plugin list")
