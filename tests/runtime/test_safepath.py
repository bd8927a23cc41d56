"""resolve_under: every way a client-supplied name can try to leave the served directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootbox.errors import Forbidden, NotFound
from bootbox.runtime.safepath import MAX_COMPONENT_BYTES, MAX_NAME_BYTES, resolve_under, split_name


def _make_tree(base: Path) -> tuple[Path, Path]:
    """root/ with files, a subdirectory, links in and out, a FIFO; outside/ with a secret."""
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "boot.efi").write_bytes(b"loader")
    (root / "sub" / "nested.cfg").write_text("nested")
    (root / "Boot").mkdir()
    (root / "Boot" / "BCD").write_bytes(b"bcd")
    (outside / "secret.txt").write_text("secret")
    os.symlink("boot.efi", root / "alias.efi")
    os.symlink("../outside/secret.txt", root / "escape")
    os.symlink("../outside", root / "outdir")
    os.symlink(str(outside / "secret.txt"), root / "abs-escape")
    os.symlink("../outside/missing", root / "dangling-out")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.mkfifo(root / "fifo")
    return root, outside


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return _make_tree(tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("boot.efi", "boot.efi"),
        ("/boot.efi", "boot.efi"),
        ("//boot.efi", "boot.efi"),
        ("./sub//./nested.cfg", "sub/nested.cfg"),
        ("\\Boot\\BCD", "Boot/BCD"),
        ("alias.efi", "boot.efi"),
    ],
)
def test_names_inside_root_resolve_to_the_real_file(tree: tuple[Path, Path], name: str, expected: str) -> None:
    root, _ = tree
    assert resolve_under(root, name) == (root / expected).resolve()


@pytest.mark.parametrize(
    "name",
    [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "sub/../boot.efi",  # would stay inside, but '..' is refused outright
        "..\\outside\\secret.txt",
        "sub\\..\\..\\outside\\secret.txt",
        "escape",
        "abs-escape",
        "outdir/secret.txt",
        "dangling-out",
        "loop-a",
        "fifo",
        "sub",
        "/",
        "",
        "boot.efi\x00.txt",
        "x" * (MAX_COMPONENT_BYTES + 1),
        "a/" * (MAX_NAME_BYTES // 2 + 1),
        "\udcff.bin",
    ],
)
def test_escapes_and_non_files_are_forbidden(tree: tuple[Path, Path], name: str) -> None:
    root, _ = tree
    with pytest.raises(Forbidden):
        resolve_under(root, name)


def test_absolute_host_path_is_root_relative(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with pytest.raises(NotFound):
        resolve_under(root, str(outside / "secret.txt"))
    with pytest.raises(NotFound):
        resolve_under(root, "/etc/passwd")


def test_missing_files_are_not_found(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    for name in ("missing.efi", "sub/missing", "boot.efi/child", "nodir/x"):
        with pytest.raises(NotFound):
            resolve_under(root, name)


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        resolve_under(tmp_path / "nope", "boot.efi")


def test_root_given_through_a_symlink_still_contains(tmp_path: Path) -> None:
    root, _ = _make_tree(tmp_path)
    link = tmp_path / "root-link"
    os.symlink(root, link)
    assert resolve_under(link, "boot.efi") == (root / "boot.efi").resolve()
    with pytest.raises(Forbidden):
        resolve_under(link, "escape")


def test_sibling_with_common_prefix_is_not_inside(tmp_path: Path) -> None:
    """A string-prefix check would accept /x/root-evil as inside /x/root."""
    root, _ = _make_tree(tmp_path)
    evil = tmp_path / "root-evil"
    evil.mkdir()
    (evil / "f").write_text("evil")
    os.symlink("../root-evil/f", root / "prefix-trick")
    with pytest.raises(Forbidden):
        resolve_under(root, "prefix-trick")


def test_name_limits_are_exact(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    longest = "y" * MAX_COMPONENT_BYTES
    (root / longest).write_text("ok")
    assert resolve_under(root, longest).name == longest
    assert split_name("a/" * (MAX_NAME_BYTES // 2)) == ["a"] * (MAX_NAME_BYTES // 2)


def test_non_text_name_is_forbidden(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(Forbidden):
        resolve_under(root, b"boot.efi")  # type: ignore[arg-type]


_ALPHABET = st.sampled_from(["a", "b", ".", "..", "/", "\\", "\x00", "é", "sub", "escape", "outdir", "loop-a", "fifo",
                             "boot.efi", "alias.efi", "~", " ", ":", "%2e"])


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _make_tree(tmp_path_factory.mktemp("prop"))


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=80), st.lists(_ALPHABET, max_size=12).map("".join)))
def test_property_result_is_a_file_inside_root_or_an_error(shared_tree: tuple[Path, Path], name: str) -> None:
    root, _ = shared_tree
    real_root = root.resolve()
    try:
        result = resolve_under(root, name)
    except (Forbidden, NotFound):
        return
    assert result.is_relative_to(real_root)
    assert result == result.resolve(strict=True)
    assert result.is_file()
    assert "secret" not in result.read_text(errors="replace")
