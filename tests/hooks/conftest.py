"""Fixtures for the hook tests: a service started with chosen plugins, and a wrapper plugin.

Plugins are registered under a name (as entry-point plugins are), so a test can check that what
a plugin registers or pushes carries that name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import bootbox_linux
from bootbox import hookimpl
from bootbox.config import Settings
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings

MAC = "52:54:00:00:00:0e"
IP = "198.18.0.14"
BASE_URL = "http://198.18.0.1:8080"


class Services:
    """Starts services with the built-in and linux plugins plus the given ones; closes them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: list[tuple[BootService, Journal]] = []

    def start(self, **plugins: object) -> BootService:
        """A started service; ``plugins`` are registered under their keyword names, in order."""
        pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
        for name, plugin in plugins.items():
            pm.register(plugin, name=name)
        journal = Journal(None)
        journal.start()
        service = BootService(self.settings, MemoryStore(), journal, pm)
        self._running.append((service, journal))  # closed at the end even if start() raises
        service.start()
        return service

    def stop(self, service: BootService) -> None:
        """Close ``service`` now (its shutdown hooks run) instead of at the end of the test."""
        for entry in list(self._running):
            if entry[0] is service:
                self._running.remove(entry)
                service.close()
                entry[1].close()

    def close(self) -> None:
        while self._running:
            self.stop(self._running[-1][0])


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    started = Services(test_settings(tmp_path, push={"first_delay": 0.05, "step_min": 0.01, "step_max": 0.02}))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def events() -> list[str]:
    """What the test's plugins and wrappers did, in order."""
    return []


@pytest.fixture
def around(events: list[str]) -> Callable[[str], object]:
    """``around(hook)``: a plugin whose only implementation is a new-style wrapper of ``hook``
    (``@hookimpl(wrapper=True)``, taking no arguments); it notes ``before`` and ``after``."""

    def make(hook: str) -> object:
        class Around:
            @hookimpl(wrapper=True, specname=hook)
            def wrap(self):  # type: ignore[no-untyped-def]
                events.append("before")
                try:
                    return (yield)
                finally:
                    events.append("after")

        return Around()

    return make


def assert_wrapped(events: list[str], what: str) -> None:
    """``what`` happened exactly once, right inside a wrapper's ``before`` and ``after``."""
    assert events.count(what) == 1, events
    at = events.index(what)
    assert events[at - 1 : at + 2] == ["before", what, "after"], events


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
