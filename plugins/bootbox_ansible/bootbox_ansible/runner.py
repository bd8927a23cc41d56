"""Run one playbook against one host: ``ansible-playbook`` in a private work dir, as a subprocess.

Why a subprocess rather than ansible-core's Python API: the API is not a stable interface, keeps
process-wide state (its display, its config, its worker processes) that is not safe in bootbox's
threads, and cannot be stopped from outside; a subprocess in its own session can be killed,
process group and all, when the push attempt's time is up. Its stdout callback
(:mod:`bootbox_ansible.callbacks.bootbox_events`) reports every task as a JSON line, passed to
``on_event`` as it arrives, so the host's timeline fills while the play runs.

Everything Ansible reads comes from the work dir (a fresh ``0700`` temporary directory, removed
afterwards; not in the state dir, which backups copy): the playbook, a one-host inventory, the
answers as an extra-vars file (they may hold secrets, so never on a command line, where ``ps``
shows them), ``known_hosts`` (the pinned host key), an empty ``ansible.cfg``
(an operator's ``/etc/ansible/ansible.cfg`` or a ``ansible.cfg`` in the current directory does
not change what bootbox runs) and ``HOME``. SSH multiplexing is off (``ControlMaster=no``, and no
``ControlPersist`` in the SSH arguments, which would make Ansible add a ``ControlPath``): a
persisting master would outlive the run as a stray process.

Host keys: a stateless host has new ones at every boot, so there is nothing to remember from one
boot to the next. Instead bootbox gives each boot its host key (in the user-data,
:func:`bootbox_ansible.keys.host_key`) and ``target.host_key`` pins it: ``known_hosts`` in the
work dir holds that one key, ``StrictHostKeyChecking=yes``. With pinning off
(``plugins.ansible.pin_host_keys = false``) no key is checked and the push trusts the address the
host reported up from, which bootbox has checked against the host's MAC (docs/security.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

CALLBACKS = Path(__file__).resolve().parent / "callbacks"
PREFIX = "BOOTBOX-EVENT "
STDERR_LIMIT = 4000
PARSE_ERRORS = (4, 5)
"""``ansible-playbook`` exit codes for a playbook or options it cannot parse (before any play
starts: 4 also means "a host was unreachable" once plays run): retrying cannot help."""


@dataclass(frozen=True)
class Target:
    """The host the play runs against."""

    name: str
    address: str
    port: int
    user: str
    python: str = "auto_silent"
    host_key: str = ""
    """The host's SSH host key (``ssh-ed25519 AAAA…``) to accept and no other; "" checks none."""


@dataclass
class PlayRun:
    """What one ``ansible-playbook`` run did."""

    returncode: int
    tasks: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    plays: int = 0
    stderr: str = ""
    timed_out: bool = False

    def error_line(self) -> str:
        """Ansible's own error message (its ``ERROR!``/``[ERROR]`` line), else the last stderr line."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        for i, line in enumerate(lines):
            if line.startswith(("ERROR!", "[ERROR]")):
                return " ".join(lines[i:i + 3])[:500]
        return lines[-1][:500] if lines else f"ansible-playbook exited {self.returncode}"


def find_command(configured: str = "") -> str | None:
    """``ansible-playbook``: the configured path, else beside this Python (a venv), else on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    beside = Path(sys.executable).parent / "ansible-playbook"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


def _environment(work: Path, connect_timeout: float, pinned: bool) -> dict[str, str]:
    if pinned:
        checking = (f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={work / 'known_hosts'} "
                    "-o HostKeyAlgorithms=ssh-ed25519")
    else:
        checking = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    ssh_args = f"-o ControlMaster=no {checking} -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR"
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(work / "home"),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "PYTHONWARNINGS": "ignore",
        "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
        "ANSIBLE_HOME": str(work / "home" / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_STDOUT_CALLBACK": "bootbox_events",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "1" if pinned else "0",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_TIMEOUT": str(max(1, int(connect_timeout))),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_FORKS": "1",
    }


def _prepare(work: Path, playbook: str, target: Target, key_path: Path, variables: Mapping[str, Any]) -> None:
    (work / "home").mkdir(mode=0o700)
    (work / "tmp").mkdir(mode=0o700)
    (work / "ansible.cfg").write_text("# bootbox: every setting comes from the environment\n")
    (work / "playbook.yml").write_text(playbook)
    inventory = {"all": {"hosts": {target.name: {
        "ansible_host": target.address, "ansible_port": target.port, "ansible_user": target.user,
        "ansible_ssh_private_key_file": str(key_path), "ansible_connection": "ssh",
        "ansible_python_interpreter": target.python}}}}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    where = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    (work / "known_hosts").write_text(f"{where} {target.host_key}\n" if target.host_key else "")
    fd = os.open(work / "vars.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(variables), out, default=str)


def _kill(proc: subprocess.Popen[str]) -> None:
    """Stop ``ansible-playbook`` and everything it started (ssh, workers): its whole session."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(2)
            return
        except subprocess.TimeoutExpired:
            continue


def run_playbook(playbook: str, *, target: Target, key_path: Path, variables: Mapping[str, Any], timeout: float,
                 command: str, on_event: Callable[[dict[str, Any]], None], connect_timeout: float = 10.0,
                 work_parent: Path | None = None) -> PlayRun:
    """Run ``playbook`` against ``target`` with the private key at ``key_path``; at most ``timeout`` s.

    ``variables`` become extra vars (read from a ``0600`` file). ``on_event`` gets every line of
    the callback (``{"event": "task", "task": …, "status": …}``) as it arrives; an exception in it
    is not Ansible's business and is re-raised after the run.
    """
    work = Path(tempfile.mkdtemp(prefix="bootbox-ansible-", dir=work_parent))
    try:
        _prepare(work, playbook, target, key_path, variables)
        argv = [command, "-i", str(work / "inventory.yml"), "-e", f"@{work / 'vars.json'}", str(work / "playbook.yml")]
        env = _environment(work, connect_timeout, pinned=bool(target.host_key))
        proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                start_new_session=True)
        run = PlayRun(returncode=-1)
        stderr: list[str] = []
        failures: list[BaseException] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith(PREFIX):
                    continue
                try:
                    event = json.loads(line[len(PREFIX):])
                except ValueError:
                    continue
                if event.get("event") == "play":
                    run.plays += 1
                elif event.get("event") == "task":
                    run.tasks.append(event)
                elif event.get("event") == "stats":
                    run.stats = {k: v for k, v in event.items() if k != "event"}
                try:
                    on_event(event)
                except BaseException as exc:  # keep reading, or ansible-playbook blocks on a full pipe
                    failures.append(exc)

        def read_stderr() -> None:
            assert proc.stderr is not None
            size = 0
            for line in proc.stderr:
                if size < STDERR_LIMIT:
                    stderr.append(line)
                    size += len(line)

        readers = [threading.Thread(target=fn, daemon=True, name=f"bootbox-ansible-{fn.__name__}")
                   for fn in (read_stdout, read_stderr)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        try:
            run.returncode = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            run.timed_out = True
            _kill(proc)
            run.returncode = proc.returncode if proc.returncode is not None else -9
        except BaseException:
            _kill(proc)
            raise
        for reader in readers:
            reader.join(5)
        run.stderr = "".join(stderr)[:STDERR_LIMIT]
        if failures:
            raise failures[0]
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)
