"""The dependency arrows of the architecture, checked on the source (see README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bootbox"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(*relative: str) -> list[Path]:
    paths: list[Path] = []
    for rel in relative:
        target = PACKAGE / rel
        paths += sorted(target.rglob("*.py")) if target.is_dir() else sorted(PACKAGE.glob(rel))
    return paths


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


PURE = ("model.py", "errors.py", "core")


@pytest.mark.parametrize("path", _modules(*PURE), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_pure_core_takes_no_sockets_threads_or_frameworks(path: Path) -> None:
    forbidden = ("socket", "threading", "selectors", "pluggy", "flask", "tinydb", "waitress", "bootbox.store",
                 "bootbox.service", "bootbox.net", "bootbox.web")
    assert _violations([path], forbidden) == []


def test_protocol_servers_see_only_callables() -> None:
    forbidden = ("bootbox.store", "bootbox.service", "bootbox.hooks", "bootbox.web", "pluggy", "flask", "tinydb")
    assert _violations(_modules("net"), forbidden) == []


def test_only_the_tinydb_store_imports_tinydb() -> None:
    users = [p for p in PACKAGE.rglob("*.py") if any(n.split(".")[0] == "tinydb" for n in _imports(p))]
    assert [p.relative_to(PACKAGE).as_posix() for p in users] == ["store/tinydb.py"]


def test_web_never_calls_plugins_directly() -> None:
    assert _violations(_modules("web"), ("pluggy", "bootbox.hooks.manager", "bootbox.store")) == []


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_plugins_import_only_the_public_api(path: Path) -> None:
    internal = [n for n in _imports(path) if n.startswith("bootbox.")]
    assert internal == []


def test_importing_bootbox_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import threading, socket, bootbox, bootbox.cli, bootbox.service.bootservice, bootbox.web;"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
