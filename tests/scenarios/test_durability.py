"""Durability against a real ``bootbox serve`` process over real sockets (issue 17).

Damaged state files are set aside before anything rewrites them, a full disk is visible and
heals by itself, push state survives a restart, and a backup restores a bootable appliance.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bootbox.model import Host
from bootbox.store.hostlog import encode_lines
from bootbox.store.setaside import list_set_aside
from tests.store.test_crash_safety import Appliance


def _script(app: Appliance, mac: str) -> str:
    with urllib.request.urlopen(f"{app.base}/boot/hosts/{mac}/script.ipxe", timeout=15) as response:
        return response.read().decode()


def _stop(app: Appliance) -> None:
    assert app.proc is not None
    app.proc.terminate()  # our own child, by PID
    app.proc.wait(timeout=30)


def _status(app: Appliance) -> dict:
    status, data = app.call("GET", "/api/v1/status")
    assert status == 200
    return data  # type: ignore[return-value]


def test_a_damaged_host_log_is_kept_and_a_wrong_shaped_line_does_not_stop_start_up(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.state.mkdir(mode=0o700)
    hosts = {f"5254000a{i:04x}": Host(mac=f"52:54:00:0a:{i >> 8:02x}:{i & 0xFF:02x}").to_dict() for i in range(2000)}
    data = bytearray(encode_lines(hosts))
    zeroed = len(data) * 9 // 10
    data[:zeroed] = bytes(zeroed)  # 90 % of the file zeroed, as on a damaged disk
    data += b'{"key": "5254000b0001", "host": {"mac": "not a mac"}}\n'  # valid JSON, wrong shape
    data += b'{"key": "5254000b0002", "host": 7}\n'
    (app.state / "hosts.jsonl").write_bytes(bytes(data))
    app.start()
    try:
        listed = app.call("GET", "/api/v1/hosts")[1]
        assert 0 < len(listed) < 2000  # type: ignore[arg-type]
        (kept,) = list_set_aside(app.state)
        assert kept.path.read_bytes() == bytes(data)
        assert f"recovered {len(listed)} of " in kept.why  # type: ignore[arg-type]
        _script(app, "52:54:00:0b:00:09")  # a write after the damage: the host log is rewritten, the copy stays
        _stop(app)
        assert kept.path.read_bytes() == bytes(data)
        log = app.log_tail()
        assert "Traceback" not in log and str(kept.path) in log
        doctor = subprocess.run([sys.executable, "-m", "bootbox", "doctor", "--no-network", "--json"],
                                env={**os.environ, "BOOTBOX_CONFIG": str(app.config)}, capture_output=True, text=True,
                                timeout=120)
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["set-aside files"]["status"] == "warn"
        assert kept.path.name in " ".join(checks["set-aside files"]["details"])
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()


@pytest.fixture
def small_state_fs(tmp_path: Path):
    """A 3 MiB tmpfs as the state directory, unmounted afterwards."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(state)]).returncode:
        from tests.support.lab_fixtures import lab_unavailable
        lab_unavailable("cannot mount a tmpfs (needs root)")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(path: Path) -> None:
    with path.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_a_full_disk_is_counted_shown_logged_once_and_heals_by_itself(tmp_path: Path, small_state_fs: Path) -> None:
    app = Appliance(tmp_path)
    app.start()
    try:
        _script(app, "52:54:00:0d:00:01")
        time.sleep(1.0)
        before = _status(app)
        assert before["servers"]["disk"]["state"] == "ok"
        filler = small_state_fs / "filler"
        try:
            _fill(filler)
            for n in range(40):  # boot traffic: events for the journal, host changes for the host log
                _script(app, f"52:54:00:0d:01:{n:02x}")
                time.sleep(0.05)
            time.sleep(2.0)
            full = _status(app)
            assert full["servers"]["disk"]["state"] == "full", full["servers"]["disk"]
            assert "journal" in full["servers"]["disk"]["failing"] and "host log" in full["servers"]["disk"]["failing"]
            assert full["journal"]["dropped"] > 0
            written = full["journal"]["written"]
            on_disk = (small_state_fs / "events.jsonl").read_bytes().count(b"\n")
            assert written <= on_disk, (written, on_disk)  # nothing counted written that is not in the file
            # An API write is refused (and rolled back), not acknowledged and lost.
            status, _ = app.call("POST", "/api/v1/profiles", {"name": "p-full", "kind": "linux",
                                                               "spec": {"kernel": "/nonexistent"}})
            assert status not in (200, 201)
        finally:
            filler.unlink(missing_ok=True)
        for n in range(5):
            _script(app, f"52:54:00:0d:02:{n:02x}")
        deadline = time.monotonic() + 15
        while _status(app)["servers"]["disk"]["state"] != "ok":
            assert time.monotonic() < deadline, _status(app)["servers"]["disk"]
            _script(app, "52:54:00:0d:02:ff")
            time.sleep(0.3)
        hosts = {h["mac"] for h in app.call("GET", "/api/v1/hosts")[1]}  # type: ignore[union-attr]
        assert "52:54:00:0d:01:00" in hosts
        _stop(app)
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log
        failures = [line for line in log.splitlines() if "host log" in line and "cannot write" in line]
        assert len(failures) == 1, failures  # once per interval (60 s), not every 0.5 s
        assert len([line for line in log.splitlines() if "journal" in line and "cannot write" in line]) == 1
        assert "writing again" in log
        app.start()  # the hosts kept in memory while the disk was full reached the log
        hosts = {h["mac"] for h in app.call("GET", "/api/v1/hosts")[1]}  # type: ignore[union-attr]
        assert {f"52:54:00:0d:01:{n:02x}" for n in range(40)} <= hosts
        _stop(app)
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()


