"""Golden renders of each answer kind, the kickstart contract, and the call-in script run by a shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import bootbox_linux
from bootbox import AnswerEnv, Host, HostProfile, ValidationError, callin_script, hookimpl
from bootbox.core.hostprofile import parse_host_profile, render, render_context, template_answers
from bootbox.store.journal import Journal
from bootbox.hooks.manager import make_plugin_manager
from bootbox.service.bootservice import BootService
from bootbox.store.memory import MemoryStore
from tests.conftest import test_settings
from tests.support.lab_fixtures import lab_unavailable

HOST = Host(mac="52:54:00:12:34:56", attrs={"vendor": "QEMU", "ipv4": "198.18.0.50"},
            associations={"group": "rack7", "host_profile": "p"})
KINDS = {"cloud-init": ("user-data",), "preseed": ("preseed.cfg",), "kickstart": ("ks.cfg",)}


def _env(doc: dict[str, Any], answers: dict[str, Any]) -> tuple[HostProfile, AnswerEnv]:
    profile = parse_host_profile(doc, kinds=KINDS)
    values = template_answers(profile.inputs, answers, lambda name, plain: f"$6$salt${name}-hash")
    context = render_context(HOST, values, {"up_url": "http://198.18.0.1:8080/up", "instance_id": "bootbox-i-1"})
    return profile, AnswerEnv(render=lambda name: render(profile, name, context), up_url="http://198.18.0.1:8080/up",
                              instance_id="bootbox-i-1")


def test_cloud_init_golden() -> None:
    doc = {"name": "p", "kind": "cloud-init",
           "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "root_password", "type": "password"}],
           "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\nchpasswd:\n  users:\n"
                                      "  - {name: root, password: '{{ answers.root_password }}', type: hash}\n"
                                      "phone_home:\n  url: {{ bootbox.up_url }}\n  post: [instance_id]\n"}}
    profile, env = _env(doc, {"hostname": "web01", "root_password": "pw"})
    files = bootbox_linux.bootbox_render_answer_file(kind="cloud-init", host=HOST, profile=profile,
                                                     answers={"hostname": "web01"}, env=env)
    assert files == {
        "user-data": "#cloud-config\nhostname: web01\nchpasswd:\n  users:\n"
                     "  - {name: root, password: '$6$salt$root_password-hash', type: hash}\n"
                     "phone_home:\n  url: http://198.18.0.1:8080/up\n  post: [instance_id]\n",
        "meta-data": "instance-id: bootbox-i-1\nlocal-hostname: web01\n",
    }


def test_cloud_init_refuses_yaml_that_cloud_init_would_ignore() -> None:
    doc = {"name": "p", "kind": "cloud-init", "inputs": [{"name": "x"}],
           "templates": {"user-data": "#cloud-config\nkey: [unclosed {{ answers.x }}\n"}}
    profile, env = _env(doc, {"x": "1"})
    with pytest.raises(ValidationError) as info:
        bootbox_linux.bootbox_render_answer_file(kind="cloud-init", host=HOST, profile=profile, answers={}, env=env)
    assert info.value.field == "templates.user-data"


def test_preseed_golden() -> None:
    doc = {"name": "p", "kind": "preseed",
           "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "root_password", "type": "password"},
                      {"name": "domain", "required": False, "default": "lab.example"}],
           "templates": {"preseed.cfg": "d-i netcfg/get_hostname string {{ answers.hostname }}\n"
                                        "d-i netcfg/get_domain string {{ answers.domain }}\n"
                                        "d-i passwd/root-password-crypted password {{ answers.root_password }}\n"
                                        "d-i preseed/late_command string in-target wget -q --post-data "
                                        "boot_id=installed -O- '{{ bootbox.up_url }}'\n"}}
    profile, env = _env(doc, {"hostname": "db01", "root_password": "pw"})
    files = bootbox_linux.bootbox_render_answer_file(kind="preseed", host=HOST, profile=profile, answers={}, env=env)
    assert files == {"preseed.cfg": (
        "d-i netcfg/get_hostname string db01\n"
        "d-i netcfg/get_domain string lab.example\n"
        "d-i passwd/root-password-crypted password $6$salt$root_password-hash\n"
        "d-i preseed/late_command string in-target wget -q --post-data boot_id=installed -O- 'http://198.18.0.1:8080/up'\n"
    )}
    assert bootbox_linux.bootbox_render_answer_file(kind="kickstart", host=HOST, profile=profile, answers={},
                                                    env=env) is None


class KickstartContract:
    """The contract the ESXi plugin implements for ``kickstart`` (a stand-in until it does)."""

    __name__ = "kickstart-contract"

    @hookimpl
    def bootbox_register_answer_kinds(self, register: Callable[..., None]) -> None:
        register("kickstart", files=("ks.cfg",), description="ESXi scripted install")

    @hookimpl
    def bootbox_render_answer_file(self, kind: str, host: Host, profile: HostProfile, answers: Any,
                                   env: AnswerEnv) -> dict[str, str] | None:
        if kind != "kickstart":
            return None
        text = env.render("ks.cfg")
        if "rootpw --iscrypted" not in text and "rootpw" in text:
            raise ValidationError("templates.ks.cfg", "write rootpw --iscrypted {{ answers.root_password }}")
        return {"ks.cfg": text}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[BootService]:
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[bootbox_linux, KickstartContract()])
    journal = Journal(None)
    svc = BootService(test_settings(tmp_path), MemoryStore(), journal, pm)
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


def test_kickstart_renders_through_the_hook_with_a_hashed_password_and_a_firstboot_callin(service: BootService) -> None:
    ks = ("vmaccepteula\nrootpw --iscrypted {{ answers.root_password }}\n"
          "network --bootproto=static --ip={{ answers.ip }} --hostname={{ answers.hostname }}\n"
          "%firstboot --interpreter=busybox\n{{ bootbox.callin }}")
    service.hostconfig.profiles.put({"name": "esx", "kind": "kickstart", "templates": {"ks.cfg": ks},
                                     "inputs": [{"name": "root_password", "type": "password"},
                                                {"name": "ip", "validation": "ipv4"},
                                                {"name": "hostname", "validation": "fqdn"}]}, replace_existing=False)
    host = replace(HOST, associations={"host_profile": "esx"})
    service.hosts.update(HOST.mac, lambda h: host)
    service.hostconfig.answers.set(HOST.mac, {"root_password": "VMware1!", "ip": "198.18.0.60",
                                              "hostname": "esx01.lab.example"}, service.hostconfig.known_inputs(HOST.mac))
    _, files = service.hostconfig.render(host, base_url="http://198.18.0.1:8080", masked=False)
    text = files["ks.cfg"]
    rootpw = text.splitlines()[1].split()[-1]
    from bootbox.store.secretbox import sha512_crypt

    assert sha512_crypt("VMware1!", rootpw.split("$")[2]) == rootpw  # the real hash of the answer
    assert "--ip=198.18.0.60 --hostname=esx01.lab.example" in text
    token = service.hostconfig.up_token(HOST.mac)
    assert f"URL='http://198.18.0.1:8080/api/v1/hosts/{HOST.mac}/up?token={token}'" in text
    with pytest.raises(ValidationError, match="kind"):
        service.hostconfig.render(host, base_url="http://x", kind="cloud-init")


@pytest.mark.parametrize("shell", ["sh", "busybox"])
def test_the_callin_script_retries_until_200(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        lab_unavailable(f"{shell} is not installed")
    answers = [503, 409, 200]
    bodies: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = tmp_path / "callin.sh"
        script.write_text(callin_script(f"http://127.0.0.1:{server.server_address[1]}/up?token=t", first=0,
                                        step_min=0, step_max=0, cap=0))
        if shell == "busybox":  # ESXi's shell and tools: busybox's sh, wget, sed, od
            bindir = tmp_path / "bin"
            bindir.mkdir()
            for tool in ("sh", "wget", "sed", "od", "tr", "tail", "cat", "date", "sleep"):
                os.symlink(shutil.which("busybox"), bindir / tool)  # type: ignore[arg-type]
            argv, env = [str(bindir / "sh"), str(script)], {"PATH": str(bindir)}
        else:
            argv, env = ["sh", str(script)], {"PATH": os.environ["PATH"]}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "answered 503" in done.stdout and "answered 409" in done.stdout and "host configured" in done.stdout
    assert len(bodies) == 3 and len(set(bodies)) == 1 and bodies[0].startswith("boot_id=")


def test_the_callin_backoff_is_waiters() -> None:
    text = callin_script("http://198.18.0.1:8080/api/v1/hosts/x/up?token=t")
    assert "delay=10\n" in text and "delay=$((delay + 8 + $(od -An -N1 -tu1 /dev/urandom) % 5))" in text
    assert 'if [ "$delay" -gt 300 ]; then delay=300; fi' in text
    with pytest.raises(ValueError):
        callin_script("http://x/up; rm -rf /")
    assert json.dumps(text)  # plain text, embeddable in any answer file
