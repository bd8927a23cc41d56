"""The whole appliance in one process, over real sockets on loopback, with real clients (curl)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from bootbox.appliance import Appliance
from bootbox.config import Settings
from bootbox.errors import BootboxError, StoreLocked
from bootbox.net.dhcp.packet import BOOTREQUEST, DhcpPacket, Opt, build, parse
from tests.conftest import free_port, test_settings

MAC = "52:54:00:c0:ff:ee"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Appliance, Settings]]:
    settings = test_settings(tmp_path)
    appliance = Appliance(settings)
    appliance.start()
    try:
        yield appliance, settings
    finally:
        appliance.stop()


def _discover(ciaddr: str, vendor: bytes, *, user_class: bytes | None = None, msg: int = 1) -> bytes:
    options = {Opt.MESSAGE_TYPE: bytes([msg]), Opt.VENDOR_CLASS: vendor, 93: b"\x00\x00"}
    if user_class:
        options[77] = user_class
    pkt = DhcpPacket(op=BOOTREQUEST, xid=0x1234, chaddr=bytes.fromhex(MAC.replace(":", "")), ciaddr=ciaddr,
                     options=options)
    return build(pkt)


def _ask(port: int, client_port: int, payload: bytes) -> DhcpPacket:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", client_port))
        sock.settimeout(5)
        sock.sendto(payload, ("127.0.0.1", port))
        return parse(sock.recvfrom(4096)[0])


def test_one_process_answers_dhcp_tftp_and_http(running: tuple[Appliance, Settings]) -> None:
    appliance, settings = running
    # proxyDHCP on the DHCP port: a BIOS PXE ROM gets the BIOS loader, never an address.
    offer = _ask(settings.dhcp.port, settings.dhcp.client_port,
                 _discover("127.0.0.1", b"PXEClient:Arch:00000:UNDI:002001"))
    assert offer.yiaddr == "0.0.0.0"
    assert offer.options[67].rstrip(b"\0") == b"undionly.kpxe"
    # The boot-server port answers to the request's own source port; iPXE gets the script URL.
    sport = free_port()
    ack = _ask(settings.dhcp.boot_server_port, sport,
               _discover("127.0.0.1", b"PXEClient:Arch:00000:UNDI:002001", user_class=b"iPXE", msg=3))
    assert ack.options[67].rstrip(b"\0").decode() == f"http://127.0.0.1:{settings.http.port}/boot.ipxe"
    # TFTP with a real client.
    out = Path(settings.state_dir) / "got.kpxe"
    subprocess.run(["curl", "-sS", "--tftp-blksize", "1468", "-o", str(out),
                    f"tftp://127.0.0.1:{settings.tftp.port}/undionly.kpxe"], check=True, timeout=30)
    assert out.read_bytes() == (Path(settings.tftp.root) / "undionly.kpxe").read_bytes()
    # HTTP: the entry script, then the host's own script, with curl.
    entry = subprocess.run(["curl", "-sSf", f"http://127.0.0.1:{settings.http.port}/boot.ipxe"],
                           check=True, capture_output=True, text=True, timeout=30).stdout
    assert entry.startswith("#!ipxe")
    script = subprocess.run(["curl", "-sSf", f"http://127.0.0.1:{settings.http.port}/boot/hosts/{MAC}/script.ipxe"],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    assert "asking again" in script  # the demo is off in tests: the host waits
    # The timeline has every step, in order.
    deadline = time.time() + 5
    while time.time() < deadline:
        kinds = [e.kind for e in appliance.service.host_events(MAC)]  # type: ignore[union-attr]
        if "tftp.sent" in kinds:
            break
        time.sleep(0.05)
    assert kinds[:2] == ["dhcp.offer", "dhcp.ack"]
    assert "tftp.sent" in kinds and kinds[-1] == "http.script"


def test_second_appliance_on_the_same_state_dir_is_refused(running: tuple[Appliance, Settings], tmp_path: Path) -> None:
    _, settings = running
    other = test_settings(tmp_path / "other", state_dir=settings.state_dir)
    with pytest.raises(StoreLocked, match="in use"):
        Appliance(other).start()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", settings.http.port))
        blocker.listen()
        with pytest.raises(BootboxError, match=f"port {settings.http.port}"):
            Appliance(settings).start()
    # Nothing was left holding the state dir: a new appliance starts.
    appliance = Appliance(settings)
    appliance.start()
    appliance.stop()


def test_serve_stops_cleanly_on_sigterm_and_the_cli_talks_to_it(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    env = {**os.environ, "BOOTBOX_DEMO_ENABLED": "false", "BOOTBOX_CONFIG": str(_write_config(tmp_path, settings))}
    proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{settings.http.port}"
        _wait_for(url + "/api/v1/status")
        cli = [sys.executable, "-m", "bootbox", "--url", url]
        hosts = subprocess.run(cli + ["host", "list", "--json"], env=env, capture_output=True, text=True, check=True)
        assert json.loads(hosts.stdout) == []
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"k")
        added = subprocess.run(cli + ["profile", "add", "p1", "--kernel", str(kernel)], env=env,
                               capture_output=True, text=True)
        assert added.returncode == 0, added.stderr
        bad = subprocess.run(cli + ["profile", "add", "p2", "--kernel", "relative"], env=env,
                             capture_output=True, text=True)
        assert bad.returncode == 1 and "spec.kernel" in bad.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped" in proc.stderr.read()  # type: ignore[union-attr]
    # The acknowledged write is in the store, and the state dir is free for the next start.
    appliance = Appliance(settings)
    appliance.start()
    try:
        assert appliance.service.profile("p1").spec["kernel"] == str(kernel)  # type: ignore[union-attr]
    finally:
        appliance.stop()


def test_repeated_signals_during_the_stop_do_not_kill_it(tmp_path: Path) -> None:
    """``timeout``, process-group kills and impatient operators deliver a second SIGTERM or
    SIGINT while bootbox is stopping: it must still finish flushing and exit 0."""
    settings = test_settings(tmp_path)
    env = {**os.environ, "BOOTBOX_DEMO_ENABLED": "false", "BOOTBOX_CONFIG": str(_write_config(tmp_path, settings))}
    proc = subprocess.Popen([sys.executable, "-m", "bootbox", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{settings.http.port}/api/v1/status")
        for signum in [signal.SIGTERM, signal.SIGINT] * 25:
            if proc.poll() is not None:
                break
            proc.send_signal(signum)
            time.sleep(0.01)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "bootbox stopped" in proc.stderr.read()  # type: ignore[union-attr]


def test_cli_without_a_token_cannot_write(running: tuple[Appliance, Settings], tmp_path: Path) -> None:
    _, settings = running
    env = {k: v for k, v in os.environ.items() if k != "BOOTBOX_TOKEN"}
    env["BOOTBOX_STATE_DIR"] = str(tmp_path / "nowhere")
    result = subprocess.run([sys.executable, "-m", "bootbox", "--url", f"http://127.0.0.1:{settings.http.port}",
                             "profile", "remove", "x"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "token" in result.stderr


def test_token_file_is_private(running: tuple[Appliance, Settings]) -> None:
    _, settings = running
    path = Path(settings.state_dir) / "api-token"
    assert path.stat().st_mode & 0o777 == 0o600


def _write_config(tmp_path: Path, settings: Settings) -> Path:
    path = tmp_path / "bootbox.toml"
    path.write_text(
        f'state_dir = "{settings.state_dir}"\n'
        f'[http]\nbind_address = "127.0.0.1"\nport = {settings.http.port}\n'
        f'[tftp]\nbind_address = "127.0.0.1"\nport = {settings.tftp.port}\nroot = "{settings.tftp.root}"\n'
        f'[dhcp]\nbind_address = "127.0.0.1"\nport = {settings.dhcp.port}\n'
        f'boot_server_port = {settings.dhcp.boot_server_port}\nclient_port = {settings.dhcp.client_port}\n'
    )
    return path


def _wait_for(url: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_http_send_threads_from_the_config_reach_the_http_server(tmp_path: Path) -> None:
    """``[http] send_threads`` is wired: the plain-HTTP server runs that many sendfile threads
    (bootbox.web.sendfile; what they send is tested in tests/web/test_server_sendfile.py)."""
    settings = test_settings(tmp_path, http={"send_threads": 2})
    appliance = Appliance(settings)
    appliance.start()
    try:
        assert appliance.status()["http"]["send_threads"] == 2
        assert appliance.servers["http"].stats["send_threads"] == 2
    finally:
        appliance.stop()
    default = Appliance(test_settings(tmp_path / "default"))
    default.start()
    try:
        assert default.status()["http"]["send_threads"] == 0  # off unless configured
    finally:
        default.stop()
