"""A real vSphere API peer for the host-profile tests: govmomi's ESXi simulator, built here.

``vcsim/`` holds a small Go program (ours) that runs ``simulator.ESX()`` from Debian's
``golang-github-vmware-govmomi-dev`` over HTTPS, plus the extensions listed in
``vcsim/README.md``. :func:`build` compiles it offline (``GO111MODULE=off
GOPATH=/usr/share/gocode``) once per source digest into ``~/.cache/bootbox-esxsim``;
:class:`EsxSim` starts it on a fixed loopback port, stops it by PID and restarts it — which wipes
its state and gives it a new ``runtime.bootTime`` and certificate, as a stateless ESXi reboot does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.lab_fixtures import lab_unavailable

SOURCE = Path(__file__).with_name("vcsim")
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi/simulator"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bootbox-esxsim"


def build() -> Path:
    """The simulator binary for the current sources (built once; concurrent callers wait)."""
    if shutil.which("go") is None or not GOVMOMI.is_dir():
        lab_unavailable("the ESXi simulator needs golang-go and golang-github-vmware-govmomi-dev (scripts/test.sh)")
    digest = hashlib.sha256()
    for path in sorted(SOURCE.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    binary = CACHE / digest.hexdigest()[:16] / "esxsim"
    if binary.is_file():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.is_file():
            binary.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "",
                   "GOCACHE": str(CACHE / "gocache"), "CGO_ENABLED": "0"}
            tmp = binary.with_suffix(".tmp")
            done = subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=SOURCE, env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"building the ESXi simulator failed:\n{done.stderr}")
            tmp.rename(binary)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EsxSim:
    """One simulated stateless ESXi host on ``127.0.0.1:port``."""

    binary: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    edition: str = "evaluation"
    """``free``: the vSphere Hypervisor licence, whose API refuses writes (``RestrictedVersion``)."""
    tls: tuple[Path, Path] | None = None
    """``(rui.crt, rui.key)``: the certificate to present (a boot module's), else a new self-signed one."""
    process: subprocess.Popen[str] | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def boot_time(self) -> str:
        return self.info["boot_time"]

    def start(self, timeout: float = 20.0) -> dict[str, str]:
        """Start a fresh host (root's password empty) and return what it printed: url,
        thumbprint_sha1/sha256, boot_time, pid. The working directory backs NAS datastores
        (the simulator wants a directory named like each datastore's local path)."""
        assert self.process is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:  # the port of a just-stopped instance can take a moment to free up
            tls = ["-cert", str(self.tls[0]), "-key", str(self.tls[1])] if self.tls else []
            process = subprocess.Popen([str(self.binary), "-listen", self.address, "-edition", self.edition, *tls],
                                       cwd=self.workdir,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert process.stdout is not None
            line = process.stdout.readline()
            if line:
                break
            err = process.stderr.read() if process.stderr else ""
            process.wait()
            if time.monotonic() > deadline or "address already in use" not in err:
                raise RuntimeError(f"the ESXi simulator did not start: {err.strip()}")
            time.sleep(0.2)
        self.process = process
        self.info = json.loads(line)
        return self.info

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, then SIGKILL)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def restart(self) -> dict[str, str]:
        """A stateless reboot: the same address, no configuration, a new boot time."""
        before = self.info.get("boot_time")
        self.stop()
        time.sleep(0.01)
        info = self.start()
        assert info["boot_time"] != before
        return info
