"""The API token: made at first start, kept mode 0600 in the state dir, read by the CLI.

Writes through the API need it; hosts' boot endpoints do not (they are read-only and scoped to
the asking host).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from bootbox.runtime.atomic import atomic_write_bytes

TOKEN_FILE = "api-token"


def token_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def load_or_create_token(state_dir: Path, name: str = TOKEN_FILE) -> str:
    """Return the appliance's token, creating it (mode 0600, atomically) on first start.
    ``name``: another secret of the same form in the state dir (the console's session key)."""
    path = Path(state_dir) / name
    if path.exists():
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return token
    token = secrets.token_urlsafe(32)
    old_umask = os.umask(0o077)
    try:
        atomic_write_bytes(path, (token + "\n").encode())
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return token


def read_token(state_dir: Path) -> str | None:
    """The token for a client (the CLI), or None when it cannot be read (not root, no appliance)."""
    try:
        return token_path(state_dir).read_text().strip() or None
    except OSError:
        return None


def token_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode())  # type: ignore[union-attr]
