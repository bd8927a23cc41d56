"""What the shipped plugins' tests share with the core suite in ``tests/``.

Pytest applies a ``conftest.py`` only to the tests below it, so the core suite's rule that a
skipped test fails the full run (``BOOTBOX_LAB_REQUIRED=1``, set by scripts/test.sh) is brought
here too: CI must not pass by quietly skipping a plugin's lab test either. The plugins' tests
import the rest of the shared support (``tests.conftest``, ``tests.support.*``) by name; the
repository root is on ``sys.path`` through pyproject.toml's ``pythonpath``.
"""

from __future__ import annotations

from tests.conftest import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]
