"""The service's parts stand on their own: each is built from the few collaborators it uses (plain
objects and callables here), never from a BootService, and none imports the service module."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

import pytest

from bootbox.config import Settings
from bootbox.errors import Conflict, NotFound, Unauthorized, ValidationError
from bootbox.hooks.manager import make_plugin_manager
from bootbox.model import BootEvent, EventKind, Host, HostState, Machine, Profile
from bootbox.service.afterboot import AfterBoot
from bootbox.service.firmware import FirmwareBoot
from bootbox.service.hostindex import HostIndex
from bootbox.service.profiles import PROFILES_TABLE, ProfileRepository
from bootbox.service.registries import ProfileKind
from bootbox.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:aa:dd:01"
PARTS = ["service/afterboot.py", "service/firmware.py", "service/answers/files.py", "service/profiles.py",
         "service/registries.py", "service/rulebook.py", "service/collaborators.py"]


class Timeline:
    """A ``record`` that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[BootEvent] = []

    def __call__(self, mac: str, kind: str, message: str, /, **data: Any) -> BootEvent:
        event = BootEvent(mac=mac, kind=str(kind), message=message, data=data)
        self.events.append(event)
        return event


@pytest.mark.parametrize("part", PARTS)
def test_no_part_imports_the_service(part: str) -> None:
    tree = ast.parse((ROOT / "bootbox" / part).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [n for n in names if n.startswith("bootbox.service.bootservice")]


# ------------------------------------------------------------------ firmware


def test_firmware_serves_grub_files_through_the_operations_it_is_given(settings: Settings, tmp_path: Path) -> None:
    """The TFTP path of a GRUB host config and a profile file, with the service's two operations
    replaced by plain functions: the part needs nothing else of the service."""
    asked: list[tuple[str, ...]] = []
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k" * 10)

    def host_script(mac: str, params: Mapping[str, str], client_ip: str, base_url: str, *, loader: str = "ipxe") -> str:
        asked.append(("script", mac, loader, base_url))
        return "set default=0\n"

    def host_asset(mac: str, name: str, client_ip: str, *, record: bool = True) -> Path:
        asked.append(("asset", mac, name, str(record)))
        return kernel

    firmware = FirmwareBoot(settings, hosts=HostIndex(), decide=lambda attrs: {}, record=Timeline(),
                            host_script=host_script, host_asset=host_asset)
    client = ("127.0.0.1", 1234)
    assert firmware.open_tftp(f"grub/hosts/{MAC}.cfg", client).read() == b"set default=0\n"
    assert firmware.open_tftp(f"boot/hosts/{MAC.replace(':', '')}/assets/kernel", client).read() == b"k" * 10
    assert [a[:3] for a in asked] == [("script", MAC, "grub"), ("asset", MAC, "kernel")]
    assert asked[1][3] == "False"  # TFTP reads of profile files are recorded by tftp_done, not here


def test_firmware_records_why_a_client_is_not_answered(settings: Settings) -> None:
    timeline = Timeline()
    firmware = FirmwareBoot(settings, hosts=HostIndex(), decide=lambda attrs: {}, record=timeline,
                            host_script=lambda *a, **k: "", host_asset=lambda *a, **k: Path())
    assert firmware.decide(Machine(mac=MAC, arch=99, vendor_class="PXEClient", server_ip="127.0.0.1")) is None
    assert [e.kind for e in timeline.events] == [EventKind.DHCP_IGNORED]


# ------------------------------------------------------------------ after boot


def _after_boot(settings: Settings, hosts: HostIndex, timeline: Timeline) -> AfterBoot:
    return AfterBoot(settings.push, hosts=hosts, record=timeline, pm=make_plugin_manager(load_entrypoints=False),
                     up_token_ok=lambda mac, token: token == "good", answers=lambda host: {})


def test_after_boot_checks_the_up_token_and_moves_the_host(settings: Settings) -> None:
    other = "52:54:00:aa:dd:02"
    hosts = HostIndex([Host(mac=MAC, state=HostState.BOOTING), Host(mac=other, state=HostState.BOOTING)])
    timeline = Timeline()
    after_boot = _after_boot(settings, hosts, timeline)
    try:
        with pytest.raises(NotFound):
            after_boot.report("52:54:00:aa:dd:99", {}, "198.18.0.9", token="good")
        with pytest.raises(Unauthorized):
            after_boot.report(MAC, {"boot_id": "b1"}, "198.18.0.9", token="bad")
        host, status = after_boot.report(MAC, {"boot_id": "b1"}, "198.18.0.9", token="good")
        assert (host.state, status, host.boot_id) == (HostState.CONFIGURED, "done", "b1")  # no plugin pushes
        assert after_boot.push("52-54-00-AA-DD-01").state == HostState.CONFIGURED  # any MAC spelling
        with pytest.raises(Conflict):
            after_boot.push(other)  # it has not reported in
        assert [e.kind for e in timeline.events] == [EventKind.BOOTED, EventKind.STATE]
    finally:
        after_boot.close()


# ------------------------------------------------------------------ profiles


def _validate(spec: Mapping[str, Any]) -> dict[str, Any]:
    if "kernel" not in spec:
        raise ValidationError("spec.kernel", "required")
    return {**spec, "checked": True}


KINDS = {"linux": ProfileKind("linux", _validate, "a kernel", plugin="test")}


def test_profiles_are_validated_by_their_kind_and_written_through() -> None:
    store = MemoryStore()
    repo = ProfileRepository(store, kinds=lambda: KINDS)
    saved = repo.put(Profile("demo", "linux", {"kernel": "/k"}))
    assert saved.spec == {"kernel": "/k", "checked": True}
    assert store.get(PROFILES_TABLE, "demo")["spec"]["checked"] is True  # before put returned
    again = ProfileRepository(store, kinds=lambda: KINDS)  # a restart reads the store
    assert [p.name for p in again.all()] == ["demo"] and len(again) == 1


def test_profile_writes_refuse_bad_names_kinds_and_duplicates() -> None:
    repo = ProfileRepository(MemoryStore(), kinds=lambda: KINDS)
    for name in ("", "a b", "x" * 65, "../etc"):
        with pytest.raises(ValidationError) as bad:
            repo.put(Profile(name, "linux", {"kernel": "/k"}))
        assert bad.value.field == "name"
    with pytest.raises(ValidationError, match="known kinds: linux"):
        repo.put(Profile("demo", "esxi", {}))
    with pytest.raises(ValidationError):
        repo.put(Profile("demo", "linux", {}))
    repo.put(Profile("demo", "linux", {"kernel": "/k"}))
    with pytest.raises(Conflict):
        repo.put(Profile("demo", "linux", {"kernel": "/other"}))
    assert repo.put(Profile("demo", "linux", {"kernel": "/other"}), replace_existing=True).spec["kernel"] == "/other"
    repo.delete("demo")
    assert repo.get_or_none("demo") is None
    with pytest.raises(NotFound):
        repo.get("demo")
    with pytest.raises(NotFound):
        repo.delete("demo")
