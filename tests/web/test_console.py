"""The operator's console through Flask's test client on a real BootService: logins, the session
cookie and CSRF, read-only mode, masked secrets, paging at 1,000 hosts, the rules workflow."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bootbox_linux
import pytest
from flask.testing import FlaskClient

from bootbox.config import ConfigError, Settings
from bootbox.hooks.manager import make_plugin_manager
from bootbox.model import BootEvent, Machine
from bootbox.net.tftp.server import TransferRecord
from bootbox.service.bootservice import BootService
from bootbox.store.journal import Journal
from bootbox.store.memory import MemoryStore
from bootbox.web import create_app
from bootbox.web.console.passwords import hash_password, verify_password
from bootbox.web.console.timeline import timeline
from tests.conftest import test_settings

TOKEN = "console-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TOKEN = "console-read-token"
MAC = "52:54:00:c0:05:01"
SECRET = "Sw0rdfish-never-shown"
PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD, n=2**14)  # cheaper than the default: many tests log in


@contextmanager
def _service(settings: Settings) -> Iterator[BootService]:
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux])
    journal = Journal(None)
    journal.start()
    service = BootService(settings, MemoryStore(), journal, pm)
    service.start()
    try:
        yield service
    finally:
        service.close()
        journal.close()


@pytest.fixture
def console_service(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BootService]:
    """A started service; ``@pytest.mark.parametrize("console_service", [SETTINGS], indirect=True)``
    gives it settings beyond the tests' defaults."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    with _service(test_settings(tmp_path, **overrides)) as service:
        yield service


def _client(service: BootService) -> FlaskClient:
    return create_app(service, token=TOKEN).test_client()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def _login(client: FlaskClient, password: str = TOKEN, user: str = "") -> Any:
    return client.post("/ui/login", data={"user": user, "password": password, "next": "/ui/hosts"})


def _profile(client: FlaskClient, tmp_path: Path, name: str = "deb", **spec: Any) -> None:
    kernel = tmp_path / f"vmlinuz-{name}"
    kernel.write_bytes(b"k")
    body = {"name": name, "kind": "linux", "spec": {"kernel": str(kernel), "cmdline": "up={up}", **spec}}
    assert client.post("/api/v1/profiles", json=body, headers=AUTH).status_code == 201


# ------------------------------------------------------------------ logins and sessions


