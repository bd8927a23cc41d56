"""A missing secrets key with encrypted secrets in the store refuses to start (issue 17, item 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bootbox.errors import BootboxError
from bootbox.store.secretbox import KEY_FILE, SecretBox, require_key
from bootbox.store.tinydb import TinyDBStore
from tests.store.test_crash_safety import Appliance


def test_require_key_refuses_only_when_secrets_need_the_missing_key(tmp_path: Path) -> None:
    key = tmp_path / KEY_FILE
    store = TinyDBStore(tmp_path)
    try:
        require_key(key, store)  # fresh: nothing encrypted, the key may be made
        box = SecretBox(key)
        store.put("answers", "525400000001", {"values": {"pw": box.encrypt("s3cret"), "name": "web01"}})
        require_key(key, store)  # the key is there
        key.unlink()
        with pytest.raises(BootboxError) as refused:
            require_key(key, store)
        assert str(key) in str(refused.value) and "1 secret value" in str(refused.value)
        assert "bootbox state restore" in str(refused.value)
        assert not key.exists()  # never silently regenerated
    finally:
        store.close()


def test_bootbox_serve_will_not_start_and_regenerate_a_lost_key(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.state.mkdir(mode=0o700)
    token = SecretBox(tmp_path / "old.key").encrypt("the-root-password")
    (app.state / "bootbox.json").write_text(json.dumps({"answers": {"525400000001": {"values": {"pw": token}}}}))
    proc = subprocess.run([sys.executable, "-m", "bootbox", "serve"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BOOTBOX_CONFIG": str(app.config)})
    assert proc.returncode != 0
    assert f"the secrets key {app.state / KEY_FILE} is missing" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (app.state / KEY_FILE).exists()


def test_a_fresh_state_dir_creates_the_key(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.start()
    try:
        assert (app.state / KEY_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        app.kill()
