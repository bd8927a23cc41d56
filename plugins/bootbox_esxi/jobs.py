"""Depot imports as background jobs, so ``bootbox depot add`` can draw a progress bar.

The appliance does the import (it owns the state dir); the API starts a job and answers at once
with its ID, and the CLI polls ``/api/v1/esxi/jobs/<id>`` for bytes done / total. A job is one
thread; imports are serialised by the importer's lock, so a second ``depot add`` waits its turn
and shows phase "queued". Jobs live in memory only: after a restart an unfinished import simply
never happened (it wrote nothing to the catalog, and its blobs were rolled back or are orphans
with content addresses, harmless).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bootbox import BootboxError, NotFound
from bootbox_esxi.depot import Progress

KEEP = 50


@dataclass
class Job:
    id: str
    source: str
    progress: Progress = field(default_factory=Progress)
    state: str = "running"
    error: str = ""
    result: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None
    work: Callable[[str, Progress], dict[str, Any]] | None = None
    """This job's own work, when it is not the usual import (``depot add --replace``)."""

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "state": self.state, "error": self.error,
                "result": self.result, "started": self.started, "finished": self.finished,
                **self.progress.snapshot()}


class Jobs:
    """Runs ``work(source, progress)`` in a thread per job and keeps the last few results."""

    def __init__(self, work: Callable[[str, Progress], dict[str, Any]]) -> None:
        self._work = work
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def start(self, source: str, work: Callable[[str, Progress], dict[str, Any]] | None = None) -> Job:
        """Start ``work(source, progress)`` (default: the import this ``Jobs`` was made with)."""
        with self._lock:
            if self._closed:
                raise BootboxError("the appliance is stopping; try again when it is back")
            job = Job(id=str(next(self._ids)), source=source, work=work)
            job.progress.phase = "queued"
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"bootbox-esxi-import-{job.id}",
                                          daemon=True)
            self._jobs[job.id] = job
            for old in list(self._jobs.values())[:-KEEP]:
                if old.state != "running":
                    del self._jobs[old.id]
        job.thread.start()
        return job

    def _run(self, job: Job) -> None:
        try:
            job.result = (job.work or self._work)(job.source, job.progress)
            job.state = "done"
        except BootboxError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # a bug must still end the job, with something to show
            job.error, job.state = f"internal error: {exc!r}", "failed"
        finally:
            job.finished = time.time()

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"no import job {job_id!r} (jobs are forgotten when the appliance restarts)") from None

    def close(self, timeout: float = 10.0) -> None:
        """Cancel running imports (they stop at their next chunk) and wait for their threads."""
        with self._lock:
            self._closed = True
            running = [job for job in self._jobs.values() if job.state == "running"]
        for job in running:
            job.progress.cancelled.set()
        deadline = time.monotonic() + timeout
        for job in running:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
