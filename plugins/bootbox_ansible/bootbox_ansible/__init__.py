"""The Ansible push plugin for bootbox (docs/ansible.md): configuration pushed after every boot.

A stateless Linux host forgets its configuration at each reboot. Its host profile brings it
back two ways: *pull* (cloud-init reads the host's NoCloud answers) and *push* (this plugin):
when the host reports up with a new boot ID, bootbox's push pool runs the host profile's
playbook against it over SSH with the appliance's own key, puts every task's outcome on the
host's timeline, and retries with the after-boot backoff while the host is unreachable or a task
fails. It is the Linux form of "vCloud Director sees the state change and pushes again".

The pieces:

* an ``ansible`` host-profile kind: a ``playbook.yml`` template (required) plus the cloud-init
  files of a ``cloud-init`` profile (``user-data``, ``meta-data``… optional), checked at
  ``hostprofile add`` and at every render, errors naming the field (:mod:`.playbook`);
* the appliance's ed25519 key pair, made at the first start in the plugin's data dir
  (:mod:`.keys`); its public key goes into the host's rendered user-data at every boot
  (:mod:`.userdata`), never into an image, with the host's own SSH host key for that boot, which
  the push then pins;
* the push (``bootbox_host_up``): ``ansible-playbook`` as a subprocess on the push pool, never
  on the boot path (:mod:`.runner`);
* ``bootbox ansible key``: the public key and its fingerprint (for images or hosts managed by hand).

Imports only ``bootbox``'s public API (plus Flask, Typer, Jinja2, PyYAML and cryptography, which
bootbox ships with).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

import typer
from flask import Blueprint, Response, jsonify

from bootbox import (
    AnswerEnv,
    BootboxError,
    BootEvent,
    EventKind,
    Host,
    HostProfile,
    PluginContext,
    PluginError,
    PushRefused,
    ValidationError,
    api_client,
    hookimpl,
    normalize_mac,
)
from bootbox_ansible import playbook as playbooks
from bootbox_ansible import userdata
from bootbox_ansible.config import AnsibleConfig, parse_config
from bootbox_ansible.keys import KeyPair, host_key, load_or_create
from bootbox_ansible.runner import (
    PARSE_ERRORS,
    PlayRun,
    Target,
    find_command,
    run_playbook,
)

__version__ = "0.1.0"

NAME = "ansible"
KIND = "ansible"
SLACK = 0.9
"""The share of a push attempt's timeout the play may use: the pool stops waiting at the full
timeout, so the play is stopped (and its processes killed) a little before."""
MASK = "<masked>"
HOST_KEYS = "host_keys"
"""The plugin's store table: per host, the SSH host key its latest boot's user-data gave it."""
NOT_A_BOOT = ("bootbox-example",)
"""Instance IDs of renders that are no host's boot (a host profile checked when it is added)."""

log = logging.getLogger("bootbox.ansible")


def _key(mac: str) -> str:
    return normalize_mac(mac).replace(":", "")


def validate_host_profile(templates: Mapping[str, str]) -> None:
    """Check an ``ansible`` host profile's templates whatever the answers: its file names, and the
    playbook's shape with every answer undefined (ValidationError naming the field)."""
    text = templates.get(playbooks.FILE)
    if not isinstance(text, str):
        raise ValidationError(playbooks.WHERE, "an ansible host profile needs this template")
    unknown = sorted(set(templates) - {playbooks.FILE, *userdata.CLOUD_INIT_FILES})
    if unknown:
        raise ValidationError(f"templates.{unknown[0]}", f"an ansible host profile has {playbooks.FILE} and "
                                                         f"cloud-init's {', '.join(userdata.CLOUD_INIT_FILES)}")
    playbooks.check_template(text)


