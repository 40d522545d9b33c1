"""Long work (an import, a send) runs in the background, so the console keeps answering
while it goes on; a page shows its progress and can ask it to stop.

Each job runs on a thread of its own with its own workspace (its own connection to the
ledger), under the same ledger lease as the command line: the lease, not this module, is
what keeps two sends apart (a send started from a terminal elsewhere included).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notifier.errors import NotifierError
from notifier.outputs import redact_urls

log = logging.getLogger(__name__)

# How long the console waits, when it stops, for a job to finish what is in flight
# (seconds; a send stops taking new messages at once and finishes the ones in flight).
STOP_WAIT = 60.0
# Ended jobs kept for their pages (an import's outcome, a check's result): the oldest go
# first, so a console left running for weeks does not keep every result it ever had.
ENDED_KEPT = 50


@dataclass
class Job:
    """One piece of background work: what it is, how far it has got, how it ended."""

    job_id: int
    kind: str  # "send", "import", ...
    subject: str  # the campaign, the file
    started: str  # ISO 8601, UTC
    stop_requested: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    result: Any = None
    ended: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self.ended is None

    def update(self, **figures: Any) -> None:
        """Set progress figures (called from the job's own thread)."""
        with self._lock:
            self.progress.update(figures)

    def snapshot(self) -> dict[str, Any]:
        """The job as a page or its progress script shows it."""
        with self._lock:
            return {
                "id": self.job_id,
                "kind": self.kind,
                "subject": self.subject,
                "started": self.started,
                "ended": self.ended,
                "running": self.running,
                "stop_requested": self.stop_requested.is_set(),
                "error": self.error,
                "progress": dict(self.progress),
            }


Work = Callable[[Job], Any]


class Jobs:
    """The console's background work, by id."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, kind: str, subject: str, work: Work) -> Job:
        """Run `work(job)` on a thread of its own; what it returns is the job's `result`,
        a NotifierError it raises its `error` (the message and hint a page shows)."""
        with self._lock:
            self._forget_oldest_ended()
            job = Job(next(self._ids), kind, subject, _now())
            thread = threading.Thread(
                target=self._run, args=(job, work), name=f"notifier-{kind}-{job.job_id}"
            )
            self._jobs[job.job_id] = job
            self._threads[job.job_id] = thread
        thread.start()
        return job

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self, kind: str | None = None, subject: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [
            j
            for j in jobs
            if j.running
            and (kind is None or j.kind == kind)
            and (subject is None or j.subject == subject)
        ]

    def latest(self, kind: str, subject: str) -> Job | None:
        """The most recent job of this kind for this subject, running or ended."""
        with self._lock:
            found = [j for j in self._jobs.values() if j.kind == kind and j.subject == subject]
        return found[-1] if found else None

    def wait(self, job: Job, timeout: float = STOP_WAIT) -> bool:
        """Wait (bounded) for a job to end, without asking it to stop; whether it ended."""
        with self._lock:
            thread = self._threads.get(job.job_id)
        if thread is not None:
            thread.join(timeout)
        return not job.running

    def stop_all(self, wait: float = STOP_WAIT) -> None:
        """Ask every job to stop, and wait (bounded) for them to end: the console is
        stopping."""
        with self._lock:
            jobs = list(self._jobs.values())
            threads = list(self._threads.values())
        for job in jobs:
            job.stop_requested.set()
        for thread in threads:
            thread.join(wait)

    def _forget_oldest_ended(self) -> None:
        """Drop the oldest ended jobs beyond ENDED_KEPT (called holding the lock)."""
        ended = [job_id for job_id, job in self._jobs.items() if not job.running]
        for job_id in ended[: max(len(ended) - ENDED_KEPT + 1, 0)]:
            del self._jobs[job_id]
            self._threads.pop(job_id, None)

    def _run(self, job: Job, work: Work) -> None:
        try:
            job.result = work(job)
        except NotifierError as exc:
            job.error = redact_urls(str(exc))
        except Exception as exc:  # a bug: the page says so, the log has the traceback
            log.exception("background %s of %s failed", job.kind, job.subject)
            job.error = redact_urls(f"{type(exc).__name__}: {exc}")
        finally:
            job.ended = _now()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
