"""Pytest fixtures for tests that boot real firmware on a private lab segment.

The layer every end-to-end test shares, whichever boot server it puts under test:

* ``segment`` → :class:`LabSegment`: a fresh bridge with three namespaces, ``server``
  (198.18.0.1), ``site`` (198.18.0.2, the site's address-only DHCP) and ``client`` (198.18.0.3,
  load generators), plus helpers to start the site DHCP, the IPv6 RA sender, a static HTTP
  server (nginx), a callback receiver and QEMU guests;
* ``demo_assets`` → :class:`bootbox.assets.demo.DemoAssets`, built once per session; the kernel
  package download is cached (``demo_cache``).

Import the fixture functions into a test module (``from tests.support.lab_fixtures import
segment_fixture``; the fixtures are *named* ``segment`` and ``demo_assets``) or list this module
in ``pytest_plugins`` of tests/conftest.py. Everything a test starts is stopped,
and every namespace removed, when the ``segment`` fixture ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest

from bootbox.assets.demo import DemoAssets, DemoError, build_demo_assets, default_cache_dir
from bootbox.lab.netns import LabError, Member, Segment
from bootbox.lab.qemu import OVMF_CODE, Accel, Firmware, QemuClient, random_mac
from bootbox.lab.ra import RouterAdvertiser
from bootbox.lab.sitedhcp import IPXE_DIR, Dnsmasq, site_dhcp

__all__ = [
    "Callback",
    "CallbackReceiver",
    "HttpRequest",
    "LabSegment",
    "StaticServer",
    "demo_assets_fixture",
    "demo_cache_fixture",
    "lab_unavailable",
    "require_qemu",
    "require_tools",
    "segment_fixture",
]

SERVER_ADDR = "198.18.0.1/24"
SITE_ADDR = "198.18.0.2/24"
CLIENT_ADDR = "198.18.0.3/24"
HTTP_PORT = 8080
CALLBACK_PORT = 8081
BOOT_TIMEOUT = 240.0
"""Seconds a TCG guest gets from start to report-in; generous for a loaded 2-core CI host."""


def lab_unavailable(reason: str) -> NoReturn:
    """Skip the calling test, or fail it when ``BOOTBOX_LAB_REQUIRED=1``.

    A developer without root or QEMU still gets a green run, while CI, which sets the variable,
    cannot pass by silently skipping every boot test.
    """
    if os.environ.get("BOOTBOX_LAB_REQUIRED") == "1":
        pytest.fail(f"BOOTBOX_LAB_REQUIRED=1 but {reason}")
    pytest.skip(reason)


def require_tools(*tools: str) -> None:
    """Skip (or fail, see lab_unavailable) unless we are root and every tool is on PATH."""
    if os.geteuid() != 0:
        lab_unavailable("lab tests need root (network namespaces, taps)")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        lab_unavailable(f"lab tests need {', '.join(missing)}")


def require_qemu() -> None:
    """Skip (or fail) unless QEMU, dnsmasq, nginx, Debian's iPXE loaders and OVMF are here."""
    require_tools("ip", "setpriv", "qemu-system-x86_64", "dnsmasq", "nginx", "tcpdump")
    for path in (OVMF_CODE, IPXE_DIR / "undionly.kpxe", IPXE_DIR / "snponly.efi"):
        if not path.is_file():
            lab_unavailable(f"lab boot tests need {path}")


# ---------------------------------------------------------------------------------------------
# the callback receiver
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """One report-in from a booted payload.

    :ivar received_at: ``time.monotonic()`` on arrival, comparable with QemuClient.started_at.
    """

    method: str
    path: str
    fields: Mapping[str, str]
    client_ip: str
    received_at: float

    @property
    def mac(self) -> str:
        """The MAC the payload reported, lowercase with colons."""
        return self.fields.get("mac", "").lower().replace("-", ":")


