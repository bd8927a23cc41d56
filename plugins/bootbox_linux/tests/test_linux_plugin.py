from pathlib import Path

import pytest

import bootbox_linux
from bootbox import BootContext, Host, Profile, ValidationError


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.gz"
    kernel.write_bytes(b"k" * 100)
    initrd.write_bytes(b"i" * 100)
    return kernel, initrd


def test_script_golden(files: tuple[Path, Path]) -> None:
    kernel, initrd = files
    profile = Profile("demo", "linux", bootbox_linux.validate_spec(
        {"kernel": str(kernel), "initrd": [str(initrd), "http://mirror.example/extra.img"],
         "cmdline": "console=ttyS0 bootbox.callback={callback} x={unknown}"}))
    boot = BootContext(base_url="http://198.18.0.1:8080", mac="52:54:00:12:34:56")
    script = bootbox_linux.render_script(Host(mac="52:54:00:12:34:56"), profile, boot)
    assert script == (
        "#!ipxe\n"
        "echo bootbox: 52:54:00:12:34:56 boots profile demo (linux)\n"
        "kernel --name kernel http://198.18.0.1:8080/boot/hosts/525400123456/assets/kernel initrd=initrd-0 initrd=initrd-1 "
        "console=ttyS0 bootbox.callback=http://198.18.0.1:8080/api/v1/hosts/52:54:00:12:34:56/booted x={unknown} || goto failed\n"
        "initrd --name initrd-0 http://198.18.0.1:8080/boot/hosts/525400123456/assets/initrd-0 || goto failed\n"
        "initrd --name initrd-1 http://mirror.example/extra.img || goto failed\n"
        "boot || goto failed\n"
        ":failed\n"
        "echo bootbox: loading the boot files failed; retrying in 10 seconds\n"
        "sleep 10\n"
        "chain --replace --autofree http://198.18.0.1:8080/boot/hosts/525400123456/script.ipxe\n"
    )


def test_assets_map_to_local_files_only(files: tuple[Path, Path]) -> None:
    kernel, initrd = files
    profile = Profile("p", "linux", {"kernel": str(kernel), "initrd": [str(initrd), "http://x/y"], "cmdline": ""})
    assert bootbox_linux.bootbox_profile_asset(profile=profile, name="kernel") == kernel
    assert bootbox_linux.bootbox_profile_asset(profile=profile, name="initrd-0") == initrd
    assert bootbox_linux.bootbox_profile_asset(profile=profile, name="initrd-1") is None  # a URL
    assert bootbox_linux.bootbox_profile_asset(profile=profile, name="initrd-2") is None
    assert bootbox_linux.bootbox_profile_asset(profile=profile, name="../../etc/passwd") is None
    other = Profile("e", "esxi", {})
    assert bootbox_linux.bootbox_profile_asset(profile=other, name="kernel") is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.kernel"),
        ({"kernel": "vmlinuz"}, "spec.kernel"),
        ({"kernel": "/nonexistent/vmlinuz"}, "spec.kernel"),
        ({"kernel": "http://x/k", "initrd": "/nonexistent"}, "spec.initrd[0]"),
        ({"kernel": "http://x/k", "initrd": 5}, "spec.initrd"),
        ({"kernel": "http://x/k", "cmdline": "a\nb"}, "spec.cmdline"),
        ({"kernel": "http://x/k", "kernal": "x"}, "spec.kernal"),
    ],
)
def test_validation_names_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        bootbox_linux.validate_spec(spec)
    assert info.value.field == field


def test_plugin_imports_only_the_public_api() -> None:
    source = Path(bootbox_linux.__file__).read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.startswith(("from bootbox.", "import bootbox.")) for line in imports), imports
