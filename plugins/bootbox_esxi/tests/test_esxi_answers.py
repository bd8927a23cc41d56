"""The ESXi plugin on the answer-file contract: the kickstart rendered from a host profile and
served once to its host, and the stateless call-in module that reports the host up.

Runs the same real BootService + esxi plugin + Flask test client as ``test_esxi_boot.py`` (its
fixture and helpers). The call-in launcher is also run by busybox's ``sh`` (ESXi's shell)
against a local HTTP server, to show it reports in from the background and returns at once.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bootbox import AnswerEnv, Host, ValidationError
from bootbox.store.secretbox import sha512_crypt
from bootbox_esxi import callin, kickstart
from bootbox_esxi.tests.test_esxi_boot import AUTH, BASE_URL, KICKSTART, MAC, SECRET, Env, _vibs, env, tokens
from bootbox.service.identity import NeighbourTable
from tests.support.lab_fixtures import lab_unavailable

__all__ = ["env"]

OTHER = "52:54:00:e5:0a:02"
KEY = re.compile(r"/boot/esxi/hosts/[0-9a-f]{12}/([A-Za-z0-9_-]{32})/-/(?:boot|pxelinux)\.cfg")


def _stateless_key(env: Env) -> str:
    env.profile("esxi-s", {"vibs": _vibs(real=False)})
    key, _ = tokens(env.script())
    return key


def _report_in(env: Env, mac: str = MAC) -> None:
    """The host reports in with its boot's up token: its next script request is a new boot."""
    token = env.service.hostconfig.up_token(mac)
    assert env.client.post(f"/api/v1/hosts/{mac}/up?token={token}", json={"boot_id": token[:8]}).status_code in (200, 503)


def _audits(env: Env, mac: str) -> list[str]:
    return [e.message for e in env.service.host_events(mac) if e.kind == "audit"]


# ------------------------------------------------------------------------------- kickstart


def test_the_kickstart_renders_hashed_and_is_served_once_to_its_host(env: Env, caplog: pytest.LogCaptureFixture
                                                                    ) -> None:
    caplog.set_level(logging.DEBUG)
    env.kickstart_host()
    _, answer = tokens(env.script(platform="efi"))
    path = f"/boot/hosts/525400e50a01/answers/{answer}/ks.cfg"
    # Another host presenting this token, and this host from another machine's address, get 403.
    env.service.identity.neighbours = NeighbourTable(read_v4=lambda: {"198.18.0.99": "52:54:00:99:99:99"})
    assert env.client.get(path.replace("525400e50a01", "525400e50a02")).status_code == 403
    assert env.client.get(path, environ_base={"REMOTE_ADDR": "198.18.0.99"}).status_code == 403
    served = env.client.get(path, base_url=BASE_URL)
    assert served.status_code == 200, served.json
    ks = served.text
    rootpw = next(line for line in ks.splitlines() if line.startswith("rootpw"))
    hashed = rootpw.split()[-1]
    assert rootpw == f"rootpw --iscrypted {hashed}" and sha512_crypt(SECRET, hashed.split("$")[2]) == hashed
    assert SECRET not in ks
    up = f"{BASE_URL}/api/v1/hosts/{MAC}/up?token={env.service.hostconfig.up_token(MAC)}"
    assert ks.split(f"\n{kickstart.FIRSTBOOT}\n", 1)[1] == callin.launcher(up)
    # Single use: the same URL again is refused, and every refusal is an audit event.
    assert env.client.get(path, base_url=BASE_URL).status_code == 403
    assert len(_audits(env, MAC)) == 2 and len(_audits(env, OTHER)) == 1
    everything = caplog.text + "".join(str(e.to_dict()) for m in (MAC, OTHER) for e in env.service.host_events(m))
    assert SECRET not in everything and hashed not in everything


def test_a_plain_text_rootpw_is_refused_with_what_to_write(env: Env) -> None:
    """Refused when the host profile is added (rendered with example answers), not first at a boot."""
    refused = env.client.post("/api/v1/hostprofiles", headers=AUTH, json={
        "name": "esx-ks", "kind": "kickstart", "templates": {"ks.cfg": KICKSTART.replace("rootpw --iscrypted", "rootpw")},
        "inputs": [{"name": "root_password", "type": "password"}, {"name": "hostname", "validation": "fqdn"}]})
    error = refused.json["error"]
    assert refused.status_code == 422 and error["field"] == "templates.ks.cfg"
    assert "line 3: rootpw gives the root password in plain text" in error["message"]
    assert "rootpw --iscrypted {{ answers.NAME }}" in error["message"] and "Example-Pass-1" not in error["message"]
    assert env.client.get("/api/v1/hostprofiles/esx-ks", headers=AUTH).status_code == 404  # nothing stored


