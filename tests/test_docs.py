"""A hook does not exist until it is documented (datasette's rule) and tested by name.

docs/plugins.md has a heading ``## bootbox_x(arg, ...)`` per hook naming the spec's arguments,
and some test under ``tests/`` or ``plugins/*/tests/`` is named ``test_hook_bootbox_x_...``.
"""

import ast
import functools
import re
from pathlib import Path

import pytest

from bootbox.hooks.specs import documented_hooks
from bootbox.hooks.manager import make_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
HEADING = re.compile(r"^## (bootbox_\w+)\(([^)]*)\)", flags=re.M)


def _documented_arguments() -> dict[str, list[str]]:
    return {name: [arg.strip() for arg in args.split(",") if arg.strip()] for name, args in HEADING.findall(DOC.read_text())}


@functools.cache
def _test_function_names() -> frozenset[str]:
    names: set[str] = set()
    for root in [ROOT / "tests", *sorted((ROOT / "plugins").glob("**/tests"))]:
        for path in root.rglob("test_*.py"):
            tree = ast.parse(path.read_text(), str(path))
            names.update(node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return frozenset(names)


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


@pytest.mark.parametrize("hook", documented_hooks())
def test_docs_name_each_hooks_arguments_as_its_spec_does(hook: str) -> None:
    spec = getattr(make_plugin_manager(load_entrypoints=False).hook, hook).spec
    assert _documented_arguments().get(hook) == list(spec.argnames), f"docs/plugins.md: ## {hook}({', '.join(spec.argnames)})"


@pytest.mark.parametrize("hook", documented_hooks())
def test_every_hook_is_exercised_by_a_test_named_after_it(hook: str) -> None:
    names = _test_function_names()
    assert any(name == f"test_hook_{hook}" or name.startswith(f"test_hook_{hook}_") for name in names), (
        f"no test named test_hook_{hook}_... under tests/ or plugins/*/tests/"
    )
