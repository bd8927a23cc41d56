"""A host's state after its report-in, whatever order the records of its boot steps arrive in.

The TFTP server hands a transfer's record to the service when the transfer ends on its loop, which
under a storm can be after the host has fetched its kernel and reported in (seen in the 1,000-host
bench as hosts left ``booting`` with their ``booted`` event recorded). A late record of the boot
that reported must leave ``up``/``configured`` alone; the first step of a *new* boot (a transfer
that began after the report-in) moves the host to ``booting`` again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import bootbox_linux
import pytest

from bootbox import BootContext, Host, Profile, hookimpl
from bootbox.hooks.manager import make_plugin_manager
from bootbox.model import EventKind, HostState, Machine
from bootbox.net.tftp.server import TftpServer, TransferRecord, open_under
from bootbox.service.bootservice import BootService
from bootbox.service.hostindex import HostIndex
from bootbox.service.identity import read_arp
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings
from tests.net.test_tftp import RawClient, wait_for

MAC = "52:54:00:b5:00:01"
IP = "198.18.1.10"
BASE_URL = "http://198.18.0.1:8080"


class OneKind:
    """Every host boots profile ``p`` of kind ``one``: a script and a kernel."""

    def __init__(self, kernel: Path) -> None:
        self.kernel = kernel

    @hookimpl
    def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
        register("one", validate=dict)

    @hookimpl
    def bootbox_select_profile(self, host: Host) -> str:
        return "p"

    @hookimpl
    def bootbox_boot_script(
        self, host: Host, profile: Profile, boot: BootContext
    ) -> str | None:
        return (
            f"#!ipxe\nkernel {boot.asset_url('vmlinuz')}\nboot\n"
            if profile.kind == "one"
            else None
        )

    @hookimpl
    def bootbox_profile_asset(self, profile: Profile, name: str) -> Path | None:
        return self.kernel if profile.kind == "one" and name == "vmlinuz" else None


@pytest.fixture
def service(tmp_path: Path) -> Iterator[BootService]:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\x7fkernel")
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
    pm.register(OneKind(kernel), name="one")
    journal = Journal(None)
    journal.start()
    svc = BootService(test_settings(tmp_path), MemoryStore(), journal, pm)
    svc.start()
    svc.put_profile(Profile(name="p", kind="one"))
    try:
        yield svc
    finally:
        svc.close()
        journal.close()


def _transfer(name: str, began: float) -> TransferRecord:
    """The record of a finished loader transfer from the host's address that began at ``began``."""
    return TransferRecord(IP, 40000, name, 4096, 1432, 1, time.time() - began, True, "")


def _boot_and_report(service: BootService) -> float:
    """The host's script, kernel and report-in; returns when its loader transfer began (before all that)."""
    loader_began = time.time()
    assert service.host_script(MAC, {}, IP, BASE_URL).startswith("#!ipxe")
    assert service.host(MAC).state == HostState.BOOTING
    service.host_asset(MAC, "vmlinuz", IP)
    service.booted(MAC, {"boot_id": "b1"}, IP, service.hostconfig.up_token(MAC))
    assert service.host(MAC).state == HostState.CONFIGURED  # no plugin pushes anything
    return loader_began


@pytest.mark.parametrize("order", ["tftp-then-http", "http-then-tftp"])
def test_late_records_of_the_boot_that_reported_leave_its_state(
    service: BootService, order: str
) -> None:
    loader_began = _boot_and_report(service)
    late = {
        "tftp": lambda: service.tftp_done(_transfer("undionly.kpxe", loader_began)),
        "http": lambda: (
            service.loader_path("snponly.efi", IP),
            service.host_asset(MAC, "vmlinuz", IP),
        ),
    }
    for step in order.split("-then-"):
        late[step]()
        assert service.host(MAC).state == HostState.CONFIGURED, (
            f"after the late {step} record"
        )
    kinds = [e.kind for e in service.host_events(MAC)]
    assert (
        str(EventKind.TFTP_SENT) in kinds
    )  # the late transfer is still on the timeline


def _never_ran(service: BootService) -> list[str]:
    """The host's "loader downloaded but never ran" events after its next PXE DISCOVER."""
    service.decide(
        Machine(
            mac=MAC, arch=0, vendor_class="PXEClient:Arch:00000", server_ip="198.18.0.1"
        )
    )
    return [e.message for e in service.host_events(MAC) if "never ran" in e.message]


