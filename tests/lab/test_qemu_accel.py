"""QEMU's accelerator choice for lab guests: TCG unless asked, KVM only where it is hardware KVM.

Why it matters: a full distribution boots in minutes under TCG, in seconds under KVM; but a
``/dev/kvm`` from PVM (``kvm_pvm``) does not run a stock kernel at a usable speed, so ``auto``
must not pick it (bootbox.lab.qemu's docstring).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootbox.lab.netns import LabError
from bootbox.lab.qemu import QemuClient, kvm_unusable

MAC = "02:00:00:00:00:01"


def _argv_accel(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-accel"]


def test_tcg_is_the_default(tmp_path: Path) -> None:
    vm = QemuClient(tap="t", netns=None, mac=MAC, firmware="bios", workdir=tmp_path)
    assert vm.accel == "tcg" and _argv_accel(vm.argv()) == ["tcg"] and "-cpu" not in vm.argv()


def test_kvm_falls_back_to_tcg_and_takes_the_host_cpu(tmp_path: Path) -> None:
    argv = QemuClient(tap="t", netns=None, mac=MAC, firmware="uefi", workdir=tmp_path, accel="kvm").argv()
    assert _argv_accel(argv) == ["kvm", "tcg"]  # QEMU tries them in order
    assert argv[argv.index("-cpu") + 1] == "max"  # valid under both (host under KVM)


def test_auto_follows_kvm_unusable(tmp_path: Path) -> None:
    vm = QemuClient(tap="t", netns=None, mac=MAC, firmware="bios", workdir=tmp_path, accel="auto")
    assert vm.accel == ("tcg" if kvm_unusable() else "kvm")


def test_auto_never_uses_kvm_for_another_architecture(tmp_path: Path) -> None:
    assert kvm_unusable("qemu-system-aarch64") is not None
    vm = QemuClient(tap="t", netns=None, mac=MAC, firmware="arm64", workdir=tmp_path, accel="auto")
    assert vm.accel == "tcg" and _argv_accel(vm.argv()) == ["tcg"]


def test_kvm_unusable_names_pvm_when_that_is_what_dev_kvm_is() -> None:
    reason = kvm_unusable()
    if Path("/sys/module/kvm_pvm").is_dir() and not any(
            Path("/sys/module", m).is_dir() for m in ("kvm_intel", "kvm_amd")):
        assert reason is not None and "kvm_pvm" in reason
    elif reason is None:
        assert any(Path("/sys/module", m).is_dir() for m in ("kvm_intel", "kvm_amd"))


def test_unknown_accel_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="accel"):
        QemuClient(tap="t", netns=None, mac=MAC, firmware="bios", workdir=tmp_path, accel="hvf")  # type: ignore[arg-type]