@pytest.mark.parametrize(("text", "problem"), [
    ("vmaccepteula\nrootpw VMware1!\n", "line 2: rootpw gives the root password in plain text"),
    ("rootpw --iscrypted VMware1!\n", "line 1: rootpw --iscrypted needs one crypt hash"),
    ("rootpw --iscrypted\n", "needs one crypt hash"),
    ("# rootpw VMware1!\nrootpw --iscrypted $6$salt$abc\n", ""),
    ("rootpw --iscrypted <masked>\n", ""),  # an operator's preview
    ("rootpw --iscrypted $1$salt$abc\n%post --interpreter=busybox\nrootpw plain-in-a-script\n", ""),
])
def test_rootpw_checks(text: str, problem: str) -> None:
    if not problem:
        kickstart.check_rootpw(text)
        return
    with pytest.raises(ValidationError, match=problem) as info:
        kickstart.check_rootpw(text)
    assert info.value.field == "templates.ks.cfg" and "VMware1!" not in info.value.message


def _hook(env: Env, template: str, host: Host) -> str:
    up = f"{BASE_URL}/api/v1/hosts/{host.mac}/up?token=t0k"
    answer_env = AnswerEnv(render=lambda name: template, up_url=up, instance_id="i")
    files = env.plugin.bootbox_render_answer_file(kind="kickstart", host=host, profile=None,  # type: ignore[arg-type]
                                                  answers={}, env=answer_env)
    assert files is not None and list(files) == ["ks.cfg"]
    return files["ks.cfg"]


def test_firstboot_is_added_only_to_installs_that_have_none(env: Env) -> None:
    env.profile("esxi-i", {"vibs": _vibs(real=False), "mode": "install"})
    env.profile("esxi-s", {"vibs": _vibs(real=False)}, mac=OTHER)
    installer = Host(mac=MAC, associations={"image": "esxi-i"})  # not booted yet: `host render` previews it
    stateless = Host(mac=OTHER, profile="esxi-s")
    plain = "vmaccepteula\nrootpw --iscrypted $6$s$h\n"
    added = _hook(env, plain, installer)
    assert added == (f"{plain}\n{kickstart.FIRSTBOOT}\n"
                     + callin.launcher(f"{BASE_URL}/api/v1/hosts/{MAC}/up?token=t0k"))
    own = plain + "%firstboot --interpreter=busybox\necho mine\n"
    assert _hook(env, own, installer) == own
    assert _hook(env, plain, stateless) == plain  # stateless hosts call in from their boot module
    assert env.plugin.bootbox_render_answer_file(kind="cloud-init", host=installer, profile=None, answers={},
                                                 env=None) is None


def test_the_operator_preview_renders_masked(env: Env) -> None:
    env.kickstart_host()
    env.script()
    preview = env.client.get(f"/api/v1/hosts/{MAC}/render/kickstart").json["files"]["ks.cfg"]
    assert "rootpw --iscrypted <masked>\n" in preview and "token=<masked>" in preview and SECRET not in preview


def test_install_without_a_host_profile_runs_the_installer_without_ks_and_says_so(env: Env) -> None:
    env.profile("esxi-i", {"vibs": _vibs(real=False), "mode": "install"})
    key, answer = tokens(env.script())
    assert (key, answer) == ("-", "-")
    cfg = env.client.get("/boot/esxi/hosts/525400e50a01/-/-/boot.cfg").text
    assert "kernelopt=runweasel\n" in cfg and "ks=" not in cfg and "bbcallin" not in cfg
    assert any("give it one of kind kickstart" in e.message for e in env.service.host_events(MAC))


def test_the_plugin_no_longer_serves_a_kickstart_by_mac(env: Env) -> None:
    env.kickstart_host()
    _, answer = tokens(env.script())
    for path in ("/boot/esxi/hosts/525400e50a01/ks.cfg", f"/boot/esxi/hosts/525400e50a01/-/{answer}/ks.cfg",
                 "/boot/hosts/525400e50a01/assets/ks.cfg"):
        response = env.client.get(path)
        assert response.status_code == 404 and SECRET.encode() not in response.data, path
    with pytest.raises(ValidationError, match="host profile of kind kickstart"):
        env.plugin.validate_spec({"vibs": _vibs(real=False), "mode": "install", "kickstart": "vmaccepteula\n"})


# ------------------------------------------------------------------------------- the call-in module


