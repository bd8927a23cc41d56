"""Linux images as the appliance manages them: build (once, cached), list, show, diff, remove.

The service ties the pieces together: a :class:`~bootbox_linux.image.Recipe` from the operator's
suite, archive and packages plus what plugins inject (``bootbox_image_inject``, asked with
``image_kind="linux"`` and no host: an image is built once for every host that boots it); the
:class:`~bootbox_linux.imagestore.ImageStore` that says whether that digest was built already;
the :class:`~bootbox_linux.build.Builder` when it was not. Builds run as background jobs so the
CLI can draw their progress; jobs live in memory only (a build interrupted by a restart wrote
nothing but a staging directory, dropped at the next start).
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bootbox import BootboxError, Conflict, NotFound
from bootbox_linux.build import Builder, BuildError, Progress
from bootbox_linux.image import Injection, Recipe, check_name, injection
from bootbox_linux.imagestore import ImageStore

KEEP_JOBS = 20


@dataclass
class Job:
    id: str
    name: str
    progress: Progress = field(default_factory=Progress)
    state: str = "running"
    error: str = ""
    cause: str = ""
    result: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "error": self.error, "cause": self.cause,
                "result": self.result, "started": self.started, "finished": self.finished,
                **self.progress.snapshot()}


Injector = Callable[[str], list[tuple[str, str]]]
"""``inject(image_name) -> [(plugin, package name or .deb path)]``: ``bootbox_image_inject``."""
UsedBy = Callable[[str], dict[str, list[str]]]
"""``used_by(image_name) -> {"profiles": [...], "rules": [...]}``."""
Repointed = Callable[[str, str, str], None]
"""``repointed(name, old digest, new digest)``: a rebuild changed what a name boots."""


class ImageService:
    def __init__(self, store: ImageStore, builder: Builder, default_mirror: str, inject: Injector,
                 used_by: UsedBy, repointed: Repointed | None = None,
                 built: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.builder = builder
        self.default_mirror = default_mirror
        self.inject = inject
        self.used_by = used_by
        self.repointed = repointed
        self.built = built
        """``built(name) -> str``: after a build, e.g. make the image's profile; kept as ``profile``."""
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        store.drop_stages()

    # ------------------------------------------------------------------ build

    def recipe(self, name: str, suite: str, packages: Iterable[str], mirror: str = "") -> Recipe:
        check_name(name)
        injected: list[Injection] = [injection(plugin, item) for plugin, item in self.inject(name)]
        return Recipe.make(suite, mirror or self.default_mirror, packages, injected)

    def build(self, name: str, suite: str, packages: Iterable[str], mirror: str = "",
              progress: Progress | None = None) -> dict[str, Any]:
        """Build (or find cached) the image and point ``name`` at it; the image's summary."""
        progress = progress or Progress()
        recipe = self.recipe(name, suite, packages, mirror)
        digest = recipe.digest
        cached = self.store.has_object(digest)
        if not cached:
            stage = self.store.stage(digest)
            log = self.store.log_path(name)
            self.builder.build(recipe, stage, log, progress)
            progress.enter("publish")
            self.store.publish(digest, stage, log)
        progress.enter("publish")
        _, before = self.store.point(name, digest)
        if before and before != digest and self.repointed is not None:
            self.repointed(name, before, digest)
        made = self.built(name) if self.built is not None else ""
        return {**self.show(name), "cached": cached, "profile": made}

    def start_build(self, name: str, suite: str, packages: list[str], mirror: str = "") -> Job:
        """Check the request now (so bad input is a 400, not a failed job), then build in a thread."""
        self.recipe(name, suite, packages, mirror)
        missing = missing_build_tools()
        if missing:
            raise Conflict(f"this appliance cannot build images: {', '.join(missing)} not installed "
                           "(apt-get install mmdebstrap squashfs-tools)")
        with self._lock:
            job = Job(id=str(next(self._ids)), name=name)
            self._jobs[job.id] = job
            for old in sorted(self._jobs, key=int)[:-KEEP_JOBS]:
                if self._jobs[old].state != "running":
                    del self._jobs[old]

        def run() -> None:
            try:
                job.result = self.build(name, suite, packages, mirror, job.progress)
                job.state = "done"
            except BuildError as exc:
                job.state, job.error, job.cause = "failed", f"build of image {name} failed: {exc}", exc.cause
            except Exception as exc:  # the job reports it; the appliance goes on
                job.state, job.error, job.cause = "failed", f"build of image {name} failed: {exc}", "failed"
            finally:
                job.finished = time.time()

        threading.Thread(target=run, name=f"linux-image-{name}", daemon=True).start()
        return job

    def job(self, job_id: str) -> Job:
        with self._lock:
            found = self._jobs.get(job_id)
        if found is None:
            raise NotFound(f"no image build job {job_id!r} (jobs are kept in memory until a restart)")
        return found

    # ------------------------------------------------------------------ read

    def resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """``(digest, manifest)`` of the image ``name`` points at now."""
        ref = self.store.ref(name)
        return ref["digest"], self.store.manifest(ref["digest"])

    def summary(self, ref: dict[str, Any]) -> dict[str, Any]:
        manifest = self.store.manifest(ref["digest"])
        recipe = manifest["recipe"]
        return {"name": ref["name"], "digest": ref["digest"], "suite": recipe["suite"], "mirror": recipe["mirror"],
                "requested": recipe["packages"], "injected": recipe["injected"],
                "kernel_version": manifest["kernel_version"], "package_count": len(manifest["packages"]),
                "sizes": manifest["sizes"], "built": manifest["built"], "build_seconds": manifest["seconds"],
                "updated": ref.get("updated"), "previous": ref.get("previous", [])}

    def list(self) -> list[dict[str, Any]]:
        out = []
        for ref in self.store.refs():
            try:
                out.append(self.summary(ref))
            except NotFound:
                continue
        return out

    def show(self, name: str) -> dict[str, Any]:
        ref = self.store.ref(name)
        manifest = self.store.manifest(ref["digest"])
        injected = {i["package"]: i["plugin"] for i in manifest["recipe"]["injected"]}
        packages = [{**p, **({"injected_by": injected[p["name"]]} if p["name"] in injected else {})}
                    for p in manifest["packages"]]
        return {**self.summary(ref), "packages": packages, "log": str(self.store.object_dir(ref["digest"]) / "build.log"),
                "used_by": self.used_by(name)}

    def diff(self, left: str, right: str) -> dict[str, Any]:
        """Packages added, removed and changed from ``left`` to ``right`` (image names, or a
        name's previous build as ``NAME@previous``, or a digest)."""
        a, b = self._manifest_of(left), self._manifest_of(right)
        old = {p["name"]: p["version"] for p in a["packages"]}
        new = {p["name"]: p["version"] for p in b["packages"]}
        return {"left": {"ref": left, "digest": a["digest"]}, "right": {"ref": right, "digest": b["digest"]},
                "added": [{"name": n, "version": new[n]} for n in sorted(set(new) - set(old))],
                "removed": [{"name": n, "version": old[n]} for n in sorted(set(old) - set(new))],
                "changed": [{"name": n, "from": old[n], "to": new[n]} for n in sorted(set(old) & set(new))
                            if old[n] != new[n]]}

    def _manifest_of(self, ref: str) -> dict[str, Any]:
        if ref.endswith("@previous"):
            previous = self.store.ref(ref.removesuffix("@previous")).get("previous", [])
            if not previous:
                raise NotFound(f"image {ref.removesuffix('@previous')} has no previous build")
            return self.store.manifest(previous[0])
        if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
            return self.store.manifest(ref)
        return self.store.manifest(self.store.ref(ref)["digest"])

    # ------------------------------------------------------------------ remove

    def remove(self, name: str) -> dict[str, Any]:
        """Forget ``name`` and delete the builds no other name keeps; refused while a profile
        (and through it a rule) boots it."""
        self.store.ref(name)
        used = self.used_by(name)
        if used.get("profiles"):
            rules = f"; rules {', '.join(used['rules'])} use those profiles" if used.get("rules") else ""
            raise Conflict(f"image {name} is in use by profiles {', '.join(used['profiles'])}{rules}: "
                           "point them at another image (or remove them) first")
        ref = self.store.unname(name)
        keep = set()
        for other in self.store.refs():
            keep |= {other["digest"], *other.get("previous", [])}
        removed = [d for d in [ref["digest"], *ref.get("previous", [])] if d not in keep]
        for digest in removed:
            self.store.remove_object(digest)
        return {"name": name, "removed_digests": removed}


def not_started() -> BootboxError:
    return BootboxError("the linux plugin's images are not available: bootbox serve starts them")


BUILD_TOOLS = ("mmdebstrap", "mksquashfs")
"""Programs a build runs (Debian packages mmdebstrap and squashfs-tools); the appliance's
install script does not add them, since only sites that build images need them."""


def missing_build_tools() -> list[str]:
    """The build programs not on PATH, so a build request fails at once with what to install."""
    return [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
