"""Backups an operator can use: one tar file with everything bootbox needs to come back.

**What a backup holds.** The config file, the store (``bootbox.json``: profiles, rules, host
profiles, answers — secrets encrypted —, associations, DHCP leases, plugins' tables such as the
ESXi image catalog), the host log, the keys (the secrets key and the API token, under ``keys/``),
plugins' data directories (``state/plugins/``: the ESXi image payloads are there) unless
``images=False``, the webhooks' pending deliveries and delivery logs (``state/webhooks/``), the
boot-path writes queued during a PostgreSQL outage (``outbox.jsonl``), and ``MANIFEST.json`` (what is in it, each file's SHA-256, and the images whose
payloads were left out). ``README.txt`` comes first and says the file holds the secrets key. The
file is written mode 0600, atomically.

**A consistent snapshot while serving, without stopping anything.** Every file bootbox rewrites
is replaced by an atomic rename (:mod:`bootbox.runtime.atomic`): opening ``bootbox.json`` gives
one complete version, whichever moment it is read, and that one version holds everything the
API acknowledged before it (the store is written through). The host log is append-only with
fsynced lines, so its bytes up to the last newline are a complete, consistent log (hosts still
in the write-behind's memory — at most half a second of boot-path updates — are not in it; their
next boot writes them again). Image payloads are content-addressed and never rewritten, and the
store is read *before* them, so every payload the snapshot's catalog names is already on disk.
So the backup reads the state directory directly (as root, on the appliance) instead of going
through the API: no request holds the store's lock while a multi-gigabyte image streams out,
and a stopped appliance can be backed up the same way.

**Restore** needs the appliance stopped: it takes the state directory's lock
(:class:`~bootbox.store.lock.StateDirLock`) and refuses while bootbox holds it. What the state
directory held before is moved to ``pre-restore-<time>/`` inside it, never deleted.

**With the store in PostgreSQL** (``[store] backend = "postgresql"``) the documents, hosts and
events are not in the state directory: the backup holds a ``pg_dump`` of bootbox's schema
(``store/bootbox.pgdump``, one consistent snapshot taken while appliances serve) instead of
``bootbox.json``, and restore puts it back with ``pg_restore`` in one transaction, refusing
while any appliance is connected to the database (:mod:`bootbox.store.backup_pg`). A backup
restores only into the backend it was taken from; ``bootbox store migrate`` moves between them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator

from bootbox.errors import BootboxError, StoreLocked
from bootbox.runtime.atomic import atomic_write_bytes, fsync_directory
from bootbox.store import backup_pg
from bootbox.store.apitoken import TOKEN_FILE
from bootbox.store.lock import LOCK_FILENAME, StateDirLock
from bootbox.store.outbox import OUTBOX_FILE
from bootbox.store.setaside import SET_ASIDE_DIR

FORMAT = "bootbox-backup-1"
STORE_FILE = "bootbox.json"
WEBHOOKS_DIR = "webhooks"
"""Webhook delivery queues and logs (bootbox.service.webhooks writes them under the state dir)."""
HOST_LOG = "hosts.jsonl"
SECRETS_KEY = "secrets.key"
PLUGINS_DIR = "plugins"
IMAGE_DIRS = ("blobs", "images")
"""Folders inside a plugin's data directory that hold image payloads (left out by ``images=False``):
the ESXi depot's blobs and the ``linux`` plugin's built images (rebuilt with ``bootbox image build``)."""
IMAGE_TABLES = {"p_esxi_depot_profiles": "ESXi image profile", "p_esxi_depots": "ESXi depot"}
"""Store tables whose entries name images with payloads (what restore says to re-import)."""
README = f"""bootbox backup ({FORMAT})

THIS FILE HOLDS THE SECRETS KEY (keys/secrets.key) and the API token (keys/api-token).
Anyone who has it can decrypt every secret answer it holds (root passwords, ...) and write
to the appliance's API. Keep it as you keep those secrets: mode 0600, encrypted at rest.

