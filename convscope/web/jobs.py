"""Jobs: compute in worker threads, one job per model at a time, queued; live progress and cancellation.

A job is a callable ``run(progress) -> JobOutput`` (the web app's: a planned tool call, ``plan.run``);
``progress(done, total, what)`` is the callback every tool that loops accepts (``convscope.progress``):
it records the progress and raises ``Cancelled`` once the job was cancelled, which stops the computation
at its next unit of work (the model is restored as after any error). A job whose tool reports no
progress is cancelled when it returns (its result is dropped). Each change bumps ``Job.version``, which
the event stream (``tools._events``) watches.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from convscope.errors import ConvscopeError
from convscope.progress import Cancelled

__all__ = ["TERMINAL", "Job", "JobManager", "JobOutput", "QueueFull"]

log = logging.getLogger("convscope.web")

TERMINAL = ("done", "error", "cancelled")
ProgressFn = Callable[[int, int, str], None]


class QueueFull(ConvscopeError):
    """Too many jobs are waiting for this model."""


@dataclass
class JobOutput:
    """What a finished job leaves: JSON-safe facts and named files (PNG bytes)."""

    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(eq=False)
class Job:
    """One queued computation; its state changes under ``_changed`` and bump ``version``."""

    id: str
    lane: str  # the model's key: one running job per lane
    tool: str  # the registered tool's name
    request: dict[str, Any]  # what was asked, JSON-safe
    run: Callable[[ProgressFn], JobOutput] | None = field(repr=False)  # dropped once finished (it holds the inputs)
    status: str = "queued"
    done: int = 0
    total: int = 0
    what: str = ""
    error: str | None = None
    output: JobOutput | None = field(default=None, repr=False)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """The job as JSON: status, progress, timings, error, and the result's facts when done."""
        with self._changed:
            out = {"id": self.id, "tool": self.tool, "model": self.lane, "status": self.status, **self.request,
                   "progress": {"done": self.done, "total": self.total, "what": self.what,
                                "fraction": round(self.done / self.total, 4) if self.total else None},
                   "error": self.error, "cancel_requested": self._cancel.is_set(),
                   "seconds": round((self.finished or time.time()) - self.started, 3) if self.started else None}
            if self.output is not None:
                out["result"] = self.output.info
            return out

    def update(self, **fields: Any) -> None:
        with self._changed:
            for key, value in fields.items():
                setattr(self, key, value)
            self.version += 1
            self._changed.notify_all()

    def wait(self, version: int, timeout: float) -> int:
        """Block until the job changes after ``version`` (or ``timeout``); the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def poke(self) -> None:
        """Wake anyone waiting (server shutdown)."""
        with self._changed:
            self._changed.notify_all()

    def progress(self, done: int, total: int, what: str) -> None:
        """The ``progress=`` callback handed to convscope: records progress, raises ``Cancelled`` when asked to stop."""
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} was cancelled")
        self.update(done=int(done), total=int(total), what=str(what))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@contextlib.contextmanager
def stop_between_layers(job: Job) -> Iterator[None]:
    """While ``job`` runs in this thread, a cancel also stops it at the next module the model calls, not only at the
    tool's next progress step (one chunk of a batched method can take seconds on a CPU). A global forward pre-hook
    (``torch.nn.modules.module.register_module_forward_pre_hook``), never one on the user's modules, that is a no-op
    in every other thread and removed when the job ends; the tool's guard restores the model as after any error."""
    import torch

    worker = threading.get_ident()

    def check(module: Any, args: Any) -> None:
        if job._cancel.is_set() and threading.get_ident() == worker:
            raise Cancelled(f"job {job.id} was cancelled")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


class JobManager:
    """Per-lane worker threads (created on first use) running queued jobs one at a time, in order."""

    def __init__(self, *, max_jobs: int = 200, max_queued: int = 16) -> None:
        self.max_jobs, self.max_queued = int(max_jobs), int(max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queues: dict[str, queue.Queue[Job | None]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closed = threading.Event()

    # -- submitting and looking up --------------------------------------------------------------------
    def submit(self, lane: str, tool: str, request: dict[str, Any], run: Callable[[ProgressFn], JobOutput]) -> Job:
        """Queue ``run`` on ``lane``'s worker; raises ``QueueFull`` when ``max_queued`` jobs already wait."""
        if self.closed.is_set():
            raise ConvscopeError("the server is shutting down")
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.lane == lane and j.status == "queued")
            if waiting >= self.max_queued:
                raise QueueFull(f"{waiting} jobs are already waiting for model {lane!r}; wait or cancel some")
            job = Job(secrets.token_hex(8), lane, tool, request, run)
            self._jobs[job.id] = job
            self._evict()
            q = self._queues.get(lane)
            if q is None:
                q = self._queues[lane] = queue.Queue()
                thread = threading.Thread(target=self._work, args=(q,), name=f"convscope-job-{lane}", daemon=True)
                self._threads.append(thread)
                thread.start()
        q.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self, limit: int = 50) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())[-limit:][::-1]

    def cancel(self, job: Job) -> None:
        """Ask a job to stop: a queued job is dropped now, a running one at its next progress report."""
        job._cancel.set()
        with job._changed:
            if job.status == "queued":
                job.status, job.finished, job.run = "cancelled", time.time(), None
            job.version += 1
            job._changed.notify_all()

    def _evict(self) -> None:
        """Forget the oldest finished jobs (and their PNGs) beyond ``max_jobs``."""
        excess = len(self._jobs) - self.max_jobs
        for job_id in [j.id for j in self._jobs.values() if j.terminal][:max(0, excess)]:
            del self._jobs[job_id]

    # -- the workers ----------------------------------------------------------------------------------
    def _work(self, q: queue.Queue[Job | None]) -> None:
        while True:
            job = q.get()
            if job is None or self.closed.is_set():
                return
            if job._cancel.is_set():
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        job.update(status="running", started=time.time())
        run, job.run = job.run, None
        try:
            if run is None:
                raise Cancelled(f"job {job.id} was cancelled")
            with stop_between_layers(job):
                output = run(job.progress)
        except Cancelled:
            job.update(status="cancelled", finished=time.time())
        except ConvscopeError as exc:
            job.update(status="error", error=str(exc), finished=time.time())
        except Exception as exc:  # a bug in a tool: report it on the job, keep the worker alive
            log.error("job %s (%s) failed:\n%s", job.id, job.tool, traceback.format_exc())
            job.update(status="error", error=f"internal error: {type(exc).__name__}: {exc}"[:500], finished=time.time())
        else:
            if job._cancel.is_set():
                job.update(status="cancelled", finished=time.time())
            else:
                job.update(status="done", output=output, finished=time.time())

    def close(self) -> None:
        """Stop the workers after their current job (which is asked to cancel) and end event streams."""
        self.closed.set()
        with self._lock:
            jobs = list(self._jobs.values())
            queues = list(self._queues.values())
        for job in jobs:
            if not job.terminal:
                self.cancel(job)
            job.poke()
        for q in queues:
            q.put(None)

    def typical_seconds(self, lane: str) -> float:
        """About how long a job on ``lane`` takes: the median of its recent finished jobs (5 s before any)."""
        with self._lock:
            spans = sorted(j.finished - j.started for j in self._jobs.values()
                           if j.lane == lane and j.started is not None and j.finished is not None)
        return spans[len(spans) // 2] if spans else 5.0
