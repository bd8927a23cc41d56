"""Linux image recipes, their digest, injected packages, config and failure messages (no build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootbox import ConfigError, ValidationError
from bootbox_linux.build import classify, mmdebstrap_command
from bootbox_linux.config import parse_config
from bootbox_linux.image import BASE_PACKAGES, Injection, Recipe, host_mirror, injection
from tests.support.linuximage import make_test_deb

MIRROR = "http://deb.debian.org/debian"


def test_the_digest_covers_the_recipe_and_not_the_order_of_packages() -> None:
    one = Recipe.make("bookworm", MIRROR, ["openssh-server", "cloud-init"])
    assert one.digest == Recipe.make("bookworm", MIRROR + "/", ["cloud-init", "openssh-server", "cloud-init"]).digest
    others = [Recipe.make("trixie", MIRROR, ["openssh-server", "cloud-init"]),
              Recipe.make("bookworm", "http://mirror.example/debian", ["openssh-server", "cloud-init"]),
              Recipe.make("bookworm", MIRROR, ["openssh-server"]),
              Recipe.make("bookworm", MIRROR, ["openssh-server", "cloud-init"], [Injection("p", "chrony", name="chrony")])]
    assert len({one.digest, *(r.digest for r in others)}) == 5
    assert set(BASE_PACKAGES) <= set(one.packages)


def test_an_injected_deb_counts_by_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = injection("agent", str(make_test_deb(tmp_path / "a")))
    same = injection("agent", str(make_test_deb(tmp_path / "b")))  # another path, the same bytes
    newer = injection("agent", str(make_test_deb(tmp_path / "b", version="1.1")))
    assert first.name == "bootbox-injected-test" and first.is_file
    digest = lambda i: Recipe.make("bookworm", MIRROR, [], [i]).digest
    assert digest(first) == digest(same) != digest(newer)


@pytest.mark.parametrize(("item", "message"), [
    ("/nonexistent/agent.deb", "which does not exist"),
    ("/etc/hostname", "which is not a .deb file"),
    ("Not A Package!", "neither a package name nor"),
])
def test_bad_injections_name_the_plugin(item: str, message: str) -> None:
    with pytest.raises(ValidationError, match=f"plugin monitor injects .*{message}"):
        injection("monitor", item)


def test_a_file_that_is_not_a_deb_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "agent.deb"
    fake.write_text("not an archive")
    with pytest.raises(ValidationError, match="is not a Debian package"):
        injection("monitor", str(fake))


@pytest.mark.parametrize(("args", "field"), [
    (("Bookworm!", MIRROR, []), "suite"),
    (("bookworm", "ftp://x", []), "mirror"),
    (("bookworm", MIRROR, ["ok", "Bad_Name"]), "packages[1]"),
])
def test_bad_recipes_name_the_field(args: tuple[str, str, list[str]], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Recipe.make(*args)
    assert info.value.field == field


def test_mmdebstrap_gets_one_include_per_package_and_the_recipe_archive() -> None:
    recipe = Recipe.make("bookworm", MIRROR, ["openssh-server"], [Injection("p", "/srv/a.deb", "ab" * 32, "a")])
    cmd = mmdebstrap_command(recipe, Path("/tmp/root"))
    assert "--include=/srv/a.deb" in cmd and "--include=openssh-server" in cmd
    assert '--setup-hook=mkdir -p "$1/srv" && cp "/srv/a.deb" "$1/srv/a.deb"' in cmd
    assert cmd[-3:] == ["bookworm", "/tmp/root", MIRROR]
    # the archive's packages (not the local .deb) are resolved once the essential set is unpacked
    [check] = [c for c in cmd if c.startswith("--extract-hook=")]
    assert "apt-get --simulate" in check and "openssh-server" in check and "a.deb" not in check


def test_the_default_archive_is_the_first_debian_archive_in_the_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.lab/debian/\nSuites: bookworm\n")
    assert host_mirror([tmp_path / "sources.list", tmp_path / "sources.list.d"]) == "http://mirror.lab/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://local.lab/debian bookworm main\n")
    assert host_mirror([tmp_path / "sources.list", tmp_path / "sources.list.d"]) == "http://local.lab/debian"
    assert host_mirror([tmp_path / "missing"]) == "http://deb.debian.org/debian"


# Lines as apt and dpkg print them (taken from real failed builds' logs).
UNKNOWN = "E: Unable to locate package no-such-pkg-bootbox\nE: mmdebstrap: apt-get install failed"
UNREACHABLE = ("Err:1 http://127.0.0.1:9 bookworm InRelease\n  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect "
               "(111: Connection refused)\nE: Failed to fetch http://127.0.0.1:9/dists/bookworm/InRelease")
FULL = "dpkg: error processing archive /var/cache/apt/archives/x.deb (--unpack):\n cannot copy extracted data: No space left on device"


@pytest.mark.parametrize(("log", "cause", "words"), [
    (UNKNOWN, "unknown-package", "unknown package no-such-pkg-bootbox"),
    (UNREACHABLE, "archive-unreachable", "the archive http://127.0.0.1:9 is unreachable"),
    (FULL, "disk-full", "ran out of disk space"),
    ("E: something else broke", "failed", "E: something else broke"),
])
def test_a_failed_build_names_its_cause(log: str, cause: str, words: str) -> None:
    recipe = Recipe.make("bookworm", "http://127.0.0.1:9", ["no-such-pkg-bootbox"])
    found, message = classify(log, recipe)
    assert found == cause and words in message


def test_config_errors_name_the_key() -> None:
    assert parse_config(None).build_timeout == 1800
    assert parse_config({"images_dir": "", "mirror": MIRROR + "/"}).mirror == MIRROR
    for doc, key in (({"images_dir": "relative"}, "images_dir"), ({"build_timeout": 5}, "build_timeout"),
                     ({"squashfs_level": 0}, "squashfs_level"), ({"mirror": "nope"}, "mirror"), ({"color": 1}, "color")):
        with pytest.raises(ConfigError, match=f"plugins.linux.{key}"):
            parse_config(doc)
