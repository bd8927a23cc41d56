"""Pytest fixtures for plugin authors: a real appliance in a temporary state dir, and fake hosts.

Enable them in your ``tests/conftest.py``::

    pytest_plugins = ["bootbox.testing"]

    @pytest.fixture
    def bootbox_plugins():
        import bootbox_myplugin
        return [bootbox_myplugin]        # registered in the test appliance, nothing else is

Then a test gets a running appliance (HTTP on a free loopback port, no DHCP or TFTP, state in
``tmp_path``) and a host that boots from it and reports up, over real HTTP::

    def test_pushes_after_boot(bootbox_host):
        bootbox_host.boot()
        assert bootbox_host.report_up() == 503          # pushes running
        bootbox_host.wait_for_state("configured")
        assert any(e["kind"] == "push" for e in bootbox_host.events())

Fixtures: ``bootbox_appliance`` (a :class:`TestAppliance`), ``bootbox_host`` (a
:class:`FakeHost` that boots the ``fake`` profile kind this module registers), and three to
override: ``bootbox_plugins`` (plugin objects), ``bootbox_config`` (settings overrides, e.g.
``{"plugins": {"myplugin": {...}}}``) and ``bootbox_push_policy`` (fast retries by default).
Installed entry-point plugins are *not* loaded, so tests see exactly the plugins they name.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from bootbox import BootContext, Host, Profile, hookimpl
from bootbox.appliance import Appliance
from bootbox.client import ApiClient
from bootbox.config import PushPolicy, Settings, load_settings
from bootbox.service.bootservice import BootService
from bootbox.store.apitoken import load_or_create_token

FAKE_KIND = "fake"


class FakeKindPlugin:
    """A boot kind for tests: its "script" lists the URLs a real OS would use, one per line."""

    def __init__(self) -> None:
        self.__name__ = "bootbox.testing"

    @hookimpl
    def bootbox_register_profile_kinds(self, register: Callable[..., None]) -> None:
        register(FAKE_KIND, validate=lambda spec: dict(spec), description="bootbox.testing: a host that boots nothing")

    @hookimpl
    def bootbox_boot_script(self, host: Host, profile: Profile, boot: BootContext) -> str | None:
        if profile.kind != FAKE_KIND:
            return None
        return (f"#!ipxe\n# bootbox.testing boot of {host.mac} with {profile.name}\n"
                f"# up {boot.up_url}\n# answers {boot.answer_url('') or '-'}\n# callback {boot.callback_url}\n")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 a moment ago (HTTP is TCP, the rest UDP)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
    return merged


@dataclass
class Response:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(method: str, url: str, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 30.0) -> Response:
    """One HTTP request; any status is returned, not raised (tests look at 403s and 503s)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return Response(reply.status, reply.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read().decode("utf-8", "replace"))


@dataclass
class TestAppliance:
    """A started :class:`bootbox.appliance.Appliance` and how to talk to it."""

    __test__ = False

    appliance: Appliance
    settings: Settings
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http.port}"

    @property
    def service(self) -> BootService:
        assert self.appliance.service is not None
        return self.appliance.service

    @property
    def api(self) -> ApiClient:
        """The operator's API client, with the token (as the CLI uses it)."""
        return ApiClient(self.url, self.token)

    def add_fake_profile(self, name: str = "fake", **items: str) -> None:
        """A ``fake`` boot profile and a rule giving it (plus ``items``) to every host."""
        if self.service.profile_or_none(name) is None:
            self.api.post("/profiles", {"name": name, "kind": FAKE_KIND, "spec": {}})
            self.api.post("/rules", {"name": f"all-{name}", "all_hosts": True, "items": {"image": name, **items}})

    def host(self, mac: str) -> "FakeHost":
        return FakeHost(self, mac)


