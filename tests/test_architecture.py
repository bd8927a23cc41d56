"""The dependency arrows of the architecture, checked on the source (see docs/architecture.md).

Most rules are import-linter contracts in pyproject.toml; :func:`test_import_contracts_hold` runs
them, so the README's test command fails when one breaks. The tests here cover what a contract
cannot say (no cycle anywhere, no standard-library name, no hand-made hook call, a short
``ls bootbox/``) and keep the older, more specific checks, which name the file at fault.

Every check reads all import statements of a file: at module level, inside functions and under
``if TYPE_CHECKING:``. An import that only runs later is still an arrow in the design.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bootbox"
PLUGINS = ROOT / "plugins"
SKIPPED_DIRS = {"__pycache__", "build", ".venv"}


def _imports(path: Path) -> set[str]:
    """The absolute module names a file imports, wherever the statement is (relative ones left out)."""
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


def _source_files(*roots: Path) -> list[Path]:
    """Every ``.py`` file under the roots, build output and caches left out."""
    return sorted(
        path for root in roots for path in root.rglob("*.py")
        if not SKIPPED_DIRS.intersection(path.relative_to(root).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    )


def _plugin_code() -> list[Path]:
    """The shipped plugins' own modules: their tests (and the tests' conftest) may use the rest."""
    return [path for path in _source_files(PLUGINS)
            if "tests" not in path.relative_to(PLUGINS).parts and path.name != "conftest.py"]


PURE = ("model.py", "errors.py", "core")


@pytest.mark.parametrize("path", _modules(*PURE), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_pure_core_takes_no_sockets_threads_or_frameworks(path: Path) -> None:
    forbidden = ("socket", "threading", "selectors", "pluggy", "flask", "tinydb", "waitress", "bootbox.store",
                 "bootbox.service", "bootbox.hooks", "bootbox.net", "bootbox.web", "bootbox.assets",
                 "bootbox.appliance", "bootbox.client", "bootbox.cli", "bootbox.lab", "bootbox.doctor",
                 "bootbox.testing")
    assert _violations([path], forbidden) == []


def test_protocol_servers_see_only_callables() -> None:
    forbidden = ("bootbox.store", "bootbox.service", "bootbox.hooks", "bootbox.web", "pluggy", "flask", "tinydb")
    assert _violations(_modules("net"), forbidden) == []


def test_only_the_tinydb_store_imports_tinydb() -> None:
    users = [p for p in PACKAGE.rglob("*.py") if any(n.split(".")[0] == "tinydb" for n in _imports(p))]
    assert [p.relative_to(PACKAGE).as_posix() for p in users] == ["store/tinydb.py"]


def test_web_never_calls_plugins_directly() -> None:
    assert _violations(_modules("web"), ("pluggy", "bootbox.hooks", "bootbox.store")) == []


@pytest.mark.parametrize("path", _plugin_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_plugins_import_only_the_public_api(path: Path) -> None:
    internal = [n for n in _imports(path) if n.startswith("bootbox.")]
    assert internal == []


def test_importing_bootbox_has_no_side_effects() -> None:
    code = (
        "import threading, socket, bootbox, bootbox.cli, bootbox.service.bootservice, bootbox.web;"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_api_does_not_import_the_cli() -> None:
    """``bootbox.api_client`` builds its client from :mod:`bootbox.client`, not through the CLI."""
    assert _violations([PACKAGE / "__init__.py"], ("bootbox.cli", "typer")) == []
    code = "import sys, bootbox; assert not [m for m in sys.modules if m.startswith('bootbox.cli')]"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the import contracts (pyproject.toml [tool.importlinter]) -------------------------------


def _lint_imports() -> str:
    """The ``lint-imports`` of this interpreter's environment (installed by the ``test`` extra)."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    return found


def test_import_contracts_hold() -> None:
    # --no-cache: grimp's cache would be a stray directory in the checkout, and the run takes <1 s.
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    report = result.stdout + result.stderr
    broken = report[report.find("Broken contracts"):] if "Broken contracts" in report else report
    if result.returncode != 0:
        pytest.fail(f"lint-imports found imports against docs/architecture.md:\n{broken}", pytrace=False)


# --- the layout -----------------------------------------------------------------------------


def test_ls_bootbox_shows_at_most_a_dozen_modules_beside_the_packages() -> None:
    """The layers are the packages: a module at the top is the public API, a shell or a leaf."""
    modules = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py")
    assert len(modules) <= 12, modules


