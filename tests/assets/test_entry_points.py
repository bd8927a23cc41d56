"""The asset builders' documented ``python -m`` commands, at their old and their new paths.

docs/firmware.md, appliance/bootbox.toml and appliance/install.sh name ``python -m
bootbox.signedloaders``, and the README era's ``python -m bootbox.demo``; the code lives in
``bootbox.assets``. Both spellings must keep working (the old ones are alias modules).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "prog"),
    [
        ("bootbox.demo", "python -m bootbox.demo"),
        ("bootbox.assets.demo", "python -m bootbox.demo"),
        ("bootbox.signedloaders", "python -m bootbox.signedloaders"),
        ("bootbox.assets.signedloaders", "python -m bootbox.signedloaders"),
    ],
)
def test_python_m_entry_point_runs(module: str, prog: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {prog} ")


def test_signedloaders_refuses_an_unknown_architecture() -> None:
    done = subprocess.run([sys.executable, "-m", "bootbox.signedloaders", "sparc", "/nonexistent"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 2 and "invalid choice: 'sparc'" in done.stderr