class CallbackReceiver:
    """A tiny HTTP server in a lab namespace recording what booted payloads report.

    Accepts ``POST`` with a form body (the demo payload) and ``GET`` with a query string (as
    the reference recipe does), answers ``200 ok``. Its socket is created inside the namespace,
    while the serving thread belongs to the test process.
    """

    def __init__(self, segment: Segment, member: Member, port: int = CALLBACK_PORT) -> None:
        self.url = f"http://{member.ip}:{port}/booted"
        self.callbacks: list[Callback] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, query: str) -> None:
                fields = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                entry = Callback(
                    self.command,
                    urllib.parse.urlsplit(self.path).path,
                    fields,
                    self.client_address[0],
                    time.monotonic(),
                )
                with receiver._cond:
                    receiver.callbacks.append(entry)
                    receiver._cond.notify_all()
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._record(self.rfile.read(length).decode("utf-8", errors="replace"))

            def do_GET(self) -> None:
                self._record(urllib.parse.urlsplit(self.path).query)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._httpd = segment.call(member, lambda: ThreadingHTTPServer((member.ip, port), Handler))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        segment.defer(self.close)

    def wait_for(self, mac: str, timeout: float) -> Callback:
        """The first callback reporting ``mac``; raises TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for callback in self.callbacks:
                    if callback.mac == mac:
                        return callback
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no callback from {mac} within {timeout:.0f} s")
                self._cond.wait(left)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()


# ---------------------------------------------------------------------------------------------
# the segment
# ---------------------------------------------------------------------------------------------


def wait_for_tcp(
    segment: Segment, where: Member, host: str, port: int, timeout: float = 10.0
) -> None:
    """Block until ``host:port`` accepts a TCP connection as seen from ``where``."""

    def connect() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    deadline = time.monotonic() + timeout
    while True:
        sock = segment.call(where, connect)
        try:
            sock.settimeout(1.0)
            sock.connect((host, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)
        finally:
            sock.close()


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    log_format timed '$msec $remote_addr "$request" $status $body_bytes_sent';
    access_log {work}/nginx-access.log timed;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {addr}:{port};
        root {root};
    }}
}}
"""


@dataclass(frozen=True)
class HttpRequest:
    """One request a static server answered (for asserting what a firmware fetched)."""

    client_ip: str
    method: str
    path: str
    status: int


class StaticServer(Protocol):
    """A static HTTP server on the lab's ``server`` namespace."""

    url: str

    def requests(self) -> list[HttpRequest]:
        """Every request answered so far, oldest first."""
        ...


class NginxServer:
    """nginx (``daemon off``, one worker, ``sendfile``) started in the server namespace."""

    def __init__(self, lab: LabSegment, root: Path, port: int) -> None:
        work = lab.workdir / "nginx"
        work.mkdir(exist_ok=True)
        self.access_log = work / "nginx-access.log"
        conf = work / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(work=work, root=root, addr=lab.server.ip, port=port))
        # -e: errors from before the config is read must not go to /var/log/nginx.
        argv = ["nginx", "-e", str(work / "nginx-error.log"), "-p", str(work), "-c", str(conf)]
        lab.net.spawn(lab.server, argv)
        self.url = f"http://{lab.server.ip}:{port}"

    def requests(self) -> list[HttpRequest]:
        out: list[HttpRequest] = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text().splitlines():
            # format "timed": $msec $remote_addr "$request" $status $body_bytes_sent
            try:
                _, client, rest = line.split(" ", 2)
                request, _, tail = rest[1:].partition('" ')
                method, path, _ = request.split(" ", 2)
                out.append(HttpRequest(client, method, path, int(tail.split()[0])))
            except ValueError:
                continue
        return out


class PythonStaticServer:
    """http.server serving a directory, its socket created inside the server namespace."""

    def __init__(self, lab: LabSegment, root: Path, port: int) -> None:
        log: list[HttpRequest] = []
        self._log = log

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                status = int(code) if str(code).isdigit() else 0
                log.append(HttpRequest(self.client_address[0], self.command, self.path, status))

            def log_message(self, format: str, *args: object) -> None:
                return

        httpd = lab.net.call(
            lab.server, lambda: ThreadingHTTPServer((lab.server.ip, port), Handler)
        )
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

        def close() -> None:
            httpd.shutdown()
            httpd.server_close()

        lab.net.defer(close)
        self.url = f"http://{lab.server.ip}:{port}"

    def requests(self) -> list[HttpRequest]:
        return list(self._log)


