"""What makes each host itself: its host profile, its answers, and the answer files they render.

The service owns one :class:`HostConfig`. It keeps the answer kinds and answer inputs plugins
register, decides which inputs apply to a host (its host profile's plus the plugins' that apply
to it), holds hosts whose required answers are missing, renders answer files through
``bootbox_render_answer_file``, and serves them only with the current boot's token
(:mod:`bootbox.service.answers.tokens`; the service has checked the requester's identity first),
recording every refusal as an ``audit`` event.

It is given what it uses, not the service: the settings (where the secrets key lives), the store,
the host index, ``record`` and a callable that calls ``bootbox_render_answer_file``.

Secrets never reach a log line or an event: events name fields, never values, and renders for
operators mask secret answers (and the hashes made from them) unless they ask to reveal them
with the API token.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from bootbox.hooks import calls
from bootbox.service.answers.tokens import BootTokens
from bootbox.service.answers.books import AnswerBook, HostProfileBook
from bootbox.core.render.callin import callin_script
from bootbox.errors import BootboxError, Conflict, Forbidden, NotFound, PluginError, ValidationError
from bootbox.core.hostprofile import (
    FILE_NAME,
    INPUT_NAME,
    AnswerEnv,
    HostProfile,
    InputSpec,
    check_with_examples,
    missing_answers,
    parse_input,
    render,
    render_context,
    template_answers,
)
from bootbox.config import Settings
from bootbox.model import EventKind, Host, mac_key, normalize_mac
from bootbox.service.collaborators import Record
from bootbox.service.hostindex import HostIndex
from bootbox.store import Store
from bootbox.store.secretbox import KEY_FILE, SecretBox

log = logging.getLogger("bootbox.hostconfig")

RENDER_MASK = "<masked>"
EXAMPLE_MAC = "02:00:00:00:00:00"
"""The (locally administered) MAC of the example host a profile is rendered for when it is added."""


class _AnyAttr(dict):  # type: ignore[type-arg]
    """Host facts for the example render: any fact a template reads is there (``example``)."""

    def __missing__(self, key: str) -> str:
        return "example"

"""A secret in an operator's preview of an answer file: a plain scalar in YAML, one word in a
kickstart, so the preview still parses (``********`` would be a YAML alias)."""


@dataclass(frozen=True)
class AnswerKind:
    """A kind of answer file (``kickstart``, ``cloud-init``, ``preseed``…) and who renders it."""

    name: str
    files: tuple[str, ...]
    description: str
    plugin: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "files": list(self.files), "description": self.description, "plugin": self.plugin}


class RenderAnswerFile(Protocol):
    """``bootbox_render_answer_file`` as the service calls it: the files of ``kind`` for one host
    (``{file name: text}``), or None when no plugin renders that kind."""

    def __call__(self, *, kind: str, host: Host, profile: HostProfile, answers: Mapping[str, Any],
                 env: AnswerEnv) -> Any: ...


@dataclass(frozen=True)
class PluginInput:
    """An answer input a plugin contributes, for the hosts ``applies_to`` accepts."""

    spec: InputSpec
    plugin: str
    applies_to: Callable[[Host], bool]


class HostConfig:
    """Host profiles, answers, answer kinds and inputs, holds, renders and answer-file tokens."""

    def __init__(self, settings: Settings, store: Store, *, hosts: HostIndex, record: Record,
                 render_answer_file: RenderAnswerFile) -> None:
        self._hosts = hosts
        self._record = record
        self._render_answer_file = render_answer_file
        key_path = settings.secrets_key_file or str(settings.state_path / KEY_FILE)
        self.box = SecretBox(Path(key_path))
        self.kinds: dict[str, AnswerKind] = {}
        self.inputs: dict[str, PluginInput] = {}
        self.profiles = HostProfileBook(
            store,
            kinds=lambda: {name: kind.files for name, kind in self.kinds.items()},
            reserved=lambda: {name: item.plugin for name, item in self.inputs.items()},
            check=self.check_profile,
        )
        self.answers = AnswerBook(store, self.box)
        self.tokens = BootTokens(self.box.derive, answer_ttl=settings.hosts.answer_token_ttl,
                                 up_ttl=settings.hosts.boot_token_ttl)

    # ------------------------------------------------------------------ registration

    def register_from(self, pm: Any) -> None:
        """Ask plugins for answer kinds and inputs (``bootbox_register_answer_*``), at start-up,
        plugin by plugin, so every kind and input records the plugin that registered it."""
        calls.register_each(pm, "bootbox_register_answer_kinds", self._register_kind)
        calls.register_each(pm, "bootbox_register_answer_inputs", self._register_input)

    def _register_kind(self, kind: str, *, files: Sequence[str] = (), description: str = "", plugin: str) -> None:
        if not isinstance(kind, str) or not FILE_NAME.fullmatch(kind):
            raise PluginError(f"answer kind {kind!r} from {plugin} is not a valid name")
        if kind in self.kinds:
            raise PluginError(f"answer kind {kind!r} is registered twice (by {self.kinds[kind].plugin} and {plugin})")
        if isinstance(files, str) or not all(isinstance(f, str) and FILE_NAME.fullmatch(f) for f in files):
            raise PluginError(f"answer kind {kind!r} from {plugin}: files must be a list of file names")
        self.kinds[kind] = AnswerKind(kind, tuple(files), description or f"registered by {plugin}", plugin)

    def _register_input(self, name: str, *, applies_to: Callable[[Host], bool] | None = None, plugin: str,
                        **spec: Any) -> None:
        if not isinstance(name, str) or not INPUT_NAME.fullmatch(name) or name in self.inputs:
            raise PluginError(f"answer input {name!r} from {plugin} is invalid or registered twice")
        try:
            parsed = parse_input({"name": name, **spec}, f"plugins.{plugin}.inputs.{name}")
        except ValidationError as exc:
            raise PluginError(f"answer input {name!r} from {plugin}: {exc}") from None
        self.inputs[name] = PluginInput(parsed, plugin, applies_to or (lambda host: True))

    # ------------------------------------------------------------------ schema and holds

    def host_profile(self, host: Host) -> HostProfile | None:
        """The host profile the host's associations name; NotFound if that name does not exist."""
        name = host.associations.get("host_profile")
        return self.profiles.get(name) if name else None

    def _plugin_inputs(self, host: Host) -> list[InputSpec]:
        specs = []
        for item in self.inputs.values():
            try:
                applies = bool(item.applies_to(host))
            except Exception:
                log.exception("%s: answer input %s of %s failed to decide", host.mac, item.spec.name, item.plugin)
                applies = False
            if applies:
                specs.append(item.spec)
        return specs

    def schema(self, host: Host) -> list[InputSpec]:
        """Every input ``host`` is asked for: its host profile's, then the plugins' that apply."""
        try:
            profile = self.host_profile(host)
        except NotFound:
            profile = None
        return list(profile.inputs if profile else ()) + self._plugin_inputs(host)

    def known_inputs(self, mac: str) -> dict[str, InputSpec]:
        """Inputs an answer for ``mac`` may set: the host's schema, or for a host bootbox has not
        seen yet (answers staged before the first boot) every input any profile or plugin has."""
        host = self._hosts.get(normalize_mac(mac))
        if host is not None and (host.associations.get("host_profile") or host.associations.get("image")):
            return {spec.name: spec for spec in self.schema(host)}
        known: dict[str, InputSpec] = {}
        for profile in self.profiles.all():
            for spec in profile.inputs:
                if spec.name not in known or (spec.is_secret and not known[spec.name].is_secret):
                    known[spec.name] = spec
        for item in self.inputs.values():
            known.setdefault(item.spec.name, item.spec)
        return known

    def missing(self, host: Host) -> list[str]:
        return missing_answers(self.schema(host), self.answers.stored(host.mac))

    def hold_reason(self, host: Host) -> str | None:
        """Why ``host`` must not boot yet (Auto Deploy's maintenance mode), or ``None``."""
        try:
            self.host_profile(host)
        except NotFound:
            return (f"its host profile {host.associations.get('host_profile')!r} does not exist "
                    "(bootbox hostprofile add)")
        missing = self.missing(host)
        if missing:
            example = " ".join(f"{name}=..." for name in missing)
            return f"answers are missing: {', '.join(missing)} (bootbox answer set {host.mac} {example})"
        return None

    # ------------------------------------------------------------------ operators' edits

    def delete_profile(self, name: str) -> None:
        """Delete a host profile no host uses (Conflict names the hosts that still do)."""
        users = [h.mac for h in self._hosts.all() if h.associations.get("host_profile") == name]
        if users:
            raise Conflict(f"host profile {name!r} is used by {len(users)} host(s) ({', '.join(users[:5])}); "
                           "change their rules and repair them first")
        self.profiles.delete(name)

    def overview(self, mac: str) -> dict[str, Any]:
        """A host's answers as operators see them (secrets masked), with the inputs it is asked
        for and those still missing; also for a host bootbox has not seen yet (staged answers)."""
        mac = normalize_mac(mac)
        host = self._hosts.get(mac)
        schema = self.schema(host) if host is not None else []
        known = self.known_inputs(mac)
        return {
            "mac": mac,
            "host_profile": host.associations.get("host_profile", "") if host else "",
            "answers": self.answers.masked(mac, list(known.values()) + schema),
            "inputs": [spec.to_dict() for spec in schema],
            "missing": self.missing(host) if host is not None else [],
            "known_host": host is not None,
        }

    def set_answers(self, mac: str, values: Mapping[str, Any]) -> None:
        """Set answers for the inputs ``mac`` may have (ValidationError names a bad one)."""
        self.answers.set(mac, values, self.known_inputs(mac))

    def import_answers(self, text: str) -> list[str]:
        """Answers for many hosts from CSV (a ``mac`` column, one column per input); the MACs written."""
        return self.answers.import_csv(text, self.known_inputs)

    def push_answers(self, host: Host) -> dict[str, Any]:
        """The host's answers in clear, with the defaults of its schema, for the after-boot pushes."""
        values = self.answers.values(host.mac)
        for spec in self.schema(host):
            values.setdefault(spec.name, spec.default)
        return values

    # ------------------------------------------------------------------ tokens

    def up_token(self, mac: str) -> str:
        """The credential the host presents on ``/up`` and ``/booted`` in its current boot ("" before one)."""
        host = self._hosts.get(normalize_mac(mac))
        return self.tokens.up_token(host) if host is not None else ""

    def up_refusal(self, mac: str, presented: str | None) -> str | None:
        """Why ``presented`` is not the host's current up token, or None when it is."""
        host = self._hosts.get(normalize_mac(mac))
        return "unknown host" if host is None else self.tokens.up_refusal(host, presented)

    def up_token_ok(self, mac: str, presented: str | None) -> bool:
        return self.up_refusal(mac, presented) is None

    def mint(self, host: Host) -> str:
        """The answer-file token of the host's current boot, if it has a host profile (else "")."""
        if not host.associations.get("host_profile"):
            return ""
        return self.tokens.answer_token(host)

    # ------------------------------------------------------------------ checking a profile when it is added

    def check_profile(self, profile: HostProfile) -> None:
        """Render a host profile being added or replaced with example answers, through its kind's
        renderer (``bootbox_render_answer_file``, which checks what it renders: an ``esxi``
        document against its schema, a kickstart's ``rootpw``, cloud-init's file names), so a
        document no host could use is refused at ``hostprofile add`` (and the API) with the field
        named, and nothing is stored; not first at a host's boot or push.
        ``core.hostprofile.check_with_examples`` says when an answer-dependent failure still lets
        it in."""
        names = {spec.name for spec in profile.inputs}
        schema = list(profile.inputs) + [item.spec for item in self.inputs.values() if item.spec.name not in names]
        host = Host(mac=EXAMPLE_MAC, associations={"host_profile": profile.name})
        base_url = "http://bootbox.example:8080"
        up_url = f"{base_url}/api/v1/hosts/{EXAMPLE_MAC}/up?token=example"

        def attempt(values: dict[str, Any]) -> None:
            answers = template_answers(schema, values,
                                       lambda name, plaintext: self.box.hash_password(plaintext, EXAMPLE_MAC, name))
            context = render_context(host, answers, {"up_url": up_url, "instance_id": "bootbox-example",
                                                     "base_url": base_url, "callin": callin_script(up_url)})
            attrs = _AnyAttr()  # a template may read any fact a host reports (attrs.vendor …)
            context["attrs"] = attrs
            context["host"]["attrs"] = attrs
            env = AnswerEnv(render=lambda name: render(profile, name, context), up_url=up_url,
                            instance_id="bootbox-example", masked=False)
            try:
                self._render_answer_file(kind=profile.kind, host=host, profile=profile, answers=values, env=env)
            except ValidationError:
                raise
            except Exception as exc:  # the renderer failed on the example host, not on the document
                log.warning("host profile %s: its %s renderer failed on example answers: %s", profile.name,
                            profile.kind, exc)

        check_with_examples(schema, attempt)

    # ------------------------------------------------------------------ rendering

    def render(self, host: Host, *, base_url: str, kind: str | None = None, profile_name: str | None = None,
               masked: bool = True, instance_id: str = "") -> tuple[HostProfile, dict[str, str]]:
        """Every file ``host`` gets from its host profile (or ``profile_name``), as a dict."""
        profile = self.profiles.get(profile_name) if profile_name else self.host_profile(host)
        if profile is None:
            raise NotFound(f"host {host.mac} has no host profile (give it one with a rule item host_profile=NAME)")
        if kind is not None and kind != profile.kind:
            raise ValidationError("kind", f"host profile {profile.name} is of kind {profile.kind}, not {kind}")
        schema = list(profile.inputs) + self._plugin_inputs(host)
        values = self.answers.values(host.mac)
        if masked:
            secret = {spec.name for spec in schema if spec.is_secret}
            values = {k: RENDER_MASK if k in secret else v for k, v in values.items()}

        def hash_password(name: str, plaintext: str) -> str:
            return RENDER_MASK if masked else self.box.hash_password(plaintext, host.mac, name)

        answers = template_answers(schema, values, hash_password)
        mac = host.mac
        up_token = RENDER_MASK if masked else self.up_token(mac)
        up_url = f"{base_url.rstrip('/')}/api/v1/hosts/{mac}/up?token={up_token}"
        instance = instance_id or f"bootbox-{mac_key(mac)}-preview"
        context = render_context(host, answers, {"up_url": up_url, "instance_id": instance,
                                                 "base_url": base_url.rstrip("/"), "callin": callin_script(up_url)})
        env = AnswerEnv(render=lambda name: render(profile, name, context), up_url=up_url, instance_id=instance,
                        masked=masked)
        plain = {k: v for k, v in values.items()}
        for spec in schema:
            plain.setdefault(spec.name, spec.default)
        files = self._render_answer_file(kind=profile.kind, host=host, profile=profile, answers=plain, env=env)
        if files is None:
            raise BootboxError(f"no plugin renders answer files of kind {profile.kind!r}")
        if not isinstance(files, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise PluginError(f"the renderer of {profile.kind!r} returned {type(files).__name__}, not {{file: text}}")
        return profile, dict(files)

    def serve(self, mac: str, token: str, name: str, client_ip: str, base_url: str) -> str:
        """One answer file of the host's current boot, for its token; anything else is 403 + an
        audit event. ``mac`` is normalised and the requester verified by the service."""
        host = self._hosts.get(mac)
        try:
            if host is None:
                raise Forbidden("unknown host")
            self.tokens.check_answer(host, token, name)
        except Forbidden as exc:
            self._audit(mac, name, client_ip, str(exc), token)
            raise
        instance = f"bootbox-{mac_key(mac)}-{hashlib.sha256(token.encode()).hexdigest()[:12]}"
        profile, files = self.render(host, base_url=base_url, masked=False, instance_id=instance)
        if name not in files:
            raise NotFound(f"host profile {profile.name} ({profile.kind}) has no file {name!r}")
        try:
            self.tokens.redeem(host, token, name)
        except Forbidden as exc:  # a concurrent fetch of the same file won the race
            self._audit(mac, name, client_ip, str(exc), token)
            raise
        self._record(mac, EventKind.ANSWERS, f"answer file {name} of host profile {profile.name} "
                                             f"v{profile.version} served to {client_ip}",
                     file=name, host_profile=profile.name, version=profile.version, ip=client_ip)
        return files[name]

    def _audit(self, mac: str, name: str, client_ip: str, reason: str, token: str) -> None:
        ref = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]
        log.warning("%s answer file %s refused to %s: %s (token ref %s)", mac, name, client_ip, reason, ref)
        self._record(mac, EventKind.AUDIT, f"refused answer file {name} to {client_ip}: {reason}",
                     file=name, ip=client_ip, reason=reason, token_ref=ref)
