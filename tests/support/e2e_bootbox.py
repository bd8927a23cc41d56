"""Running bootbox itself on a lab segment: the piece every end-to-end boot test shares.

``BootboxOnSegment`` starts ``bootbox serve`` inside the segment's ``server`` namespace on the
real ports (67, 69, 4011, 8080 — the namespace is private, so nothing on the machine clashes),
and drives it with the real CLI in the same namespace, exactly as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootbox.assets.demo import DemoAssets
from tests.support.lab_fixtures import LabSegment

HTTP_PORT = 8080


@dataclass
class BootboxOnSegment:
    lab: LabSegment
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.lab.server.ip}:{HTTP_PORT}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "bootbox", "--url", self.url, "--state-dir", str(self.state_dir), *args]
        return self.lab.net.run(self.lab.server, argv, check=check, timeout=60)

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def events(self, mac: str) -> list[dict[str, Any]]:
        return self.json("host", "events", mac)

    def wait_for_event(self, mac: str, kind: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.cli("host", "events", mac, "--json", check=False)
            if result.returncode == 0:
                events = json.loads(result.stdout)
                if any(e["kind"] == kind for e in events):
                    return events
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind} event for {mac} within {timeout:.0f} s; log:\n{self.log_tail()}")
            time.sleep(1)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 20) -> Any:
        """One call to ``/api/v1`` with the API token, made from the server namespace (the
        appliance trusts its own addresses); the JSON answer."""
        token = (self.state_dir / "api-token").read_text().strip()

        def call() -> Any:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method,
                                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read() or b"null")

        return self.lab.net.call(self.lab.server, call)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def add_demo_profile(self, assets: DemoAssets, *, rule: bool = True) -> None:
        self.cli("profile", "add", "demo", "--kernel", str(assets.kernel), "--initrd", str(assets.initrd),
                 "--cmdline", f"{assets.cmdline} bootbox.mac={{mac}} bootbox.callback={{callback}}")
        if rule:
            self.cli("rule", "add", "demo", "--all-hosts", "--item", "image=demo")


def start_bootbox(lab: LabSegment, *, retry_seconds: int = 60, extra_toml: str = "", top_toml: str = "",
                  dhcp_toml: str = "") -> BootboxOnSegment:
    """``bootbox serve`` in the server namespace as the proxyDHCP, TFTP and HTTP server.

    ``top_toml`` and ``dhcp_toml`` are lines for the top level and the ``[dhcp]`` table (TOML
    cannot reopen a table); ``extra_toml`` comes last, for further tables."""
    state = lab.workdir / "bootbox-state"
    config = lab.workdir / "bootbox.toml"
    config.write_text(
        f'state_dir = "{state}"\nretry_seconds = {retry_seconds}\nlog_level = "debug"\n{top_toml}'
        f'[demo]\nenabled = false\n'
        f'[dhcp]\ninterface = "{lab.server.ifname}"\n{dhcp_toml}'
        f'[http]\nport = {HTTP_PORT}\n' + extra_toml
    )
    log = lab.workdir / "bootbox.log"
    with log.open("wb") as out:
        proc = lab.net.spawn(lab.server, [sys.executable, "-m", "bootbox", "--config", str(config), "serve"],
                             stdout=out, stderr=subprocess.STDOUT)
    server = BootboxOnSegment(lab, state, log, proc)
    deadline = time.monotonic() + 30
    while server.cli("status", check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"bootbox serve did not start:\n{server.log_tail()}")
        time.sleep(0.3)
    return server