@dataclass
class LabSegment:
    """A lab segment with its three standard namespaces and helpers to populate it.

    :ivar net: the underlying :class:`Segment` (run/spawn/call in any namespace).
    :ivar workdir: per-test directory for configs, logs, serial consoles and captures.
    """

    net: Segment
    server: Member
    site: Member
    client: Member
    workdir: Path

    def start_site_dhcp(self, **kwargs: str) -> Dnsmasq:
        """Start the site's address-only DHCP (dnsmasq) in ``site``; see sitedhcp.site_dhcp."""
        return site_dhcp(self.net, self.site, self.workdir, **kwargs)

    def start_ra(self) -> RouterAdvertiser:
        """Send IPv6 RAs from ``server`` so iPXE skips its ~16 s IPv6 autoconfiguration wait."""
        advertiser = RouterAdvertiser(self.server.ifname, netns=self.server.netns)
        advertiser.start()
        self.net.defer(advertiser.stop)
        return advertiser

    def callback_receiver(self, port: int = CALLBACK_PORT) -> CallbackReceiver:
        """A receiver on ``server``:port recording payload callbacks."""
        return CallbackReceiver(self.net, self.server, port)

    def serve_static(
        self,
        files: Mapping[str, Path | str],
        port: int = HTTP_PORT,
        *,
        use_nginx: bool | None = None,
    ) -> StaticServer:
        """Serve ``files`` (name → path, or text content) over HTTP from ``server``.

        nginx with ``sendfile`` is the reference HTTP server of references.md §5, so a boot
        measured with it is comparable with the reference figures; without nginx installed (or
        with ``use_nginx=False``) a Python server in the namespace serves the same files.
        """
        root = self.workdir / "http"
        root.mkdir(exist_ok=True)
        for name, source in files.items():
            target = root / name
            if isinstance(source, Path):
                target.symlink_to(source.resolve())
            else:
                target.write_text(source)
        if use_nginx is None:
            use_nginx = shutil.which("nginx") is not None
        if use_nginx:
            server: StaticServer = NginxServer(self, root, port)
        else:
            server = PythonStaticServer(self, root, port)
        wait_for_tcp(self.net, self.client, self.server.ip, port)
        return server

    def boot(
        self,
        firmware: Firmware,
        *,
        mac: str | None = None,
        capture: bool = True,
        nic: str | None = None,
        nic_rom: str | None = None,
        extra_args: Sequence[str] = (),
        accel: Accel = "tcg",
    ) -> QemuClient:
        """Start a guest on a new tap; its serial log and tap capture go to workdir/vm-<mac>/.

        The capture (tcpdump on the guest's tap) is for post-mortems: open it in Wireshark when
        a boot fails. ``nic``/``nic_rom``/``extra_args``/``accel`` go to :class:`QemuClient`.
        """
        mac = mac or random_mac()
        workdir = self.workdir / f"vm-{mac.replace(':', '')}"
        boot = 1
        while workdir.exists():  # the same machine booting again (a reboot) gets its own logs
            boot += 1
            workdir = self.workdir / f"vm-{mac.replace(':', '')}-boot{boot}"
        workdir.mkdir()
        vm = QemuClient.on_segment(
            self.net,
            mac=mac,
            firmware=firmware,
            workdir=workdir,
            nic=nic,
            nic_rom=nic_rom,
            extra_args=extra_args,
            accel=accel,
        )
        if capture:
            self.net.capture(workdir / "tap.pcap", vm.tap)
        vm.start()
        return vm


@pytest.fixture(name="segment")
def segment_fixture(tmp_path: Path) -> Iterator[LabSegment]:
    """A fresh lab segment with ``server``, ``site`` and ``client`` namespaces.

    IPv6 is on only in ``server`` (so it can send RAs); everything is torn down afterwards.
    """
    require_tools("ip", "setpriv")
    with Segment() as net:
        lab = LabSegment(
            net=net,
            server=net.add_namespace("server", SERVER_ADDR, ipv6=True),
            site=net.add_namespace("site", SITE_ADDR),
            client=net.add_namespace("client", CLIENT_ADDR),
            workdir=tmp_path,
        )
        yield lab


@pytest.fixture(name="demo_cache", scope="session")
def demo_cache_fixture(request: pytest.FixtureRequest) -> Path:
    """Where downloaded kernel packages are kept: pytest's cache, else bootbox's default.

    CI runs pytest with ``-p no:cacheprovider``; the default cache (~/.cache/bootbox/demo)
    still saves the download on the next run on the same machine.
    """
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("bootbox-demo")) / "packages"
    return default_cache_dir()


@pytest.fixture(name="demo_assets", scope="session")
def demo_assets_fixture(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    """The demo kernel + initramfs, built once per session from the cached packages.

    The destination is fixed per session: each test module that imports this fixture gets its
    own instance, and the second one then finds the assets already built.
    """
    try:
        return build_demo_assets(tmp_path_factory.getbasetemp() / "demo-assets", cache=demo_cache)
    except DemoError as exc:
        lab_unavailable(f"cannot build the demo payload here: {exc}")
        raise