def test_a_late_loader_record_does_not_look_like_a_loader_that_never_ran(
    service: BootService,
) -> None:
    """The firmware's "downloaded but never ran" check must not be armed by the late record: the
    loader did run (it asked for the script), and the host's next boot is no Secure Boot refusal."""
    loader_began = _boot_and_report(service)
    service.tftp_done(_transfer("undionly.kpxe", loader_began))
    assert _never_ran(service) == []


def test_a_new_boots_first_transfer_moves_the_host_to_booting(
    service: BootService,
) -> None:
    _boot_and_report(service)
    service.tftp_done(
        _transfer("undionly.kpxe", time.time())
    )  # began after the report-in: the host rebooted
    assert service.host(MAC).state == HostState.BOOTING
    assert (
        len(_never_ran(service)) == 1
    )  # this loader has not asked for anything yet: armed as before


# ------------------------------------------------------------------ the index the boot path reads


def test_boot_path_reads_of_the_index_do_not_wait_for_a_writer() -> None:
    """A host's reads (by MAC, by address) answer while another host's update holds the index:
    the boot path reads several times per request, and queueing each read behind any writer made
    storm requests wait on the lock. Run in a thread so a regression fails instead of hanging."""
    index = HostIndex(
        [Host(mac=MAC, attrs={"ipv4": IP}), Host(mac="52:54:00:b5:00:02")]
    )
    seen: list[object] = []

    def change(host: Host | None) -> Host:  # runs with the index's lock held
        reader = threading.Thread(
            target=lambda: seen.extend([index.get(MAC), index.mac_for_ip(IP)])
        )
        reader.start()
        reader.join(timeout=10)
        assert host is not None
        return replace(host, attrs={"ipv4": "198.18.1.11"})

    index.update("52:54:00:b5:00:02", change)
    assert seen == [Host(mac=MAC, attrs={"ipv4": IP}), MAC]


def test_an_address_a_host_keeps_stays_mapped_through_its_updates() -> None:
    index = HostIndex([Host(mac=MAC, attrs={"ipv4": IP})])
    index.update(
        MAC,
        lambda h: replace(h or Host(mac=MAC), attrs={"ipv4": IP, "ipv6": "fd42::5"}),
    )
    assert (index.mac_for_ip(IP), index.mac_for_ip("fd42::5")) == (MAC, MAC)
    index.update(
        MAC, lambda h: replace(h or Host(mac=MAC), attrs={"ipv4": "198.18.1.12"})
    )
    assert (
        index.mac_for_ip(IP),
        index.mac_for_ip("fd42::5"),
        index.mac_for_ip("198.18.1.12"),
    ) == (None, None, MAC)


def test_neighbour_entries_keep_only_well_formed_macs(tmp_path: Path) -> None:
    """The neighbour table's MAC check (re-read many times in a storm) accepts exactly six
    two-digit hex groups, in either case, and drops the all-zero placeholder."""
    rows = {
        "198.18.7.1": "52:54:00:AA:bb:0C",
        "198.18.7.2": "52:54:00:aa:bb",
        "198.18.7.3": "52:54:00:aa:bb:0c:1",
        "198.18.7.4": "52:54:00:aa:bb:0g",
        "198.18.7.5": "00:00:00:00:00:00",
        "198.18.7.6": "52:54:0:aa:bb:0cc",
    }
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        + "".join(f"{ip} 0x1 0x2 {mac} * br0\n" for ip, mac in rows.items())
    )
    assert read_arp(arp) == {"198.18.7.1": "52:54:00:aa:bb:0c"}


# ------------------------------------------------------------------ one log line per step


@pytest.mark.parametrize("recorded", [True, False], ids=["with-on_transfer", "alone"])
def test_a_finished_transfer_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recorded: bool
) -> None:
    """With an ``on_transfer`` callback the service records the transfer and logs that (one
    line, as for a DHCP answer); a TFTP server on its own still logs it at info."""
    (tmp_path / "undionly.kpxe").write_bytes(os.urandom(3000))
    records: list[TransferRecord] = []
    server = TftpServer(open_file=open_under(tmp_path), on_transfer=records.append if recorded else None,
                        bind_address="127.0.0.1", port=0)  # fmt: skip
    server.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger="bootbox.tftp"),
            RawClient(server.port) as client,
        ):
            data, _, _ = client.download("undionly.kpxe")
            assert data == (tmp_path / "undionly.kpxe").read_bytes()
            if recorded:
                wait_for(lambda: len(records) == 1)
            else:
                wait_for(
                    lambda: any(" sent " in r.getMessage() for r in caplog.records)
                )
    finally:
        server.stop()
    info = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bootbox.tftp" and r.levelno >= logging.INFO
    ]
    assert len([m for m in info if " sent 'undionly.kpxe'" in m]) == (
        0 if recorded else 1
    )
