"""Debian packages as a source of files: ``apt-get download`` + ``dpkg -x``, never installed.

The demo payload (a kernel and busybox) and the signed ARM64 loaders both come from Debian's
archive. Unpacking with ``dpkg -x`` runs no maintainer script and touches nothing outside the
target directory, and the download is verified by apt like any package, so it is safe on the
appliance itself and for a foreign architecture (after ``dpkg --add-architecture``).

Each caller raises its own error type with its own advice for a missing tool, so an
:class:`Apt` is made once per caller with both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootbox.errors import BootboxError

__all__ = ["Apt"]


@dataclass(frozen=True)
class Apt:
    """The packaging tools, with their failures raised as ``error``.

    :ivar error: the caller's error type; every failure (a missing tool, a non-zero exit, a
        download that produced no ``.deb``) raises it with a message saying which.
    :ivar missing: appended to "<tool> is not installed" when a tool is not on PATH: what is
        needed, or what else would do.
    """

    error: type[BootboxError]
    missing: str

    def run(self, argv: Sequence[str], *, cwd: Path | None = None) -> str:
        """Run a packaging tool and return its stdout; its stderr's end goes in the error."""
        try:
            done = subprocess.run(
                list(argv),
                cwd=cwd,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            raise self.error(f"{argv[0]} is not installed{self.missing}") from exc
        if done.returncode != 0:
            raise self.error(f"{' '.join(argv)} failed: {done.stderr.strip()[-1000:]}")
        return done.stdout

    def download(self, packages: Sequence[str], workdir: Path) -> dict[str, Path]:
        """``apt-get download`` each of ``packages`` (``name`` or ``name:arch``) into ``workdir``.

        Returns package → its ``.deb`` file, in one apt run.
        """
        self.run(["apt-get", "download", *packages], cwd=workdir)
        debs: dict[str, Path] = {}
        for package in packages:
            name, _, arch = package.partition(":")
            found = sorted(workdir.glob(f"{name}_*_{arch}.deb" if arch else f"{name}_*.deb"))
            if not found:
                hint = f" (is {arch} added with dpkg --add-architecture, then apt-get update?)" if arch else ""
                raise self.error(f"apt-get download {package} produced no .deb{hint}")
            debs[package] = found[-1]
        return debs

    def extract(self, deb: Path, root: Path) -> Path:
        """``dpkg -x`` (files only, no maintainer scripts) ``deb`` into ``root``; return ``root``."""
        self.run(["dpkg", "-x", str(deb), str(root)])
        return root

    def fetch(self, package: str, workdir: Path) -> Path:
        """Download one package into ``workdir`` and unpack it into ``workdir/root``; return that."""
        return self.extract(self.download([package], workdir)[package], workdir / "root")