def test_without_read_token_the_console_is_readable_but_read_only(console_service: BootService) -> None:
    client = _client(console_service)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    for path in ("/", "/ui/hosts", f"/ui/hosts/{MAC}", "/ui/rules", "/ui/profiles", "/ui/health", "/ui/rules/dry-run"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert "read-only" in page.text and 'name="csrf"' not in page.text, path
    assert MAC in client.get("/").text
    refused = client.post(f"/ui/hosts/{MAC}/adopt", data={"hostname": "x"})
    assert refused.status_code == 401 and "log in" in refused.text
    assert not console_service.host(MAC).adopted


@pytest.mark.parametrize("console_service", [{"http": {"read_token": READ_TOKEN}}], indirect=True)
def test_with_read_token_every_page_needs_a_login(console_service: BootService) -> None:
    client = _client(console_service)
    for path in ("/", "/ui/hosts", "/ui/rules", "/ui/health"):
        page = client.get(path)
        assert page.status_code == 303 and "/ui/login" in page.headers["Location"], path
    assert client.get("/api/v1/hosts").status_code == 401
    assert client.get("/ui/login").status_code == 200  # the login page and its stylesheet stay open
    assert client.get("/ui/static/console.css").status_code == 200
    assert client.get("/ui/hosts", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200

    assert _login(client, "not-the-token").status_code == 401
    logged_in = _login(client)
    assert logged_in.status_code == 303 and logged_in.headers["Location"] == "/ui/hosts"
    cookie = logged_in.headers["Set-Cookie"]
    assert "bootbox_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test
    assert client.get("/ui/hosts").status_code == 200
    assert client.get("/api/v1/hosts").status_code == 200  # a login is a read credential for the API too
    assert client.post("/api/v1/rulesets/activate").status_code == 401  # but never an API write credential

    client.post("/ui/logout")
    assert client.get("/ui/hosts").status_code == 303


def test_a_login_over_tls_gets_a_secure_cookie(console_service: BootService) -> None:
    client = _client(console_service)
    reply = client.post("/ui/login", data={"password": TOKEN}, base_url="https://bootbox.example")
    assert reply.status_code == 303 and "Secure" in reply.headers["Set-Cookie"]


@pytest.mark.parametrize("console_service", [{"ui": {"users": {"alice": HASH}}}], indirect=True)
def test_a_configured_user_logs_in_with_the_password_behind_its_hash(console_service: BootService) -> None:
    client = _client(console_service)
    assert verify_password(PASSWORD, HASH) and not verify_password("wrong", HASH)
    assert _login(client, "wrong", user="alice").status_code == 401
    assert _login(client, PASSWORD, user="mallory").status_code == 401
    assert _login(client, PASSWORD, user="alice").status_code == 303
    page = client.get("/ui/hosts").text
    assert '<span id="user">alice</span>' in page


def test_a_forged_or_foreign_cookie_is_no_login(console_service: BootService, tmp_path: Path) -> None:
    client = _client(console_service)
    _login(client)
    value = client.get_cookie("bootbox_session").value
    forged = FlaskClient(client.application)
    forged.set_cookie("bootbox_session", value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))
    assert "read-only" in forged.get("/ui/hosts").text
    # Another appliance (another state dir, another key) does not accept this one's cookie.
    with _service(test_settings(tmp_path / "other")) as other:
        stranger = _client(other)
        stranger.set_cookie("bootbox_session", value)
        assert "read-only" in stranger.get("/ui/hosts").text


@pytest.mark.parametrize("console_service", [{"ui": {"login_attempts": 2}}], indirect=True)
def test_failed_logins_are_limited_per_address(console_service: BootService) -> None:
    client = _client(console_service)
    assert [_login(client, "bad").status_code for _ in range(2)] == [401, 401]
    assert _login(client).status_code == 429  # even the right token, until the minute has passed


# ------------------------------------------------------------------ CSRF


def test_posts_need_the_sessions_csrf_token_but_bearer_clients_do_not(console_service: BootService) -> None:
    client = _client(console_service)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    _login(client)
    page = client.get(f"/ui/hosts/{MAC}").text
    token = _csrf(page)
    assert client.post(f"/ui/hosts/{MAC}/adopt", data={"hostname": "a"}).status_code == 403
    assert client.post(f"/ui/hosts/{MAC}/adopt", data={"hostname": "a", "csrf": "x" + token}).status_code == 403
    foreign = client.post(f"/ui/hosts/{MAC}/adopt", data={"hostname": "a", "csrf": token},
                          headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert not console_service.host(MAC).adopted
    done = client.post(f"/ui/hosts/{MAC}/adopt", data={"hostname": "web01", "csrf": token})
    assert done.status_code == 303 and "adopted" in client.get(done.headers["Location"]).text
    assert console_service.host(MAC).name == "web01"
    # A script with the API token is not a browser riding a cookie: no CSRF token needed.
    api = _client(console_service)
    assert api.post(f"/ui/hosts/{MAC}/forget", headers=AUTH).status_code == 303
    assert MAC not in [h.mac for h in console_service.list_hosts()]


# ------------------------------------------------------------------ hosts


def test_paging_and_search_at_a_thousand_hosts(console_service: BootService) -> None:
    macs = [f"52:54:00:10:{i // 256:02x}:{i % 256:02x}" for i in range(1000)]
    for mac in macs:
        console_service.adopt(mac)
    client = _client(console_service)
    first = client.get("/ui/hosts").text
    assert "page 1 of 10" in first and first.count('<tr data-mac=') == 100
    last = client.get("/ui/hosts?page=10").text
    assert "page 10 of 10" in last and last.count('<tr data-mac=') == 100
    shown = set(re.findall(r'<tr data-mac="([^"]+)"', first)) | set(re.findall(r'<tr data-mac="([^"]+)"', last))
    assert len(shown) == 200
    assert client.get("/ui/hosts?page=99").status_code == 200  # past the end: the last page
    assert client.get("/ui/hosts?page=-1").status_code == 422
    found = client.get("/ui/hosts", query_string={"q": macs[777]}).text
    assert found.count('<tr data-mac=') == 1 and macs[777] in found and "page 1 of" not in found
    assert client.get("/ui/hosts", query_string={"state": "configured"}).text.count('<tr data-mac=') == 0
    by_state = client.get("/ui/hosts", query_string={"state": "discovered", "page": 3}).text
    assert "page 3 of 10" in by_state and "state=discovered" in by_state  # the pager keeps the filter


def test_the_host_page_masks_secrets_and_explains_rules(console_service: BootService, tmp_path: Path) -> None:
    client = _client(console_service)
    _profile(client, tmp_path)
    profile = {"name": "web", "kind": "cloud-init",
               "inputs": [{"name": "root_password", "type": "password"}, {"name": "api_key", "secret": True}],
               "templates": {"user-data": "#cloud-config\npassword: {{ answers.root_password }}\n"
                                          "api_key: {{ answers.api_key }}\n"}}
    assert client.post("/api/v1/hostprofiles", json=profile, headers=AUTH).status_code == 201
    rule = {"name": "all", "all_hosts": True, "items": {"image": "deb", "host_profile": "web"}}
    assert client.post("/api/v1/rules", json=rule, headers=AUTH).status_code == 201
    values = {"root_password": SECRET, "api_key": f"key-{SECRET}"}
    assert client.patch(f"/api/v1/hosts/{MAC}/answers", json={"values": values}, headers=AUTH).status_code == 200
    client.get(f"/boot/hosts/{MAC}/script.ipxe?manufacturer=Acme&ip=198.18.0.9")
    _login(client)
    page = client.get(f"/ui/hosts/{MAC}").text
    assert SECRET not in page and "root_password" in page and "api_key" in page
    assert "decides" in page and "all hosts" in page  # the rule, explained
    assert "Acme" in page and "http.script" in page  # attributes and the timeline
    preview = client.get(f"/ui/hostprofiles/web?host={MAC}").text
    assert "#cloud-config" in preview and SECRET not in preview


def test_host_actions_repair_and_push(console_service: BootService, tmp_path: Path) -> None:
    client = _client(console_service)
    _profile(client, tmp_path, "one")
    _profile(client, tmp_path, "two")
    client.post("/api/v1/rules", json={"name": "all", "all_hosts": True, "items": {"image": "one"}}, headers=AUTH)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    client.put("/api/v1/rules/all", json={"all_hosts": True, "items": {"image": "two"}}, headers=AUTH)
    _login(client)
    page = client.get(f"/ui/hosts/{MAC}").text
    assert "the active rules give <code>two</code>" in page
    reply = client.post(f"/ui/hosts/{MAC}/repair", data={"csrf": _csrf(page)})
    assert "image: one → two" in client.get(reply.headers["Location"]).text
    assert console_service.host(MAC).associations["image"] == "two"
    reply = client.post(f"/ui/hosts/{MAC}/push", data={"csrf": _csrf(page)})
    assert reply.status_code == 303


# ------------------------------------------------------------------ rules


def test_rules_edit_dry_run_activate_roll_back(console_service: BootService, tmp_path: Path) -> None:
    client = _client(console_service)
    _profile(client, tmp_path, "one")
    _profile(client, tmp_path, "two")
    client.post("/api/v1/rules", json={"name": "all", "all_hosts": True, "items": {"image": "one"}}, headers=AUTH)
    client.get(f"/boot/hosts/{MAC}/script.ipxe?manufacturer=Acme")
    _login(client)
    csrf = _csrf(client.get("/ui/rules").text)

    bad = client.post("/ui/rules/add", data={"csrf": csrf, "name": "acme", "patterns": "vendor=Acme",
                                             "items": "image=nope"})
    assert bad.status_code == 422 and "items.image" in bad.text and 'value="acme"' in bad.text
    added = client.post("/ui/rules/add", data={"csrf": csrf, "name": "acme", "patterns": "vendor=Acme",
                                               "items": "image=two", "at": "0"})
    assert added.status_code == 303
    assert [r.name for r in console_service.ruleset("working")] == ["acme", "all"]
    assert [r.name for r in console_service.ruleset("active")] == ["all"]  # not active until activated

    dry = client.get("/ui/rules/dry-run").text
    assert "acme" in dry and MAC in dry and "image=one" in dry and "image=two" in dry

    client.post("/ui/rules/acme/move", data={"csrf": csrf, "at": "1"})
    assert [r.name for r in console_service.ruleset("working")] == ["all", "acme"]
    client.post("/ui/rules/acme/move", data={"csrf": csrf, "at": "0"})
    client.post("/ui/rules/acme/edit", data={"csrf": csrf, "patterns": "vendor=Acme\nmodel=X1", "items": "image=two"})
    assert [p.text for p in console_service.ruleset("working").get("acme").patterns] == ["vendor=Acme", "model=X1"]
    client.post("/ui/rules/acme/edit", data={"csrf": csrf, "patterns": "vendor=Acme", "items": "image=two"})

    client.post("/ui/rules/activate", data={"csrf": csrf})
    assert [r.name for r in console_service.ruleset("active")] == ["acme", "all"]
    assert "The working set is the active set" in client.get("/ui/rules").text
    client.post("/ui/rules/rollback", data={"csrf": csrf})
    assert [r.name for r in console_service.ruleset("active")] == ["all"]
    client.post("/ui/rules/acme/remove", data={"csrf": csrf})
    assert [r.name for r in console_service.ruleset("working")] == ["all"]


def test_profiles_and_their_diff(console_service: BootService, tmp_path: Path) -> None:
    client = _client(console_service)
    for name in ("a.img", "b.img", "c.img"):
        (tmp_path / name).write_bytes(b"i")
    _profile(client, tmp_path, "one", initrd=[str(tmp_path / "a.img"), str(tmp_path / "b.img")])
    _profile(client, tmp_path, "two", initrd=[str(tmp_path / "b.img"), str(tmp_path / "c.img")])
    assert "one" in client.get("/ui/profiles").text
    assert "a.img" in client.get("/ui/profiles/one").text
    diff = client.get("/ui/profiles/diff?a=one&b=two").text
    assert "− <code>" + str(tmp_path / "a.img") in diff and "+ <code>" + str(tmp_path / "c.img") in diff
    assert client.get("/ui/profiles/diff?a=one&b=missing").status_code == 404


def test_health_shows_the_last_doctor_result(console_service: BootService) -> None:
    client = _client(console_service)
    assert "No result yet" in client.get("/ui/health").text
    (console_service.settings.state_path / "doctor-last.json").write_text(
        '{"ok": false, "time": 1, "checks": [{"name": "tftp port", "status": "fail", "summary": "in use", '
        '"fix": "stop the other server"}], "client": []}')
    page = client.get("/ui/health").text
    assert "some checks failed" in page and "tftp port" in page and "stop the other server" in page


def test_a_malformed_user_hash_is_a_config_error_naming_the_user(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ui.users.bob"):
        test_settings(tmp_path, ui={"users": {"bob": "plaintext"}})


@pytest.mark.parametrize("console_service", [{"http": {"read_token": READ_TOKEN}}], indirect=True)
def test_a_login_opens_the_event_stream_the_pages_follow(console_service: BootService) -> None:
    """The live updates' EventSource sends the cookie, and resumes from the page's feed position
    (event IDs are microsecond clocks: 16 digits)."""
    client = _client(console_service)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    since = console_service.event_feed().last_id
    assert len(str(since)) >= 16
    assert client.get(f"/api/v1/events/stream?since={since}").status_code == 401
    _login(client)
    assert f'data-since="{since}"' in client.get("/ui/hosts").text
    stream = client.get(f"/api/v1/events/stream?host={MAC}&since={since - 1}", buffered=False)
    try:
        assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
        first = next(stream.response)
        assert b"bootbox event stream" in first
    finally:
        stream.close()


def test_a_plugin_adds_a_console_section(console_service: BootService) -> None:
    from flask import Blueprint, render_template_string

    from bootbox import hookimpl

    class Racks:
        @hookimpl
        def bootbox_register_routes(self, register):  # type: ignore[no-untyped-def]
            blueprint = Blueprint("racks", __name__, url_prefix="/ui/racks")
            blueprint.console_section = "Racks"  # type: ignore[attr-defined]

            @blueprint.get("/")
            def console() -> str:
                return render_template_string('{% extends "console/base.html" %}{% block main %}<p id="racks">'
                                              '3 racks</p>{% endblock %}', version="x", sections=[], login=None)

            register(blueprint)

    console_service.pm.register(Racks())
    client = _client(console_service)
    assert '<a href="/ui/racks/">Racks</a>' in client.get("/ui/hosts").text
    assert '<p id="racks">3 racks</p>' in client.get("/ui/racks/").text


def test_user_passwd_prints_a_hash_the_console_accepts(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    argv = [sys.executable, "-m", "bootbox", "user", "passwd", "alice", "--password-file", str(secret)]
    printed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(l for l in printed.splitlines() if l.startswith("alice = "))
    hashed = line.split(" = ", 1)[1].strip('"')
    assert verify_password(PASSWORD, hashed) and PASSWORD not in printed
    as_json = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(as_json)["user"] == "alice"
    piped = subprocess.run(argv[:-2], input="short\n", capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode != 0 and "at least 8" in piped.stdout + piped.stderr

    with _service(test_settings(tmp_path / "appliance", ui={"users": {"alice": hashed}})) as service:
        assert _login(_client(service), PASSWORD, user="alice").status_code == 303


def test_the_diff_page_links_the_kinds_plugin_comparison(console_service: BootService, tmp_path: Path) -> None:
    """A plugin that compares profiles of its kind itself (esxi: ``/api/v1/esxi/diff``) is linked
    from the console's diff (and shown there by the page's script)."""
    from flask import Blueprint, jsonify, request

    from bootbox import hookimpl

    class LinuxDiff:
        @hookimpl
        def bootbox_register_routes(self, register):  # type: ignore[no-untyped-def]
            blueprint = Blueprint("linux_api", __name__, url_prefix="/api/v1/linux")

            @blueprint.get("/diff")
            def diff():  # type: ignore[no-untyped-def]
                return jsonify({"a": request.args["a"], "b": request.args["b"], "only_a": []})

            register(blueprint)

    client = _client(console_service)
    _profile(client, tmp_path, "one")
    _profile(client, tmp_path, "two")
    assert 'id="plugin-diff"' not in client.get("/ui/profiles/diff?a=one&b=two").text
    console_service.pm.register(LinuxDiff())
    client = _client(console_service)
    page = client.get("/ui/profiles/diff?a=one&b=two").text
    assert 'data-url="/api/v1/linux/diff?a=one&amp;b=two"' in page
    assert client.get("/api/v1/linux/diff?a=one&b=two").get_json()["b"] == "two"


NASTY = ["", "²", "-1", "10^20", "9" * 40, "%00", "\x00", "é" * 300, "<script>alert(1)</script>", "//evil.example",
         "52:54:00:zz:00:01", "../../etc/passwd", "a" * 5000]


def test_no_query_string_makes_a_console_page_fail(console_service: BootService, tmp_path: Path) -> None:
    """Every console GET page with odd values in every argument it reads: an answer, never a 500,
    and nothing echoed unescaped."""
    client = _client(console_service)
    _profile(client, tmp_path, "one")
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    _login(client)
    paths = [rule.rule.replace("<mac>", MAC).replace("<name>", "one").replace("<path:name>", "console.css")
             for rule in client.application.url_map.iter_rules()
             if rule.endpoint.startswith("console.") or rule.endpoint == "pages.index"
             if "GET" in (rule.methods or set())]
    assert len(paths) >= 10
    for path in paths:
        for value in NASTY:
            args = {name: value for name in ("q", "state", "profile", "firmware", "page", "a", "b", "host", "next",
                                             "msg", "err")}
            reply = client.get(path, query_string=args)
            assert reply.status_code < 500, (path, value, reply.status_code)
            assert "<script>alert" not in reply.text, (path, value)


# ------------------------------------------------------------------ live updates (issue 19 follow-up)

# Boots as their steps come in: (kind, from iPXE, seconds since the list's first step, begins a
# boot). tests/web/browser/test_console_browser.py runs the page's script on the same lists.
BOOT_CASES: dict[str, list[tuple[str, bool, float, bool]]] = {
    "uefi chain (firmware, TFTP loader, iPXE's DHCP, script)": [
        ("state", False, 0.0, True),  # adopted by an operator, before the machine is powered on
        ("dhcp.offer", False, 11.2, True),
        ("tftp.failed", False, 15.48, False),  # the firmware's option negotiation, retried at once
        ("tftp.sent", False, 15.52, False),
        ("dhcp.offer", True, 17.65, False),  # iPXE, loaded by the firmware: the same boot
        ("rules", False, 17.70, False),
        ("http.script", False, 17.70, False),
        ("http.file", False, 17.71, False),
        ("http.file", False, 18.25, False),
        ("booted", False, 37.2, False),
        ("state", False, 37.9, False),
        ("dhcp.offer", False, 90.0, True),  # powered on again after its report-in
        ("tftp.sent", False, 94.0, False),
        ("dhcp.offer", True, 96.0, False),
    ],
    "proxy DHCP: offer and boot-server ack, each from firmware and iPXE": [
        ("dhcp.offer", False, 0.0, True),
        ("dhcp.ack", False, 0.5, False),
        ("tftp.sent", False, 1.0, False),
        ("dhcp.offer", True, 3.0, False),
        ("dhcp.ack", True, 3.2, False),
        ("http.script", False, 3.4, False),
    ],
    "bios iPXE ROM (no firmware DHCP), booting twice": [
        ("dhcp.offer", True, 0.0, True),
        ("dhcp.offer", True, 1.0, False),  # a retried DISCOVER
        ("http.script", False, 1.5, False),
        ("http.file", False, 2.0, False),
        ("dhcp.offer", True, 60.0, True),  # reset after its script: a new boot
        ("http.script", False, 61.0, False),
        ("booted", False, 80.0, False),
        ("push", False, 81.0, False),
        ("dhcp.offer", True, 200.0, True),
    ],
    "firmware retries after its loader failed; iPXE after a waiting script": [
        ("dhcp.offer", False, 0.0, True),
        ("tftp.failed", False, 4.0, False),
        ("dhcp.offer", False, 30.0, True),  # the firmware's next try is a boot of its own
        ("tftp.sent", False, 34.0, False),
        ("dhcp.offer", True, 36.0, False),
        ("http.script", False, 36.5, False),  # a waiting script: iPXE asks again in place...
        ("http.script", False, 46.5, False),
        ("dhcp.offer", True, 300.0, True),  # ...so iPXE's DHCP after it is the machine reset
    ],
}


def case_events(case: list[tuple[str, bool, float, bool]], start: float = 1_780_000_000.0) -> list[BootEvent]:
    """A case's steps as the journal holds them (a DHCP answer's data says ``ipxe``, as recorded)."""
    return [BootEvent(MAC, kind, f"{kind} {n}", {"ipxe": ipxe, "port": 67} if kind.startswith("dhcp.") else {},
                      start + at) for n, (kind, ipxe, at, _) in enumerate(case)]


@pytest.mark.parametrize("name", sorted(BOOT_CASES))
def test_a_boot_begins_at_the_firmwares_dhcp_not_at_ipxes(name: str) -> None:
    case = BOOT_CASES[name]
    steps = timeline(case_events(case))
    assert [s.begins for s in steps] == [begins for *_, begins in case]
    start = 0.0
    for step, (_, _, at, begins) in zip(steps, case):
        start = at if begins else start
        assert step.elapsed == pytest.approx(at - start), step.event.kind
    assert steps[0].delta is None and all(s.delta is not None and s.delta >= 0 for s in steps[1:])


def _uefi_dhcp(service: BootService, ipxe: bool) -> None:
    """One DHCP answer through the service's DHCP entry points, as the proxy makes them."""
    machine = Machine(mac=MAC, arch=7, vendor_class="PXEClient:Arch:00007:UNDI:003016",
                      user_class="iPXE" if ipxe else "", is_ipxe=ipxe, server_ip="198.18.0.1", client_ip="198.18.0.40")
    spec = service.decide(machine)
    assert spec is not None
    service.dhcp_answered(machine, spec, service.settings.dhcp.port)


def test_the_host_page_keeps_one_boot_across_ipxes_dhcp(console_service: BootService, tmp_path: Path) -> None:
    """A UEFI chain through the service (firmware DHCP, TFTP loader, iPXE's DHCP, script,
    report-in): one boot on the page, its report-in timed from the firmware's DHCP."""
    client = _client(console_service)
    _profile(client, tmp_path)
    client.post("/api/v1/rules", json={"name": "all", "all_hosts": True, "items": {"image": "deb"}}, headers=AUTH)
    _uefi_dhcp(console_service, ipxe=False)
    console_service.tftp_done(TransferRecord("198.18.0.40", 1024, "snponly.efi", 4096, 1468, 1, 0.05, True, ""))
    _uefi_dhcp(console_service, ipxe=True)
    script = client.get(f"/boot/hosts/{MAC}/script.ipxe?manufacturer=Acme").text
    up = re.search(r" up=http://localhost(\S+)", script)  # the linux kind passes the report-in URL to the kernel
    assert up, script
    assert client.post(up.group(1), data={"ip": "198.18.0.40", "boot_id": "b-1"}).status_code == 200
    events = console_service.host_events(MAC)
    assert [e.kind for e in events][:4] == ["dhcp.offer", "tftp.sent", "dhcp.offer", "rules"]
    assert [bool(e.data.get("ipxe")) for e in events if e.kind == "dhcp.offer"] == [False, True]

    page = client.get(f"/ui/hosts/{MAC}").text
    rows = re.findall(r'<tr class="kind-[^"]*?( boot-start)?" data-kind="([^"]+)" data-time="[^"]+"( data-ipxe="1")?>'
                      r"\s*<td>[^<]*</td><td>\+([0-9.]+) s</td>", page)
    assert [kind for _, kind, _, _ in rows] == [e.kind for e in events]
    assert [bool(start) for start, *_ in rows] == [True] + [False] * (len(events) - 1)
    assert [bool(ipxe) for _, kind, ipxe, _ in rows if kind == "dhcp.offer"] == [False, True]
    booted = next(e for e in events if e.kind == "booted")
    shown = next(float(elapsed) for _, kind, _, elapsed in rows if kind == "booted")
    assert shown == pytest.approx(booted.time - events[0].time, abs=0.01)  # since the firmware's DHCP


def test_the_host_fragment_has_the_header_attributes_and_associations(console_service: BootService,
                                                                      tmp_path: Path) -> None:
    """What the host page's script swaps in after each event: the same parts as the page."""
    client = _client(console_service)
    _profile(client, tmp_path)
    _uefi_dhcp(console_service, ipxe=False)
    before = client.get(f"/ui/hosts/{MAC}/live")
    assert before.status_code == 200 and before.headers["Cache-Control"] == "no-store"
    assert "<html" not in before.text and 'id="timeline"' not in before.text
    assert re.search(r'id="host-profile">-<', before.text) and "nothing reported yet" not in before.text
    assert re.search(r'id="host-firmware">uefi[^<]*<', before.text), before.text

    client.post("/api/v1/rules", json={"name": "all", "all_hosts": True, "items": {"image": "deb"}}, headers=AUTH)
    client.get(f"/boot/hosts/{MAC}/script.ipxe?manufacturer=Acme")
    after = client.get(f"/ui/hosts/{MAC}/live").text
    assert 'id="host-profile">deb<' in after and "<code>image=deb</code>" in after and "Acme" in after
    page = client.get(f"/ui/hosts/{MAC}").text
    for part in ("host-head", "host-attributes", "host-compliance", "host-explain", "host-answers", "pushes"):
        assert re.search(rf'id="{part}"[^>]* data-live[ >]', after), part  # swapped in by its id...
        assert re.search(rf'id="{part}"[^>]* data-live[ >]', page), part  # ...on the page
    assert client.get("/ui/hosts/52:54:00:00:00:99/live").status_code == 404


@pytest.mark.parametrize("console_service", [{"http": {"read_token": READ_TOKEN}}], indirect=True)
def test_the_fragments_follow_the_read_rules(console_service: BootService) -> None:
    client = _client(console_service)
    client.get(f"/boot/hosts/{MAC}/script.ipxe")
    assert client.get(f"/ui/hosts/{MAC}/live").status_code == 303
    assert client.get("/ui/hosts/live").status_code == 303
    _login(client)
    assert client.get(f"/ui/hosts/{MAC}/live").status_code == 200
    assert MAC in client.get("/ui/hosts/live").text


@pytest.mark.parametrize("console_service", [{"ui": {"page_size": 2}}], indirect=True)
def test_the_host_list_fragment_keeps_the_pages_query(console_service: BootService) -> None:
    """The list's script re-reads its rows for the same query: new hosts on page 1 first, the
    filters and the page kept (as a reload would show them)."""
    client = _client(console_service)
    empty = client.get("/ui/hosts/live").text
    assert 'id="no-hosts"' in empty and 'id="host-count" data-live>0<' in empty
    assert 'data-live-url="/ui/hosts/live?page=1"' in client.get("/ui/hosts").text
    macs = [f"52:54:00:20:00:{i:02x}" for i in range(5)]
    for mac in macs:
        console_service.adopt(mac)
        time.sleep(0.002)  # distinct last-seen times: the order is by activity
    first = client.get("/ui/hosts/live").text
    assert re.findall(r'<tr data-mac="([^"]+)"', first) == [macs[4], macs[3]]  # newest activity first
    assert 'id="host-count" data-live>5<' in first and "page 1 of 3" in first
    client.get(f"/boot/hosts/{macs[0]}/script.ipxe")  # it does something: it comes first
    assert re.findall(r'<tr data-mac="([^"]+)"', client.get("/ui/hosts/live").text) == [macs[0], macs[4]]
    second = client.get("/ui/hosts/live", query_string={"page": 2}).text
    assert "page 2 of 3" in second and 'data-live-url="/ui/hosts/live?page=2"' in second
    filtered = client.get("/ui/hosts/live", query_string={"q": macs[2]}).text
    assert re.findall(r'<tr data-mac="([^"]+)"', filtered) == [macs[2]] and ">1 of 5<" in filtered
    assert 'data-live-url="/ui/hosts/live?page=1&amp;q=52:54:00:20:00:02"' in filtered
