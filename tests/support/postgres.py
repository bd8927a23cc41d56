"""A real PostgreSQL for the tests: Debian's server, started in a temporary directory.

``initdb`` refuses to run as root, so the cluster is created and served as the ``postgres`` user
(the Debian package creates it); the server listens only on a unix socket inside the temporary
directory (``listen_addresses = ''``), so nothing outside the test can reach it, and it is stopped
by its PID at the end of the session. Each test gets its own schema (``search_path`` in its DSN),
which is much cheaper than a database per test and just as isolated for bootbox's tables.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.lab_fixtures import lab_unavailable

PORT = 5432  # only names the socket file (.s.PGSQL.5432) inside our own directory
_schemas = itertools.count(1)


@dataclass
class PostgresServer:
    """A cluster in its own temporary directory, served as the ``postgres`` user on a unix socket
    there; ``dsn()`` is a fresh, empty schema in its ``bootbox`` database. ``stop()`` and
    ``start()`` again play a database outage (the multi-appliance tests do)."""

    top: Path
    bin_dir: Path
    user: pwd.struct_passwd
    process: subprocess.Popen[bytes] | None = None
    max_connections: int = 200

    @property
    def socket_dir(self) -> Path:
        return self.top / "run"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is stopped"
        return self.process.pid

    @property
    def base_dsn(self) -> str:
        return f"host={self.socket_dir} port={PORT} dbname=bootbox user=bootbox"

    def dsn(self, schema: str | None = None) -> str:
        """A DSN whose tables land in a new schema (created here), so tests never share rows."""
        name = schema or f"t{next(_schemas)}"
        self.sql(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
        return f"{self.base_dsn} options='-c search_path={name}'"

    def sql(self, statement: str, dsn: str | None = None) -> str:
        """Run one statement with psql (a real client, not bootbox's) and return its output."""
        result = subprocess.run([str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                 "-d", dsn or self.base_dsn, "-c", statement],
                                capture_output=True, text=True, timeout=30, check=False)
        if result.returncode:
            raise AssertionError(f"psql {statement!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self) -> None:
        with open(self.top / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.top / "data"), "-k", str(self.socket_dir),
                 "-p", str(PORT), "-c", "listen_addresses=", "-c", f"max_connections={self.max_connections}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.top, **_as_postgres(self.user))  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while subprocess.run([str(self.bin_dir / "pg_isready"), "-h", str(self.socket_dir), "-p", str(PORT)],
                             capture_output=True, check=False).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start: {(self.top / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop it by its PID as an outage looks to bootbox: every connection is cut ("fast" shutdown)."""
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(user: pwd.struct_passwd) -> dict[str, object]:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (a few seconds to start), in a temporary directory."""
    with running_postgres() as server:
        yield server


@contextmanager
def running_postgres(prefix: str = "bootbox-pg-", max_connections: int = 200) -> Iterator[PostgresServer]:
    """Start a server (initdb as ``postgres`` in a new temporary directory), stop it by PID after."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        lab_unavailable("PostgreSQL is not installed (Debian package postgresql)")
    if os.geteuid() != 0:
        lab_unavailable("the PostgreSQL tests need root (initdb runs as the postgres user)")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        lab_unavailable("there is no postgres user (Debian package postgresql creates it)")
    top = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(top, 0o755)
    (top / "run").mkdir()
    os.chown(top / "run", user.pw_uid, user.pw_gid)
    os.chown(top, user.pw_uid, user.pw_gid)
    subprocess.run([str(bin_dir / "initdb"), "-D", str(top / "data"), "-U", "bootbox", "-A", "trust", "-E", "UTF8",
                    "--no-sync", "--locale=C.UTF-8"],
                   check=True, capture_output=True, cwd=top, **_as_postgres(user))  # type: ignore[arg-type]
    server = PostgresServer(top, bin_dir, user, max_connections=max_connections)
    try:
        server.start()
        server.sql("CREATE DATABASE bootbox", dsn=f"host={server.socket_dir} port={PORT} dbname=postgres user=bootbox")
        yield server
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
