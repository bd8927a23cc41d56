"""bootbox.hooks.calls: one plugin at a time, in pluggy's order, inside every wrapper."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pluggy
import pytest

from bootbox import hookimpl
from bootbox.hooks import calls
from bootbox.hooks.manager import make_plugin_manager

HOOK = "bootbox_host_booted"  # no built-in plugin implements it


def _plugin(tag: str, seen: list[str], **opts: Any) -> object:
    class Plugin:
        @hookimpl(**opts)
        def bootbox_host_booted(self, host: Any) -> str:
            seen.append(f"{tag} {host}")
            return tag

    return Plugin()


@pytest.fixture
def pm() -> Iterator[pluggy.PluginManager]:
    yield make_plugin_manager(load_entrypoints=False)


def test_plugins_come_in_pluggys_order_and_wrappers_are_not_plugins(pm: pluggy.PluginManager) -> None:
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def bootbox_host_booted(self) -> Iterator[None]:
            return (yield)

    pm.register(_plugin("late", seen, trylast=True), name="late")
    pm.register(_plugin("first", seen), name="first")
    pm.register(Wrapper(), name="wrapper")
    pm.register(_plugin("second", seen), name="second")
    pm.register(_plugin("eager", seen, tryfirst=True), name="eager")
    order = ["eager", "second", "first", "late"]
    assert calls.implementers(pm, HOOK) == order
    assert [call.plugin for call in calls.per_plugin(pm, HOOK)] == order
    pm.hook.bootbox_host_booted(host="h", event=None)
    assert seen == [f"{name} h" for name in order]  # the same order as a whole call


def test_a_plugin_call_runs_that_plugin_alone_inside_every_other_plugins_wrapper(pm: pluggy.PluginManager) -> None:
    seen: list[str] = []

    class NewStyle:
        @hookimpl(wrapper=True)
        def bootbox_host_booted(self, host: Any) -> Iterator[None]:
            seen.append(f"new around {host}")
            results = yield
            return [*results, "new"]

    class OldStyle:
        @hookimpl(hookwrapper=True)
        def bootbox_host_booted(self) -> Iterator[None]:
            seen.append("old before")
            outcome = yield
            seen.append(f"old saw {outcome.get_result()}")

    pm.register(_plugin("a", seen), name="a")
    pm.register(_plugin("b", seen), name="b")
    pm.register(NewStyle(), name="new")
    pm.register(OldStyle(), name="old")
    by_name = {call.plugin: call for call in calls.per_plugin(pm, HOOK)}
    assert by_name["a"](host="h1", event=None) == ["a", "new"]
    assert seen == ["old before", "new around h1", "a h1", "old saw ['a', 'new']"]


def test_a_plugin_registered_later_never_joins_another_plugins_call(pm: pluggy.PluginManager) -> None:
    seen: list[str] = []
    pm.register(_plugin("a", seen), name="a")
    [call] = calls.per_plugin(pm, HOOK)
    pm.register(_plugin("b", seen), name="b")
    assert call(host="h", event=None) == ["a"]
    assert seen == ["a h"]


def test_register_each_binds_the_plugin_name(pm: pluggy.PluginManager) -> None:
    class One:
        @hookimpl
        def bootbox_register_attributes(self, register: Callable[..., None]) -> None:
            register("rack")
            register("row")

    class Two:
        @hookimpl
        def bootbox_register_attributes(self, register: Callable[..., None]) -> None:
            register("pdu")

    pm.register(One(), name="one")
    pm.register(Two(), name="two")
    made: list[tuple[str, str]] = []
    calls.register_each(pm, "bootbox_register_attributes", lambda name, *, plugin: made.append((plugin, name)))
    assert made == [("two", "pdu"), ("one", "rack"), ("one", "row")]


def test_call_each_reports_a_failure_and_goes_on(pm: pluggy.PluginManager) -> None:
    seen: list[str] = []

    class Broken:
        @hookimpl
        def bootbox_host_booted(self) -> None:
            raise RuntimeError("boom")

    pm.register(_plugin("a", seen), name="a")
    pm.register(Broken(), name="broken")
    pm.register(_plugin("c", seen), name="c")
    failures: list[tuple[str, str]] = []
    calls.call_each(pm, HOOK, on_error=lambda plugin, exc: failures.append((plugin, str(exc))), host="h", event=None)
    assert seen == ["c h", "a h"]
    assert failures == [("broken", "boom")]


def test_no_implementation_means_no_plugin_call(pm: pluggy.PluginManager) -> None:
    assert calls.per_plugin(pm, HOOK) == []
    assert calls.plugin_blueprints(pm) == []
