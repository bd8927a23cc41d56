"""The shared Debian fetch (bootbox.assets.debian) with stand-ins for apt-get, so no network.

The real downloads are exercised by the demo build (tests/assets/test_demo.py) and the firmware
matrix's signed ARM64 loaders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootbox.assets.debian import Apt
from bootbox.errors import BootboxError


class _Failed(BootboxError):
    pass


APT = Apt(_Failed, " (try harder)")


def _fake_apt_get(bin_dir: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir.mkdir()
    tool = bin_dir / "apt-get"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_download_finds_each_package_by_name_and_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # apt-get download names files <name>_<version>_<arch>.deb; a same-named package of another
    # architecture in the directory must not be taken for the one asked for.
    _fake_apt_get(tmp_path / "bin", monkeypatch,
                  'shift\nfor p; do n=${p%%:*}; a=${p#*:}; [ "$a" = "$p" ] && a=amd64\n'
                  '  touch "${n}_1.0_${a}.deb"; done\ntouch shim-signed_0.9_amd64.deb\n')
    work = tmp_path / "work"
    work.mkdir()
    debs = APT.download(["shim-signed:arm64", "busybox-static"], work)
    assert debs == {"shim-signed:arm64": work / "shim-signed_1.0_arm64.deb",
                    "busybox-static": work / "busybox-static_1.0_amd64.deb"}


def test_download_that_produced_nothing_says_how_to_add_the_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_apt_get(tmp_path / "bin", monkeypatch, "exit 0\n")
    with pytest.raises(_Failed, match=r"apt-get download grub:arm64 produced no \.deb "
                                      r"\(is arm64 added with dpkg --add-architecture"):
        APT.download(["grub:arm64"], tmp_path)
    with pytest.raises(_Failed, match=r"^apt-get download grub produced no \.deb$"):
        APT.download(["grub"], tmp_path)


def test_a_failing_tool_raises_the_callers_error_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_apt_get(tmp_path / "bin", monkeypatch, "echo 'E: Unable to locate package nope' >&2\nexit 100\n")
    with pytest.raises(_Failed, match="apt-get download nope failed: E: Unable to locate package nope"):
        APT.download(["nope"], tmp_path)


def test_a_missing_tool_gets_the_callers_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(_Failed, match=r"^dpkg is not installed \(try harder\)$"):
        APT.extract(tmp_path / "x.deb", tmp_path / "root")
