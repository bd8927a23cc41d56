"""The demo profile on a fresh appliance: the payload is built, a plugin's kind offers the profile.

The core names no kind: ``bootbox.appliance`` builds the payload (``bootbox.assets.demo``) and
asks ``bootbox_demo_profile``, which the shipped ``linux`` plugin answers. The payload build is
replaced by two small files here; tests/assets/test_demo.py builds the real one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import bootbox_linux
from bootbox import Profile, hookimpl
from bootbox import appliance
from bootbox.assets.demo import DEFAULT_CMDLINE, DemoAssets
from bootbox.config import Settings
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings

MAC = "52:54:00:de:00:01"
BASE_URL = "http://198.18.0.1:8080"

StartService = Callable[..., BootService]


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stands in for the payload build: two files, and the destinations it was asked for."""
    calls: list[Path] = []

    def build(dest: Path) -> DemoAssets:
        calls.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "vmlinuz").write_bytes(b"kernel")
        (dest / "initrd.img").write_bytes(b"initrd")
        return DemoAssets(dest / "vmlinuz", dest / "initrd.img", "6.1.0-99-amd64", DEFAULT_CMDLINE)

    monkeypatch.setattr(appliance, "build_demo_assets", build)
    return calls


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """``start_service(*plugins, demo=True, linux=True)``: a started service on the memory store."""
    running: list[tuple[BootService, Journal]] = []

    def start(*plugins: object, demo: bool = True, linux: bool = True) -> BootService:
        settings: Settings = test_settings(tmp_path, demo={"enabled": demo})
        pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux] if linux else [])
        for index, plugin in enumerate(plugins):
            pm.register(plugin, name=f"test-{index}")
        journal = Journal(None)
        journal.start()
        service = BootService(settings, MemoryStore(), journal, pm)
        running.append((service, journal))
        service.start()
        return service

    try:
        yield start
    finally:
        for service, journal in running:
            service.close()
            journal.close()


def test_hook_bootbox_demo_profile_the_linux_kind_boots_every_host_into_the_demo(
    start_service: StartService, built: list[Path]
) -> None:
    service = start_service()
    appliance.ensure_demo_profile(service, service.settings)

    assert built == [service.settings.state_path / "demo"]
    profile = service.profile("demo")
    assert profile.kind == bootbox_linux.KIND
    assert profile.spec == {
        "kernel": str(built[0] / "vmlinuz"),
        "initrd": [str(built[0] / "initrd.img")],
        "cmdline": f"{DEFAULT_CMDLINE} bootbox.mac={{mac}} bootbox.callback={{callback}}",
    }
    assert "6.1.0-99-amd64" in profile.description
    # No rules yet: every PXE client boots the demo, with its MAC and callback on the command line.
    script = service.host_script(MAC, {}, "198.18.0.50", BASE_URL)
    assert f"boots profile demo ({bootbox_linux.KIND})" in script
    assert f" bootbox.mac={MAC} bootbox.callback={BASE_URL}/api/v1/hosts/{MAC}/booted" in script

    # A second start finds the profile and builds nothing.
    appliance.ensure_demo_profile(service, service.settings)
    assert len(built) == 1


def test_hook_bootbox_demo_profile_first_answer_wins_with_fewer_arguments_inside_a_wrapper(
    start_service: StartService, built: list[Path]
) -> None:
    seen: list[str] = []

    class Override:
        @hookimpl(tryfirst=True)
        def bootbox_demo_profile(self, name: str, kernel: Path) -> Profile:  # pluggy passes only these
            return Profile(name=name, kind=bootbox_linux.KIND, spec={"kernel": str(kernel)}, description="mine")

    class Wrapper:
        @hookimpl(wrapper=True)
        def bootbox_demo_profile(self) -> Iterator[None]:
            result: Any = yield
            seen.append(result.description)
            return result

    service = start_service(Override(), Wrapper())
    appliance.ensure_demo_profile(service, service.settings)
    assert service.profile("demo").description == "mine"
    assert service.profile("demo").spec == {"kernel": str(built[0] / "vmlinuz"), "initrd": [], "cmdline": ""}
    assert seen == ["mine"]


def test_no_kind_offering_the_demo_profile_leaves_the_appliance_without_one(
    start_service: StartService, built: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    service = start_service(linux=False)
    with caplog.at_level(logging.WARNING, logger="bootbox"):
        appliance.ensure_demo_profile(service, service.settings)
    assert service.profile_or_none("demo") is None
    assert service.rules.is_empty()
    assert "no plugin offers a profile for the demo payload" in caplog.text


def test_demo_disabled_builds_and_adds_nothing(start_service: StartService, built: list[Path]) -> None:
    service = start_service(demo=False)
    appliance.ensure_demo_profile(service, service.settings)
    assert built == []
    assert service.profile_or_none("demo") is None
    assert service.rules.is_empty()