def test_the_call_in_module_is_a_tgz_with_an_executable_local_sh(env: Env) -> None:
    key = _stateless_key(env)
    response = env.client.get(f"/boot/esxi/hosts/525400e50a01/{key}/bbcallin.tgz", base_url=BASE_URL)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.data[:2] == b"\x1f\x8b"  # gzip
    with tarfile.open(fileobj=io.BytesIO(response.data), mode="r:gz") as tar:
        members = tar.getmembers()
        # local.sh, then the host's TLS certificate and key from the appliance's CA (test_esxi_hostcert.py)
        assert [m.name for m in members] == ["etc/rc.local.d/local.sh", callin.RUI_CRT, callin.RUI_KEY]
        script = members[0]
        assert script.isfile() and script.mode == 0o755 and (script.uid, script.gid) == (0, 0)
        text = tar.extractfile(script).read().decode()  # type: ignore[union-attr]
    up = f"{BASE_URL}/api/v1/hosts/{MAC}/up?token={env.service.hostconfig.up_token(MAC)}"
    assert text == callin.launcher(up) and text.startswith("#!/bin/sh\n")
    assert f"URL='{up}'" in text and "<port>8080</port>" in text and text.endswith(") >/var/log/bootbox-callin.log "
                                                                                   "2>&1 </dev/null &\nexit 0\n")
    assert any(e.data.get("file") == "bbcallin.tgz" for e in env.service.host_events(MAC) if e.kind == "http.file")


def test_the_call_in_module_is_served_only_to_its_host_and_boot(env: Env) -> None:
    key = _stateless_key(env)
    env.profile("esxi-o", {"vibs": _vibs(real=False)}, mac=OTHER)
    other_key = KEY.findall(env.script(mac=OTHER))[0]
    for mac, wrong in (("525400e50a02", key), ("525400e50a01", other_key), ("525400e50a01", "A" * 32)):
        refused = env.client.get(f"/boot/esxi/hosts/{mac}/{wrong}/bbcallin.tgz")
        assert refused.status_code == 403 and refused.data[:2] != b"\x1f\x8b", (mac, wrong)
    assert len(_audits(env, MAC)) == 2 and len(_audits(env, OTHER)) == 1
    assert env.client.get("/boot/esxi/hosts/525400e50a01/-/bbcallin.tgz").status_code == 403
    assert env.client.get("/boot/hosts/525400e50a01/assets/bbcallin.tgz").status_code == 404  # not by MAC alone
    assert tokens(env.script())[0] == key  # a re-fetch within the boot keeps its key
    _report_in(env)
    again, _ = tokens(env.script())  # the next boot: the old key stops working
    assert env.client.get(f"/boot/esxi/hosts/525400e50a01/{key}/bbcallin.tgz").status_code == 403
    assert env.client.get(f"/boot/esxi/hosts/525400e50a01/{again}/bbcallin.tgz").status_code == 200


def test_an_install_boot_has_no_call_in_module_and_ends_the_last_one(env: Env) -> None:
    key = _stateless_key(env)
    changed = env.client.put("/api/v1/profiles/esxi-s", headers=AUTH, json={
        "name": "esxi-s", "kind": "esxi", "spec": {"vibs": _vibs(real=False), "mode": "install"}})
    assert changed.status_code == 200, changed.json
    assert tokens(env.script()) == ("-", "-")
    assert env.client.get(f"/boot/esxi/hosts/525400e50a01/{key}/bbcallin.tgz").status_code == 403


def test_every_boot_gets_a_new_call_in_key(env: Env) -> None:
    first = _stateless_key(env)
    _report_in(env)
    second, _ = tokens(env.script())
    assert first != second
    old = env.client.get(f"/boot/esxi/hosts/525400e50a01/{first}/bbcallin.tgz")
    assert old.status_code == 403 and old.data[:2] != b"\x1f\x8b"
    assert env.client.get(f"/boot/esxi/hosts/525400e50a01/{second}/bbcallin.tgz").status_code == 200


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST with 503 and remembers its body, as the appliance does while pushing."""

    bodies: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        type(self).bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_the_launcher_reports_up_from_the_background_under_busybox(tmp_path: Path) -> None:
    """busybox's sh, wget, sed and od (what ESXi has): the launcher returns while the loop runs on."""
    busybox = shutil.which("busybox")
    if busybox is None:
        lab_unavailable("busybox is not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "wget", "sed", "od", "tr", "tail", "cat", "date", "sleep"):
        os.symlink(busybox, bindir / tool)
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "callin.log"
    script = tmp_path / "local.sh"
    text = callin.launcher(f"http://127.0.0.1:{server.server_address[1]}/api/v1/hosts/{MAC}/up?token=t")
    script.write_text(text.replace(callin.LOG, str(log)))
    proc = subprocess.Popen([str(bindir / "sh"), str(script)], env={"PATH": str(bindir)}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=60)  # returns only if the loop went to the background
        assert proc.returncode == 0, out
        for _ in range(300):  # the loop's first POST is immediate; allow a slow machine
            if _Recorder.bodies and log.is_file() and "answered 503" in log.read_text():
                break
            time.sleep(0.1)
        assert _Recorder.bodies and _Recorder.bodies[0].startswith("boot_id=")
        assert "asking again in 10 s" in log.read_text()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the background loop, in this test's own process group
        except ProcessLookupError:
            pass
        server.shutdown()
        server.server_close()
