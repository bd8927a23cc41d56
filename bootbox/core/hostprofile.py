"""Host profiles: named, versioned templates of one answer kind plus the schema of per-host inputs.

PURE: no store, no threads, no plugins. A host profile carries what every host of a kind shares
(a kickstart, a cloud-init pair, a preseed); what makes each host itself lives in its answers,
and the schema here says which answers a host needs: name, type, required, secret, default and
a validation such as ``ipv4`` or ``hostname``. Every error names the field, so the API and CLI
can point at it (``inputs[2].validation``, ``templates.user-data``).

Templates are Jinja2, rendered in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``:
a profile is operator input that the appliance executes, so it must not reach Python internals
or mutate what it is given, and a misspelt variable must fail loudly rather than render blank
into a boot configuration. ``trim_blocks`` and ``lstrip_blocks`` keep ``{% if %}`` lines from
leaving blank lines in line-oriented formats (kickstart, preseed).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bootbox.errors import ValidationError
from bootbox.model import Host, normalize_mac

INPUT_TYPES = ("string", "integer", "boolean", "password")
"""``password`` is secret, and templates see its SHA-512 crypt hash, never the plaintext."""

VALIDATIONS: dict[str, str] = {
    "ipv4": "an IPv4 address (198.18.0.10)",
    "ipv6": "an IPv6 address (2001:db8::10)",
    "ip": "an IPv4 or IPv6 address",
    "cidr": "an address with its prefix length (198.18.0.10/24)",
    "network": "a network in CIDR form with zero host bits (198.18.0.0/24)",
    "hostname": "a host name: one label of letters, digits and '-' (esx01)",
    "fqdn": "a fully qualified name (esx01.lab.example)",
    "mac": "a MAC address",
    "url": "an http(s) URL",
}

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INPUT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class InputSpec:
    """One per-host input of a host profile (or one a plugin contributes)."""

    name: str
    type: str = "string"
    required: bool = True
    secret: bool = False
    default: Any = None
    validation: str = ""
    choices: tuple[str, ...] = ()
    description: str = ""

    @property
    def is_secret(self) -> bool:
        return self.secret or self.type == "password"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required,
                               "secret": self.is_secret}
        if self.default is not None:
            doc["default"] = self.default
        if self.validation:
            doc["validation"] = self.validation
        if self.choices:
            doc["choices"] = list(self.choices)
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True)
class HostProfile:
    """A named, versioned set of templates of one answer ``kind`` and its input schema."""

    name: str
    kind: str
    templates: Mapping[str, str]
    inputs: tuple[InputSpec, ...] = ()
    version: int = 1
    description: str = ""

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "description": self.description,
                "inputs": [spec.to_dict() for spec in self.inputs], "templates": dict(self.templates)}


# ------------------------------------------------------------------------------------ values


def check_value(spec: InputSpec, value: Any, field_name: str | None = None) -> Any:
    """``value`` (a string from the CLI or CSV, or a JSON value) converted to ``spec``'s type and
    validated; raises ValidationError naming ``field_name`` (default: the input's name)."""
    where = field_name or spec.name
    if spec.type == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError(where, "expected a whole number")
        try:
            value = int(value)
        except ValueError:
            raise ValidationError(where, f"{value!r} is not a whole number") from None
    elif spec.type == "boolean":
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            value = value.strip().lower() in _TRUE
        elif not isinstance(value, bool):
            raise ValidationError(where, "expected true or false")
    else:
        if not isinstance(value, str):
            raise ValidationError(where, "expected a string")
        if "\x00" in value or (spec.type != "password" and ("\n" in value or "\r" in value)):
            raise ValidationError(where, "must be one line of text")
        if spec.validation:
            value = _validate_format(spec.validation, value.strip(), where)
    if spec.choices and str(value) not in spec.choices:
        raise ValidationError(where, f"{value!r} is not one of {', '.join(spec.choices)}")
    return value


def _validate_format(kind: str, value: str, where: str) -> str:
    """Check one formatted string; return its normal form (``ipv4`` → canonical text, …)."""
    try:
        if kind == "ipv4":
            return str(ipaddress.IPv4Address(value))
        if kind == "ipv6":
            return str(ipaddress.IPv6Address(value))
        if kind == "ip":
            return str(ipaddress.ip_address(value))
        if kind == "cidr":
            if "/" not in value:
                raise ValueError
            return str(ipaddress.ip_interface(value))
        if kind == "network":
            return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValidationError(where, f"{value!r} is not {VALIDATIONS[kind]}") from None
    if kind == "hostname":
        if not _LABEL.fullmatch(value):
            raise ValidationError(where, f"{value!r} is not {VALIDATIONS[kind]}")
        return value.lower()
    if kind == "fqdn":
        labels = value.rstrip(".").split(".")
        if len(labels) < 2 or len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValidationError(where, f"{value!r} is not {VALIDATIONS[kind]}")
        return value.rstrip(".").lower()
    if kind == "mac":
        return normalize_mac(value, where)
    if kind == "url":
        if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
            raise ValidationError(where, f"{value!r} is not {VALIDATIONS[kind]}")
        return value
    raise ValidationError(where, f"unknown validation {kind!r}")


# ------------------------------------------------------------------------------------ examples

EXAMPLE_VARIANTS = 4
"""How many sets of example answers a host profile is checked with when it is added."""

_EXAMPLE_FORMATS: dict[str, str] = {
    "ipv4": "198.18.0.10", "ipv6": "2001:db8::10", "ip": "198.18.0.10", "cidr": "198.18.0.10/24",
    "network": "198.18.0.0/24", "hostname": "host1", "fqdn": "host1.example.net", "mac": "02:00:00:00:00:01",
    "url": "http://198.18.0.10/",
}
_EXAMPLE_TEXT = ("example", "198.18.0.10", "/example", "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")
"""Plain strings, one per variant: a word, an address, a path, a licence-key shape. A profile that
renders valid with any one variant is accepted; the host's real answers are checked again when
its files are rendered."""
_EXAMPLE_INTEGERS = (1500, 1, 100, 4095)
EXAMPLE_PASSWORD = "Example-Pass-1"


def example_answers(inputs: Sequence[InputSpec], variant: int = 0) -> dict[str, Any]:
    """A value for every input, valid for its type, validation and choices (``variant`` picks one
    of :data:`EXAMPLE_VARIANTS` sets): what a host profile is rendered with when it is added, so a
    template that cannot render, or renders a document its kind refuses, is refused before any
    host needs it. A default is used as it is in the first variant."""
    values: dict[str, Any] = {}
    for spec in inputs:
        if spec.default is not None and variant == 0:
            values[spec.name] = spec.default
        elif spec.choices:
            values[spec.name] = check_value(spec, spec.choices[variant % len(spec.choices)])
        elif spec.type == "integer":
            values[spec.name] = _EXAMPLE_INTEGERS[variant % len(_EXAMPLE_INTEGERS)]
        elif spec.type == "boolean":
            values[spec.name] = variant % 2 == 0
        elif spec.type == "password":
            values[spec.name] = EXAMPLE_PASSWORD
        elif spec.validation:
            values[spec.name] = _EXAMPLE_FORMATS[spec.validation]
        else:
            values[spec.name] = _EXAMPLE_TEXT[variant % len(_EXAMPLE_TEXT)]
    return values


def check_with_examples(inputs: Sequence[InputSpec], attempt: Callable[[dict[str, Any]], None]) -> None:
    """Run ``attempt(answers)`` (render the profile and let its kind check the result) with each
    set of example answers until one passes.

    Refused (the first set's ValidationError, naming the field) only when every set fails at the
    same field: then the error is the template's, whatever a host answers. When the sets fail at
    different fields, the failure depends on the answers (an input without a ``validation`` used
    as an address, say), and the profile is accepted: each host's real answers are checked when
    its files are rendered, as before.
    """
    errors: list[ValidationError] = []
    for variant in range(EXAMPLE_VARIANTS):
        try:
            attempt(example_answers(inputs, variant))
            return
        except ValidationError as exc:
            errors.append(exc)
    if len({error.field for error in errors}) == 1:
        first = errors[0]
        raise ValidationError(first.field, f"{first.message} (checked with example answers when the profile is added)")


def missing_answers(inputs: Sequence[InputSpec], answers: Mapping[str, Any]) -> list[str]:
    """Names of required inputs that have neither an answer nor a default."""
    return [spec.name for spec in inputs if spec.required and spec.default is None and answers.get(spec.name) in (None, "")]


# ------------------------------------------------------------------------------------ parsing


def parse_input(doc: Any, where: str) -> InputSpec:
    if isinstance(doc, str):
        doc = {"name": doc}
    if not isinstance(doc, Mapping):
        raise ValidationError(where, "expected an object with name, type, required, secret, default, validation")
    known = {"name", "type", "required", "secret", "default", "validation", "choices", "description"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", f"unknown field; known: {', '.join(sorted(known))}")
    name = doc.get("name")
    if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
        raise ValidationError(f"{where}.name", "use 1-64 of a-z, 0-9 and '_', starting with a letter")
    kind = doc.get("type", "string")
    if kind not in INPUT_TYPES:
        raise ValidationError(f"{where}.type", f"{kind!r} is not one of {', '.join(INPUT_TYPES)}")
    flags = {}
    for flag, default in (("required", True), ("secret", False)):
        value = doc.get(flag, default)
        if not isinstance(value, bool):
            raise ValidationError(f"{where}.{flag}", "expected true or false")
        flags[flag] = value
    validation = doc.get("validation", "") or ""
    if validation and (validation not in VALIDATIONS or kind in ("integer", "boolean")):
        raise ValidationError(f"{where}.validation",
                              f"{validation!r} is not one of {', '.join(VALIDATIONS)} (for string inputs)")
    choices = doc.get("choices", []) or []
    if not isinstance(choices, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in choices):
        raise ValidationError(f"{where}.choices", "expected a list of values")
    description = doc.get("description", "") or ""
    if not isinstance(description, str):
        raise ValidationError(f"{where}.description", "expected a string")
    spec = InputSpec(name=name, type=kind, validation=validation, choices=tuple(str(c) for c in choices),
                     description=description, **flags)
    if doc.get("default") is not None:
        if spec.is_secret:
            raise ValidationError(f"{where}.default", "a secret input cannot have a default (it would sit in the profile)")
        spec = replace(spec, default=check_value(spec, doc["default"], f"{where}.default"))
    return spec


def parse_host_profile(doc: Any, *, kinds: Mapping[str, Sequence[str]], version: int = 1,
                       reserved: Mapping[str, str] | None = None) -> HostProfile:
    """Validate an API/CLI document into a :class:`HostProfile`.

    :param kinds: registered answer kinds → the template files each requires.
    :param reserved: input names plugins contribute → the plugin (a profile may not redefine them).
    """
    if not isinstance(doc, Mapping):
        raise ValidationError("body", "expected an object with name, kind, templates, inputs")
    known = {"name", "kind", "templates", "inputs", "description", "version"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; known: {', '.join(sorted(known))}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("name", "use 1-64 letters, digits, '.', '_' or '-'")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        known_kinds = ", ".join(sorted(kinds)) or "none (no plugin registered an answer kind)"
        raise ValidationError("kind", f"unknown answer kind {kind!r}; known: {known_kinds}")
    templates = doc.get("templates")
    if not isinstance(templates, Mapping) or not templates:
        raise ValidationError("templates", "expected an object of file name: Jinja2 template text")
    for file_name, text in templates.items():
        if not isinstance(file_name, str) or not FILE_NAME.fullmatch(file_name):
            raise ValidationError(f"templates.{file_name}", "file names use letters, digits, '.', '_' or '-'")
        if not isinstance(text, str):
            raise ValidationError(f"templates.{file_name}", "expected the template text")
        compile_template(text, f"templates.{file_name}")
    for required in kinds[kind]:
        if required not in templates:
            raise ValidationError(f"templates.{required}", f"a {kind} host profile needs this template")
    raw_inputs = doc.get("inputs", []) or []
    if not isinstance(raw_inputs, list):
        raise ValidationError("inputs", "expected a list of inputs")
    inputs = tuple(parse_input(item, f"inputs[{i}]") for i, item in enumerate(raw_inputs))
    seen: set[str] = set()
    for i, spec in enumerate(inputs):
        if spec.name in seen:
            raise ValidationError(f"inputs[{i}].name", f"{spec.name!r} is declared twice")
        if reserved and spec.name in reserved:
            raise ValidationError(f"inputs[{i}].name", f"{spec.name!r} is contributed by the plugin {reserved[spec.name]}")
        seen.add(spec.name)
    description = doc.get("description", "") or ""
    if not isinstance(description, str):
        raise ValidationError("description", "expected a string")
    return HostProfile(name=name, kind=kind, templates=dict(templates), inputs=inputs, version=version,
                       description=description)


def host_profile_from_dict(doc: Mapping[str, Any]) -> HostProfile:
    """Load a stored (already validated) profile without re-validating its templates."""
    return HostProfile(
        name=str(doc["name"]), kind=str(doc["kind"]), templates=dict(doc.get("templates") or {}),
        inputs=tuple(parse_input(item, f"inputs[{i}]") for i, item in enumerate(doc.get("inputs") or [])),
        version=int(doc.get("version") or 1), description=str(doc.get("description") or ""),
    )


# ------------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class AnswerEnv:
    """What ``bootbox_render_answer_file`` gets besides the profile: how to render a template
    and the URLs of this boot.

    ``render(name)`` renders one of the profile's templates with ``host``, ``group``, ``attrs``,
    ``answers`` (passwords hashed) and ``bootbox`` (``up_url``, ``instance_id``); ``masked`` is
    true for operator previews, where secret answers read ``********``.
    """

    render: Callable[[str], str]
    up_url: str
    instance_id: str
    masked: bool = False



@functools.lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment every host-profile template renders in (thread-safe)."""
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                                         lstrip_blocks=True, keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def _compiled(text: str) -> Any:
    return environment().from_string(text)


def compile_template(text: str, where: str) -> Any:
    """Compile ``text``; a syntax error becomes a ValidationError with the line number."""
    try:
        return _compiled(text)
    except TemplateSyntaxError as exc:
        raise ValidationError(where, f"line {exc.lineno}: {exc.message}") from None


def template_answers(inputs: Sequence[InputSpec], answers: Mapping[str, Any],
                     hash_password: Callable[[str, str], str]) -> dict[str, Any]:
    """What templates see as ``answers``: every declared input (its answer, else its default,
    else ``None``, so ``{% if answers.x %}`` works), passwords as crypt hashes via
    ``hash_password(name, plaintext)``, plus undeclared answers as they are."""
    seen = dict(answers)
    result: dict[str, Any] = {key: value for key, value in seen.items()}
    for spec in inputs:
        value = seen.get(spec.name)
        if value in (None, ""):
            value = spec.default
        if spec.type == "password" and isinstance(value, str) and value:
            value = hash_password(spec.name, value)
        result[spec.name] = value
    return result


def render_context(host: Host, answers: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The variables a template sees: ``host`` (mac, attrs, associations, profile), ``group``,
    ``attrs``, ``answers`` and ``bootbox`` (this boot: ``up_url``, ``instance_id``, ``base_url``
    and ``callin``, a shell script that reports up with backoff, for ``%firstboot``)."""
    return {
        "host": {"mac": host.mac, "attrs": dict(host.attrs), "associations": dict(host.associations),
                 "profile": host.profile, "boot_id": host.boot_id or ""},
        "group": host.associations.get("group", ""),
        "attrs": dict(host.attrs),
        "answers": dict(answers),
        "bootbox": dict(extra or {}),
    }


def render(profile: HostProfile, file_name: str, context: Mapping[str, Any]) -> str:
    """Render one template; errors name the template and line (``templates.user-data``)."""
    text = profile.templates.get(file_name)
    if text is None:
        raise ValidationError("file", f"host profile {profile.name} has no template {file_name!r}")
    template = compile_template(text, f"templates.{file_name}")
    try:
        return str(template.render(**context))
    except TemplateError as exc:
        raise ValidationError(f"templates.{file_name}", f"cannot render: {exc}") from None


__all__ = [
    "AnswerEnv", "EXAMPLE_VARIANTS", "HostProfile", "InputSpec", "check_value", "check_with_examples",
    "compile_template", "example_answers", "host_profile_from_dict",
    "missing_answers", "parse_host_profile", "parse_input", "render", "render_context",
    "template_answers",
]
