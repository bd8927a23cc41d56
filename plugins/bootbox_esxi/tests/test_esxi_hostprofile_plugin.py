"""The esxi plugin's host-profile wiring: hooks reachable through the entry point, its config key."""

from __future__ import annotations

import pytest

import bootbox_esxi
from bootbox import ConfigError
from bootbox.hooks.manager import make_plugin_manager
from bootbox_esxi.config import parse_config
from bootbox_esxi.hostprofile.runner import parse_endpoint
from bootbox_esxi.plugin import EsxiPlugin


def test_the_entry_point_module_exposes_every_hook_of_the_plugin() -> None:
    """``bootbox serve`` loads the module, not the class: a hook it does not re-export never runs."""
    hooks = {name for name in dir(EsxiPlugin) if name.startswith("bootbox_")}
    assert {"bootbox_host_up", "bootbox_register_answer_inputs"} <= hooks
    assert hooks <= set(dir(bootbox_esxi)), hooks - set(dir(bootbox_esxi))
    pm = make_plugin_manager()
    assert "esxi" in [impl.plugin_name for impl in pm.hook.bootbox_host_up.get_hookimpls()]


def test_watch_seconds_is_validated() -> None:
    assert parse_config({}).watch_seconds == 60
    assert parse_config({"watch_seconds": 0}).watch_seconds == 0
    assert parse_config({"watch_seconds": 0.5}).watch_seconds == 0.5
    for bad in (-1, 0.01, "60", True):
        with pytest.raises(ConfigError, match="plugins.esxi.watch_seconds"):
            parse_config({"watch_seconds": bad})


@pytest.mark.parametrize(("raw", "expected"), [
    ("198.18.0.21", ("198.18.0.21", 443)), ("127.0.0.1:8443", ("127.0.0.1", 8443)),
    ("esx01.lab", ("esx01.lab", 443)), ("[2001:db8::5]:9443", ("2001:db8::5", 9443)),
])
def test_endpoints(raw: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(raw, "esxi_api_endpoint") == expected


def test_a_bad_endpoint_names_the_answer() -> None:
    from bootbox import ValidationError

    with pytest.raises(ValidationError) as caught:
        parse_endpoint("host:99999", "esxi_api_endpoint")
    assert caught.value.field == "esxi_api_endpoint"
