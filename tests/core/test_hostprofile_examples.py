"""Example answers: what a host profile is rendered with when it is added (bootbox.core.hostprofile).

Every example must pass its own input's checks (type, validation, choices), and a profile is
refused only when every set of examples fails at the same field.
"""

from __future__ import annotations

from typing import Any

import pytest

from bootbox.core.hostprofile import (
    EXAMPLE_VARIANTS,
    VALIDATIONS,
    InputSpec,
    check_value,
    check_with_examples,
    example_answers,
    parse_input,
)
from bootbox.errors import ValidationError

INPUTS = [
    parse_input({"name": "n", "type": "integer"}, "n"),
    parse_input({"name": "flag", "type": "boolean"}, "flag"),
    parse_input({"name": "pw", "type": "password"}, "pw"),
    parse_input({"name": "size", "choices": ["small", "large"]}, "size"),
    parse_input({"name": "mtu", "type": "integer", "default": 9000}, "mtu"),
    parse_input({"name": "text"}, "text"),
    *(parse_input({"name": f"v_{kind}", "validation": kind}, kind) for kind in VALIDATIONS),
]


@pytest.mark.parametrize("variant", range(EXAMPLE_VARIANTS))
def test_every_example_passes_its_inputs_own_checks(variant: int) -> None:
    values = example_answers(INPUTS, variant)
    assert set(values) == {spec.name for spec in INPUTS}
    for spec in INPUTS:
        assert check_value(spec, values[spec.name]) == values[spec.name], spec.name
    assert values["mtu"] == (9000 if variant == 0 else values["n"])  # a default is used as it is, first


def test_plain_text_differs_between_variants() -> None:
    texts = {example_answers(INPUTS, variant)["text"] for variant in range(EXAMPLE_VARIANTS)}
    assert len(texts) == EXAMPLE_VARIANTS


def test_refused_only_when_every_variant_fails_at_the_same_field() -> None:
    spec = [InputSpec(name="text")]

    def always(values: dict[str, Any]) -> None:
        raise ValidationError("doc.mtu", "expected a whole number from 1280 to 9000")

    with pytest.raises(ValidationError, match="checked with example answers") as info:
        check_with_examples(spec, always)
    assert info.value.field == "doc.mtu"

    def address_only(values: dict[str, Any]) -> None:  # fine for an address, wrong for anything else
        if values["text"] != "198.18.0.10":
            raise ValidationError("doc.server", "not an address")

    check_with_examples(spec, address_only)

    def depends(values: dict[str, Any]) -> None:  # every variant fails, but not at the same field
        raise ValidationError(f"doc.{values['text'][:3]}", "wrong for this answer")

    check_with_examples(spec, depends)
