"""Where served loader names come from: ``[dhcp.loader_files]`` first, then ``tftp.root``.

Loaders of the GRUB kind live outside the iPXE directory: Debian installs shim and the signed
GRUB images under ``/usr/lib/shim`` and ``/usr/lib/grub/*-signed`` with a ``.signed`` suffix, and
the ARM64 ones are fetched into the state directory (:mod:`bootbox.assets.signedloaders`). shim loads
``grubx64.efi``/``grubaa64.efi`` from the place it came from, so the served names form one flat
namespace, the same over TFTP and HTTP, mapped to files here. Every open goes through
:func:`bootbox.runtime.safepath.open_regular_under` (no symlink tricks, regular files only).

The DHCP path asks :meth:`BootFiles.exists` before it offers a loader (a client is never sent to
a file that is not there), so that answer is cached per name for :data:`RECHECK_SECONDS`: a
storm of DISCOVERs costs one ``stat`` per loader name every few seconds, not one per packet.
A time-based recheck rather than inotify because the files live in several directories
(``tftp.root``, ``/usr/lib/shim``, ``/usr/lib/grub``, the state directory), some of which do not
exist until the loaders are fetched; a loader fetched while bootbox runs is offered within
seconds, with no restart and no watcher thread.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from bootbox.errors import BootboxError, NotFound
from bootbox.runtime.safepath import open_regular_under, resolve_under

__all__ = ["RECHECK_SECONDS", "BootFiles", "local_address_for"]

RECHECK_SECONDS = 5.0
"""How long :meth:`BootFiles.exists` trusts what it last saw of a loader file."""


class BootFiles:
    """Resolve a loader name a client asked for to a file, by the configured tables.

    :param root: ``tftp.root`` (Debian's iPXE builds by default).
    :param named: ``[dhcp.loader_files]``: served name → absolute path, or a path relative to
        ``state_dir``. An empty path switches a name off.
    :param state_dir: where relative paths point.
    """

    def __init__(self, root: Path, named: Mapping[str, str], state_dir: Path, *,
                 recheck_seconds: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self._named: dict[str, Path] = {}
        for name, target in named.items():
            if target:
                path = Path(target)
                self._named[name] = path if path.is_absolute() else Path(state_dir) / path
        self._recheck = recheck_seconds
        self._clock = clock
        self._seen: dict[str, tuple[bool, float]] = {}  # name → (exists, when it was looked at)
        self._seen_lock = threading.Lock()

    def named_path(self, name: str) -> Path | None:
        """The configured file for ``name`` (leading slashes ignored), or None."""
        return self._named.get(name.replace("\\", "/").lstrip("/"))

    def path(self, name: str) -> Path:
        """The file behind a served loader name; raises NotFound (or Forbidden for escapes)."""
        target = self.named_path(name)
        if target is not None:
            if not target.is_file():
                raise NotFound(f"{name} is configured as {target}, which does not exist")
            return resolve_under(target.parent, target.name)
        return resolve_under(self.root, name)

    def open(self, name: str) -> BinaryIO:
        """Open a loader for reading (TFTP); same resolution as :meth:`path`."""
        target = self.named_path(name)
        if target is not None:
            return open_regular_under(target.parent, target.name)
        return open_regular_under(self.root, name)

    def exists(self, name: str) -> bool:
        """Whether the file behind a served loader name is there (as :meth:`path` would find
        it), from a per-name cache refreshed every ``recheck_seconds`` (module docstring)."""
        now = self._clock()
        with self._seen_lock:
            seen = self._seen.get(name)
        if seen is not None and now - seen[1] < self._recheck:
            return seen[0]
        try:
            self.path(name)
            present = True
        except BootboxError:
            present = False
        with self._seen_lock:
            self._seen[name] = (present, now)
        return present

    def where(self, name: str) -> Path:
        """Where a served name's file is looked for (for messages; nothing is checked)."""
        return self.named_path(name) or self.root / name.replace("\\", "/").lstrip("/")

    def missing(self) -> dict[str, Path]:
        """Configured names whose file is absent (for start-up warnings and ``doctor``)."""
        return {name: path for name, path in self._named.items() if not path.is_file()}


def local_address_for(client_ip: str) -> str:
    """Our address on the route to ``client_ip`` (the one a TFTP client talked to).

    A connected UDP socket sends nothing; the kernel only picks the source address. Used to
    build URLs for clients that reached us over TFTP, whose request carries no Host header.
    """
    family = socket.AF_INET6 if ":" in client_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((client_ip, 9))
        except OSError:
            return ""
        return str(sock.getsockname()[0])