Restore it with the appliance stopped:  bootbox state restore THIS-FILE
"""


@dataclass
class BackupReport:
    """What a backup holds, or what a restore put back and what is still to do."""

    path: Path
    files: int = 0
    bytes: int = 0
    images_included: bool = True
    images_to_reimport: list[str] = field(default_factory=list)
    kept_previous: Path | None = None
    config: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "files": self.files, "bytes": self.bytes,
                "images_included": self.images_included, "images_to_reimport": self.images_to_reimport,
                "kept_previous": str(self.kept_previous) if self.kept_previous else None,
                "config": self.config, "notes": self.notes}


def backup(target: Path, *, state_dir: Path, config_path: Path | None, key_path: Path, images: bool = True,
           pg_dsn: str = "") -> BackupReport:
    """Write a backup of ``state_dir`` (and the config, and the secrets key) to ``target``;
    with ``pg_dsn`` (the PostgreSQL backend's DSN), a dump of the store's schema instead of
    ``bootbox.json``."""
    state_dir, target = Path(state_dir), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if pg_dsn:
        with tempfile.TemporaryDirectory(prefix=".bootbox-pgdump-", dir=target.parent) as tmp:
            dump = Path(tmp) / "bootbox.pgdump"
            schema = backup_pg.dump(pg_dsn, dump)
            reimport = [] if images else backup_pg.documents_in(pg_dsn, IMAGE_TABLES)
            return _write_backup(target, state_dir, config_path, key_path, images, [(backup_pg.DUMP_MEMBER, dump)],
                                 {"backend": "postgresql", "schema": schema}, reimport)
    if not (state_dir / STORE_FILE).exists():
        raise BootboxError(f"{state_dir} holds no bootbox store ({STORE_FILE}); nothing to back up")
    store = (state_dir / STORE_FILE).read_bytes()  # one complete version: it is replaced by rename
    return _write_backup(target, state_dir, config_path, key_path, images, [(f"state/{STORE_FILE}", store)],
                         {"backend": "tinydb"}, [] if images else images_in(store))


def _write_backup(target: Path, state_dir: Path, config_path: Path | None, key_path: Path, images: bool,
                  members: list[tuple[str, bytes | Path]], store_info: dict[str, str], reimport: list[str]) -> BackupReport:
    """The tar: README, the store's member(s), host log, keys, config, plugins' files, manifest."""
    if (state_dir / HOST_LOG).exists():
        log = (state_dir / HOST_LOG).read_bytes()
        members.append((f"state/{HOST_LOG}", log[: log.rfind(b"\n") + 1]))  # whole lines only
    if key_path.exists():
        members.append((f"keys/{SECRETS_KEY}", key_path.read_bytes()))
    if (state_dir / TOKEN_FILE).exists():
        members.append((f"keys/{TOKEN_FILE}", (state_dir / TOKEN_FILE).read_bytes()))
    if config_path is not None and config_path.exists():
        members.append(("config/bootbox.toml", config_path.read_bytes()))
    outbox = state_dir / OUTBOX_FILE  # boot-path writes queued while PostgreSQL was away
    if outbox.exists():
        queued = outbox.read_bytes()
        members.append((f"state/{OUTBOX_FILE}", queued[: queued.rfind(b"\n") + 1]))  # whole lines only
    for path in [*_plugin_files(state_dir, images), *_files_under(state_dir / WEBHOOKS_DIR)]:
        members.append((f"state/{path.relative_to(state_dir).as_posix()}", path))
    report = BackupReport(target, images_included=images, images_to_reimport=reimport)
    manifest = {"format": FORMAT, "version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": socket.gethostname(), "state_dir": str(state_dir), "store": store_info,
                "config_path": str(config_path) if config_path else "", "key_path": str(key_path),
                "images_included": images, "images_to_reimport": report.images_to_reimport,
                "files": {}}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, "README.txt", README.encode())
            for name, source in members:
                digest, size = _add(tar, name, source)
                manifest["files"][name] = {"sha256": digest, "size": size}  # type: ignore[index]
                report.files, report.bytes = report.files + 1, report.bytes + size
            _add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=1).encode())
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return report


def restore(source: Path, *, state_dir: Path, key_path: Path, config_to: Path | None = None,
            pg_dsn: str = "") -> BackupReport:
    """Put a backup back into ``state_dir`` (the appliance must be stopped); a PostgreSQL
    store's dump into the database ``pg_dsn`` names (every appliance using it stopped).

    :raises StoreLocked: bootbox is running on ``state_dir``.
    :raises BootboxError: ``source`` is not a readable bootbox backup, or a file in it does not
        match its manifest, or it was taken from the other backend, or the database refused
        the dump (nothing was changed then).
    """
    state_dir, source = Path(state_dir), Path(source)
    try:
        lock = StateDirLock(state_dir)
    except StoreLocked as exc:
        raise StoreLocked(f"{exc}. Restore replaces the state under a running appliance: stop it first "
                          "(systemctl stop bootbox), restore, then start it") from None
    try:
        manifest, config = _verify(source)
        files = manifest["files"]
        backend = str((manifest.get("store") or {}).get("backend") or "tinydb")
        if backend == "postgresql" and not pg_dsn:
            raise BootboxError(f"{source} holds a PostgreSQL store (a pg_dump): restore it with [store] backend = "
                               "\"postgresql\" and the dsn of the database to restore into; nothing was restored")
        if backend != "postgresql" and pg_dsn:
            raise BootboxError(f"{source} holds a TinyDB store ({STORE_FILE}), and this appliance's store is "
                               "PostgreSQL: restore it with [store] backend = \"tinydb\", then move it with "
                               "`bootbox store migrate --to postgresql`; nothing was restored")
        if backend == "postgresql":
            _restore_dump(source, pg_dsn, str(manifest["store"].get("schema") or "public"))
        report = BackupReport(source, files=len(files), bytes=sum(int(f.get("size", 0)) for f in files.values()),
                              images_included=bool(manifest.get("images_included", True)),
                              images_to_reimport=list(manifest.get("images_to_reimport") or []))
        report.kept_previous = _keep_previous(state_dir)
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                target = _target(member.name, state_dir, key_path)
                handle = tar.extractfile(member)
                if target is None or handle is None:
                    continue
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _write_stream(target, handle)
        if config is not None and config_to is not None:
            if config_to.exists() and config_to.read_bytes() != config:
                shutil.copy2(config_to, config_to.with_name(config_to.name + ".before-restore"))
                report.notes.append(f"the previous config is kept as {config_to}.before-restore")
            atomic_write_bytes(config_to, config, mode=0o644)
            report.config = str(config_to)
        elif config is not None:
            report.notes.append(f"the backup's config was not written (it was {manifest.get('config_path') or '?'}); "
                                "pass --config-to PATH to restore it")
        if report.images_to_reimport:
            report.notes.append("image payloads were not in the backup (--no-images): import these again: "
                                + ", ".join(report.images_to_reimport))
        return report
    finally:
        lock.release()


def _restore_dump(source: Path, dsn: str, schema: str) -> None:
    """Take the dump out of the (already verified) tar into a private temporary file and
    pg_restore it."""
    with tempfile.TemporaryDirectory(prefix="bootbox-pgrestore-") as tmp:
        dump = Path(tmp) / "bootbox.pgdump"
        with tarfile.open(source, mode="r:*") as tar:
            handle = tar.extractfile(backup_pg.DUMP_MEMBER)
            if handle is None:
                raise BootboxError(f"{source}: {backup_pg.DUMP_MEMBER} is missing; nothing was restored")
            with dump.open("wb") as out:
                shutil.copyfileobj(handle, out, 1 << 20)
        backup_pg.restore(dsn, dump, schema)


def _version() -> str:
    try:
        return importlib.metadata.version("bootbox")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def images_in(store: bytes) -> list[str]:
    """The images a store snapshot names whose payloads live outside the store ("kind name")."""
    try:
        tables = json.loads(store)
    except ValueError:
        return []
    found = []
    for table, label in IMAGE_TABLES.items():
        rows = tables.get(table) if isinstance(tables, dict) else None
        if isinstance(rows, dict):
            found.extend(f"{label} {key}" for key in sorted(rows))
    return found


def _plugin_files(state_dir: Path, images: bool) -> Iterator[Path]:
    root = state_dir / PLUGINS_DIR
    yield from _files_under(root, skip=lambda here, d: not images and here.parent == root and d in IMAGE_DIRS)


def _files_under(root: Path, skip: Callable[[Path, str], bool] = lambda here, name: False) -> Iterator[Path]:
    """Regular files below ``root`` in a stable order, leaving out temporary files and folders
    (and the folders ``skip`` names)."""
    if not root.is_dir():
        return
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d != "tmp" and not skip(here, d))
        for name in sorted(names):
            path = here / name
            if path.is_file() and not path.is_symlink() and not name.endswith(".tmp"):
                yield path


def _add(tar: tarfile.TarFile, name: str, source: bytes | Path) -> tuple[str, int]:
    if isinstance(source, bytes):
        _add_bytes(tar, name, source)
        return hashlib.sha256(source).hexdigest(), len(source)
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        info = _info(name, size)
        reader = _Hashing(handle, digest)
        tar.addfile(info, reader)  # type: ignore[arg-type]
    return digest.hexdigest(), size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


class _Hashing:
    """A file reader that hashes what tarfile reads (a payload is read once, not twice)."""

    def __init__(self, handle: io.BufferedReader, digest: Any) -> None:
        self._handle, self._digest = handle, digest

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        return data


def _unreadable(exc: BaseException) -> str:
    """Why a backup cannot be read, in one line: ``tarfile.open(mode="r:*")`` on a file that is no
    archive lists every compression it tried, one per line."""
    if isinstance(exc, tarfile.ReadError) and "\n" in str(exc):
        return "not a tar archive (state backup writes .tar.gz)"
    return str(exc)


def _verify(source: Path) -> tuple[dict[str, Any], bytes | None]:
    """Check every file of the backup against its manifest (streaming: payloads can be large)
    before anything is written; return the manifest and the config file's bytes."""
    digests: dict[str, str] = {}
    small: dict[str, bytes] = {}
    try:
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if not member.isfile() or path.is_absolute() or ".." in path.parts:
                    raise BootboxError(f"{source}: unexpected entry {member.name!r}; not a bootbox backup")
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                while handle is not None and (chunk := handle.read(1 << 20)):
                    digest.update(chunk)
                    if member.name in ("MANIFEST.json", "config/bootbox.toml"):
                        small[member.name] = small.get(member.name, b"") + chunk
                digests[member.name] = digest.hexdigest()
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BootboxError(f"{source} cannot be read as a bootbox backup: {_unreadable(exc)}") from None
    try:
        manifest = json.loads(small["MANIFEST.json"])
    except (KeyError, ValueError):
        raise BootboxError(f"{source} has no readable MANIFEST.json; not a bootbox backup") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BootboxError(f"{source} is not a {FORMAT} backup")
    if not isinstance(manifest.get("files"), dict):
        raise BootboxError(f"{source}: MANIFEST.json lists no files; not a bootbox backup")
    for name, expected in manifest["files"].items():
        if digests.get(name) != (expected or {}).get("sha256"):
            raise BootboxError(f"{source}: {name} is missing or damaged (its SHA-256 does not match the manifest); "
                               "nothing was restored")
    unlisted = set(digests) - set(manifest["files"]) - {"MANIFEST.json", "README.txt"}
    if unlisted:
        raise BootboxError(f"{source}: {sorted(unlisted)[0]} is not in the manifest; nothing was restored")
    return manifest, small.get("config/bootbox.toml")


def _target(name: str, state_dir: Path, key_path: Path) -> Path | None:
    """Where a backup member goes (``None``: not restored as a file, e.g. the config)."""
    parts = PurePosixPath(name).parts
    if parts[0] == "state" and len(parts) > 1:
        return state_dir.joinpath(*parts[1:])
    if name == f"keys/{SECRETS_KEY}":
        return key_path
    if name == f"keys/{TOKEN_FILE}":
        return state_dir / TOKEN_FILE
    return None


def _write_stream(target: Path, handle: IO[bytes]) -> None:
    """Copy ``handle`` to ``target`` through a temporary file, fsync, rename (mode 0600)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.restore.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(handle, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def _keep_previous(state_dir: Path) -> Path | None:
    """Move what ``state_dir`` holds (but the lock and kept files) into ``pre-restore-<time>/``."""
    present = [p for p in state_dir.iterdir()
               if p.name not in (LOCK_FILENAME, SET_ASIDE_DIR) and not p.name.startswith("pre-restore-")]
    if not present:
        return None
    kept = state_dir / f"pre-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    kept.mkdir(mode=0o700)
    for path in present:
        os.replace(path, kept / path.name)
    fsync_directory(state_dir)
    return kept
