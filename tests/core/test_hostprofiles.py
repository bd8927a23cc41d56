"""Host profiles (pure): schema validation naming the field, values, sandboxed rendering, lint."""

from __future__ import annotations

from typing import Any

import pytest

from bootbox import Host, ValidationError
from bootbox.core.hostprofile import (
    InputSpec,
    check_value,
    missing_answers,
    parse_host_profile,
    render,
    render_context,
    template_answers,
)
from bootbox.core.lint import lint_template

KINDS = {"cloud-init": ("user-data",), "preseed": ("preseed.cfg",), "kickstart": ("ks.cfg",)}


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "web",
        "kind": "cloud-init",
        "inputs": [{"name": "hostname", "validation": "hostname"},
                   {"name": "root_password", "type": "password"},
                   {"name": "ntp", "required": False, "default": "pool.ntp.org"}],
        "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\n"},
    }
    doc.update(changes)
    return doc


def test_a_valid_profile_parses_with_version_and_secret_flags() -> None:
    profile = parse_host_profile(_doc(), kinds=KINDS, version=3)
    assert profile.version == 3 and profile.kind == "cloud-init"
    assert [s.name for s in profile.inputs] == ["hostname", "root_password", "ntp"]
    assert profile.input("root_password").is_secret and not profile.input("hostname").is_secret  # type: ignore[union-attr]
    assert profile.input("ntp").default == "pool.ntp.org"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"kind": "nope"}, "kind"),
        ({"templates": {}}, "templates"),
        ({"templates": {"meta-data": "x"}}, "templates.user-data"),
        ({"templates": {"user-data": "{% if %}"}}, "templates.user-data"),
        ({"templates": {"user-data": "ok", "../x": "y"}}, "templates.../x"),
        ({"inputs": [{"name": "Host"}]}, "inputs[0].name"),
        ({"inputs": [{"name": "a", "type": "float"}]}, "inputs[0].type"),
        ({"inputs": [{"name": "a", "validation": "ipv5"}]}, "inputs[0].validation"),
        ({"inputs": [{"name": "a", "type": "integer", "validation": "ipv4"}]}, "inputs[0].validation"),
        ({"inputs": [{"name": "a", "required": "yes"}]}, "inputs[0].required"),
        ({"inputs": [{"name": "a", "validation": "ipv4", "default": "300.1.1.1"}]}, "inputs[0].default"),
        ({"inputs": [{"name": "pw", "type": "password", "default": "x"}]}, "inputs[0].default"),
        ({"inputs": [{"name": "a"}, {"name": "a"}]}, "inputs[1].name"),
        ({"inputs": [{"name": "a", "colour": "red"}]}, "inputs[0].colour"),
        ({"extra": 1}, "extra"),
    ],
)
def test_schema_errors_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_host_profile(_doc(**changes), kinds=KINDS)
    assert info.value.field == field


def test_a_syntax_error_names_the_line() -> None:
    with pytest.raises(ValidationError, match="line 3"):
        parse_host_profile(_doc(templates={"user-data": "a\nb\n{{ x "}), kinds=KINDS)


def test_inputs_plugins_contribute_are_reserved() -> None:
    with pytest.raises(ValidationError, match="contributed by the plugin vcd") as info:
        parse_host_profile(_doc(inputs=[{"name": "vcd_host_password"}]), kinds=KINDS,
                           reserved={"vcd_host_password": "vcd"})
    assert info.value.field == "inputs[0].name"


@pytest.mark.parametrize(
    ("spec", "raw", "expected"),
    [
        (InputSpec("a", validation="ipv4"), " 198.18.0.10 ", "198.18.0.10"),
        (InputSpec("a", validation="ipv6"), "2001:DB8::1", "2001:db8::1"),
        (InputSpec("a", validation="cidr"), "198.18.0.10/24", "198.18.0.10/24"),
        (InputSpec("a", validation="network"), "198.18.0.0/24", "198.18.0.0/24"),
        (InputSpec("a", validation="hostname"), "ESX01", "esx01"),
        (InputSpec("a", validation="fqdn"), "esx01.lab.example.", "esx01.lab.example"),
        (InputSpec("a", validation="mac"), "AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"),
        (InputSpec("a", type="integer"), "42", 42),
        (InputSpec("a", type="boolean"), "yes", True),
        (InputSpec("a", choices=("x", "y")), "y", "y"),
    ],
)
def test_values_are_normalised(spec: InputSpec, raw: str, expected: Any) -> None:
    assert check_value(spec, raw) == expected


