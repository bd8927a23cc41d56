"""The hooks called one plugin at a time (bootbox.hooks.calls) still behave as pluggy documents.

For each of them: a new-style wrapper (``@hookimpl(wrapper=True)``) of another plugin runs
around the call, and an implementation that takes fewer arguments than the spec is called with
the ones it names. What a plugin registers or pushes still carries its plugin name.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import pytest

from bootbox import Host, PluginContext, ValidationError, hookimpl
from bootbox.errors import PluginError
from tests.hooks.conftest import BASE_URL, IP, MAC, Services, assert_wrapped, wait_for

Around = Callable[[str], object]


def _validate(spec: dict[str, Any]) -> dict[str, Any]:
    if "url" not in spec:
        raise ValidationError("spec.url", "required")
    return dict(spec)


# ------------------------------------------------------------------------------ start-up


def test_hook_bootbox_startup_runs_inside_a_wrapper(services: Services, around: Around, events: list[str]) -> None:
    contexts: list[PluginContext] = []

    class Keeper:
        @hookimpl
        def bootbox_startup(self, context: PluginContext) -> None:
            events.append("startup")
            contexts.append(context)

    service = services.start(keeper=Keeper(), around=around("bootbox_startup"))
    assert_wrapped(events, "startup")
    assert [c.name for c in contexts] == ["keeper"]  # its own context, named after it
    starters = [i for i in service.pm.hook.bootbox_startup.get_hookimpls() if not i.hookwrapper and not i.wrapper]
    assert "keeper" in {i.plugin_name for i in starters} and len(starters) >= 2  # the built-in rules plugin too
    assert events.count("before") == len(starters)  # the wrapper wraps every plugin's call, built-ins too


def test_hook_bootbox_startup_without_the_context(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_startup(self) -> None:
            events.append("started")

    services.start(bare=Bare())
    assert events == ["started"]


def test_hook_bootbox_shutdown_runs_inside_a_wrapper(services: Services, around: Around, events: list[str]) -> None:
    class Closer:
        @hookimpl
        def bootbox_shutdown(self) -> None:
            events.append("shutdown")

    service = services.start(closer=Closer(), around=around("bootbox_shutdown"))
    assert events == []
    closers = [i for i in service.pm.hook.bootbox_shutdown.get_hookimpls() if not i.hookwrapper and not i.wrapper]
    services.stop(service)
    assert_wrapped(events, "shutdown")
    assert events.count("before") == len(closers)  # one wrapped call per plugin (the shipped linux plugin's too)


def test_hook_bootbox_shutdown_failure_is_logged_and_the_others_still_run(
    services: Services, events: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The spec takes no argument, so "fewer arguments" is none: what matters is that each
    # plugin's shutdown runs on its own.
    class Broken:
        @hookimpl
        def bootbox_shutdown(self) -> None:
            events.append("broken")
            raise RuntimeError("cannot close")

    class Closer:
        @hookimpl
        def bootbox_shutdown(self) -> None:
            events.append("closer")

    service = services.start(closer=Closer(), broken=Broken())
    with caplog.at_level(logging.ERROR, logger="bootbox.service"):
        services.stop(service)
    assert events == ["broken", "closer"]  # pluggy's order: the last registered first
    assert "shutdown hook of broken failed" in caplog.text and "cannot close" in caplog.text


# ------------------------------------------------------------------------------ registrations


def test_hook_bootbox_register_profile_kinds_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    class Kinds:
        @hookimpl
        def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
            events.append("kinds")
            register("netbootxyz", validate=_validate, description="chain to netboot.xyz")

    service = services.start(kinds=Kinds(), around=around("bootbox_register_profile_kinds"))
    assert_wrapped(events, "kinds")
    assert events.count("before") == 2  # and around the linux plugin's own call
    assert service.kinds["netbootxyz"].plugin == "kinds"
    assert service.kinds["linux"].plugin != "kinds"


def test_hook_bootbox_register_profile_kinds_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_profile_kinds(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert events == ["asked"]
    assert set(service.kinds) == {"linux"}


def test_hook_bootbox_register_profile_kinds_twice_names_both_plugins(services: Services) -> None:
    class Again:
        @hookimpl
        def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
            register("linux", validate=_validate)

    # pluggy's order: the plugin registered last registers first, so the linux plugin is refused.
    with pytest.raises(PluginError, match=r"'linux' is registered twice \(by again and bootbox_linux\)"):
        services.start(again=Again())


def test_hook_bootbox_register_item_types_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    class Types:
        @hookimpl
        def bootbox_register_item_types(self, register: Callable[..., None]) -> None:
            events.append("types")
            register("vcd_org", description="the vCloud organisation")

    service = services.start(types=Types(), around=around("bootbox_register_item_types"))
    assert events == ["before", "types", "after"]
    assert service.item_types["vcd_org"] == "the vCloud organisation"
    assert service.rules.make_rule({"name": "r", "all_hosts": True, "items": {"vcd_org": "acme"}}).items == (
        ("vcd_org", "acme"),
    )


def test_hook_bootbox_register_item_types_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_item_types(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert events == ["asked"]
    assert {"image", "host_profile", "group", "loader", "secure_boot"} == set(service.item_types)


def test_hook_bootbox_register_attributes_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    class Attributes:
        @hookimpl
        def bootbox_register_attributes(self, register: Callable[..., None]) -> None:
            events.append("attributes")
            register("rack")

    service = services.start(attributes=Attributes(), around=around("bootbox_register_attributes"))
    assert events == ["before", "attributes", "after"]
    assert service.attributes["rack"] == "registered by attributes"  # the plugin's name, bound per plugin


def test_hook_bootbox_register_attributes_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_attributes(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert events == ["asked"]
    assert "rack" not in service.attributes and "vendor" in service.attributes


def test_hook_bootbox_register_answer_kinds_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    class Ignition:
        @hookimpl
        def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
            events.append("answer kinds")
            register("ignition", files=("config.ign",), description="Fedora CoreOS")

    service = services.start(ignition=Ignition(), around=around("bootbox_register_answer_kinds"))
    assert_wrapped(events, "answer kinds")
    kind = service.hostconfig.kinds["ignition"]
    assert (kind.files, kind.plugin) == (("config.ign",), "ignition")
    assert service.hostconfig.kinds["cloud-init"].plugin != "ignition"


def test_hook_bootbox_register_answer_kinds_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_answer_kinds(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert events == ["asked"]
    assert "ignition" not in service.hostconfig.kinds


def test_hook_bootbox_register_answer_inputs_runs_inside_a_wrapper(
    services: Services, around: Around, events: list[str]
) -> None:
    class Cmdb:
        @hookimpl
        def bootbox_register_answer_inputs(self, register: Callable[..., None]) -> None:
            events.append("inputs")
            register("cmdb_tag", required=False, default="none", applies_to=lambda host: True)

    service = services.start(cmdb=Cmdb(), around=around("bootbox_register_answer_inputs"))
    assert events == ["before", "inputs", "after"]
    assert service.hostconfig.inputs["cmdb_tag"].plugin == "cmdb"
    assert [spec.name for spec in service.hostconfig.schema(Host(mac=MAC))] == ["cmdb_tag"]


def test_hook_bootbox_register_answer_inputs_without_register(services: Services, events: list[str]) -> None:
    class Bare:
        @hookimpl
        def bootbox_register_answer_inputs(self) -> None:
            events.append("asked")

    service = services.start(bare=Bare())
    assert events == ["asked"]
    assert service.hostconfig.inputs == {}


# ------------------------------------------------------------------------------ after boot


def _report_in(service: Any, boot_id: str = "b1") -> None:
    service.host_script(MAC, {}, IP, BASE_URL)  # the host exists (it waits: no rule gives it an image)
    service.booted(MAC, {"boot_id": boot_id}, IP, service.hostconfig.up_token(MAC))  # this boot's up token


def test_hook_bootbox_host_booted_runs_inside_a_wrapper(services: Services, around: Around, events: list[str]) -> None:
    done = threading.Event()

    class Listener:
        @hookimpl
        def bootbox_host_booted(self, host: Host, event: Any) -> None:
            events.append(f"booted {host.mac} {event.data['boot_id']}")
            done.set()

    service = services.start(listener=Listener(), around=around("bootbox_host_booted"))
    _report_in(service)
    assert done.wait(10)
    wait_for(lambda: events[-1:] == ["after"])
    assert events == ["before", f"booted {MAC} b1", "after"]


def test_hook_bootbox_host_booted_with_only_the_event_and_a_failing_neighbour(
    services: Services, events: list[str]
) -> None:
    done = threading.Event()

    class Listener:
        @hookimpl
        def bootbox_host_booted(self, event: Any) -> None:
            events.append(f"booted {event.data['boot_id']}")
            done.set()

    class Broken:
        @hookimpl(tryfirst=True)
        def bootbox_host_booted(self, host: Host) -> None:
            raise RuntimeError("no route to the CMDB")

    service = services.start(listener=Listener(), broken=Broken())
    _report_in(service, "b9")
    assert done.wait(10)
    assert events == ["booted b9"]
    wait_for(lambda: any("after-boot hook of broken failed" in e.message for e in service.host_events(MAC)))


def test_hook_bootbox_host_up_runs_inside_a_wrapper(services: Services, events: list[str]) -> None:
    class Pusher:
        @hookimpl
        def bootbox_host_up(self, host: Host, event: Any, answers: Any, timeout: float) -> str:
            events.append(f"push {event.data['boot_id']} within {timeout:g} s")
            return "registered"

    class Shouting:
        """A wrapper that sees (and may change) what each plugin's push returned."""

        @hookimpl(wrapper=True)
        def bootbox_host_up(self) -> Any:
            events.append("before")
            results = yield
            events.append("after")
            return [str(result).upper() for result in results]

    service = services.start(pusher=Pusher(), shouting=Shouting())
    _report_in(service)
    wait_for(lambda: service.host(MAC).state == "configured")
    assert events == ["before", "push b1 within 30 s", "after"]
    pushed = service.host(MAC).pushes
    assert set(pushed) == {"pusher"}  # the wrapper is no push of its own
    assert (pushed["pusher"]["result"], pushed["pusher"]["message"]) == ("ok", "REGISTERED")


def test_hook_bootbox_host_up_with_only_the_host_each_plugin_its_own_push(
    services: Services, events: list[str]
) -> None:
    attempts: list[int] = []

    class Monitor:
        @hookimpl
        def bootbox_host_up(self, host: Host) -> str:
            return f"watching {host.mac}"

    class Flaky:
        @hookimpl
        def bootbox_host_up(self, timeout: float) -> str | None:
            attempts.append(1)
            if len(attempts) < 2:
                raise RuntimeError("busy")
            return None  # nothing to push after all

    service = services.start(monitor=Monitor(), flaky=Flaky())
    _report_in(service)
    wait_for(lambda: service.host(MAC).state == "configured")
    pushed = service.host(MAC).pushes
    assert pushed["monitor"]["message"] == f"watching {MAC}" and pushed["monitor"]["attempts"] == 1
    assert "flaky" not in pushed and len(attempts) == 2  # retried on its own, then had nothing to push
