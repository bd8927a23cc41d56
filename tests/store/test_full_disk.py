"""Honest accounting on a real full file system (a small tmpfs): every event and host is either
in the file and counted written, or counted dropped / kept to retry; writes resume by themselves."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from bootbox.model import BootEvent, Host
from bootbox.service.hostindex import HostIndex, HostPersister
from bootbox.store.hostlog import HostLog


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards."""
    root = tmp_path / "fs"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)]).returncode:
        from tests.support.lab_fixtures import lab_unavailable

        lab_unavailable("cannot mount a tmpfs (needs root)")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_the_journal_counts_what_a_full_disk_refused_and_resumes(tiny_fs: Path, caplog) -> None:
    from bootbox.store.journal import Journal

    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (200 * 1024))
    journal = Journal(tiny_fs / "events.jsonl", max_bytes=10 * 2**20)
    journal.start()
    try:
        with caplog.at_level(logging.WARNING):
            for round_ in range(40):
                for n in range(25):
                    journal.append(BootEvent(mac="52:54:00:00:00:01", kind="dhcp", message=f"r{round_} n{n} " + "x" * 80))
                try:
                    journal.flush()
                except Exception:
                    pass  # flush reports the loss; the counters say how much
        stats = journal.stats
        lines = (tiny_fs / "events.jsonl").read_bytes().count(b"\n")
        assert stats["dropped"] > 0 and stats["written"] == lines, (stats, lines)
        assert stats["written"] + stats["dropped"] == stats["appended"]
        assert not journal.disk.ok and journal.disk.snapshot()["disk_full"]
        failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(failures) == 1  # once per interval, not once per batch
        filler.unlink()
        journal.append(BootEvent(mac="52:54:00:00:00:01", kind="dhcp", message="after"))
        journal.flush()
        assert journal.disk.ok
        assert (tiny_fs / "events.jsonl").read_bytes().endswith(b"\n") and b'"after"' in (tiny_fs / "events.jsonl").read_bytes()
    finally:
        journal.close()


def test_the_host_log_keeps_changes_in_memory_on_a_full_disk_and_writes_them_later(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (250 * 1024))
    log = HostLog(tiny_fs / "hosts.jsonl")
    index = HostIndex()
    persister = HostPersister(index, log)
    macs = [f"52:54:00:00:{n // 256:02x}:{n % 256:02x}" for n in range(200)]
    for mac in macs:
        index.update(mac, lambda h, m=mac: Host(mac=m, note="x" * 200))
    with pytest.raises(OSError):
        persister.flush()
    assert not log.disk.ok
    filler.unlink()
    persister.flush()  # the same changes, retried
    assert log.disk.ok
    assert len(HostLog(tiny_fs / "hosts.jsonl").load(parse=Host.from_dict)) == len(macs)
