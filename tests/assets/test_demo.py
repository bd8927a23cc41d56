"""Tests for the demo payload builder (bootbox.assets.demo).

The payload's real proof is the end-to-end boot in test_lab.py; these tests pin down the parts
that can be checked without a VM: the cpio writer against the real ``cpio`` tool, module
dependency resolution, the /init script's shell functions under busybox, and the built assets.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootbox.assets import demo
from bootbox.assets.demo import busybox as demo_busybox
from bootbox.assets.demo import kernel as demo_kernel
from bootbox.assets.demo.kmod import module_name
from tests.support.lab_fixtures import lab_unavailable
from bootbox.assets.demo import (
    MARKER_FAIL,
    MARKER_OK,
    CpioEntry,
    DemoAssets,
    DemoError,
    build_demo_assets,
    init_script,
    module_load_order,
    synthesize_modules_dep,
    write_cpio,
)
from tests.support.lab_fixtures import (  # noqa: F401 - pytest fixtures are used by name
    LabSegment,
    demo_assets_fixture,
    demo_cache_fixture,
    require_tools,
    segment_fixture,
)

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# cpio
# ---------------------------------------------------------------------------------------------


def _sample_entries() -> list[CpioEntry]:
    return [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        CpioEntry("bin/alias", stat.S_IFLNK | 0o777, b"tool"),
        CpioEntry("odd", stat.S_IFREG | 0o644, b"x" * 5),  # forces data padding
        CpioEntry("dev", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ]


def test_cpio_is_read_back_by_the_cpio_tool(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        lab_unavailable("needs the cpio tool")
    archive = io.BytesIO()
    write_cpio(_sample_entries(), archive)
    data = archive.getvalue()
    assert data.startswith(b"070701")
    assert len(data) % 512 == 0
    listing = subprocess.run(
        ["cpio", "-itv"], input=data, capture_output=True, check=True
    ).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}  # fmt: skip
    assert set(lines) == {"bin", "bin/tool", "bin/alias", "odd", "dev", "dev/console"}
    assert lines["dev/console"].startswith("crw-------")
    assert "5,   1" in lines["dev/console"] or "5, 1" in lines["dev/console"]
    assert lines["bin/alias"].endswith("bin/alias -> tool")
    assert lines["bin/tool"].startswith("-rwxr-xr-x")

    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--no-absolute-filenames", "--quiet", "--nonmatching", "dev/console"],
        input=data, cwd=out, check=True, capture_output=True,
    )  # fmt: skip
    assert (out / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.readlink(out / "bin/alias") == "tool"
    assert (out / "odd").read_bytes() == b"xxxxx"


def test_cpio_is_reproducible() -> None:
    one, two = io.BytesIO(), io.BytesIO()
    write_cpio(_sample_entries(), one)
    write_cpio(_sample_entries(), two)
    assert one.getvalue() == two.getvalue()


def test_cpio_header_fields_are_aligned() -> None:
    archive = io.BytesIO()
    write_cpio([CpioEntry("abc", stat.S_IFREG | 0o644, b"12345")], archive)
    data = archive.getvalue()
    fields = [int(data[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    mode, nlink, size, namesize = fields[1], fields[4], fields[6], fields[11]
    assert (mode, nlink, size, namesize) == (stat.S_IFREG | 0o644, 1, 5, 4)
    name_end = 110 + namesize
    assert data[110:name_end] == b"abc\0"
    data_start = name_end + (-name_end % 4)
    assert data[data_start : data_start + 5] == b"12345"
    assert b"TRAILER!!!\0" in data


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

_VIRTIO_NET_DEPS = (
    "kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz "
    "kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz"
)
_DEP = f"""\
kernel/drivers/net/virtio_net.ko.xz: {_VIRTIO_NET_DEPS}
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko.xz:
"""


def test_module_load_order_puts_dependencies_first_once() -> None:
    order = module_load_order(_DEP, ["virtio_net", "e1000", "virtio"])
    names = [p.rsplit("/", 1)[1] for p in order]
    assert sorted(names) == sorted(set(names))
    assert len(names) == 6
    for module, deps in (
        ("virtio_net.ko.xz", ["net_failover.ko.xz", "failover.ko.xz", "virtio.ko.xz"]),
        ("net_failover.ko.xz", ["failover.ko.xz"]),
        ("virtio.ko.xz", ["virtio_ring.ko.xz"]),
    ):
        for dep in deps:
            assert names.index(dep) < names.index(module)


def test_module_load_order_skips_builtins_and_folds_dashes() -> None:
    builtin = "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko\n"
    order = module_load_order(_DEP, ["e1000e", "virtio-ring"], builtin)
    assert order == ["kernel/drivers/virtio/virtio_ring.ko.xz"]


def test_module_load_order_reports_unknown_modules_and_cycles() -> None:
    with pytest.raises(DemoError, match="nosuch"):
        module_load_order(_DEP, ["nosuch"])
    with pytest.raises(DemoError, match="cycle"):
        module_load_order("a.ko: b.ko\nb.ko: a.ko\n", ["a"])


def _fake_module(modinfo: dict[str, str]) -> bytes:
    """A minimal ELF64 relocatable with .shstrtab and .modinfo, like a kernel module."""
    shstrtab = b"\0.shstrtab\0.modinfo\0"
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shoff = 64 + len(shstrtab) + len(info)
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)

    def section(name: int, offset: int, size: int) -> bytes:
        return struct.pack(
            "<IIQQQQIIQQ", name, 3 if name == 1 else 1, 0, 0, offset, size, 0, 0, 1, 0
        )

    sections = (
        b"\0" * 64 + section(1, 64, len(shstrtab)) + section(11, 64 + len(shstrtab), len(info))
    )
    return header + shstrtab + info + sections


def test_synthesize_modules_dep_reads_modinfo_of_compressed_modules(tmp_path: Path) -> None:
    """Debian's .deb has no modules.dep; it is rebuilt from each module's depends= field."""
    drivers = tmp_path / "kernel" / "drivers"
    drivers.mkdir(parents=True)
    (drivers / "top.ko.xz").write_bytes(lzma.compress(_fake_module({"depends": "mid,leaf-b"})))
    (drivers / "mid.ko.gz").write_bytes(gzip.compress(_fake_module({"depends": "leaf_a"})))
    (drivers / "leaf_a.ko").write_bytes(_fake_module({"depends": "", "license": "GPL"}))
    (drivers / "leaf_b.ko").write_bytes(_fake_module({"depends": ""}))
    (drivers / "unrelated.ko").write_bytes(_fake_module({"depends": "top"}))
    text = synthesize_modules_dep(tmp_path, ["top"])
    assert "unrelated" not in text
    order = [p.rsplit("/", 1)[1] for p in module_load_order(text, ["top"])]
    assert order.index("leaf_a.ko") < order.index("mid.ko.gz") < order.index("top.ko.xz")
    assert order.index("leaf_b.ko") < order.index("top.ko.xz")
    assert len(order) == 4


def test_synthesize_modules_dep_reports_a_missing_dependency(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "top.ko").write_bytes(_fake_module({"depends": "gone"}))
    with pytest.raises(DemoError, match="gone"):
        synthesize_modules_dep(tmp_path, ["top"])


@pytest.fixture(name="debian_kernel_modules", scope="module")
def debian_kernel_modules_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The modules tree of the kernel package the demo build fetches, with depmod's modules.dep.

    Fetched as the build fetches it (``apt-cache depends linux-image-amd64``, ``apt-get
    download``, ``dpkg -x``), not taken from the host, which may run no Debian kernel or have no
    /lib/modules at all (containers, cloud images). depmod (kmod) then writes the modules.dep the
    package leaves to its postinst, in the unpacked tree only (``depmod -b ROOT VERSION``). The
    tree (~400 MB) is removed afterwards rather than left among pytest's kept temp dirs.
    """
    if shutil.which("depmod") is None:
        lab_unavailable("needs depmod (apt-get install kmod)")
    work = tmp_path_factory.mktemp("linux-image")
    try:
        package = demo_kernel.apt_kernel_package("amd64")
        root = demo_kernel.APT.fetch(package, work)
    except DemoError as exc:
        lab_unavailable(f"cannot fetch Debian's kernel package: {exc}")
    version = package.removeprefix("linux-image-")
    tree = demo_kernel.modules_root(root, version)
    assert not (tree / "modules.dep").exists()  # what the build works around
    subprocess.run(["depmod", "-b", str(root), version], check=True, capture_output=True, timeout=600)
    assert (tree / "modules.dep").is_file()
    yield tree
    shutil.rmtree(work, ignore_errors=True)