@pytest.mark.parametrize(
    ("spec", "raw"),
    [
        (InputSpec("ip", validation="ipv4"), "198.18.0.256"),
        (InputSpec("ip", validation="cidr"), "198.18.0.10"),
        (InputSpec("ip", validation="network"), "198.18.0.1/24"),
        (InputSpec("ip", validation="hostname"), "esx01.lab"),
        (InputSpec("ip", validation="hostname"), "-esx"),
        (InputSpec("ip", validation="fqdn"), "esx01"),
        (InputSpec("ip", validation="url"), "ftp://x"),
        (InputSpec("ip", type="integer"), "4.2"),
        (InputSpec("ip", type="boolean"), "maybe"),
        (InputSpec("ip", choices=("x",)), "z"),
        (InputSpec("ip"), "two\nlines"),
    ],
)
def test_bad_values_are_refused_naming_the_input(spec: InputSpec, raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_value(spec, raw)
    assert info.value.field == "ip"


def test_missing_answers_ignore_defaults_and_optional_inputs() -> None:
    inputs = [InputSpec("a"), InputSpec("b", default="x"), InputSpec("c", required=False), InputSpec("d")]
    assert missing_answers(inputs, {"d": "1"}) == ["a"]
    assert missing_answers(inputs, {"a": "", "d": "1"}) == ["a"]


def _render(text: str, answers: dict[str, Any], inputs: list[InputSpec] | None = None) -> str:
    profile = parse_host_profile(_doc(inputs=[s.to_dict() for s in inputs or []], templates={"user-data": text}),
                                 kinds=KINDS)
    host = Host(mac="52:54:00:00:00:01", attrs={"vendor": "QEMU"}, associations={"group": "rack7"})
    values = template_answers(profile.inputs, answers, lambda name, plain: f"HASH({name})")
    return render(profile, "user-data", render_context(host, values, {"up_url": "http://x/up"}))


def test_templates_see_host_group_attrs_answers_and_urls() -> None:
    text = "{{ host.mac }} {{ group }} {{ attrs.vendor }} {{ answers.name }} {{ answers.pw }} {{ bootbox.up_url }}\n"
    out = _render(text, {"name": "esx01", "pw": "secret"}, [InputSpec("name"), InputSpec("pw", type="password")])
    assert out == "52:54:00:00:00:01 rack7 QEMU esx01 HASH(pw) http://x/up\n"


def test_optional_inputs_render_as_none_and_blocks_leave_no_blank_lines() -> None:
    text = "a\n{% if answers.ntp %}\nntp {{ answers.ntp }}\n{% endif %}\nb\n"
    assert _render(text, {}, [InputSpec("ntp", required=False)]) == "a\nb\n"


def test_an_unknown_variable_fails_instead_of_rendering_blank() -> None:
    with pytest.raises(ValidationError, match="templates.user-data"):
        _render("{{ answers.typo }}", {})


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ answers.__class__ }}{{ answers.clear() }}",
    "{% set x = answers.update({'a': 1}) %}",
])
def test_templates_run_in_a_sandbox(text: str) -> None:
    with pytest.raises(ValidationError, match="templates.user-data"):
        _render(text, {"a": "b"}, [InputSpec("a")])


def test_lint_warns_about_hard_coded_addresses_and_host_names() -> None:
    text = (
        "network --bootproto=static --ip=198.18.0.10 --netmask=255.255.255.0 --hostname=esx01.lab\n"
        "network --ip={{ answers.ip }} --hostname={{ answers.hostname }}\n"
        "hostname: web01\n"
        "local-hostname: {{ answers.hostname }}\n"
        "d-i netcfg/get_hostname string unassigned-hostname\n"
        "# listen on 0.0.0.0 and 127.0.0.1 only; version 1.2.3\n"
    )
    found = [(w.line, w.message.split(":")[0]) for w in lint_template("p", "ks.cfg", text)]
    assert found == [(1, "hard-coded address 198.18.0.10"), (1, "hard-coded host name 'esx01.lab'"),
                     (3, "hard-coded host name 'web01'")]
