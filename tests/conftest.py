"""Shared fixtures: a service on the in-memory store, a live appliance on free ports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from bootbox.config import Settings, load_settings
from bootbox.store.journal import Journal
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.memory import MemoryStore
from bootbox.testing import free_port

ROOT = Path(__file__).resolve().parent.parent

# Session fixtures every module shares, registered once so each is built once per run: the
# Linux test image (``linux_image``, an mmdebstrap build of minutes). A module that imports the
# fixture function itself gets its own copy (which then finds the build cached).
pytest_plugins = ["tests.support.linuximage"]


def test_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test: state in tmp_path, loopback only, no demo build, free ports."""
    loaders = tmp_path / "loaders"
    loaders.mkdir(parents=True, exist_ok=True)
    for name in ("undionly.kpxe", "snponly.efi"):
        (loaders / name).write_bytes(os.urandom(4096))
    base: dict[str, object] = {
        "state_dir": str(tmp_path / "state"),
        "demo": {"enabled": False},
        "http": {"bind_address": "127.0.0.1", "port": free_port()},
        "tftp": {"bind_address": "127.0.0.1", "port": free_port(), "root": str(loaders)},
        "dhcp": {"bind_address": "127.0.0.1", "port": free_port(), "boot_server_port": free_port(),
                 "client_port": free_port()},
        # In-process tests call the service with made-up lab addresses that no neighbour table
        # holds; tests of the identity check itself set trusted_networks=() (tests/service/test_identity.py).
        "hosts": {"trusted_networks": ["198.18.0.0/15"]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}  # type: ignore[dict-item]
        else:
            base[key] = value
    empty = tmp_path / "empty-config.toml"  # never the operator's /etc/bootbox/bootbox.toml
    empty.touch()
    return load_settings(empty, env={}, overrides=base)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return test_settings(tmp_path)


@pytest.fixture
def service(settings: Settings) -> Iterator[BootService]:
    """A started BootService on the memory store with only the built-in and linux plugins."""
    import bootbox_linux

    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
    journal = Journal(None)
    journal.start()
    svc = BootService(settings, MemoryStore(), journal, pm)
    svc.start()
    try:
        yield svc
    finally:
        svc.close()
        journal.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In the full run (scripts/test.sh installs every tool and sets BOOTBOX_LAB_REQUIRED=1) a
    skipped test is a failure: CI must not pass by quietly skipping what it could not run."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("BOOTBOX_LAB_REQUIRED") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in a run that must not skip (BOOTBOX_LAB_REQUIRED=1): {reason}"