def test_synthesized_dependencies_match_depmod_on_a_real_kernel(debian_kernel_modules: Path) -> None:
    tree = debian_kernel_modules
    builtin = (tree / "modules.builtin").read_text()
    synthesized = synthesize_modules_dep(tree, demo.MODULES)
    depmod_text = (tree / "modules.dep").read_text()
    ours = module_load_order(synthesized, demo.MODULES, builtin)
    depmod = module_load_order(depmod_text, demo.MODULES, builtin)
    assert set(ours) == set(depmod)
    # Module by module: our direct dependencies, expanded, are the full list depmod writes.
    depmod_deps = {path.strip(): set(rest.split())
                   for path, _, rest in (line.partition(":") for line in depmod_text.splitlines())}
    for path in ours:
        expanded = set(module_load_order(synthesized, [module_name(path)], builtin)) - {path}
        assert expanded == depmod_deps[path], path


# ---------------------------------------------------------------------------------------------
# the /init script
# ---------------------------------------------------------------------------------------------


def _busybox() -> str:
    path = shutil.which("busybox")
    if path is None:
        lab_unavailable("needs busybox")
    return path


def _parse(tmp_path: Path, cmdline: str, cwd: Path | None = None) -> str:
    init = tmp_path / "init"
    init.write_text(init_script())
    out = subprocess.run(
        [_busybox(), "sh", "-c", '. "$0"; bootbox_parse_cmdline "$1"; echo "$BB_MAC|$BB_CALLBACK"',
         str(init), cmdline],
        capture_output=True, text=True, check=True, cwd=cwd,
    )  # fmt: skip
    return out.stdout.strip()


