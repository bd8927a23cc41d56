"""The loader choice per architecture, firmware mode, group and host; GRUB's generated files.

Pure parts (policy, grubcfg, config) at their seam; the service glue (bootbox.service.firmware) through
a real BootService on the memory store, with TFTP opens and the GRUB routes as clients see them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bootbox_linux
from bootbox.core.render import grub as grubcfg
from bootbox.config import load_settings
from bootbox.errors import ConfigError, NotFound
from bootbox.store.journal import Journal
from bootbox.model import Machine, Profile
from bootbox.hooks.manager import make_plugin_manager
from bootbox.core.policy import (
    BootChoice,
    Loader,
    LoaderKind,
    LoaderTables,
    NoLoader,
    choice_from,
    choose,
    http_base_url,
    merge_choices,
    select_loader,
)
from bootbox.service.bootservice import BootService
from bootbox.service.identity import NeighbourTable
from bootbox.store.memory import MemoryStore
from bootbox.web import create_app
from tests.conftest import test_settings

BASE = "http://198.18.0.1:8080"
TABLES = LoaderTables(
    ipxe={"0": "undionly.kpxe", "7": "snponly.efi", "16": "snponly.efi"},
    grub={"7": "grubnetx64.efi", "11": "grubnetaa64.efi", "19": "grubnetaa64.efi"},
    secure_boot={"7": "shimx64.efi", "11": "shimaa64.efi"},
)
MAC = "52:54:00:00:07:01"


def _machine(arch: int | None, vendor: str = "PXEClient", **kw: Any) -> Machine:
    return Machine(mac=MAC, arch=arch, vendor_class=vendor, server_ip="198.18.0.1", **kw)


# ------------------------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("arch", "vendor", "choice", "boot_file"),
    [
        (0, "PXEClient:Arch:00000", BootChoice(), "undionly.kpxe"),
        (7, "PXEClient:Arch:00007", BootChoice(), "snponly.efi"),
        (11, "PXEClient:Arch:00011", BootChoice(), "grubnetaa64.efi"),  # no arm64 iPXE: GRUB
        (19, "HTTPClient:Arch:00019", BootChoice(), BASE + "/boot/loaders/grubnetaa64.efi"),
        (16, "HTTPClient:Arch:00016", BootChoice(), BASE + "/boot/loaders/snponly.efi"),
        (7, "PXEClient:Arch:00007", BootChoice(loader="grub"), "grubnetx64.efi"),
        (7, "PXEClient:Arch:00007", BootChoice(secure_boot=True), "shimx64.efi"),
        (11, "PXEClient:Arch:00011", BootChoice(secure_boot=True), "shimaa64.efi"),
        (7, "PXEClient:Arch:00007", BootChoice(loader="grub", secure_boot=True), "shimx64.efi"),
    ],
)
def test_loader_by_architecture_mode_and_choice(arch: int, vendor: str, choice: BootChoice, boot_file: str) -> None:
    spec = choose(_machine(arch, vendor), loaders=TABLES, next_server="198.18.0.1", base_url=BASE, choice=choice)
    assert not isinstance(spec, NoLoader)
    assert spec.boot_file == boot_file
    assert spec.vendor_class == ("HTTPClient" if vendor.startswith("HTTP") else "PXEClient")


def test_ipxe_gets_its_script_whatever_the_host_chose() -> None:
    spec = choose(_machine(7, is_ipxe=True), loaders=TABLES, next_server="198.18.0.1", base_url=BASE,
                  choice=BootChoice(secure_boot=True))
    assert not isinstance(spec, NoLoader) and spec.boot_file == BASE + "/boot.ipxe"


@pytest.mark.parametrize(
    ("arch", "choice", "why"),
    [
        (6, BootChoice(), "no loader for client architecture 6"),
        (0, BootChoice(secure_boot=True), "has no shim for architecture 0"),
        (0, BootChoice(loader="grub"), "[dhcp.grub_loaders] has none for architecture 0"),
        (7, BootChoice(loader="ipxe", secure_boot=True), "Debian's iPXE is unsigned"),
        (7, BootChoice(loader="pxelinux"), "unknown loader kind 'pxelinux'"),
    ],
)
def test_no_loader_says_why(arch: int, choice: BootChoice, why: str) -> None:
    result = select_loader(arch, TABLES, choice)
    assert isinstance(result, NoLoader) and why in result.reason


def test_a_bare_mapping_is_the_ipxe_table() -> None:
    spec = choose(_machine(11), loaders={"7": "snponly.efi"}, next_server="", base_url=BASE)
    assert isinstance(spec, NoLoader)
    assert select_loader(None, LoaderTables(ipxe={"0": "undionly.kpxe"})) == Loader(LoaderKind.IPXE, "undionly.kpxe")


def test_host_rule_items_override_the_group_table() -> None:
    groups = {"rack7": {"secure_boot": True}, "grubby": {"loader": "grub"}}
    assert choice_from({"group": "rack7"}, groups) == BootChoice("", True, "group rack7")
    assert choice_from({"group": "rack7", "secure_boot": "off"}, groups).secure_boot is False
    assert choice_from({"group": "grubby", "loader": "ipxe"}, groups).loader == "ipxe"
    assert choice_from({"group": "unknown", "secure_boot": "yes"}, groups) == BootChoice("", True, "its rule items")
    assert choice_from({"secure_boot": "maybe"}, groups).secure_boot is None
    assert merge_choices(None, BootChoice("grub")).loader == LoaderKind.GRUB


def test_ipv6_base_url_is_bracketed() -> None:
    machine = Machine(mac=MAC, server_ip="fd42:b007::1")
    assert http_base_url(machine, server_address="", http_port=8080) == "http://[fd42:b007::1]:8080"


# ------------------------------------------------------------------------------------ grubcfg


def test_main_grub_cfg_dispatches_on_the_mac_grub_booted_from() -> None:
    text = grubcfg.main_config(BASE)
    assert 'configfile "${prefix}/hosts/${net_default_mac}.cfg"' in text
    assert text.splitlines()[-1] == 'configfile "${prefix}/grub.cfg"'  # retries if the host file fails


def test_host_config_paths_accept_any_mac_spelling_and_nothing_else() -> None:
    assert grubcfg.host_config_mac("/grub/hosts/52:54:00:00:07:01.cfg") == MAC
    assert grubcfg.host_config_mac("grub/hosts/52-54-00-00-07-01.cfg") == MAC
    assert grubcfg.host_config_mac("grub/hosts/not-a-mac.cfg") is None
    assert grubcfg.host_config_mac("grub/hosts/52:54:00:00:07:01.txt") is None
    assert grubcfg.is_main_config("/grub/grub.cfg") and not grubcfg.is_main_config("grub.cfg")


def test_grub_words_are_quoted_so_nothing_expands() -> None:
    assert grubcfg.grub_quote("it's $x*") == "'it'\\''s $x*'"
    text = grubcfg.linux_config("t", "/k", ["/i"], ["bootbox.callback=http://h/a?b=$c"])
    assert "linux '/k' 'bootbox.callback=http://h/a?b=$c'\ninitrd '/i'\nboot\n" in text


# ------------------------------------------------------------------------------------ config


def test_group_tables_are_validated() -> None:
    settings = load_settings(env={}, overrides={"groups": {"r": {"secure_boot": "on", "loader": "grub"}}})
    assert settings.groups == {"r": {"secure_boot": True, "loader": "grub"}}
    with pytest.raises(ConfigError, match="groups.r.loader"):
        load_settings(env={}, overrides={"groups": {"r": {"loader": "pxelinux"}}})
    with pytest.raises(ConfigError, match="groups.r.colour"):
        load_settings(env={}, overrides={"groups": {"r": {"colour": "red"}}})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dhcp": {"grub_loaders": {"x86": "grub.efi"}}}, "dhcp.grub_loaders.x86"),
        ({"dhcp": {"loader_files": {"sub/dir.efi": "/x"}}}, "dhcp.loader_files.sub/dir.efi"),
        ({"dhcp6": {"enabled": True}}, "dhcp6.interface"),
        ({"dhcp6": {"address_pool": "fd42::/125"}}, "dhcp6.address_pool"),
        ({"dhcp6": {"server_address": "198.18.0.1"}}, "dhcp6.server_address"),
    ],
)
def test_bad_firmware_settings_name_their_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(env={}, overrides=overrides)


# ------------------------------------------------------------------------------------ service


@pytest.fixture
def firmware_service(tmp_path: Path) -> Any:
    """A service whose GRUB loaders are files in tmp_path, in full mode or proxy mode."""
    signed = tmp_path / "signed"
    signed.mkdir()
    for name in ("shimx64.efi.signed", "grubnetx64.efi.signed"):
        (signed / name).write_bytes(name.encode() * 100)
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel" * 1000)
    initrd.write_bytes(b"initrd" * 1000)
    services: list[BootService] = []

    def make(**overrides: Any) -> BootService:
        grub = str(signed / "grubnetx64.efi.signed")
        files = {"shimx64.efi": str(signed / "shimx64.efi.signed"), "grubx64.efi": grub, "grubnetx64.efi": grub}
        dhcp = {"loader_files": files, **overrides.pop("dhcp", {})}
        settings = test_settings(tmp_path / f"s{len(services)}", server_address="198.18.0.1", dhcp=dhcp, **overrides)
        pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
        journal = Journal(None)
        journal.start()
        service = BootService(settings, MemoryStore(), journal, pm)
        service.start()
        service.put_profile(Profile("demo", "linux", {"kernel": str(kernel), "initrd": [str(initrd)],
                                                      "cmdline": "console=ttyS0 bootbox.callback={callback}"}))
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def _events(service: BootService, mac: str = MAC) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in service.host_events(mac)]


def test_a_secure_boot_group_gets_shim_before_its_first_boot(firmware_service: Any) -> None:
    service = firmware_service(groups={"signed": {"secure_boot": True}})
    service.rules.add(service.rules.make_rule({"name": "s", "patterns": [f"mac={MAC}"],
                                               "items": {"image": "demo", "group": "signed"}}))
    spec = service.decide(_machine(7, "PXEClient:Arch:00007:UNDI:003000"))
    assert spec is not None and spec.boot_file == "shimx64.efi" and "group signed" in spec.reason
    other = service.decide(Machine(mac="52:54:00:00:07:02", arch=7, vendor_class="PXEClient", server_ip="198.18.0.1"))
    assert other is not None and other.boot_file == "snponly.efi"


def test_grub_behind_a_proxy_is_warned_once_per_host(firmware_service: Any) -> None:
    service = firmware_service()
    service.rules.add(service.rules.make_rule({"name": "g", "patterns": [f"mac={MAC}"],
                                               "items": {"image": "demo", "loader": "grub"}}))
    for _ in range(2):
        assert service.decide(_machine(7)).boot_file == "grubnetx64.efi"  # type: ignore[union-attr]
    warnings = [m for k, m in _events(service) if k == "state"]
    assert len(warnings) == 1 and "next-server" in warnings[0]
    full = firmware_service(dhcp={"mode": "full", "interface": "eth9", "range_start": "198.18.0.100",
                                  "range_end": "198.18.0.110"})
    full.rules.add(full.rules.make_rule({"name": "g", "patterns": [f"mac={MAC}"],
                                         "items": {"image": "demo", "loader": "grub"}}))
    full.decide(_machine(7))
    assert [k for k, _ in _events(full)] == []


def test_an_architecture_without_a_loader_is_not_answered_and_says_why(firmware_service: Any) -> None:
    service = firmware_service()
    assert service.decide(_machine(10)) is None
    assert _events(service) == [("dhcp.ignored", "not answered: no loader for client architecture 10")]


def test_grub_reads_its_config_then_the_hosts_then_the_kernel_over_tftp(firmware_service: Any) -> None:
    service = firmware_service()
    service.rules.add(service.rules.make_rule({"name": "d", "all_hosts": True, "items": {"image": "demo"}}))
    client = ("198.18.0.100", 1234)
    service.identity.neighbours = NeighbourTable(read_v4=lambda: {"198.18.0.100": MAC})  # the host itself asks
    base = f"http://198.18.0.1:{service.settings.http.port}"  # no Host header over TFTP: server_address
    main = service.open_tftp("/grub/grub.cfg", client).read().decode()
    assert "${net_default_mac}" in main and base in main
    host_cfg = service.open_tftp(f"/grub/hosts/{MAC}.cfg", client).read().decode()
    machex = MAC.replace(":", "")
    assert f"linux '/boot/hosts/{machex}/assets/kernel' 'console=ttyS0'" in host_cfg
    assert f"'bootbox.callback={base}/api/v1/hosts/{MAC}/booted?token={service.hostconfig.up_token(MAC)}'" in host_cfg
    assert f"initrd '/boot/hosts/{machex}/assets/initrd-0'" in host_cfg
    assert service.open_tftp(f"boot/hosts/{machex}/assets/kernel", client).read() == b"kernel" * 1000
    assert service.open_tftp("grubx64.efi", client).read().startswith(b"grubnetx64.efi.signed")
    with pytest.raises(NotFound):
        service.open_tftp("boot/hosts/525400000799/assets/kernel", client)  # no profile: nothing served
    assert service.host(MAC).profile == "demo"
    assert [k for k, _ in _events(service)] == ["rules", "http.script"]


def test_an_unknown_host_gets_a_waiting_grub_config(firmware_service: Any) -> None:
    service = firmware_service()
    text = service.open_tftp(f"grub/hosts/{MAC}.cfg", ("198.18.0.100", 1)).read().decode()
    assert "no rule in the active rule set gives it an image profile" in text
    assert text.rstrip().endswith('configfile "${prefix}/hosts/${net_default_mac}.cfg"')
    assert service.host(MAC).state == "waiting"


def test_grub_files_over_http_and_loaders_by_configured_name(firmware_service: Any) -> None:
    service = firmware_service()
    service.rules.add(service.rules.make_rule({"name": "d", "all_hosts": True, "items": {"image": "demo"}}))
    client = create_app(service, token="t").test_client()
    assert "${net_default_mac}" in client.get("/grub/grub.cfg").text
    assert "linux '/boot/hosts/" in client.get(f"/grub/hosts/{MAC}.cfg").text
    head = client.head("/boot/loaders/shimx64.efi")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(b"shimx64.efi.signed" * 100))
    assert client.get("/grub/hosts/nonsense.cfg").status_code == 404


def test_a_loader_that_never_ran_is_on_the_timeline(firmware_service: Any) -> None:
    """Secure Boot firmware refusing iPXE: snponly.efi fetched, then the firmware DHCPs again."""
    service = firmware_service()
    service.decide(_machine(7, "PXEClient:Arch:00007"))
    service.firmware.loader_sent(MAC, "snponly.efi")
    service.decide(_machine(16, "HTTPClient:Arch:00016"))
    stalled = [m for k, m in _events(service) if k == "state"]
    assert len(stalled) == 1 and "snponly.efi was downloaded but never ran" in stalled[0]
    assert "secure_boot = on" in service.host(MAC).reason


def test_a_loader_that_ran_is_not_reported(firmware_service: Any) -> None:
    service = firmware_service()
    service.firmware.loader_sent(MAC, "snponly.efi")
    service.decide(_machine(7, is_ipxe=True))  # iPXE asking: the loader runs
    service.host_script(MAC, {}, "198.18.0.100", BASE)
    service.decide(_machine(7))  # a later reboot
    assert [k for k, _ in _events(service) if k == "state"] == []


def test_doctor_warns_about_a_secure_boot_group_behind_a_proxy(tmp_path: Path) -> None:
    from bootbox.doctor.checks import Status, check_secure_boot

    proxy = test_settings(tmp_path, groups={"signed": {"secure_boot": True}})
    warned = check_secure_boot(proxy, [], "198.18.0.1")
    assert warned.status is Status.WARN and "shimx64.efi (group signed)" in warned.summary
    assert "dhcp-boot=,,198.18.0.1" in warned.fix
    assert check_secure_boot(test_settings(tmp_path), [], "198.18.0.1").status is Status.SKIP
