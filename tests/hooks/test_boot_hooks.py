"""The hooks called whole (``pm.hook.X``), one test each at least: configure, the boot decision,
the files a host fetches, and its answer files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from bootbox import BootContext, Host, NotFound, PluginError, Profile, hookimpl
from bootbox.config import Settings
from tests.hooks.conftest import BASE_URL, IP, MAC, Services


class FakeKind:
    """A boot kind ``fake`` whose profile ``p`` every host boots: a script, a GRUB config, one file."""

    def __init__(self, kernel: Path) -> None:
        self.kernel = kernel

    @hookimpl
    def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
        register("fake", validate=dict)

    @hookimpl
    def bootbox_select_profile(self, host: Host) -> str:
        return "p"

    @hookimpl
    def bootbox_boot_script(self, host: Host, profile: Profile, boot: BootContext) -> str | None:
        if profile.kind != "fake":
            return None
        return f"#!ipxe\nkernel {boot.asset_url('kernel')}\nboot || chain {boot.script_url}\n"

    @hookimpl
    def bootbox_grub_config(self, profile: Profile, boot: BootContext) -> str | None:
        return f"linux {boot.asset_path('kernel')}\nboot\n" if profile.kind == "fake" else None

    @hookimpl
    def bootbox_profile_asset(self, profile: Profile, name: str) -> Path | None:
        return self.kernel if profile.kind == "fake" and name == "kernel" else None


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\x7fkernel")
    return path


def _booting(services: Services, kernel: Path, **plugins: object) -> Any:
    service = services.start(fake=FakeKind(kernel), **plugins)
    service.put_profile(Profile(name="p", kind="fake"))
    return service


def test_hook_bootbox_configure_gets_the_settings_first(services: Services, events: list[str]) -> None:
    seen: list[Settings] = []

    class Configured:
        @hookimpl
        def bootbox_configure(self, settings: Settings) -> None:
            seen.append(settings)
            events.append("configure")

        @hookimpl
        def bootbox_startup(self) -> None:
            events.append("startup")

    service = services.start(configured=Configured())
    assert seen == [service.settings]
    assert events == ["configure", "startup"]


def test_hook_bootbox_configure_can_refuse_to_start(services: Services) -> None:
    class Refusing:
        @hookimpl
        def bootbox_configure(self) -> None:
            raise PluginError("refusing: no licence server configured")

    with pytest.raises(PluginError, match="no licence server"):
        services.start(refusing=Refusing())


def test_hook_bootbox_host_attributes_are_merged_later_plugins_overriding(services: Services) -> None:
    class Dcim:
        @hookimpl
        def bootbox_host_attributes(self, params: Any) -> dict[str, str]:
            return {"rack": "r1", "row": params.get("serial", "?")}

    class Override:
        @hookimpl
        def bootbox_host_attributes(self, host: Host) -> dict[str, str] | None:
            return {"rack": "r12"} if host.mac == MAC else None

    service = services.start(dcim=Dcim(), override=Override())
    service.host_script(MAC, {"serial": "SN7"}, IP, BASE_URL)
    attrs = service.host(MAC).attrs
    assert (attrs["rack"], attrs["row"]) == ("r12", "SN7")


def test_hook_bootbox_select_profile_chooses_the_profile(services: Services, kernel: Path) -> None:
    service = _booting(services, kernel)
    service.host_script(MAC, {}, IP, BASE_URL)
    host = service.host(MAC)
    assert (host.profile, host.state) == ("p", "booting")


def test_hook_bootbox_select_profile_none_everywhere_means_waiting(services: Services) -> None:
    script = services.start().host_script(MAC, {}, IP, BASE_URL)
    assert "no rule in the active rule set gives it an image profile" in script


def test_hook_bootbox_boot_script_is_the_hosts_script(services: Services, kernel: Path) -> None:
    script = _booting(services, kernel).host_script(MAC, {}, IP, BASE_URL)
    here = f"{BASE_URL}/boot/hosts/{MAC.replace(':', '')}"
    assert script == f"#!ipxe\nkernel {here}/assets/kernel\nboot || chain {here}/script.ipxe\n"


def test_hook_bootbox_grub_config_for_grub_loaders(services: Services, kernel: Path) -> None:
    config = _booting(services, kernel).host_script(MAC, {}, IP, BASE_URL, loader="grub")
    assert config.startswith("linux ") and config.splitlines()[0].endswith("kernel")


def test_hook_bootbox_profile_asset_serves_the_profiles_own_files(services: Services, kernel: Path) -> None:
    service = _booting(services, kernel)
    service.host_script(MAC, {}, IP, BASE_URL)
    assert service.host_asset(MAC, "kernel", IP) == kernel
    with pytest.raises(NotFound, match="has no file 'initrd'"):
        service.host_asset(MAC, "initrd", IP)


def test_hook_bootbox_image_inject_last_registered_plugin_first_each_under_its_name(services: Services) -> None:
    class Agent:
        @hookimpl
        def bootbox_image_inject(self, host: Host | None) -> list[str]:
            return ["agent", "agent-conf"]

    class Monitoring:
        @hookimpl
        def bootbox_image_inject(self, image_kind: str, image_name: str, host: Host | None) -> list[str] | None:
            return ["/opt/monitor.deb"] if image_kind == "linux" and host is None else None

    service = services.start(agent=Agent(), monitoring=Monitoring())
    host, profile = Host(mac=MAC), Profile(name="p", kind="linux")
    assert service.image_packages(host, profile) == ["agent", "agent-conf"]
    assert service.image_packages(host, Profile(name="q", kind="esxi")) == ["agent", "agent-conf"]
    assert service.image_injections("linux", "debian-ssh") == [
        ("monitoring", "/opt/monitor.deb"), ("agent", "agent"), ("agent", "agent-conf")]


def test_hook_bootbox_render_answer_file_renders_the_kind_it_registered(services: Services) -> None:
    class Ignition:
        @hookimpl
        def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
            register("ignition", files=("config.ign",))

        @hookimpl
        def bootbox_render_answer_file(self, kind: str, env: Any) -> dict[str, str] | None:
            return {"config.ign": env.render("config.ign")} if kind == "ignition" else None

    service = services.start(ignition=Ignition())
    service.hostconfig.profiles.put({"name": "ign", "kind": "ignition",
                                     "templates": {"config.ign": '{"host": "{{ host.mac }}"}'}},
                                    replace_existing=False)
    host = Host(mac=MAC, associations={"host_profile": "ign"})
    profile, files = service.hostconfig.render(host, base_url=BASE_URL)
    assert profile.name == "ign"
    assert files == {"config.ign": f'{{"host": "{MAC}"}}'}
