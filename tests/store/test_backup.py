"""bootbox.store.backup: what a backup holds, --no-images, and a restore that checks before it writes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bootbox.errors import BootboxError, StoreLocked
from bootbox.store.backup import backup, restore
from bootbox.store.lock import StateDirLock


def _state(root: Path) -> Path:
    state = root / "state"
    (state / "plugins" / "esxi" / "blobs" / "ab").mkdir(parents=True)
    (state / "plugins" / "esxi" / "blobs" / "ab" / "abcd").write_bytes(b"payload" * 1000)
    (state / "plugins" / "esxi" / "exports").mkdir()
    (state / "plugins" / "esxi" / "exports" / "x.json").write_text("{}")
    (state / "plugins" / "linux" / "images" / "objects" / ("d" * 64)).mkdir(parents=True)  # built Linux images
    (state / "plugins" / "linux" / "images" / "objects" / ("d" * 64) / "filesystem.squashfs").write_bytes(b"root")
    (state / "plugins" / "linux" / "images.json").write_text("{}")  # a file named like the folder is kept
    (state / "bootbox.json").write_text(json.dumps({"profiles": {"base": {"name": "base"}},
                                                    "p_esxi_depot_profiles": {"ESXi-8.0U2-standard": {}}}))
    (state / "hosts.jsonl").write_bytes(b'{"key":"aa","host":{"mac":"a"}}\n{"key":"bb","ho')  # a torn tail
    (state / "secrets.key").write_text("k" * 44 + "\n")
    (state / "api-token").write_text("token\n")
    return state


def test_no_images_leaves_payloads_out_and_restore_names_them(tmp_path: Path) -> None:
    state = _state(tmp_path)
    archive = tmp_path / "b.tgz"
    report = backup(archive, state_dir=state, config_path=None, key_path=state / "secrets.key", images=False)
    assert report.images_to_reimport == ["ESXi image profile ESXi-8.0U2-standard"]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names[0] == "README.txt" and b"SECRETS KEY" in tar.extractfile("README.txt").read()  # type: ignore[union-attr]
        assert tar.extractfile("state/hosts.jsonl").read() == b'{"key":"aa","host":{"mac":"a"}}\n'  # type: ignore[union-attr]
    assert "keys/secrets.key" in names and "state/plugins/esxi/exports/x.json" in names
    assert not any("blobs" in name for name in names)
    assert not any("plugins/linux/images/" in name for name in names), names  # --no-images: no built Linux image
    assert "state/plugins/linux/images.json" in names
    target = tmp_path / "new"
    done = restore(archive, state_dir=target, key_path=target / "secrets.key")
    assert "ESXi image profile ESXi-8.0U2-standard" in " ".join(done.notes)
    assert (target / "secrets.key").read_text() == (state / "secrets.key").read_text()
    assert (target / "secrets.key").stat().st_mode & 0o777 == 0o600


def test_a_full_backup_keeps_built_linux_images(tmp_path: Path) -> None:
    state = _state(tmp_path)
    archive = tmp_path / "b.tgz"
    backup(archive, state_dir=state, config_path=None, key_path=state / "secrets.key", images=True)
    with tarfile.open(archive) as tar:
        assert f"state/plugins/linux/images/objects/{'d' * 64}/filesystem.squashfs" in tar.getnames()


def test_pending_webhook_deliveries_and_the_outage_queue_come_back(tmp_path: Path) -> None:
    """What was acknowledged but not yet sent on (webhook deliveries, boot-path writes queued
    while PostgreSQL was away) is state too: a restore must not drop it."""
    state = _state(tmp_path)
    (state / "webhooks" / "ci").mkdir(parents=True)
    (state / "webhooks" / "ci" / "queue.jsonl").write_bytes(b'{"event": 7}\n')
    (state / "webhooks" / "ci" / "deliveries.jsonl").write_bytes(b'{"delivery": "d1"}\n')
    (state / "outbox.jsonl").write_bytes(b'{"op": "host"}\n{"op": "ev')  # a torn tail is left out
    archive = tmp_path / "b.tgz"
    backup(archive, state_dir=state, config_path=None, key_path=state / "secrets.key")
    target = tmp_path / "new"
    restore(archive, state_dir=target, key_path=target / "secrets.key")
    assert (target / "webhooks" / "ci" / "queue.jsonl").read_bytes() == b'{"event": 7}\n'
    assert (target / "webhooks" / "ci" / "deliveries.jsonl").read_bytes() == b'{"delivery": "d1"}\n'
    assert (target / "outbox.jsonl").read_bytes() == b'{"op": "host"}\n'


def test_restore_keeps_what_was_there_and_refuses_a_damaged_or_running_target(tmp_path: Path) -> None:
    state = _state(tmp_path)
    archive = tmp_path / "b.tgz"
    backup(archive, state_dir=state, config_path=None, key_path=state / "secrets.key")
    lock = StateDirLock(state)
    with pytest.raises(StoreLocked, match="stop it first"):
        restore(archive, state_dir=state, key_path=state / "secrets.key")
    lock.release()
    (state / "bootbox.json").write_text("{}")  # changed since the backup
    done = restore(archive, state_dir=state, key_path=state / "secrets.key")
    assert done.kept_previous is not None and (done.kept_previous / "bootbox.json").read_text() == "{}"
    assert "base" in (state / "bootbox.json").read_text()
    assert (state / "plugins/esxi/blobs/ab/abcd").read_bytes() == b"payload" * 1000
    damaged = tmp_path / "damaged.tgz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "state/bootbox.json":
                data = data.replace(b"base", b"BASE")
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    before = (state / "bootbox.json").read_bytes()
    with pytest.raises(BootboxError, match="bootbox.json is missing or damaged"):
        restore(damaged, state_dir=state, key_path=state / "secrets.key")
    assert (state / "bootbox.json").read_bytes() == before


def test_restoring_a_file_that_is_no_archive_says_so_in_one_line(tmp_path: Path) -> None:
    state = _state(tmp_path)
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello\n" * 200)
    with pytest.raises(BootboxError) as raised:
        restore(not_a_backup, state_dir=state, key_path=state / "secrets.key")
    assert str(raised.value) == f"{not_a_backup} cannot be read as a bootbox backup: not a tar archive (state backup writes .tar.gz)"
