"""``bootbox plugin new demo``: the skeleton installs, its own test passes, bootbox lists it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootbox import Conflict, ValidationError
from bootbox.cli import build_cli
from bootbox.hooks.manager import make_plugin_manager
from bootbox.cli.scaffold import scaffold


def _layered_venv(where: Path) -> Path:
    """A venv that sees everything the project's venv has (bootbox included) but installs into
    its own site-packages: the plugin is installed as an operator would, yet test runs sharing
    the project's venv never see it come and go."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "bootbox-project-venv.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python


def test_plugin_new_writes_a_plugin_that_installs_passes_its_test_and_is_listed(tmp_path: Path) -> None:
    cli = build_cli(make_plugin_manager(load_entrypoints=False))
    result = CliRunner().invoke(cli, ["plugin", "new", "demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "bootbox-demo"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "bootbox_demo/__init__.py", "pyproject.toml", "tests/conftest.py", "tests/test_demo.py"]
    assert '[project.entry-points.bootbox]\ndemo = "bootbox_demo"' in (root / "pyproject.toml").read_text()
    python = _layered_venv(tmp_path / "venv")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", "-e", str(root)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           cwd=root, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout
    listed = subprocess.run([str(python), "-m", "bootbox", "--config", str(_empty(tmp_path)), "plugin", "list"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("demo "))
    assert "entry point (bootbox-demo)" in line and "bootbox_host_up" in line
    removed = subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "bootbox-demo"],
                             capture_output=True, text=True, timeout=300)
    assert removed.returncode == 0, removed.stderr
    assert "demo" not in [name for name, _ in make_plugin_manager().list_name_plugin()]  # never in this venv


def _empty(tmp_path: Path) -> Path:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return config


def test_plugin_new_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        scaffold("Bad-Name", tmp_path)
    scaffold("demo", tmp_path)
    with pytest.raises(Conflict, match="--force"):
        scaffold("demo", tmp_path)
    scaffold("demo", tmp_path, force=True)
