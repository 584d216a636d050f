"""Changes the console runs in worker threads, so a long wait never blocks a page.

An archive or stop returns once no gate admits the campaigns: on SQLite that is about half
a second, on PostgreSQL about five (the lease). The request that starts one waits a short
while for it; if it is not done by then the browser is shown a page that polls the job
until it is.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Job", "Jobs"]

_KEPT = 200  # finished jobs kept for their pages, oldest dropped first


@attrs.define(kw_only=True)
class Job:
    """One change running (or run) for a user.

    Attributes:
        id: Unguessable; with ``owner`` it is what a job page checks.
        owner: The user who started it (only they see it).
        title: What it does, for the page ("Archive 3 campaigns").
        back: The page to return to when it is done.
        expected: Seconds it is expected to take at most (the commit wait), for progress.
        started: ``time.monotonic()`` at start.
        future: The running call.
        kind: ``trigger``, ``bulk`` or ``segment``: how its page shows the result.
        meta: What its page needs besides the result (names, the trigger).
        finished: ``time.monotonic()`` when it returned or raised.
    """

    id: str
    owner: str
    title: str
    back: str
    expected: float
    started: float
    future: concurrent.futures.Future[Any]
    kind: str = "trigger"
    meta: dict[str, Any] = attrs.field(factory=dict)
    finished: float | None = None

    @property
    def done(self) -> bool:
        """Whether the call returned or raised."""
        return self.future.done()

    def elapsed(self) -> float:
        """Seconds since it started (until it finished)."""
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started


class Jobs:
    """A small thread pool and the jobs it ran, newest last."""

    def __init__(self, workers: int = 4) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="console-job"
        )
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._counter = itertools.count(1)

    def start(
        self,
        fn: Callable[[], Any],
        *,
        owner: str,
        title: str,
        back: str,
        expected: float,
        kind: str = "trigger",
        meta: dict[str, Any] | None = None,
    ) -> Job:
        """Run ``fn`` in a worker thread; the job is visible to ``owner`` only."""
        job_id = f"{next(self._counter)}-{secrets.token_urlsafe(12)}"
        future = self._pool.submit(fn)
        job = Job(
            id=job_id,
            owner=owner,
            title=title,
            back=back,
            expected=expected,
            started=time.monotonic(),
            future=future,
            kind=kind,
            meta=meta or {},
        )

        def finished(_f: concurrent.futures.Future[Any]) -> None:
            job.finished = time.monotonic()

        future.add_done_callback(finished)
        with self._lock:
            self._jobs[job_id] = job
            while len(self._jobs) > _KEPT:
                oldest_id, oldest = next(iter(self._jobs.items()))
                if not oldest.done:
                    break
                del self._jobs[oldest_id]
        return job

    def get(self, job_id: str, owner: str) -> Job | None:
        """The job, if it exists and ``owner`` started it."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def shutdown(self) -> None:
        """Let running changes finish (an archive is never cut short), then stop."""
        self._pool.shutdown(wait=True)
