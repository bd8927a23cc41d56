"""Where built images live: content-addressed objects, names pointing at them, build logs.

Layout under the images directory (``[plugins.linux] images_dir``, default
``<state dir>/plugins/linux/images``)::

    objects/<digest>/            vmlinuz, initrd.img, filesystem.squashfs, manifest.json, build.log
    objects/.stage-<digest>-…/   a build in progress (renamed to objects/<digest> when complete)
    names/<name>.json            {"name", "digest", "created", "updated", "previous": [digests]}
    logs/<name>.log              the last build attempt of that name (kept when it fails)
    tmp/                         roots being built (``build_dir``; ``tmp``, so state backups leave it out)

An object is written once and never changed; a name is repointed by writing a new file and
renaming it over the old one. Both renames are atomic, so a reader sees the old image or the
new one, never half of either, and a build that fails leaves earlier images untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bootbox import NotFound
from bootbox_linux.build import FILES, LOG, MANIFEST
from bootbox_linux.image import check_name


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.names = root / "names"
        self.logs = root / "logs"
        self._lock = threading.Lock()
        for path in (self.objects, self.names, self.logs):
            path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ objects

    def has_object(self, digest: str) -> bool:
        return (self.objects / digest / MANIFEST).is_file()

    def object_dir(self, digest: str) -> Path:
        return self.objects / digest

    def manifest(self, digest: str) -> dict[str, Any]:
        path = self.objects / digest / MANIFEST
        if not path.is_file():
            raise NotFound(f"no built image with digest {digest}")
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def stage(self, digest: str) -> Path:
        """A fresh staging path (not created) beside the objects, on the same file system."""
        return self.objects / f".stage-{digest}-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"

    def publish(self, digest: str, stage: Path, log: Path) -> None:
        """Move a complete staging directory into place (a concurrent identical build may have
        won: then the stage is dropped, the objects being identical by construction)."""
        shutil.copyfile(log, stage / LOG)
        missing = [name for name in (*FILES, MANIFEST) if not (stage / name).is_file()]
        if missing:
            raise OSError(f"incomplete build: {', '.join(missing)} missing")
        try:
            os.rename(stage, self.objects / digest)
        except OSError:
            if not self.has_object(digest):
                raise
            shutil.rmtree(stage, ignore_errors=True)

    def drop_stages(self) -> None:
        """Remove staging directories a crashed build left behind (at start-up)."""
        for path in self.objects.glob(".stage-*"):
            shutil.rmtree(path, ignore_errors=True)

    def remove_object(self, digest: str) -> None:
        target = self.objects / digest
        if target.is_dir():
            trash = self.objects / f".stage-trash-{digest}-{time.monotonic_ns()}"
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ names

    def log_path(self, name: str) -> Path:
        return self.logs / f"{check_name(name)}.log"

    def ref(self, name: str) -> dict[str, Any]:
        path = self.names / f"{check_name(name)}.json"
        if not path.is_file():
            raise NotFound(f"no Linux image named {name!r} (bootbox image list shows the built ones)")
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def refs(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.names.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def point(self, name: str, digest: str) -> tuple[dict[str, Any], str | None]:
        """Point ``name`` at ``digest``; returns the new ref and the digest it pointed at before."""
        with self._lock:
            path = self.names / f"{check_name(name)}.json"
            old = json.loads(path.read_text()) if path.is_file() else None
            now = time.time()
            previous = list(old.get("previous", [])) if old else []
            before = old["digest"] if old else None
            if before and before != digest:
                previous = [d for d in [before, *previous] if d != digest][:10]
            doc = {"name": name, "digest": digest, "created": old["created"] if old else now,
                   "updated": now if before != digest else (old or {}).get("updated", now), "previous": previous}
            tmp = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(doc, sort_keys=True))
            os.replace(tmp, path)
            return doc, before

    def unname(self, name: str) -> dict[str, Any]:
        with self._lock:
            doc = self.ref(name)
            (self.names / f"{name}.json").unlink()
            return doc

    def referenced(self) -> set[str]:
        """Digests some name points at now."""
        return {ref["digest"] for ref in self.refs()}