def _module_names(roots: list[Path]) -> dict[str, Path]:
    """``{"bootbox.store.base": path, ...}`` for every module of the top-level packages."""
    names: dict[str, Path] = {}
    for root in roots:
        for path in _source_files(root):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _top_level_packages() -> list[Path]:
    """bootbox and every shipped plugin: a folder with ``__init__.py`` whose parent has none."""
    found = {PACKAGE}
    for init in _source_files(PLUGINS):
        package = init.parent
        if (init.name == "__init__.py" and "tests" not in package.relative_to(PLUGINS).parts
                and not (package.parent / "__init__.py").exists()):
            found.add(package)
    return sorted(found)


def test_no_module_shadows_a_standard_library_module() -> None:
    """A ``secrets.py`` or ``token.py`` in a package is one sys.path entry away from hiding the real one."""
    shadows = []
    for path in _source_files(PACKAGE, PLUGINS):
        names = {path.stem} | {part for part in path.parent.relative_to(ROOT).parts}
        shadows += [f"{path.relative_to(ROOT)}: {name}" for name in names
                    if name in sys.stdlib_module_names and not name.startswith("__")]
    assert sorted(set(shadows)) == []


def test_only_service_and_hooks_call_plugin_hooks() -> None:
    """``pm.hook.X(...)`` runs plugin code: only the service and the hooks package may do it.

    Code that runs before a service exists (the CLI's commands, the web app's blueprints) calls
    the registration hooks through a function of :mod:`bootbox.hooks.calls`.
    """
    allowed = (PACKAGE / "service", PACKAGE / "hooks")
    calls = []
    for path in _source_files(PACKAGE) + _plugin_code():
        if path.is_relative_to(allowed[0]) or path.is_relative_to(allowed[1]):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("hook", "subset_hook_caller", "get_hookimpls"):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []


# --- no import cycle, counting every import ---------------------------------------------------


def _import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """``{importer: {imported: line}}`` over bootbox and the plugins, as ``import-cycles --strict``.

    An arrow goes to the module named by the statement (``import a.b.c`` and ``from a.b import c``
    with ``c`` a module: ``a.b.c``; ``from a.b import name``: ``a.b``), or to its nearest ancestor
    that is one of ours. The packages it passes through (``a``, ``a.b``) run first at import time,
    but they are not arrows of the design: counting them would make every ``__init__`` that names
    its own submodules a cycle. Relative imports are resolved; imports of a module by itself are
    dropped.
    """
    known = _module_names(_top_level_packages())
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)

        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    add(sub if sub in known else module, node.lineno)
        graph[name] = edges
    return graph, known


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def _one_cycle(graph: dict[str, dict[str, int]], group: list[str], known: dict[str, Path]) -> str:
    """A shortest cycle through the group's first module, each arrow with its file and line."""
    members, start = set(group), group[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in graph[node]:
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                path.reverse()
                path.append(start)
                return "\n".join(f"    {a} -> {b}  ({known[a].relative_to(ROOT)}:{graph[a][b]})"
                                 for a, b in zip(path, path[1:]))
            if succ in members and succ not in came_from and succ != start:
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")  # cannot happen: the group is strongly connected


def test_the_cycle_walk_finds_a_cycle_hidden_in_a_function() -> None:
    """The walker itself: an import inside a function or under TYPE_CHECKING closes a cycle."""
    graph = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 9}, "d": {"a": 1}}
    groups = _strongly_connected(graph)
    assert groups == [["a", "b", "c"]]
    paths = {m: ROOT / f"{m}.py" for m in graph}
    assert _one_cycle(graph, groups[0], paths).splitlines()[-1].strip().startswith("c -> a  (c.py:9)")


def test_no_import_cycle_counting_imports_in_functions_and_under_type_checking() -> None:
    graph, known = _import_graph()
    assert "bootbox.store.base" in known and any(name.startswith("bootbox_esxi") for name in known)
    groups = _strongly_connected(graph)
    report = "\n".join(f"cycle: {' <-> '.join(group)}\n{_one_cycle(graph, group, known)}" for group in groups)
    if groups:
        pytest.fail(f"{len(groups)} import cycle(s) among bootbox's and the plugins' modules:\n{report}", pytrace=False)
