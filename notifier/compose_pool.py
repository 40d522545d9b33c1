"""Composing a send's messages ahead of the sending: in worker processes for a large send,
in this process for a small one.

Rendering and MIME take most of a message's CPU time, so for a large send they run in
worker processes and the main process only speaks SMTP and writes the ledger: that uses
both cores. The jobs come as an iterable the pool reads only as it needs more (a send
queues its messages a chunk at a time as it goes), so the messages composed and held
ahead of the sending are a few chunks whatever the send's size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
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
# Chunks in hand per worker (being composed, or composed and waiting to be sent): enough
# to keep every worker busy while the sending takes the last ones, few enough that
# memory stays flat (about 13 KB a message).
LOOKAHEAD_PER_WORKER = 4
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


def _chunks(jobs: Iterable[ComposeJob], size: int) -> Iterator[list[ComposeJob]]:
    """The jobs in lists of `size`, read from `jobs` only as each list is asked for."""
    source = iter(jobs)
    while chunk := list(itertools.islice(source, size)):  # bounded: `jobs` runs out
        yield chunk


class Composing(Protocol):
    """Where a send's messages are composed."""

    def composed(
        self, jobs: Iterable[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        """The jobs' messages, in chunks, in order, until done or `stopping()`; `jobs` is
        read only as far as the chunks in hand need."""
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

    async def composed(
        self, jobs: Iterable[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        for chunk in _chunks(jobs, IN_PROCESS_STEP):
            if stopping():
                return
            yield compose_jobs(self.composer, chunk)
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
    send's first chunk being read and queued instead of holding up the first messages."""

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

    async def composed(
        self, jobs: Iterable[ComposeJob], stopping: Callable[[], bool]
    ) -> AsyncIterator[list[Composed]]:
        loop = asyncio.get_running_loop()
        ahead: deque[asyncio.Future[list[Composed]]] = deque()
        lookahead = LOOKAHEAD_PER_WORKER * self.workers
        pending = _chunks(jobs, CHUNK)

        def top_up() -> None:
            while len(ahead) < lookahead:
                following = next(pending, None)
                if following is None:
                    return
                ahead.append(loop.run_in_executor(self._pool, _compose_in_worker, following))

        top_up()
        while ahead:
            if stopping():
                for future in ahead:
                    future.cancel()
                return
            composed = await ahead.popleft()
            top_up()
            yield composed

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
