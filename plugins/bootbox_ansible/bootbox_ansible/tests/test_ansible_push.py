"""The push for real: ``bootbox serve``, a host in its own namespace with a real sshd, real Ansible.

Two namespaces on one lab bridge (names carry the tag ``push``): ``pushsrv`` runs ``bootbox
serve`` (every installed plugin, this one by its entry point), ``pushhost`` is the host: it
fetches its boot script and its user-data as a booting host does, authorises the keys its
user-data carries (what cloud-init does for it) for a real OpenSSH server running as root on this
machine's filesystem, and reports up from its own MAC and address (bootbox checks both against
its neighbour table). Then bootbox runs the host profile's playbook against it with
``ansible-playbook``; the file the playbook writes appears here, naming the boot.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from bootbox.lab.netns import Member, Segment
from bootbox_ansible.keys import load_or_create
from bootbox_ansible.runner import Target, find_command, run_playbook
from bootbox_ansible.tests.support import (
    MARKER_PLAYBOOK,
    Sshd,
    ansible_host_profile,
    authorized_keys,
    push_events,
    sshd_available,
    wait_for_push,
)
from tests.support.e2e_bootbox import BootboxOnSegment, start_bootbox
from tests.support.lab_fixtures import LabSegment, lab_unavailable, require_tools

pytestmark = pytest.mark.netns

PUSH_TOML = ("[push]\nattempts = 12\ntimeout = 60.0\nfirst_delay = 1.0\nstep_min = 0.5\nstep_max = 1.0\n"
             "max_delay = 3.0\n"
             # The "host" is this machine, whose PATH may lead to a pyenv shim first.
             '[plugins.ansible]\npython_interpreter = "/usr/bin/python3"\n')


@pytest.fixture(name="lab")
def lab_fixture(tmp_path: Path) -> Iterator[LabSegment]:
    require_tools("ip", "setpriv", "curl", "bash")
    missing = sshd_available()
    if missing:
        lab_unavailable(missing)
    with Segment() as net:
        server = net.add_namespace("pushsrv", "198.18.0.1/24")
        host = net.add_namespace("pushhost", "198.18.0.7/24")
        yield LabSegment(net=net, server=server, site=host, client=host, workdir=tmp_path)


def _api(lab: LabSegment, bootbox: BootboxOnSegment, method: str, path: str, body: Any = None) -> Any:
    return bootbox.api(method, path, body)


def _curl(lab: LabSegment, host: Member, url: str, *args: str) -> tuple[int, str]:
    done = lab.net.run(host, ["curl", "-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", *args, url], check=False,
                       timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


def _boot(lab: LabSegment, bootbox: BootboxOnSegment, host: Member) -> tuple[str, str]:
    """What a booting host does before it is up: its script, then its user-data (cloud-init)."""
    status, script = _curl(lab, host, f"{bootbox.url}/boot/hosts/{host.mac}/script.ipxe")
    assert status == 200, script
    answers = re.search(r";s=(http://\S+/answers/[\w-]+/)", script)
    up = re.search(r" up=(http://\S+)", script)
    assert answers and up, script
    status, user_data = _curl(lab, host, answers.group(1) + "user-data")
    assert status == 200, user_data
    return user_data, up.group(1)


def _report_up(lab: LabSegment, host: Member, up: str, boot_id: str) -> int:
    return _curl(lab, host, up, "-d", f"boot_id={boot_id}")[0]


def test_the_playbook_is_pushed_after_every_boot_and_retried_while_sshd_is_down(lab: LabSegment) -> None:
    host = lab.client
    bootbox = start_bootbox(lab, extra_toml=PUSH_TOML)
    marker = lab.workdir / "marker.txt"
    kernel = lab.workdir / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    _api(lab, bootbox, "POST", "/profiles", {"name": "deb", "kind": "linux", "spec": {
        "kernel": str(kernel), "cmdline": "console=ttyS0 ds=nocloud-net;s={answers} up={up}"}})
    _api(lab, bootbox, "POST", "/hostprofiles", ansible_host_profile(
        "web", MARKER_PLAYBOOK.format(marker=marker), "#cloud-config\nhostname: {{ answers.hostname }}\n",
        inputs=["hostname", {"name": "api_key", "secret": True}]))
    _api(lab, bootbox, "POST", "/rules", {"name": "all", "all_hosts": True,
                                          "items": {"image": "deb", "host_profile": "web"}})
    _api(lab, bootbox, "PATCH", f"/hosts/{host.mac}/answers", {"values": {"hostname": "web01", "api_key": "k3y-s3cret"}})
    key = bootbox.json("ansible", "key")
    sshd = Sshd(lab.net, host, lab.workdir / "sshd")

    # Boot 1: this host's user-data authorises the appliance's key and gives the host its SSH
    # host key for this boot (cloud-init's ssh_keys); sshd takes both; the host reports up.
    user_data, up = _boot(lab, bootbox, host)
    assert authorized_keys(user_data) == [key["public_key"]]
    first_host_key = _host_key(user_data)
    sshd.configure_from(user_data)
    sshd.start()
    assert _report_up(lab, host, up, "boot-1") in (200, 503)
    tasks = wait_for_push(lambda: bootbox.events(host.mac), "boot-1")
    assert [(t["data"]["task"], t["data"]["status"]) for t in tasks] == [
        ("write the marker", "changed"), ("read it back", "ok")]
    assert marker.read_text() == "host web01 boot boot-1\n"
    shown = _api(lab, bootbox, "GET", f"/hosts/{host.mac}")
    assert shown["state"] == "configured" and shown["pushes"]["ansible"]["result"] == "ok"
    log = bootbox.log.read_text()
    assert "k3y-s3cret" not in json.dumps(bootbox.events(host.mac)) and "k3y-s3cret" not in log
    assert "PRIVATE KEY" not in log

    # Boot 2 (a stateless host forgot everything): a new boot ID and a new host key, and the
    # play runs again.
    marker.unlink()
    user_data, up = _boot(lab, bootbox, host)
    assert authorized_keys(user_data) == [key["public_key"]] and _host_key(user_data) != first_host_key
    sshd.configure_from(user_data)
    sshd.restart()
    assert _report_up(lab, host, up, "boot-2") in (200, 503)
    tasks = wait_for_push(lambda: bootbox.events(host.mac), "boot-2")
    assert [t["data"]["status"] for t in tasks] == ["changed", "ok"]
    assert marker.read_text() == "host web01 boot boot-2\n"
    stale = sshd.host_key.read_text()

    # Boot 3: sshd is down at first: unreachable, retried with the backoff, on the timeline. Then
    # a machine at the host's address answers with another host key (last boot's): refused, and
    # retried. Once the host's sshd has this boot's key, the push of the same boot gets through.
    sshd.stop()
    user_data, up = _boot(lab, bootbox, host)
    assert _report_up(lab, host, up, "boot-3") in (200, 503)
    _wait_for_retry(lab, bootbox, host, "boot-3", "Connection refused")
    assert _api(lab, bootbox, "GET", f"/hosts/{host.mac}")["state"] == "configuring"
    sshd.configure_from(user_data)
    sshd.use_host_key(stale)
    sshd.start()
    _wait_for_retry(lab, bootbox, host, "boot-3", "Host key verification failed")
    assert not marker.read_text().endswith("boot-3\n")
    sshd.configure_from(user_data)
    sshd.restart()
    tasks = wait_for_push(lambda: bootbox.events(host.mac), "boot-3", retries=True)
    assert [t["data"]["status"] for t in tasks if t["data"]["status"] != "unreachable"] == ["changed", "ok"]
    mine = push_events(bootbox.events(host.mac), "boot-3")
    retries = [e for e in mine if e["data"].get("result") == "retry"]
    assert retries and all("unreachable" in e["message"] and "next try in" in e["message"] for e in retries)
    assert marker.read_text() == "host web01 boot boot-3\n"
    assert _api(lab, bootbox, "GET", f"/hosts/{host.mac}")["state"] == "configured"
    assert bootbox.cli("host", "events", host.mac).stdout.count("ansible task 'write the marker'") >= 3
    sshd.stop()


def _host_key(user_data: str) -> str:
    keys = (yaml.safe_load(user_data) or {}).get("ssh_keys") or {}
    assert str(keys.get("ed25519_public", "")).startswith("ssh-ed25519 "), user_data
    return str(keys["ed25519_public"])


def _wait_for_retry(lab: LabSegment, bootbox: BootboxOnSegment, host: Member, boot_id: str, words: str) -> None:
    """Until the push of ``boot_id`` has been retried after a failure whose message has ``words``."""
    deadline = time.monotonic() + 90
    while True:
        events = push_events(bootbox.events(host.mac), boot_id)
        if [e for e in events if e["data"].get("result") == "retry" and words in e["message"]]:
            return
        assert time.monotonic() < deadline, [e["message"] for e in events]
        time.sleep(0.5)


def test_a_play_that_overruns_is_stopped_with_everything_it_started(lab: LabSegment) -> None:
    """The runner on its own, from the appliance's namespace: a task that outlasts the attempt's
    time is stopped, ``ansible-playbook`` and its ssh with it, and its work dir is gone."""
    host = lab.client
    work = lab.workdir / "work"
    work.mkdir()
    pair = load_or_create(lab.workdir / "key")
    sshd = Sshd(lab.net, host, lab.workdir / "sshd")
    sshd.authorize([pair.public])
    sshd.start()
    playbook = ("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: quick\n      command: 'true'\n"
                "    - name: too long\n      command: sleep 20\n")
    seen: list[dict[str, Any]] = []
    command = find_command()
    assert command, "ansible-playbook is installed with the plugin (ansible-core)"
    started = time.monotonic()
    run = lab.net.call(lab.server, run_playbook, playbook,
                       target=Target("h", host.ip, 22, "root", "/usr/bin/python3"), key_path=pair.private_path,
                       variables={"answers": {}}, timeout=8.0, command=command, on_event=seen.append,
                       work_parent=work)
    assert run.timed_out and time.monotonic() - started < 30
    assert [(e["task"], e["status"]) for e in seen if e["event"] == "task"] == [("quick", "changed")]
    sshd.stop()
    assert list(work.iterdir()) == []
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            if str(lab.workdir) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                leftovers.append(proc.name)
        except OSError:
            continue
    assert leftovers == []