class AnsiblePlugin:
    """Hook implementations; the key pair is loaded (or made) in ``bootbox_startup``."""

    def __init__(self) -> None:
        self.__name__ = NAME
        self.config = AnsibleConfig()
        self.context: PluginContext | None = None
        self.key: KeyPair | None = None
        self._rendering = threading.local()
        self._kinds: dict[str, str] = {}
        """Host-profile name → its kind, as last seen: lets the push skip the hosts of other kinds
        without rendering their profiles at every boot. Every ``ansible`` profile passes through
        ``bootbox_render_answer_file`` when it is added or replaced (bootbox renders it with example
        answers) and when a host fetches its files, which keeps this right; a name not seen yet
        (after a restart) is rendered once to learn it."""

    # ------------------------------------------------------------------ lifecycle

    @hookimpl
    def bootbox_configure(self, settings: Any) -> None:
        self.config = parse_config(settings.plugins.get(NAME))

    @hookimpl
    def bootbox_startup(self, context: PluginContext) -> None:
        self.context = context
        self.key = load_or_create(context.data_dir / "ssh", comment=f"bootbox@{NAME}")
        log.info("ansible push key %s (%s)", self.key.private_path, self.key.fingerprint)

    @hookimpl
    def bootbox_shutdown(self) -> None:
        self.context = None

    # ------------------------------------------------------------------ the host-profile kind

    @hookimpl
    def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
        description = (f"cloud-init NoCloud files plus {playbooks.FILE}, an Ansible playbook pushed over SSH "
                       "after every boot (docs/ansible.md)")
        # Checked by rendering: bootbox renders a new host profile with example answers when it
        # is added (so a playbook wrong whatever the answers is refused then), and every host's
        # files with its real answers (bootbox_render_answer_file below).
        register(KIND, files=(playbooks.FILE,), description=description)

    def _key(self) -> KeyPair:
        if self.key is None:
            raise PluginError("the ansible plugin is not started (bootbox serve starts it)")
        return self.key

    @hookimpl
    def bootbox_render_answer_file(self, kind: str, host: Host, profile: HostProfile, answers: Mapping[str, Any],
                                   env: AnswerEnv) -> dict[str, str] | None:
        """The host's NoCloud files with the appliance's key in ``user-data``, and its rendered
        ``playbook.yml`` (checked), which ``bootbox host render`` previews and the push runs."""
        if kind != KIND:
            return None
        self._rendering.kind = KIND  # the push tells its own render errors from other kinds'
        self._kinds[profile.name] = KIND
        validate_host_profile(profile.templates)
        hostname = answers.get("hostname") or host.attrs.get("hostname") or "host-" + host.mac.replace(":", "")
        boot = self._is_boot(env)
        files = userdata.render_files(profile.templates, env.render, public_key=self._key().public,
                                      user=self.config.user, instance_id=env.instance_id, hostname=str(hostname),
                                      host_key=host_key(self._key().private_path, env.instance_id) if boot else None)
        text = env.render(playbooks.FILE)
        playbooks.check_playbook(text)
        files[playbooks.FILE] = text
        pinned = userdata.pinned_host_key(files["user-data"]) if boot else ""
        if pinned and self.context is not None and self._pinned(host.mac) != (env.instance_id, pinned):
            self.context.store.put(HOST_KEYS, _key(host.mac), {"mac": host.mac, "instance_id": env.instance_id,
                                                                "public_key": pinned, "time": time.time()})
        return files

    def _pinned(self, mac: str) -> tuple[str, str] | None:
        """``(instance_id, public key)`` of the host key the host's latest boot was given, if any."""
        context, key = self._started(), _key(mac)
        if not context.store.has(HOST_KEYS, key):
            return None
        record = context.store.get(HOST_KEYS, key)
        return str(record.get("instance_id", "")), str(record.get("public_key", ""))

    def _is_boot(self, env: AnswerEnv) -> bool:
        """Is this render a host fetching its files for a boot (so it gets this boot's host key)?

        Not an operator's preview (masked, or an unmasked ``-preview`` instance), not the check
        of a profile being added, and not the push's own render (it reads the playbook)."""
        return (self.config.pin_host_keys and not env.masked and not env.instance_id.endswith("-preview")
                and env.instance_id not in NOT_A_BOOT and not getattr(self._rendering, "push", False))

    # ------------------------------------------------------------------ the push

    def _playbook(self, host: Host) -> tuple[HostProfile, str] | None:
        """The host's ``ansible`` host profile and its rendered playbook; None for other hosts."""
        context = self._started()
        name = host.associations.get("host_profile")
        if not name or self._kinds.get(name, KIND) != KIND:
            return None
        self._rendering.kind = ""
        self._rendering.push = True
        try:
            profile, files = context.host_profile_files(host)
        except BootboxError as exc:
            if getattr(self._rendering, "kind", "") == KIND:
                raise PushRefused(f"its ansible host profile does not render: {exc}") from None
            return None  # not ours (another kind's error is that plugin's business), or no profile
        finally:
            self._rendering.push = False
        self._kinds[profile.name] = profile.kind
        if profile.kind != KIND:
            return None
        return profile, files[playbooks.FILE]

    def _started(self) -> PluginContext:
        if self.context is None:
            raise PluginError("the ansible plugin is not started (bootbox serve starts it)")
        return self.context

    @hookimpl
    def bootbox_host_up(self, host: Host, event: BootEvent, answers: Mapping[str, Any], timeout: float) -> str | None:
        """Run the host profile's playbook against the host that reported up."""
        found = self._playbook(host)
        if found is None:
            return None
        profile, text = found
        context = self._started()
        key = self._key()
        command = find_command(self.config.command)
        if command is None:
            raise PushRefused("ansible-playbook is not installed (pip install ansible-core, "
                              "or set plugins.ansible.command)")
        address = str((event.data.get("ip") if event else "") or host.attrs.get("ipv4", ""))
        if not address:
            raise PushRefused("the host reported no address to push to")
        secrets = [str(answers[spec.name]) for spec in profile.inputs
                   if spec.is_secret and answers.get(spec.name) not in (None, "") and len(str(answers[spec.name])) >= 3]

        def mask(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, MASK)
            return text

        boot_id = str((event.data.get("boot_id") if event else "") or host.boot_id or "")
        pinned = ""
        if self.config.pin_host_keys:
            record = self._pinned(host.mac)
            if record is None:
                raise BootboxError("it has not fetched its user-data (which gives it its SSH host key and "
                                   "authorises the appliance's key) since bootbox has had the ansible plugin")
            pinned = record[1]
        name = str(answers.get("hostname") or host.attrs.get("hostname") or host.mac.replace(":", "-"))

        def on_event(item: dict[str, Any]) -> None:
            if item.get("event") != "task":
                return
            task, status = mask(str(item.get("task", ""))), str(item.get("status", ""))
            detail = f": {mask(str(item['message']))}" if item.get("message") else ""
            ignored = " (ignored)" if item.get("ignored") else ""
            context.record(host.mac, EventKind.PUSH, f"ansible task {task!r} {status}{ignored}{detail}",
                           plugin=NAME, task=task, status=status, boot_id=boot_id, address=address)

        variables = {"answers": dict(answers),
                     "bootbox": {"mac": host.mac, "boot_id": boot_id, "address": address, "host_profile": profile.name,
                                 "host_profile_version": profile.version}}
        target = Target(name, address, self.config.port, self.config.user, self.config.python_interpreter, pinned)
        run = run_playbook(text, target=target,
                           key_path=key.private_path, variables=variables, timeout=max(1.0, timeout * SLACK),
                           command=command, on_event=on_event, connect_timeout=self.config.connect_timeout)
        return mask(self._outcome(run, address, profile))

    def _outcome(self, run: PlayRun, address: str, profile: HostProfile) -> str:
        """What the run means for the push: a description, or the error that retries or refuses it."""
        where = f"{self.config.user}@{address}"
        if run.timed_out:
            raise BootboxError(f"the play on {where} did not finish in time (after {len(run.tasks)} task results); "
                               "raise [push] timeout for longer plays")
        unreachable = [t for t in run.tasks if t.get("status") == "unreachable"]
        if unreachable:
            raise BootboxError(f"{where} unreachable: {unreachable[-1].get('message', '')}")
        failed = [t for t in run.tasks if t.get("status") == "failed" and not t.get("ignored")]
        if failed:
            first = failed[0]
            raise BootboxError(f"task {first.get('task')!r} failed on {where}: {first.get('message', '')}")
        if run.returncode in PARSE_ERRORS and not run.plays:
            raise PushRefused(f"ansible-playbook refused the playbook of host profile {profile.name} "
                              f"(version {profile.version}): {run.error_line()}")
        if run.returncode != 0:
            raise BootboxError(f"ansible-playbook exited {run.returncode}: {run.error_line()}")
        changed = sum(1 for t in run.tasks if t.get("status") == "changed")
        skipped = sum(1 for t in run.tasks if t.get("status") == "skipped")
        return (f"playbook of {profile.name} v{profile.version} ran on {where}: {len(run.tasks)} task results, "
                f"{changed} changed, {skipped} skipped")

    # ------------------------------------------------------------------ operators

    def key_info(self) -> dict[str, str]:
        key = self._key()
        return {"public_key": key.public, "fingerprint": key.fingerprint, "private_key_path": str(key.private_path),
                "user": self.config.user}

    @hookimpl
    def bootbox_register_routes(self, register: Callable[..., None]) -> None:
        blueprint = Blueprint("ansible", __name__, url_prefix="/api/v1/ansible")

        @blueprint.get("/key")
        def key() -> Response:
            return jsonify(self.key_info())

        register(blueprint)

    @hookimpl
    def bootbox_register_commands(self, register: Callable[..., None]) -> None:
        register(_cli(), name="ansible")


def _cli() -> typer.Typer:
    app = typer.Typer(help="The Ansible push: the appliance's SSH key (docs/ansible.md).", no_args_is_help=True)

    @app.command("key")
    def key(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Show the appliance's SSH public key (what hosts of ansible host profiles authorise) and
        its fingerprint. The private key never leaves the appliance's state dir."""
        info = api_client(ctx).get("/ansible/key")
        if json:
            import json as jsonlib

            typer.echo(jsonlib.dumps(info, indent=2))
            return
        typer.echo(info["public_key"])
        typer.echo(f"# {info['fingerprint']}, used as {info['user']}; private key: {info['private_key_path']}")

    return app


plugin = AnsiblePlugin()

__all__ = ["KIND", "NAME", "AnsiblePlugin", "plugin", "validate_host_profile"]