LAUNCHER = '''
import sys
from pathlib import Path

from bootbox import hookimpl
from bootbox.appliance import Appliance, configure_logging
from bootbox.config import load_settings
from bootbox.testing import FakeKindPlugin

FIXED = Path(sys.argv[2])


class Flaky:
    """A push whose endpoint is down until the test creates FIXED."""

    __name__ = "flaky"

    @hookimpl
    def bootbox_host_up(self, host):
        if FIXED.exists():
            return "pushed"
        raise RuntimeError("endpoint down")


listener = configure_logging("info")
try:
    Appliance(load_settings(Path(sys.argv[1]), env={}), load_entrypoints=False,
              extra_plugins=(FakeKindPlugin(), Flaky())).serve_forever()
finally:
    listener.stop()
'''


def test_a_sigterm_while_a_push_retry_waits_leaves_no_host_stuck(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "bootbox.toml"
    config.write_text(f'state_dir = "{state}"\n[demo]\nenabled = false\n[tftp]\nenabled = false\n'
                      f'[dhcp]\nenabled = false\n[http]\nbind_address = "127.0.0.1"\nport = {port}\n'
                      '[push]\nattempts = 5\ntimeout = 2.0\nfirst_delay = 300.0\nmax_delay = 300.0\n')
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    fixed = tmp_path / "endpoint-fixed"
    base = f"http://127.0.0.1:{port}"
    logfile = tmp_path / "serve.log"
    mac = "52:54:00:0e:00:01"

    def start() -> subprocess.Popen[bytes]:
        with logfile.open("ab") as log:
            proc = subprocess.Popen([sys.executable, str(launcher), str(config), str(fixed)], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, logfile.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/api/v1/status", timeout=2):
                    return proc
            except OSError:
                assert time.monotonic() < deadline, logfile.read_text()[-3000:]
                time.sleep(0.05)

    def call(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
        token = (state / "api-token").read_text().strip()
        request = urllib.request.Request(url if url.startswith("http") else base + url, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def up(url: str) -> int:
        request = urllib.request.Request(url, data=json.dumps({"boot_id": "b1"}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    proc = start()
    try:
        assert call("POST", "/api/v1/profiles", {"name": "fake", "kind": "fake", "spec": {}})[0] == 201
        assert call("POST", "/api/v1/rules", {"name": "all", "all_hosts": True, "items": {"image": "fake"}})[0] == 201
        script = _script_of(base, mac)
        up_url = re.search(r"^# up (\S+)$", script, flags=re.M).group(1)  # type: ignore[union-attr]
        assert up(up_url) == 503
        deadline = time.monotonic() + 20
        while not any(e["data"].get("result") == "retry" for e in call("GET", f"/api/v1/hosts/{mac}/events")[1]):
            assert time.monotonic() < deadline, "the first push attempt never failed"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # a clean stop while the retry waits (300 s)
        assert proc.wait(timeout=30) == 0
        fixed.write_text("")
        proc = start()
        deadline = time.monotonic() + 30
        while (status := up(up_url)) == 503:
            assert time.monotonic() < deadline, "the host still answers 503 'pushes running' after the restart"
            time.sleep(0.2)
        assert status == 200
        host = call("GET", f"/api/v1/hosts/{mac}")[1]
        assert host["state"] == "configured", host  # type: ignore[index]
        assert call("POST", f"/api/v1/hosts/{mac}/push")[0] == 202  # and the operator can push again
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child, by PID
            proc.wait(timeout=30)


def _script_of(base: str, mac: str) -> str:
    with urllib.request.urlopen(f"{base}/boot/hosts/{mac}/script.ipxe", timeout=15) as response:
        return response.read().decode()


FORGED = "2026-01-01 00:00:00,000 ERROR bootbox forged-line"


def test_a_newline_in_a_tftp_file_name_cannot_forge_a_log_line(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.config.write_text(app.config.read_text().replace('log_level = "warning"', 'log_level = "debug"'))
    app.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            for name in (f"x\n{FORGED}", f"undionly.kpxe\r\n{FORGED}", f"a\x1b[2J\n{FORGED}"):
                sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", app.ports["tftp"]))
                try:
                    sock.recvfrom(2048)
                except OSError:
                    pass
        app.call("GET", f"/boot/hosts/52:54:00:0f:00:01/script.ipxe?serial=a%0A{FORGED.replace(' ', '%20')}")
        time.sleep(1.0)
        _stop(app)
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "forged-line" in log  # it was logged...
        assert not any(line.startswith(FORGED) for line in log.splitlines())  # ...but on no line of its own
        assert "\x1b" not in log
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()


@pytest.mark.parametrize(("text", "key", "form"), [
    (b'[tftp]\ntimeout = -1\n', "tftp.timeout", "greater than 0"),
    (b'[http]\nconnection_limit = -5\n', "http.connection_limit", "1 or more"),
    (b'[http]\nconnection_limit = 0\n', "http.connection_limit", "1 or more"),
    (b'[tftp]\nretries = 0\n', "tftp.retries", "1 or more"),
    (b'[dns]\ntimeout = nan\n', "dns.timeout", "greater than 0"),
    (b'[dhcp]\nrate_limit = inf\n', "dhcp.rate_limit", "finite"),
    (b'[push]\nmax_delay = -3.0\n', "push.max_delay", "negative"),
    (b'# caf\xe9 in Latin-1\nlog_level = "info"\n', "bootbox.toml", "not UTF-8"),
])
def test_a_bad_config_names_the_key_and_the_form_without_a_traceback(tmp_path: Path, text: bytes, key: str,
                                                                       form: str) -> None:
    config = tmp_path / "bootbox.toml"
    config.write_bytes(f'state_dir = "{tmp_path / "state"}"\n'.encode() + text)
    proc = subprocess.run([sys.executable, "-m", "bootbox", "serve"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BOOTBOX_CONFIG": str(config)})
    assert proc.returncode != 0
    assert key in proc.stderr and form in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootbox", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BOOTBOX_CONFIG": str(config)})


def _ask_dhcp(app: Appliance, mac: str, *, msg: int, port: int, client_port: int, user_class: bytes | None = None):
    from bootbox.net.dhcp.packet import DhcpPacket, build, parse

    options = {53: bytes([msg]), 60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00"}
    if user_class:
        options[77] = user_class
    pkt = DhcpPacket(op=1, xid=0x4242, chaddr=bytes.fromhex(mac.replace(":", "")), ciaddr="127.0.0.1", options=options)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", client_port))
        sock.settimeout(5)
        sock.sendto(build(pkt), ("127.0.0.1", port))
        return parse(sock.recvfrom(4096)[0])


def test_backup_while_serving_then_restore_boots_a_host_from_the_restored_state(tmp_path: Path) -> None:
    from tests.conftest import free_port

    secret = "restored-root-pw-5e1"
    mac = "52:54:00:ba:c0:01"
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    (tmp_path / "a").mkdir()
    first = Appliance(tmp_path / "a")
    first.start()
    archive = tmp_path / "backups" / "bootbox.tar.gz"
    try:
        assert first.call("POST", "/api/v1/profiles", {"name": "base", "kind": "linux",
                                                       "spec": {"kernel": str(kernel), "cmdline": "console=ttyS0"}})[0] == 201
        assert first.call("POST", "/api/v1/hostprofiles", {
            "name": "web", "kind": "cloud-init",
            "inputs": [{"name": "hostname", "validation": "hostname"}, {"name": "root_password", "type": "password"}],
            "templates": {"user-data": "#cloud-config\nhostname: {{ answers.hostname }}\nchpasswd:\n  users:\n"
                                       "  - {name: root, password: '{{ answers.root_password }}', type: hash}\n"}})[0] == 201
        assert first.call("POST", "/api/v1/rules", {"name": "web", "all_hosts": True,
                                                    "items": {"image": "base", "host_profile": "web"}})[0] == 201
        _script(first, mac)  # the host is discovered and associated
        status, _ = first.call("PATCH", f"/api/v1/hosts/{mac}/answers",
                               {"values": {"hostname": "web01", "root_password": secret}})
        assert status == 200
        before = first.call("POST", f"/api/v1/hosts/{mac}/render/cloud-init")
        assert before[0] == 200 and "$6$" in json.dumps(before[1])
        time.sleep(1.0)  # the host log's write-behind
        made = _cli(first.config, "state", "backup", str(archive))  # while serving
        assert made.returncode == 0, made.stderr
        assert "secrets key" in made.stdout
        assert archive.stat().st_mode & 0o777 == 0o600
        refused = _cli(first.config, "state", "restore", str(archive))
        assert refused.returncode != 0 and "stop it first" in refused.stderr + refused.stdout
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.kill()

    (tmp_path / "b").mkdir()
    second = Appliance(tmp_path / "b")  # another state dir, other ports: a rebuilt machine
    restored = _cli(second.config, "state", "restore", str(archive), "--json")
    assert restored.returncode == 0, restored.stderr
    second.start()
    try:
        assert {p["name"] for p in second.call("GET", "/api/v1/profiles")[1]} >= {"base"}  # type: ignore[union-attr]
        assert "web" in {r["name"] for r in second.call("GET", "/api/v1/rules")[1]}  # type: ignore[union-attr]
        assert "web" in {p["name"] for p in second.call("GET", "/api/v1/hostprofiles")[1]}  # type: ignore[union-attr]
        host = second.call("GET", f"/api/v1/hosts/{mac}")[1]
        assert host["associations"].get("host_profile") == "web"  # type: ignore[index]
        rendered = second.call("POST", f"/api/v1/hosts/{mac}/render/cloud-init")  # the secret decrypts: the key came back
        assert rendered[0] == 200 and "$6$" in json.dumps(rendered[1]) and "web01" in json.dumps(rendered[1])
        assert secret not in json.dumps(rendered[1])
        offer = _ask_dhcp(second, mac, msg=1, port=second.ports["dhcp"], client_port=second.ports["client"])
        assert offer.options[67].rstrip(b"\0") == b"undionly.kpxe"
        ack = _ask_dhcp(second, mac, msg=3, port=second.ports["boot"], client_port=free_port(), user_class=b"iPXE")
        entry = ack.options[67].rstrip(b"\0").decode()
        assert entry.startswith(f"http://127.0.0.1:{second.ports['http']}/")
        script = _script(second, mac)
        assert "kernel" in script and "console=ttyS0" in script, script
    finally:
        if second.proc is not None and second.proc.poll() is None:
            second.kill()


def test_store_records_of_the_wrong_shape_are_skipped_and_kept_not_a_traceback(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.state.mkdir(mode=0o700)
    (app.state / "bootbox.json").write_text(json.dumps({
        "profiles": {"good": {"name": "good", "kind": "linux", "spec": {"kernel": "/k"}}, "bad": {"bogus": 1}},
        "rulesets": {"working": {"rules": 7}},
        "hostprofiles": {"hp": {"name": 3}},
    }))
    app.start()
    try:
        assert {p["name"] for p in app.call("GET", "/api/v1/profiles")[1]} == {"good"}  # type: ignore[union-attr]
        kept = {item.path.name.split(".")[0]: item for item in list_set_aside(app.state)}
        assert set(kept) == {"profiles-records", "rulesets-records", "hostprofiles-records"}
        assert json.loads(kept["profiles-records"].path.read_text()) == {"bad": {"bogus": 1}}
        assert "loaded 1 of 2 records" in kept["profiles-records"].why
        _stop(app)
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()