def test_init_script_is_valid_busybox_shell(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_text(init_script())
    subprocess.run([_busybox(), "sh", "-n", str(init)], check=True)
    text = init_script()
    assert text.startswith("#!/bin/sh\n")
    assert MARKER_OK in text and MARKER_FAIL in text
    commands = [line.split("#")[0] for line in text.splitlines()]
    assert any("timeout 10 wget" in line for line in commands)
    assert not any("wget -T" in line for line in commands)  # segfaults in busybox 1.35
    assert "poweroff -f" in text


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("console=ttyS0 BOOTIF=01-52-54-00-AB-CD-EF bootbox.callback=http://198.18.0.1:8081/booted",
         "52:54:00:ab:cd:ef|http://198.18.0.1:8081/booted"),
        ("BOOTIF=01-02-00-00-00-00-02 bootbox.mac=02:00:00:00:00:01 quiet",
         "02:00:00:00:00:01|"),
        ("BOOTIF=02-00-00-00-00-03", "02:00:00:00:00:03"),
        ("bootbox.mac=02-AA-BB-CC-DD-EE", "02:aa:bb:cc:dd:ee|"),
        ("bootbox.callback=http://198.18.0.1/up?host=a&x=1", "|http://198.18.0.1/up?host=a&x=1"),
        ("console=ttyS0,115200n8 quiet", "|"),
    ],
)  # fmt: skip
def test_init_parses_the_kernel_command_line(tmp_path: Path, cmdline: str, expected: str) -> None:
    if "|" not in expected:
        expected += "|"
    assert _parse(tmp_path, cmdline) == expected


