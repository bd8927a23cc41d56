"""A hook does not exist until it is documented (datasette's rule)."""

import re
from pathlib import Path

import pytest

from bootbox.hooks.specs import documented_hooks
from bootbox.hooks.manager import make_plugin_manager

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


@pytest.mark.parametrize("hook", documented_hooks())
def test_plugin_hooks_are_documented(hook: str) -> None:
    headings = re.findall(r"^## (bootbox_\w+)\(", DOC.read_text(), flags=re.M)
    assert hook in headings


def test_docs_name_no_hook_that_does_not_exist() -> None:
    headings = re.findall(r"^## (bootbox_\w+)\(", DOC.read_text(), flags=re.M)
    assert sorted(headings) == documented_hooks()


def test_every_spec_is_registered_and_documented() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    specs = sorted(name for name in dir(pm.hook) if name.startswith("bootbox_"))
    assert specs == documented_hooks()
    for name in specs:
        assert getattr(pm.hook, name).spec.function.__doc__, f"{name} has no docstring"