@dataclass
class FakeHost:
    """A host that boots from the test appliance and reports up, as a real one would."""

    __test__ = False

    appliance: TestAppliance
    mac: str
    up_url: str = ""
    answers_url: str = ""
    boots: int = 0
    boot_id: str = ""
    facts: dict[str, str] = field(default_factory=dict)

    def boot(self, **facts: str) -> str:
        """Fetch the boot script (as iPXE does, with ``facts`` as its query); note its URLs."""
        self.facts.update(facts)
        query = urllib.parse.urlencode(self.facts)
        url = f"{self.appliance.url}/boot/hosts/{self.mac.replace(':', '-')}/script.ipxe" + (f"?{query}" if query else "")
        reply = http("GET", url)
        assert reply.status == 200, reply.text
        found = dict(re.findall(r"^# (up|answers) (\S+)$", reply.text, flags=re.M))
        self.up_url = found.get("up", "")
        self.answers_url = "" if found.get("answers", "-") == "-" else found["answers"]
        self.boots += 1
        self.boot_id = f"{self.mac.replace(':', '')}-boot-{self.boots}"
        return reply.text

    def fetch_answer(self, name: str) -> Response:
        """GET one answer file through this boot's single-use URL."""
        assert self.answers_url, "the host got no answer-file URL (no host profile, or held)"
        return http("GET", self.answers_url + name)

    def report_up(self, boot_id: str | None = None) -> int:
        """POST the up callback; returns Auto Deploy's status (200, 503, 409, …)."""
        assert self.up_url, "boot() first: the up URL comes with the boot script"
        return http("POST", self.up_url, {"boot_id": boot_id or self.boot_id}).status

    def reboot(self) -> int:
        """Boot again (a new boot ID) and report up."""
        self.boot()
        return self.report_up()

    def show(self) -> dict[str, Any]:
        return self.appliance.api.get(f"/hosts/{self.mac}")

    @property
    def state(self) -> str:
        return str(self.show()["state"])

    def events(self) -> list[dict[str, Any]]:
        return self.appliance.api.get(f"/hosts/{self.mac}/events")

    def wait_for_state(self, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the host is in one of ``states`` (fails the test after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            host = self.show()
            if host["state"] in states:
                return host
            if time.monotonic() > deadline:
                pytest.fail(f"host {self.mac} stayed {host['state']!r}, not {states}; events: {self.events()}")
            time.sleep(0.05)


def start_test_appliance(state: Path, plugins: list[object], config: Mapping[str, Any],
                         policy: PushPolicy | None) -> TestAppliance:
    """Start an appliance on loopback with ``plugins`` only (and the ``fake`` kind)."""
    overrides = _merge({
        "state_dir": str(state),
        "demo": {"enabled": False},
        "http": {"bind_address": "127.0.0.1", "port": free_port(), "threads": 8},
        "tftp": {"enabled": False},
        "dhcp": {"enabled": False},
    }, config)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    empty = state.parent / "bootbox-test.toml"  # never the machine's /etc/bootbox/bootbox.toml
    empty.write_text("")
    settings = load_settings(empty, env={}, overrides=overrides)
    appliance = Appliance(settings, load_entrypoints=False, extra_plugins=(FakeKindPlugin(), *plugins))
    appliance.start()
    if policy is not None and appliance.service is not None:
        appliance.service.after_boot.pool.policy = policy
    return TestAppliance(appliance, settings, load_or_create_token(settings.state_path))


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def bootbox_plugins() -> list[object]:
    """Override: the plugin objects (modules or instances) the test appliance registers."""
    return []


@pytest.fixture
def bootbox_config() -> dict[str, Any]:
    """Override: settings for the test appliance, e.g. ``{"plugins": {"myplugin": {"url": ...}}}``."""
    return {}


@pytest.fixture
def bootbox_push_policy() -> PushPolicy:
    """Override: how pushes are retried in tests (default: 3 tries, fast backoff, 10 s timeout)."""
    return PushPolicy(attempts=3, timeout=10.0, first_delay=0.05, step_min=0.01, step_max=0.05, max_delay=0.5)


@pytest.fixture
def bootbox_appliance(tmp_path: Path, bootbox_plugins: list[object], bootbox_config: dict[str, Any],
                      bootbox_push_policy: PushPolicy) -> Iterator[TestAppliance]:
    """A running appliance with a temporary state dir; stopped after the test."""
    test_appliance = start_test_appliance(tmp_path / "bootbox-state", bootbox_plugins, bootbox_config,
                                          bootbox_push_policy)
    try:
        yield test_appliance
    finally:
        test_appliance.appliance.stop()


@pytest.fixture
def bootbox_host(bootbox_appliance: TestAppliance) -> FakeHost:
    """A host (MAC 52:54:00:b0:07:01) for which a ``fake`` profile and an all-hosts rule exist."""
    bootbox_appliance.add_fake_profile()
    return bootbox_appliance.host("52:54:00:b0:07:01")
