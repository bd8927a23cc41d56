"""Reading a local ``.deb`` a plugin injects: its package name, through ``dpkg-deb``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bootbox import ValidationError


def package_name(path: Path) -> str:
    """The ``Package`` field of ``path`` (raises naming the file when it is not a valid .deb)."""
    try:
        out = subprocess.run(["dpkg-deb", "-f", str(path), "Package"], capture_output=True, text=True,
                             timeout=60, check=False)
    except OSError as exc:
        raise ValidationError("inject", f"cannot read {path}: {exc}") from None
    name = out.stdout.strip()
    if out.returncode != 0 or not name:
        raise ValidationError("inject", f"{path} is not a Debian package: {out.stderr.strip()[:200]}")
    return name
