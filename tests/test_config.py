from pathlib import Path

import pytest

import bootbox.config
from bootbox.config import load_settings
from bootbox.errors import ConfigError


@pytest.fixture(autouse=True)
def no_installed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's /etc/bootbox/bootbox.toml (README command 1) must not reach these tests."""
    monkeypatch.setattr(bootbox.config, "DEFAULT_CONFIG_PATH", tmp_path / "not-installed.toml")


def test_defaults_without_a_file() -> None:
    settings = load_settings(env={})
    assert settings.state_dir == "/var/lib/bootbox"
    assert settings.dhcp.port == 67 and settings.dhcp.boot_server_port == 4011
    assert settings.tftp.port == 69 and settings.http.port == 8080
    assert settings.dhcp.loaders["0"] == "undionly.kpxe"
    assert settings.dhcp.loaders["7"] == settings.dhcp.loaders["9"] == "snponly.efi"


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "bootbox.toml"
    path.write_text('state_dir = "/srv/bb"\n[http]\nport = 8081\nthreads = 4\n[dhcp.loaders]\n"11" = "grubaa64.efi"\n')
    settings = load_settings(path, env={"BOOTBOX_HTTP_PORT": "9000"}, overrides={"tftp": {"port": 1069}})
    assert settings.state_dir == "/srv/bb"
    assert settings.http.port == 9000  # env beats file
    assert settings.http.threads == 4
    assert settings.tftp.port == 1069
    assert settings.dhcp.loaders["11"] == "grubaa64.efi"
    assert settings.dhcp.loaders["0"] == "undionly.kpxe"  # a table merges with the defaults


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        ("[http]\nport = \"x\"\n", {}, "http.port"),
        ("[http]\nprot = 80\n", {}, "http.prot"),
        ("", {"BOOTBOX_TFTP_PORT": "70000"}, "tftp.port"),
        ("", {"BOOTBOX_HTTP_BIND_ADDRESS": "localhost"}, "http.bind_address"),
        ("[dhcp]\nmode = \"relay\"\n", {}, "dhcp.mode"),
        ("[dhcp.loaders]\nbios = \"x\"\n", {}, "dhcp.loaders.bios"),
        ("log_level = \"loud\"\n", {}, "log_level"),
        ("", {"BOOTBOX_NOPE": "1"}, "BOOTBOX_NOPE"),
        ("[demo]\nenabled = \"maybe\"\n", {}, "demo.enabled"),
        ("", {"BOOTBOX_DHCP_RATE_LIMIT": "-1"}, "dhcp.rate_limit"),
        ("[dhcp]\nrate_burst = -3\n", {}, "dhcp.rate_burst"),
        ("[http]\nsend_threads = -1\n", {}, "http.send_threads"),
        ("", {"BOOTBOX_HTTP_SEND_THREADS": "65"}, "http.send_threads"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], field: str) -> None:
    path = tmp_path / "bootbox.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env)
    assert info.value.field == field


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bootbox.toml"
    path.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, env={})


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_shipped_default_config_loads_and_matches_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "appliance" / "bootbox.toml"
    assert load_settings(shipped, env={}) == load_settings(env={})
