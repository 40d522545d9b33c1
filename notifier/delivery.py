"""The delivery engine: hand messages to an SMTP server, throttled, with every outcome
journaled.

The parts, in the order a message meets them:

- `Delivery._dispatch`: the overall token bucket (`rate`), the per-domain rate
  (`per_domain`), batches with pauses. Unthrottled, a window of messages is then claimed
  as `sending` in the journal, in one transaction, before any of their bytes go out.
  Throttled (a rate set), messages are handed on unclaimed.
- `Delivery._worker`: one per connection (`concurrency`); each carries many messages on
  an `SmtpSession` (notifier.smtp.session), with RSET between them, and reconnects after
  a failure. A worker claims a message it was handed unclaimed (and a retry) itself,
  just before writing it: throttled, a connection has at most two messages claimed and
  not settled -- the one being written or awaiting its reply, and the next one, whose
  envelope is pipelined behind it.
- `classify_smtp_outcome` (notifier.smtp.outcome): the one place a server reply becomes
  sent / deferred / failed_permanent.
- `RetryPolicy`: the one rule for trying again (tenacity): deferred messages up to
  `max_attempts`, then failed_temporary, and the wait before reconnecting to a server
  that cannot be reached.

The engine knows the ledger only through the `Journal` protocol (notifier.journal has
the implementation). Crash safety rests on it: outcomes are buffered and written in
batches, but a claim always writes the buffer first, in its own transaction, and returns
only once committed, and the number of messages claimed and not yet settled is bounded
(`SendOptions.max_unsettled`, tied to the connections), so a SIGKILL leaves at most that
many messages in `sending` -- the ones the next run reports as uncertain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import aiosmtplib
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_result, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from notifier.config import Credentials
from notifier.errors import DeliveryError, FatalDeliveryError
from notifier.message import DeliveryOutcome, MessageState, OutgoingMessage
from notifier.smtp.outcome import classify_smtp_outcome, describe_error, parse_queue_id, reply_of
from notifier.smtp.session import ServerInfo, SessionOptions, SmtpSession, this_host
from notifier.smtp.target import SmtpTarget, connection_hint
from notifier.throttle import DomainThrottle, TokenBucket

log = logging.getLogger(__name__)

# A worker whose server cannot be reached waits at most this long before trying again,
# so a server that comes back is used soon.
RECONNECT_WAIT_MAX = 30.0
# How often a run looks at a stop asked for from another thread (seconds).
STOP_POLL = 0.05

# Throttled, a connection holds at most this many messages claimed and not settled: the
# one being written or awaiting its reply, and the next one (pipelined behind it).
CLAIMS_PER_CONNECTION = 2
# Unthrottled, claims are batched for throughput: this many messages per transaction per
# connection, and at most four such windows claimed and not settled.
CLAIM_WINDOW_PER_CONNECTION = 8


# --- options and the retry policy -----------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: exponential backoff with a little jitter, built on tenacity.

    The one policy for every retry in delivery: a deferred message is tried up to
    `max_attempts` times in one run, then recorded as failed_temporary; a worker that
    cannot open its connection waits `delay(failures)` before the next try.
    """

    max_attempts: int = 5
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    backoff_max: float = 300.0

    def _wait(self) -> wait_base:
        return wait_exponential(multiplier=self.backoff, max=self.backoff_max) + wait_random(
            0, self.backoff / 4
        )

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (about `backoff` after one)."""
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(failures, 1)
        return float(self._wait()(state))

    def capped(self, most: float) -> RetryPolicy:
        """The same policy, never waiting longer than `most` seconds."""
        return replace(self, backoff_max=min(self.backoff_max, most))

    def retrying(
        self,
        *,
        again: Callable[[DeliveryOutcome], bool],
        before_sleep: Callable[[RetryCallState], None],
        sleep: Callable[[float], Awaitable[None]],
    ) -> AsyncRetrying:
        """A tenacity loop over attempts: retried while `again(outcome)`, waiting with
        `sleep`; after the last attempt it returns the last outcome instead of raising."""

        def last_outcome(state: RetryCallState) -> DeliveryOutcome:
            assert state.outcome is not None
            result: DeliveryOutcome = state.outcome.result()
            return result

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait(),
            retry=retry_if_result(again),
            before_sleep=before_sleep,
            retry_error_callback=last_outcome,
            sleep=sleep,
        )


@dataclass(frozen=True)
class SendOptions:
    """How to send. Defaults suit a relay you control; throttle for the open internet.

    The command line's defaults are read from here (notifier.cli.send).
    """

    rate: float = 0.0  # messages per second over all connections; 0 = no limit
    concurrency: int = 4  # SMTP connections
    batch_size: int = 0  # pause after this many messages; 0 = no batches
    batch_pause: float = 0.0  # seconds
    per_domain: float = 0.0  # messages per second to one recipient domain; 0 = no cap
    timeout: float = 30.0  # seconds for connecting and for each SMTP reply
    max_attempts: int = 5  # attempts per message in one run before failed_temporary
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    backoff_max: float = 300.0
    require_tls: bool = False
    validate_certs: bool = True
    ca_file: Path | None = None  # PEM CAs trusted besides the system's ([smtp] ca_file)
    flush_interval: float = 0.25  # seconds between ledger writes of buffered outcomes
    local_hostname: str | None = None  # EHLO name; default: this machine's FQDN

    @property
    def throttled(self) -> bool:
        """A rate limit is set: messages are claimed one by one, as a connection is about
        to write them, not in windows ahead of the sending."""
        return self.rate > 0 or self.per_domain > 0

    @property
    def claim_window(self) -> int:
        """Messages claimed as `sending` per ledger transaction."""
        if self.throttled:
            return 1
        return CLAIM_WINDOW_PER_CONNECTION * self.concurrency

    @property
    def max_unsettled(self) -> int:
        """Messages claimed but whose outcome is not yet written: the most a crash can
        leave in `sending` (uncertain). Throttled, two per connection."""
        if self.throttled:
            return CLAIMS_PER_CONNECTION * self.concurrency
        return 4 * self.claim_window

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff, self.backoff_max)

    def session_options(self) -> SessionOptions:
        """What each connection needs (looks this machine's name up, unless given)."""
        return SessionOptions(
            timeout=self.timeout,
            require_tls=self.require_tls,
            validate_certs=self.validate_certs,
            ca_file=self.ca_file,
            local_hostname=self.local_hostname or this_host(),
        )


# --- the journal: where outcomes go -------------------------------------------------


class Journal(Protocol):
    """Where delivery writes its intent and its outcomes, in the order they happen.

    notifier.journal.ThreadedLedgerJournal writes them to the ledger."""

    @property
    def written(self) -> int:
        """Outcomes written so far."""
        ...

    @property
    def unwritten(self) -> int:
        """Outcomes recorded and not yet written (buffered, or being written)."""
        ...

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        """Commit `sending` for these messages, after the outcomes recorded so far; the
        attempt number of each one claimed. Returns once committed: only then may their
        bytes go out. A message missing from the result was not claimed (another sender
        has it, or it moved on): its bytes must not go out."""
        ...

    def record(self, outcome: DeliveryOutcome) -> None:
        """Record one outcome (written at the next flush or claim)."""
        ...

    async def settle(self) -> None:
        """Write every outcome recorded so far, and wait until they are written."""
        ...

    def keep_alive(self) -> None:
        """Show the run is alive when it has nothing to write for a while (a slow send)."""
        ...


# --- the engine ---------------------------------------------------------------------


@dataclass
class DeliveryStats:
    counts: dict[str, int] = field(default_factory=dict)  # final state -> messages
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    stopped: bool = False  # interrupted: some messages were left for a later run
    fatal: DeliveryError | None = None
    taken_elsewhere: int = 0  # chosen, but another sender claimed them first: not sent
    deferred: int = 0  # messages the server deferred (4xx) at their first attempt
    # Seconds the run went on only because deferred messages were waiting to be retried
    # (everything else was done): why a slow run was slow.
    held_by_retries: float = 0.0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


@dataclass
class _Job:
    message: OutgoingMessage
    attempt: int = 0  # from the claim
    claimed: bool = False  # committed as `sending`: its bytes may go out
    # Set for retries: the retry task waits for the outcome instead of the worker deciding.
    future: asyncio.Future[DeliveryOutcome] | None = None


class _Stopped(Exception):
    """Raised out of a backoff wait when a stop was requested."""


ProgressCallback = Callable[[DeliveryOutcome], None]


class Delivery:
    """Sends a stream of messages over a pool of connections. One instance, one run."""

    def __init__(
        self,
        target: SmtpTarget,
        options: SendOptions,
        journal: Journal,
        *,
        credentials: Credentials | None = None,
        progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ) -> None:
        if options.concurrency < 1:
            raise DeliveryError("--concurrency must be at least 1", field="--concurrency")
        if options.max_attempts < 1:
            raise DeliveryError("--max-attempts must be at least 1", field="--max-attempts")
        self.target = target
        self.options = options
        self.journal = journal
        self.progress = progress
        self.clock = clock
        self.stats = DeliveryStats()
        self.retry = options.retry
        self._reconnect = self.retry.capped(RECONNECT_WAIT_MAX)
        session_options = options.session_options()
        self.sessions = [
            SmtpSession(target, session_options, credentials) for _ in range(options.concurrency)
        ]
        self._bucket = TokenBucket(options.rate, now=clock())
        self._domains: DomainThrottle[OutgoingMessage] = DomainThrottle(options.per_domain)
        self._stop: asyncio.Event | None = None
        # A stop asked for from another thread (the console's stop button): the same
        # graceful stop as request_stop().
        self._stop_asked = stop
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._claimed = 0  # claims made (first attempts and retries)
        self._recorded = 0  # outcomes recorded for claimed messages (written or buffered)
        self._settle_to: int | None = None  # a claim waits for this many unsettled at most
        self._settled_event: asyncio.Event | None = None
        self._unclaimed = 0  # jobs handed to the workers and not yet claimed
        self._room: asyncio.Event | None = None  # set when a worker takes an unclaimed job
        self._failure: Exception | None = None  # a claim made by a worker failed
        self._in_batch = 0

    # -- control

    def request_stop(self) -> None:
        """Stop taking new messages; finish those in flight. Safe from a signal handler."""
        self.stats.stopped = True
        if self._stop is not None:
            self._stop.set()
        if self._room is not None:
            self._room.set()

    @property
    def stopping(self) -> bool:
        if self._stop_asked is not None and self._stop_asked.is_set() and not self.stats.stopped:
            self.request_stop()  # seen before the watcher's next look: no message more
        return self._stop is not None and self._stop.is_set()

    async def _watch_stop_asked(self, asked: threading.Event) -> None:
        """Wake the run's waits when a stop is asked for from another thread (a thread's
        event cannot wake the event loop, so it is looked at a few times a second)."""
        while not asked.is_set():
            await asyncio.sleep(STOP_POLL)
        if not self.stats.stopped:
            log.warning("stopping: finishing the messages in flight (a stop was asked for)")
        self.request_stop()

    async def probe(self) -> ServerInfo:
        """Open the first connection and learn what the server offers (SMTPUTF8, DSN).

        Fails with DeliveryError before anything is claimed if the server cannot be used.
        """
        try:
            return await self.sessions[0].open()
        except DeliveryError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"cannot use {self.target}: {describe_error(exc)}",
                field="--smtp",
                hint=connection_hint(exc),
            ) from exc

    # -- the run

    async def run(self, source: AsyncIterator[Sequence[OutgoingMessage]]) -> DeliveryStats:
        """Send everything `source` yields (in chunks), until done or asked to stop."""
        self._stop = asyncio.Event()
        if self.stats.stopped:
            self._stop.set()
        self._settled_event = asyncio.Event()
        self._room = asyncio.Event()
        self._queue = asyncio.Queue()
        self.stats = DeliveryStats(stopped=self.stats.stopped)
        asked = self._stop_asked
        watcher = asyncio.create_task(self._watch_stop_asked(asked)) if asked else None
        try:
            return await self._run(source, self._queue)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _run(
        self, source: AsyncIterator[Sequence[OutgoingMessage]], queue: asyncio.Queue[_Job | None]
    ) -> DeliveryStats:
        workers = [asyncio.create_task(self._worker(s)) for s in self.sessions]
        finished = asyncio.Event()
        flusher = asyncio.create_task(self._flush_periodically(finished))
        failure: Exception | None = None
        try:
            await self._dispatch(source)
        except Exception as exc:  # the source failed (a template error): stop cleanly
            failure = exc
            self.request_stop()
        # Everything claimed must be settled before the connections close.
        await queue.join()
        others_done = self.clock()
        while self._retries:
            await asyncio.wait(set(self._retries))
            await queue.join()
        self.stats.held_by_retries = self.clock() - others_done
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        finished.set()
        await flusher
        await self.journal.settle()
        self.stats.finished = self.clock()
        failure = failure or self._failure
        if failure is not None:
            raise failure
        if self.stats.fatal is not None:
            raise self.stats.fatal
        return self.stats

    async def _dispatch(self, source: AsyncIterator[Sequence[OutgoingMessage]]) -> None:
        window: list[OutgoingMessage] = []
        async for chunk in source:
            for message in chunk:
                if self.stopping:
                    return
                ready = self._domains.offer(message.domain, message, self.clock())
                if ready is not None:
                    await self._admit(ready, window)
                for released in self._domains.release(self.clock()):
                    await self._admit(released, window)
                # Bounded parking: beyond this, wait for the slow domains (memory stays flat).
                while self._domains.parked_count > 1000 and not self.stopping:
                    await self._drain_parked(window, until_below=1000)
            # The source may take a while for the next chunk: let the workers have these.
            await self._claim(window)
        await self._drain_parked(window, until_below=1)
        await self._claim(window)

    async def _drain_parked(self, window: list[OutgoingMessage], *, until_below: int) -> None:
        while self._domains.parked_count >= until_below and not self.stopping:
            due = self._domains.next_release()
            if due is None:
                return
            await self._claim(window)
            await self._sleep(due - self.clock())
            for released in self._domains.release(self.clock()):
                await self._admit(released, window)

    async def _admit(self, message: OutgoingMessage, window: list[OutgoingMessage]) -> None:
        """Take a rate token for the message, then put it in the window to be claimed or,
        throttled, hand it to the workers unclaimed (a worker claims it when it writes it)."""
        throttled = self.options.throttled
        if throttled:
            # No more waiting than the connections can take up: a message's token is
            # taken just before a worker is free for it.
            await self._wait_unclaimed(self.options.concurrency - 1)
        while not self._bucket.take(1, self.clock()):
            await self._claim(window)  # what we hold can go while we wait
            await self._sleep(self._bucket.wait_time(self.clock()))
            if self.stopping:
                return
        if self.stopping:
            return
        if throttled:
            await self._hand_out(_Job(message))
        else:
            window.append(message)
            if len(window) >= self.options.claim_window:
                await self._claim(window)
        self._in_batch += 1
        if self.options.batch_size and self._in_batch >= self.options.batch_size:
            self._in_batch = 0
            await self._claim(window)
            await self._wait_unclaimed(0)
            await self._wait_settled(0)
            log.info("batch done; pausing %.1f s", self.options.batch_pause)
            await self._sleep(self.options.batch_pause)

    async def _claim(self, window: list[OutgoingMessage]) -> None:
        """Commit `sending` for the window, then hand it to the workers."""
        if not window:
            return
        await self._wait_settled(self.options.max_unsettled - len(window))
        await self._wait_retries()
        attempts = await self.journal.claim(window)
        self._claimed += len(attempts)
        assert self._queue is not None
        for message in window:
            attempt = attempts.get(message.message_id)
            if attempt is None:
                self._taken_elsewhere(message)
                continue
            self._queue.put_nowait(_Job(message, attempt, claimed=True))
        window.clear()

    def _taken_elsewhere(self, message: OutgoingMessage) -> None:
        """A message this run chose, but could not claim: someone else has it."""
        self.stats.taken_elsewhere += 1
        log.warning(
            "%s: claimed by another sender (or moved on) before this run could: not sent",
            message.message_id,
        )

    async def _wait_retries(self) -> None:
        """Bound memory when a server defers everything: wait for retries to finish."""
        while len(self._retries) > 1000 and not self.stopping:
            await asyncio.wait(set(self._retries), return_when=asyncio.FIRST_COMPLETED)

    async def _hand_out(self, job: _Job) -> None:
        """Give the workers a job to claim when one of them is about to write it."""
        await self._wait_retries()
        assert self._queue is not None
        self._unclaimed += 1
        self._queue.put_nowait(job)

    async def _wait_unclaimed(self, most: int) -> None:
        """Wait until at most `most` jobs handed out are still unclaimed."""
        assert self._room is not None
        while self._unclaimed > max(most, 0) and not self.stopping:
            self._room.clear()
            await self._room.wait()

    async def _claim_taken(self, job: _Job) -> bool:
        """Claim a job a worker has taken and is about to write; False if it is not to be
        sent (a stop was requested before it was claimed, or the claim failed)."""
        assert self._room is not None
        self._unclaimed -= 1
        self._room.set()
        if self.stopping and job.future is None:
            return False  # never claimed: it stays due, for the next run
        try:
            attempts = await self.journal.claim([job.message])
        except Exception as exc:  # the ledger cannot be written: stop, raised by run()
            self._failure = self._failure or exc
            self.request_stop()
            if job.future is not None:
                job.future.set_exception(_Stopped())
            return False
        attempt = attempts.get(job.message.message_id)
        if attempt is None:
            self._taken_elsewhere(job.message)
            if job.future is not None:
                job.future.set_exception(_Stopped())  # a retry ends: not ours any more
            return False
        self._claimed += 1
        job.attempt = attempt
        job.claimed = True
        return True

    async def _wait_settled(self, most: int) -> None:
        """Wait until at most `most` claimed messages are still without an outcome. The
        outcomes recorded so far are written by the next claim, in its transaction, before
        its messages are marked `sending`."""
        assert self._settled_event is not None
        most = max(most, 0)
        while self._claimed - self._recorded > most:
            # Wake when enough outcomes are in to free the room in one write, not at
            # every outcome: one transaction per outcome would be the bottleneck.
            self._settle_to = most
            self._settled_event.clear()
            await self._settled_event.wait()
        self._settle_to = None

    def _record(self, outcome: DeliveryOutcome) -> None:
        self.journal.record(outcome)
        self._recorded += 1
        if self._settle_to is not None and self._claimed - self._recorded <= self._settle_to:
            assert self._settled_event is not None
            self._settled_event.set()  # the waiting claim can write these and go on
        self._count(outcome)

    def record_unsent(self, outcome: DeliveryOutcome) -> None:
        """Record and count an outcome decided without sending (an address this server
        cannot carry, a message that cannot be composed), in order with the others."""
        self.journal.record(outcome)  # never claimed: not counted among the unsettled
        self._count(outcome)

    def _count(self, outcome: DeliveryOutcome) -> None:
        """Count an outcome in the stats and show it."""
        if outcome.state != MessageState.DEFERRED:
            self.stats.counts[outcome.state] = self.stats.counts.get(outcome.state, 0) + 1
        if self.progress is not None:
            self.progress(outcome)

    async def _flush_periodically(self, finished: asyncio.Event) -> None:
        # Outcomes reach the ledger within flush_interval, so `notifier status` is current
        # and a crash leaves few messages uncertain even when sending is slow. Not
        # cancelled but told to finish: a write it waits for must not be dropped.
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.options.flush_interval)
            except TimeoutError:
                pass
            if self.journal.unwritten:
                await self.journal.settle()
                if self._settled_event is not None:
                    self._settled_event.set()
            else:
                self.journal.keep_alive()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a stop is requested."""
        if seconds <= 0 or self._stop is None:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _backoff_sleep(self, seconds: float) -> None:
        await self._sleep(seconds)
        if self.stopping:
            raise _Stopped

    # -- workers

    async def _worker(self, session: SmtpSession) -> None:
        queue = self._queue
        assert queue is not None
        failures = 0
        job: _Job | None = None
        written = False  # job's envelope went out behind the previous message (pipelined)
        while True:
            if job is None:
                job = await queue.get()
                written = False
                if job is None:
                    queue.task_done()
                    break
                if not job.claimed and not await self._claim_taken(job):
                    queue.task_done()
                    job = None
                    continue
            try:
                outcome, following, connection_failed = await self._attempt(session, job, written)
                if job.future is not None:
                    job.future.set_result(outcome)
                else:
                    self._first_attempt_done(job.message, outcome)
                if job.future is not None or outcome.state == MessageState.DEFERRED:
                    # Let its retry task record the outcome before this connection claims
                    # its next message: the bound on unsettled claims holds for retries too.
                    await asyncio.sleep(0)
            finally:
                queue.task_done()
            job, written = following
            # A connection that cannot be opened: wait before the next try, so a server
            # that is down is not hammered and messages are not used up in a burst.
            failures = failures + 1 if connection_failed else 0
            if failures and not self.stopping:
                await self._sleep(self._reconnect.delay(failures))
        await session.quit()

    def _take_following(self) -> _Job | None:
        """The next queued job if one is waiting now (its envelope can share this write)."""
        assert self._queue is not None
        try:
            job = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if job is None:  # the end: leave it for the worker loop
            self._queue.put_nowait(None)
            self._queue.task_done()
        return job

    async def _attempt(
        self, session: SmtpSession, job: _Job, written: bool
    ) -> tuple[DeliveryOutcome, tuple[_Job | None, bool], bool]:
        """Send one message. Returns its outcome; the job taken from the queue to follow
        it on this connection, if any, and whether that one's envelope already went out
        (pipelined behind this message's content); and whether the connection could not
        be opened.

        The following job was claimed like any other. Only its envelope can have gone out
        with this message, so if the connection dies it is sent afresh on the next one:
        that is not an attempt, and no outcome is recorded for it here."""
        message = job.message
        code: int | None
        connection_failed = False
        following: _Job | None = None
        tail = b""
        try:
            if not session.connected:
                connection_failed = True
                await session.open()
                connection_failed = False
                written = False
            await session.envelope(message, written=written)
            if session.pipelining:
                following = self._take_following()
                if following is not None and not following.claimed:
                    # Claimed now, before its envelope goes out behind this message.
                    if not await self._claim_taken(following):
                        assert self._queue is not None
                        self._queue.task_done()
                        following = None
                if following is not None:
                    try:
                        tail = session.envelope_bytes(following.message)
                    except aiosmtplib.SMTPException:
                        pass  # an address that cannot be written: refused on its own turn
            response = await session.content(message, tail)
            code, reply = response.code, response.message
        except FatalDeliveryError as exc:
            self.stats.fatal = exc
            self.request_stop()
            code, reply = None, f"not sent: {exc.message}"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            code, reply = reply_of(exc)
            if code is None or connection_failed or code == 421:
                session.close()  # 421: the server is closing this connection
        state = classify_smtp_outcome(code, reply, connecting=connection_failed)
        outcome = DeliveryOutcome(
            message_id=message.message_id,
            campaign_id=message.campaign_id,
            volunteer_id=message.volunteer_id,
            state=state,
            attempt=job.attempt,
            code=code,
            reply=reply,
            queue_id=parse_queue_id(reply) if state == MessageState.SENT else None,
            # What the server took, and where to: recorded in the `sent` event.
            recipient=message.recipient if state == MessageState.SENT else "",
            sha256=message.digest() if state == MessageState.SENT else "",
        )
        if state != MessageState.SENT:
            log.info("%s to %s: %s %s", state, message.recipient, code, reply)
        return outcome, (following, bool(tail) and session.connected), connection_failed

    def _first_attempt_done(self, message: OutgoingMessage, outcome: DeliveryOutcome) -> None:
        if outcome.state != MessageState.DEFERRED:
            self._record(outcome)
            return
        self.stats.deferred += 1
        if self.retry.max_attempts <= 1:
            self._record(_gave_up(outcome))
        elif self.stopping:
            self._record(outcome)  # stays deferred: the next run takes it up
        else:
            task = asyncio.create_task(self._retry(message, outcome))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry(self, message: OutgoingMessage, first: DeliveryOutcome) -> None:
        """Retry a deferred message with exponential backoff until sent, refused for good,
        or out of attempts. Each attempt is claimed (`sending`) before it goes out."""
        known = [first]

        async def attempt() -> DeliveryOutcome:
            if known:  # the worker already made the first attempt
                return known.pop()
            # Claimed by the worker that takes it, just before it writes it.
            future: asyncio.Future[DeliveryOutcome] = asyncio.get_running_loop().create_future()
            assert self._queue is not None
            self._unclaimed += 1
            self._queue.put_nowait(_Job(message, future=future))
            return await future

        def record_deferred(state: RetryCallState) -> None:
            assert state.outcome is not None
            self._record(state.outcome.result())

        retrying = self.retry.retrying(
            again=lambda outcome: outcome.state == MessageState.DEFERRED,
            before_sleep=record_deferred,
            sleep=self._backoff_sleep,
        )
        try:
            final: DeliveryOutcome = await retrying(attempt)
        except _Stopped:
            return  # its last outcome (deferred) is recorded; the next run retries it
        self._record(_gave_up(final) if final.state == MessageState.DEFERRED else final)


def _gave_up(outcome: DeliveryOutcome) -> DeliveryOutcome:
    return replace(
        outcome,
        state=MessageState.FAILED_TEMPORARY,
        reason=f"still deferred after attempt {outcome.attempt}",
    )