def test_init_does_not_glob_the_callback_url(tmp_path: Path) -> None:
    # Without `set -f` the shell would expand this word to the file created here.
    trap = tmp_path / "cwd" / "bootbox.callback=http:" / "h"
    trap.mkdir(parents=True)
    (trap / "abc").touch()
    result = _parse(tmp_path, "bootbox.callback=http://h/a*", cwd=tmp_path / "cwd")
    assert result == "|http://h/a*"


def test_sourcing_init_does_not_run_it(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_text(init_script())
    out = subprocess.run(
        [_busybox(), "sh", "-c", '. "$0"; echo sourced', str(init)],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    assert out.stdout == "sourced\n"


@pytest.mark.netns
def test_init_finds_the_boot_interface_by_mac(segment: LabSegment, tmp_path: Path) -> None:
    require_tools("busybox")
    init = tmp_path / "init"
    init.write_text(init_script())

    def find(mac: str) -> tuple[int, str]:
        done = segment.net.run(
            "client", ["busybox", "sh", "-c", '. "$0"; bootbox_find_iface "$1"', str(init), mac],
            check=False,
        )  # fmt: skip
        return done.returncode, done.stdout.strip()

    assert find(segment.client.mac) == (0, "eth0")
    assert find("") == (0, "eth0")  # no MAC given: the first interface that is not lo
    assert find("02:00:00:00:00:99")[0] == 1


# ---------------------------------------------------------------------------------------------
# DemoAssets
# ---------------------------------------------------------------------------------------------


def test_ipxe_script_boots_kernel_and_initrd_with_callback(tmp_path: Path) -> None:
    assets = DemoAssets(tmp_path / "vmlinuz", tmp_path / "initrd.img", "6.1.0-1-amd64", "quiet")
    script = assets.ipxe_script("http://198.18.0.1:8080/demo/", "http://198.18.0.1:8081/booted")
    assert script == (
        "#!ipxe\n"
        "kernel http://198.18.0.1:8080/demo/vmlinuz initrd=initrd.img quiet "
        "bootbox.mac=${netX/mac} bootbox.callback=http://198.18.0.1:8081/booted\n"
        "initrd http://198.18.0.1:8080/demo/initrd.img\n"
        "boot\n"
    )
    assert assets.kernel_args("http://x/up", mac="02:00:00:00:00:01").endswith(
        "bootbox.mac=02:00:00:00:00:01 bootbox.callback=http://x/up"
    )
    with pytest.raises(ValueError):
        assets.kernel_args("http://x/a b")


def test_missing_packaging_tools_give_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(demo_kernel, "installed_kernel", lambda: None)
    with pytest.raises(DemoError) as info:
        build_demo_assets(tmp_path / "out", cache=tmp_path / "cache")
    message = str(info.value)
    assert "apt-cache is not installed" in message
    assert "/boot/vmlinuz" in message
    assert not (tmp_path / "out" / "initrd.img").exists()


# ---------------------------------------------------------------------------------------------
# the built assets
# ---------------------------------------------------------------------------------------------


def _initrd_listing(assets: DemoAssets) -> list[str]:
    if shutil.which("cpio") is None:
        lab_unavailable("needs the cpio tool")
    raw = gzip.decompress(assets.initrd.read_bytes())
    return (
        subprocess.run(["cpio", "-it", "--quiet"], input=raw, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )


def _initrd_member(assets: DemoAssets, name: str, tmp_path: Path) -> bytes:
    raw = gzip.decompress(assets.initrd.read_bytes())
    subprocess.run(
        ["cpio", "-id", "--quiet", name], input=raw, cwd=tmp_path, check=True, capture_output=True
    )
    return (tmp_path / name).read_bytes()


def test_demo_kernel_is_a_bzimage(demo_assets: DemoAssets) -> None:
    header = demo_assets.kernel.read_bytes()[:0x210]
    assert header[0x202:0x206] == b"HdrS"
    assert demo_assets.kernel_version.endswith("-amd64")
    assert demo_assets.cmdline == demo.DEFAULT_CMDLINE


def test_demo_initrd_holds_busybox_nic_modules_and_init(
    demo_assets: DemoAssets, tmp_path: Path
) -> None:
    names = set(_initrd_listing(demo_assets))
    version = demo_assets.kernel_version
    for required in ("init", "bin/busybox", "bin/sh", "sbin/udhcpc", "usr/bin/wget",
                     "dev/console", "etc/udhcpc.script", "etc/bootbox-demo/modules"):  # fmt: skip
        assert required in names
    for module in demo.MODULES:
        assert f"lib/modules/{version}/{module}.ko" in names
    order = _initrd_member(demo_assets, "etc/bootbox-demo/modules", tmp_path).decode().split()
    assert set(order) >= {f"{m}.ko" for m in demo.MODULES}
    assert order.index("virtio_ring.ko") < order.index("virtio.ko") < order.index("virtio_net.ko")
    assert order.index("virtio.ko") < order.index("virtio_pci.ko")
    ko = _initrd_member(demo_assets, f"lib/modules/{version}/virtio_net.ko", tmp_path)
    assert ko.startswith(b"\x7fELF")  # stored uncompressed for busybox insmod
    assert f"vermagic={version} ".encode() in ko
    assert _initrd_member(demo_assets, "init", tmp_path).decode() == init_script()
    _initrd_member(demo_assets, "bin/busybox", tmp_path)
    assert demo_busybox.is_static_elf(tmp_path / "bin" / "busybox")  # the initramfs has no libc


def test_build_is_idempotent_and_reproducible(
    demo_assets: DemoAssets, demo_cache: Path, tmp_path: Path
) -> None:
    cache = demo_cache
    before = {p: p.stat().st_mtime_ns for p in (demo_assets.kernel, demo_assets.initrd)}
    again = build_demo_assets(demo_assets.kernel.parent, cache=cache)
    assert again == demo_assets
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten

    # A fresh destination gets byte-identical files (fixed mtimes, gzip without a timestamp).
    fresh = build_demo_assets(tmp_path / "fresh", cache=cache)
    assert fresh.initrd.read_bytes() == demo_assets.initrd.read_bytes()
    assert fresh.kernel.read_bytes() == demo_assets.kernel.read_bytes()
    manifest = json.loads((tmp_path / "fresh" / "demo.json").read_text())
    assert manifest["kernel_version"] == demo_assets.kernel_version

    # A damaged output is rebuilt.
    fresh.initrd.write_bytes(b"broken")
    (tmp_path / "fresh" / "demo.json").write_text("{}")
    repaired = build_demo_assets(tmp_path / "fresh", cache=cache)
    assert repaired.initrd.read_bytes() == demo_assets.initrd.read_bytes()


def test_demo_cli_prints_the_assets(demo_assets: DemoAssets, demo_cache: Path) -> None:
    dest = str(demo_assets.kernel.parent)
    out = subprocess.run(
        [sys.executable, "-m", "bootbox.assets.demo", dest, "--cache", str(demo_cache)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    printed = json.loads(out.stdout)
    assert printed["kernel"] == str(demo_assets.kernel)
    assert printed["initrd"] == str(demo_assets.initrd)
    assert printed["kernel_version"] == demo_assets.kernel_version
    assert printed["ipxe_script"].startswith("#!ipxe\nkernel http://198.18.0.1:8080/vmlinuz ")


def test_payload_scripts_ship_as_package_data() -> None:
    """/init and the udhcpc hook are files in the package; a wheel must carry every one of them."""
    package_dir = ROOT / "bootbox" / "assets" / "demo"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "bootbox.assets.demo"]
    shipped = sorted(p.relative_to(package_dir).as_posix() for p in (package_dir / "scripts").iterdir())
    assert shipped == ["scripts/init.sh", "scripts/udhcpc.sh"]
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)
