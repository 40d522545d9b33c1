"""Composing a send's messages ahead of the sending: in worker processes for a large send,
in this process for a small one.

Rendering and MIME take most of a message's CPU time, so for a large send they run in
worker processes and the main process only speaks SMTP and writes the ledger: that uses
both cores. The first messages go to the workers before the ledger is set up
(`submit_ahead`), so the workers' start-up and those messages overlap that work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from notifier.campaign import Campaign
from notifier.compose import Composer, DkimKey
from notifier.errors import ComposeError
from notifier.render import Renderer
from notifier.smtp.protocol import wire_form
from notifier.volunteer import Volunteer

# Composing in worker processes pays off from about this many messages (start-up ~0.5 s).
POOL_THRESHOLD = 2000
CHUNK = 128  # messages composed per worker call
# Messages handed to the workers before the ledger is set up (registering the campaign and
# its messages takes most of a second on one core, while the other is idle), and so the
# most composed messages held ahead of the sending (about 13 KB each, some 40 MB in all).
PRECOMPOSE = 2048
IN_PROCESS_STEP = 16  # composed in this process: so many at a time, then the loop runs


@dataclass(frozen=True)
class ComposeJob:
    volunteer: Volunteer
    smtputf8: bool
    message_id: str | None = None  # as the ledger issues it (None: a preview's)
    in_reply_to: str | None = None  # a follow-up: the earlier notice's, from the ledger


@dataclass(frozen=True)
class Composed:
    volunteer_id: str
    data: bytes | None
    error: str = ""  # a ComposeError for this person: recorded as failed_permanent
    # The DATA content (notifier.smtp.protocol.wire_form), made here rather than in the
    # sending process; usually `data` itself, which pickling then carries once.
    wire: bytes | None = None
    sha256: str = ""  # of `data`: the `sending` event records exactly what went


def compose_jobs(composer: Composer, jobs: Sequence[ComposeJob]) -> list[Composed]:
    """Build (render, compose, sign) each job's message, ready for the wire."""
    now = datetime.now(UTC)
    out = []
    for job in jobs:
        try:
            data = composer.build(
                job.volunteer,
                date=now,
                smtputf8=job.smtputf8,
                message_id=job.message_id,
                in_reply_to=job.in_reply_to,
            ).data
        except ComposeError as exc:
            out.append(Composed(job.volunteer.volunteer_id, None, exc.message))
            continue
        out.append(
            Composed(
                job.volunteer.volunteer_id,
                data,
                wire=wire_form(data, crlf=True),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return out


def compose_workers_for(count: int, requested: int | None = None) -> int:
    """Worker processes for composing `count` messages (0: compose in this process)."""
    if requested is not None:
        return max(0, requested)
    if count < POOL_THRESHOLD:
        return 0
    return max(1, min(2, (os.cpu_count() or 1) - 1))


def _chunks(jobs: Sequence[ComposeJob]) -> list[list[ComposeJob]]:
    return [list(jobs[i : i + CHUNK]) for i in range(0, len(jobs), CHUNK)]


class Composing(Protocol):
    """Where a send's messages are composed."""

    def submit_ahead(self, jobs: Sequence[ComposeJob]) -> None:
        """Start on the jobs the send will most likely want first, before it knows."""

    def composed(
        self, jobs: Sequence[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        """The jobs' messages, in chunks, until done or `stopping()`."""
        ...

    def close(self) -> None: ...


def start_composing(workers: int, campaign: Campaign, dkim: DkimKey | None) -> Composing:
    """A pool of `workers` processes, or composing in this process (0)."""
    if workers:
        return ComposePool(workers, campaign, dkim)
    return InProcess(Composer(campaign, Renderer(campaign), dkim=dkim))


class InProcess:
    """Composes in this process, a few messages at a time, so the event loop (and the
    SMTP connections) keep moving."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer

    def submit_ahead(self, jobs: Sequence[ComposeJob]) -> None:
        """Nothing: with one process there is no idle core to use."""

    async def composed(
        self, jobs: Sequence[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        for start in range(0, len(jobs), IN_PROCESS_STEP):
            if stopping():
                return
            yield compose_jobs(self.composer, jobs[start : start + IN_PROCESS_STEP])
            await asyncio.sleep(0)

    def close(self) -> None:
        pass


# A worker process's Composer, made once by the pool's initializer (_init_worker) and
# used by every chunk it composes (_compose_in_worker). A module global because that is
# the only way an initializer can hand state to later calls in the same process; it is
# set only in the worker processes, never in the sending one.
_worker_composer: Composer | None = None


def _init_worker(campaign: Campaign, dkim: DkimKey | None) -> None:
    global _worker_composer
    # Ctrl-C goes to the whole process group: the parent stops gracefully, and needs its
    # workers alive to finish the messages in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_composer = Composer(campaign, Renderer(campaign), dkim=dkim)


def _warm_up() -> None:
    """Nothing: submitted so that a worker process starts (and initialises) early."""


def _compose_in_worker(jobs: Sequence[ComposeJob]) -> list[Composed]:
    assert _worker_composer is not None
    return compose_jobs(_worker_composer, jobs)


class ComposePool:
    """Worker processes composing chunks of messages, started as soon as the send knows
    it needs them: their start-up (a fresh interpreter and the templates) overlaps the
    ledger set-up instead of holding up the first messages."""

    def __init__(self, workers: int, campaign: Campaign, dkim: DkimKey | None) -> None:
        self.workers = workers
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(campaign, dkim),
        )
        for _ in range(workers):
            self._pool.submit(_warm_up)  # processes start at the first jobs, so give them some
        # Chunks submitted ahead, in the order they are meant to go.
        self._ahead: list[tuple[list[ComposeJob], concurrent.futures.Future[list[Composed]]]] = []

    def submit_ahead(self, jobs: Sequence[ComposeJob]) -> None:
        """Hand the workers the first messages the send will most likely want, before the
        ledger set-up. The server is not known yet: the caller guesses SMTPUTF8; `composed`
        uses what matches and composes the rest anew."""
        self._ahead += [
            (chunk, self._pool.submit(_compose_in_worker, chunk))
            for chunk in _chunks(jobs[:PRECOMPOSE])
        ]

    async def composed(
        self, jobs: Sequence[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        loop = asyncio.get_running_loop()
        # Each chunk in hand, with the volunteers whose message in it is to be sent (None: all).
        ahead: deque[tuple[asyncio.Future[list[Composed]], set[str] | None]] = deque()
        # What was composed ahead goes first, where it is what the send wants (the guess
        # was right: the normal case); the rest of it is dropped, and composed anew.
        expected = {job.volunteer.volunteer_id: job.smtputf8 for job in jobs}
        covered: set[str] = set()
        for chunk, submitted in self._ahead:
            matching = {
                j.volunteer.volunteer_id
                for j in chunk
                if expected.get(j.volunteer.volunteer_id) == j.smtputf8
            }
            if matching:
                ahead.append((asyncio.wrap_future(submitted), matching))
                covered |= matching
            else:
                submitted.cancel()
        self._ahead = []
        rest = [job for job in jobs if job.volunteer.volunteer_id not in covered]
        # Enough chunks in hand to keep every worker busy, few enough to keep memory flat.
        lookahead = max(2 * self.workers, len(ahead))
        pending = iter(_chunks(rest))

        def top_up() -> None:
            while len(ahead) < lookahead:
                following = next(pending, None)
                if following is None:
                    return
                ahead.append(
                    (loop.run_in_executor(self._pool, _compose_in_worker, following), None)
                )

        top_up()
        while ahead:
            if stopping():
                for future, _keys in ahead:
                    future.cancel()
                return
            future, keys = ahead.popleft()
            composed = await future
            top_up()
            yield [c for c in composed if keys is None or c.volunteer_id in keys]

    def close(self) -> None:
        for _chunk, submitted in self._ahead:
            submitted.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
