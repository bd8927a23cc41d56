"""``bootbox plugin new NAME``: a working plugin skeleton with a passing test.

The skeleton is what a third party ships: its own ``pyproject.toml`` advertising the package in
the ``bootbox`` entry-point group, a module that imports only ``bootbox``'s public API, one
hook implementation (``bootbox_host_up``, the after-boot push, because that is what most
plugins are for), and a test that boots a fake host on a real test appliance through the
``bootbox.testing`` fixtures and checks that the push ran. ``pip install -e`` it and
``bootbox plugin list`` shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

from bootbox import __version__
from bootbox.errors import Conflict, ValidationError

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

_PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "bootbox-{dist}"
version = "0.1.0"
description = "A bootbox plugin: {name}"
requires-python = ">=3.11"
dependencies = ["bootbox>={bootbox_version}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This line is what makes bootbox load the plugin: the entry-point group "bootbox".
[project.entry-points.bootbox]
{name} = "{package}"

[tool.setuptools]
packages = ["{package}"]
'''

_MODULE = '''"""The {name} bootbox plugin.

Import only from ``bootbox`` (its public API). Each hook is documented with an example in
bootbox's docs/plugins.md; ``bootbox plugin list`` shows which ones this plugin implements.
"""

from __future__ import annotations

from bootbox import BootEvent, Host, hookimpl

__version__ = "0.1.0"


@hookimpl
def bootbox_host_up(host: Host, event: BootEvent, timeout: float) -> str | None:
    """Runs after every boot of every host, on bootbox's push pool (retried if it raises).

    Push configuration somewhere here (pass ``timeout`` to your network calls). Return what you
    did, for the host's timeline, or ``None`` when there is nothing to do for this host.
    """
    return f"{name} saw {{host.mac}} up at {{event.data.get('ip', '?')}} (boot {{event.data.get('boot_id')}})"
'''

_CONFTEST = '''import pytest

import {package}

pytest_plugins = ["bootbox.testing"]


@pytest.fixture
def bootbox_plugins():
    """The test appliance registers exactly these plugins."""
    return [{package}]
'''

_TEST = '''"""{name}: a fake host boots from a real (temporary) appliance and reports up."""


def test_push_runs_after_every_boot(bootbox_host):
    bootbox_host.boot()
    assert bootbox_host.report_up() in (200, 503)  # 503: pushes still running, ask again later
    host = bootbox_host.wait_for_state("configured")
    [push] = host["pushes"].values()  # one plugin, one push (keyed by the plugin's name)
    assert push["result"] == "ok" and push["boot_id"] == bootbox_host.boot_id
    assert bootbox_host.report_up() == 200

    bootbox_host.reboot()  # a new boot ID: the push runs again
    bootbox_host.wait_for_state("configured")
    pushes = [e for e in bootbox_host.events() if e["kind"] == "push" and e["data"]["result"] == "ok"]
    assert len(pushes) == 2 and "{name} saw" in pushes[-1]["message"]
'''

_README = '''# bootbox-{dist}

A [bootbox](https://example.invalid/bootbox) plugin.

```sh
pip install -e '.[test]'     # into the same environment as bootbox
pytest                       # runs the plugin against a temporary appliance
bootbox plugin list          # shows "{name}" and the hooks it implements
```
'''


def scaffold(name: str, parent: Path, *, force: bool = False) -> Path:
    """Write the skeleton of plugin ``name`` into ``parent/bootbox-<name>/``; return that dir."""
    if not NAME.fullmatch(name):
        raise ValidationError("name", "use 1-40 of a-z, 0-9 and '_', starting with a letter")
    package = f"bootbox_{name}"
    root = Path(parent) / f"bootbox-{name.replace('_', '-')}"
    if root.exists() and any(root.iterdir()) and not force:
        raise Conflict(f"{root} exists and is not empty (--force overwrites the skeleton's files)")
    values = {"name": name, "package": package, "dist": name.replace("_", "-"), "bootbox_version": __version__}
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{package}/__init__.py": _MODULE,
        "tests/conftest.py": _CONFTEST,
        f"tests/test_{name}.py": _TEST,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return root
