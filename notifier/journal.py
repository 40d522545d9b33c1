"""The ledger as delivery's journal: claims and outcomes written on a thread of their own.

`ThreadedLedgerJournal` implements notifier.delivery.Journal. It is the one journal:
tests use it too, so what they check is what a send does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Collection, Sequence
from pathlib import Path

from notifier.ledger import Holder, Ledger
from notifier.ledger.lease import HEARTBEAT_EVERY
from notifier.message import RESUMABLE_STATES, DeliveryOutcome, MessageState, OutgoingMessage
from notifier.secret import LedgerSecret

log = logging.getLogger(__name__)


class ThreadedLedgerJournal:
    """Batches outcomes into few transactions, written on a thread of its own with its own
    connection to the ledger file (`open` it first, `close` it after). A claim always
    writes the batch first, so the ledger's order of events is the order things happened.

    SQLite does most of a message's ledger work (the inserts, COMMIT, checkpoints)
    without holding the GIL, so on a thread it runs beside the event loop, on another
    core, instead of stopping it. Writes go one at a time in the order they were asked
    for, so events keep the order things happened; a claim still returns only once it is
    committed. A failed write is raised by the next claim, `written` or `settle`.

    A claim is of the messages still in one of the `claimable` states (the run's own):
    one taken or moved on by someone else meanwhile is not claimed, and not sent. With a
    `holder`, the run's hold on the ledger's lease gets a fresh heartbeat as it goes.
    """

    def __init__(
        self,
        path: Path,
        *,
        claimable: Collection[MessageState] = RESUMABLE_STATES,
        flush_size: int = 256,
        secret: LedgerSecret | None = None,
        holder: Holder | None = None,
    ) -> None:
        self.path = path
        self.claimable = frozenset(claimable)
        self.secret = secret  # the ledger's key, already read by the caller
        self.holder = holder
        self._beat = time.monotonic()
        self.flush_size = flush_size
        self._buffer: list[DeliveryOutcome] = []
        self._written = 0
        # Writes handed to the thread and not yet seen done: (future, outcomes in it).
        self._pending: deque[tuple[concurrent.futures.Future[dict[str, int]], int]] = deque()
        self._pending_outcomes = 0
        self._raised: concurrent.futures.Future[dict[str, int]] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._ledger: Ledger | None = None  # used on the writer thread only
        self._tuning = contextlib.ExitStack()  # its connection's settings for a send

    async def open(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")
        await asyncio.wrap_future(self._executor.submit(self._connect))

    async def close(self) -> None:
        """Write what is left and close the connection (also after a failed write)."""
        if self._executor is None:
            return
        try:
            await self.settle()
        finally:
            self._executor.submit(self._disconnect)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _connect(self) -> None:
        ledger = Ledger(self.path, create=False, secret=self.secret)
        self._ledger = ledger
        self._tuning.enter_context(ledger.tuned_for_sending())

    def _disconnect(self) -> None:
        if self._ledger is not None:
            try:
                self._tuning.close()
            finally:
                self._ledger.close()
                self._ledger = None

    @property
    def written(self) -> int:
        pending = self._pending
        while pending and pending[0][0].done():
            future, count = pending.popleft()
            self._pending_outcomes -= count
            failure = future.exception()
            if failure is None:
                self._written += count
            elif future is not self._raised:
                raise failure  # its outcomes were not written: they stay `sending`
        return self._written

    @property
    def unwritten(self) -> int:
        return len(self._buffer) + self._pending_outcomes

    def _submit(
        self, claim: list[str], wire: dict[str, tuple[str, str]] | None = None
    ) -> concurrent.futures.Future[dict[str, int]]:
        if self._executor is None:
            raise RuntimeError("the journal is not open")
        batch, self._buffer = self._buffer, []
        future = self._executor.submit(self._write, batch, claim, wire)
        self._pending.append((future, len(batch)))
        self._pending_outcomes += len(batch)
        return future

    def _write(
        self,
        outcomes: list[DeliveryOutcome],
        claim: list[str],
        wire: dict[str, tuple[str, str]] | None = None,
    ) -> dict[str, int]:
        """Outcomes, then claims, in one transaction (on the writer thread)."""
        ledger = self._ledger
        assert ledger is not None
        with ledger.transaction():
            if outcomes:
                ledger.record_outcomes(outcomes)
            self._heartbeat(ledger)
            return ledger.claim_for_sending(claim, wire, claimable=self.claimable) if claim else {}

    def _heartbeat(self, ledger: Ledger) -> None:
        """Refresh the run's lease when it is due (on the writer thread)."""
        if self.holder is None or time.monotonic() - self._beat < HEARTBEAT_EVERY:
            return
        self._beat = time.monotonic()
        if ledger.refresh_lease(self.holder) is None:
            log.warning("this send no longer holds the ledger's lease; claims still guard it")

    def keep_alive(self) -> None:
        """Refresh the run's lease if it is due, with nothing else to write (a slow send)."""
        if self.holder is not None and time.monotonic() - self._beat >= HEARTBEAT_EVERY:
            self._submit([])

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        # Each `sending` event records where the message goes and the sha256 of its bytes;
        # a message missing from the result was not claimed (someone else has it).
        future = self._submit(
            [m.message_id for m in messages],
            {m.message_id: (m.recipient, m.digest()) for m in messages},
        )
        try:
            # Shielded: a cancelled wait must not cancel the write (the thread does it).
            attempts = await asyncio.shield(asyncio.wrap_future(future))
        except Exception:
            self._raised = future  # raised here: `written` need not raise it again
            raise
        self.written  # noqa: B018 (collects the finished writes, raising a failed one)
        return attempts

    def record(self, outcome: DeliveryOutcome) -> None:
        self._buffer.append(outcome)
        if len(self._buffer) >= self.flush_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._submit([])

    async def settle(self) -> None:
        self.flush()
        if self._pending:
            # One writer thread, in order: the last write done means all are.
            last = asyncio.wrap_future(self._pending[-1][0])
            await asyncio.wait([last])  # its failure, if any, is raised by `written`
            last.exception()  # seen here: never logged as "Future exception was never retrieved"
        self.written  # noqa: B018 (collects the finished writes, raising a failed one)
