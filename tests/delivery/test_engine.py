"""The delivery engine on its own: the retry policy, plain messages through `Delivery`
with the ledger's journal, against real SMTP servers (aiosmtpd on 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from smtp_helpers import ScriptedHandler, add_volunteers, make_volunteers

from notifier.delivery import (
    CLAIMS_PER_CONNECTION,
    Delivery,
    DeliveryStats,
    RetryPolicy,
    SendOptions,
)
from notifier.errors import LedgerError
from notifier.journal import ThreadedLedgerJournal
from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome, MessageState, NewMessage, OutgoingMessage
from notifier.sink import Sink
from notifier.smtp.target import parse_smtp_url
from notifier.volunteer import Volunteer

# --- the retry policy ----------------------------------------------------------------


def test_engine_retry_policy_waits_grow_exponentially_within_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=2.0, backoff_max=300.0)
    for failures, base in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 300.0)]:
        delay = policy.delay(failures)
        assert base <= delay <= base + 2.0 / 4  # with up to a quarter of `backoff` jitter
    capped = policy.capped(30.0)
    assert 30.0 <= capped.delay(10) <= 30.5
    assert capped.max_attempts == 5
    assert RetryPolicy(backoff=0.0).delay(3) == 0.0


def test_engine_retry_policy_comes_from_the_send_options() -> None:
    options = SendOptions(max_attempts=3, backoff=0.5, backoff_max=4.0)
    assert options.retry == RetryPolicy(max_attempts=3, backoff=0.5, backoff_max=4.0)


# --- plain messages through the engine and the journal ------------------------------


def test_engine_sends_plain_messages_byte_exact(ledger: Ledger) -> None:
    """The delivery core on its own: any message bytes, dot-stuffing and all."""
    volunteer = make_volunteers(1)[0]
    add_volunteers(ledger, [volunteer])
    ledger.register_campaign(
        "plain", title="t", follows=None, definition={}, templates_sha256="0" * 64
    )
    ledger.ensure_messages("plain", [NewMessage("<m1@example.org>", volunteer.volunteer_id, "t1")])
    body = b"Subject: dots\r\n\r\n.a line that starts with a dot\r\n..two\r\nend\r\n"
    outgoing = OutgoingMessage(
        message_id="<m1@example.org>",
        campaign_id="plain",
        volunteer_id=volunteer.volunteer_id,
        envelope_from="bounces+t1@example.org",
        envelope_id="t1",
        recipient=volunteer.email,
        data=body,
    )

    async def source() -> AsyncIterator[list[OutgoingMessage]]:
        yield [outgoing]

    async def deliver(url: str) -> DeliveryStats:
        journal = ThreadedLedgerJournal(ledger.path)
        delivery = Delivery(parse_smtp_url(url), SendOptions(), journal)
        await delivery.probe()
        await journal.open()
        try:
            return await delivery.run(source())
        finally:
            await journal.close()

    with Sink() as server:
        stats = asyncio.run(deliver(server.url))
        received = server.messages
    assert stats.counts == {"sent": 1}
    assert [m.data for m in received] == [body]
    assert ledger.state_counts("plain") == {"sent": 1}


def plain_messages(ledger: Ledger, people: Sequence[Volunteer]) -> list[OutgoingMessage]:
    """A campaign "plain" in the ledger with one small message per person, ready to go."""
    ledger.register_campaign(
        "plain", title="t", follows=None, definition={}, templates_sha256="0" * 64
    )
    ledger.ensure_messages(
        "plain",
        [NewMessage(f"<m{i}@example.org>", p.volunteer_id, f"t{i}") for i, p in enumerate(people)],
    )
    return [
        OutgoingMessage(
            message_id=f"<m{i}@example.org>",
            campaign_id="plain",
            volunteer_id=p.volunteer_id,
            envelope_from=f"bounces+t{i}@example.org",
            envelope_id=f"t{i}",
            recipient=p.email,
            data=b"Subject: x\r\n\r\nx\r\n",
        )
        for i, p in enumerate(people)
    ]


def test_engine_server_gone_after_the_probe_uses_every_attempt_then_fails_temporarily(
    ledger: Ledger,
) -> None:
    """Connections that cannot be opened: each is an attempt, retried by the one retry
    policy (workers wait before reconnecting, messages back off), until max_attempts."""
    people = make_volunteers(3)
    add_volunteers(ledger, people)
    messages = plain_messages(ledger, people)
    options = SendOptions(concurrency=2, max_attempts=3, backoff=0.01, timeout=2.0)

    async def source() -> AsyncIterator[list[OutgoingMessage]]:
        yield messages

    async def deliver() -> DeliveryStats:
        journal = ThreadedLedgerJournal(ledger.path)
        with Sink() as server:
            delivery = Delivery(parse_smtp_url(server.url), options, journal)
            await delivery.probe()  # the server is there ...
            delivery.sessions[0].close()
        await journal.open()  # ... and gone before anything is sent
        try:
            return await delivery.run(source())
        finally:
            await journal.close()

    stats = asyncio.run(deliver())
    assert stats.counts == {"failed_temporary": 3}
    for message in messages:
        events = [e for e in ledger.events(message_id=message.message_id)]
        assert [e.kind for e in events] == [
            "queued",
            *["sending", "deferred"] * 2,
            "sending",
            "failed_temporary",
        ]
        assert events[-1].data["code"] is None
    attempts = {m.message_id: m.attempts for m in ledger.campaign_messages("plain")}
    assert set(attempts.values()) == {3}


def test_engine_threaded_journal_keeps_order_and_raises_failed_writes(
    ledger: Ledger,
) -> None:
    people = make_volunteers(3)
    add_volunteers(ledger, people)
    messages = plain_messages(ledger, people)

    def sent(message: OutgoingMessage, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome(
            message.message_id, "plain", message.volunteer_id, MessageState.SENT, attempt, 250, "ok"
        )

    async def run() -> tuple[dict[str, int], int, int]:
        journal = ThreadedLedgerJournal(ledger.path, flush_size=2)
        await journal.open()
        try:
            first = await journal.claim(messages[:2])
            journal.record(sent(messages[0], first[messages[0].message_id]))
            second = await journal.claim(messages[2:])  # writes the outcome first
            journal.record(sent(messages[1], 1))
            journal.record(sent(messages[2], 1))  # flush_size reached: written in the thread
            await journal.settle()
            written, unwritten = journal.written, journal.unwritten
            with pytest.raises(LedgerError, match="no such message"):
                await journal.claim([replace_id(messages[0], "<nobody@example.org>")])
        finally:
            await journal.close()
        return {**first, **second}, written, unwritten

    attempts, written, unwritten = asyncio.run(run())
    assert attempts == {m.message_id: 1 for m in messages}
    assert (written, unwritten) == (3, 0)
    kinds_in_order = [e.kind for e in ledger.events() if e.campaign_id == "plain" and e.message_id]
    assert kinds_in_order == [
        *["queued"] * 3,
        "sending",
        "sending",
        "sent",
        "sending",
        "sent",
        "sent",
    ]
    assert ledger.state_counts("plain") == {"sent": 3}
    assert ledger.verify().ok


def replace_id(message: OutgoingMessage, message_id: str) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=message_id,
        campaign_id=message.campaign_id,
        volunteer_id=message.volunteer_id,
        envelope_from=message.envelope_from,
        envelope_id=message.envelope_id,
        recipient=message.recipient,
        data=message.data,
    )


# --- how far ahead of the sending messages are claimed -------------------------------


class CountingJournal(ThreadedLedgerJournal):
    """The ledger's journal, keeping the most messages ever claimed and not settled.

    A claim writes the outcomes recorded before it in its own transaction, so once it is
    committed the ledger has (messages claimed) - (outcomes recorded when it was made) in
    `sending`: what a SIGKILL at that moment would leave uncertain."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.claimed = 0
        self.recorded = 0
        self.most_unsettled = 0
        self.claim_sizes: list[int] = []

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        recorded = self.recorded
        attempts = await super().claim(messages)
        self.claimed += len(messages)
        self.claim_sizes.append(len(messages))
        self.most_unsettled = max(self.most_unsettled, self.claimed - recorded)
        return attempts

    def record(self, outcome: DeliveryOutcome) -> None:
        self.recorded += 1
        super().record(outcome)


class SlowHandler(ScriptedHandler):
    """A server slower than the rate: each message's reply comes after `delay` seconds,
    so a sender that claimed ahead of its connections would pile claims up."""

    delay = 0.04

    async def data_reply(self, server: SMTP, envelope: Envelope) -> str | None:
        await asyncio.sleep(self.delay)
        return await super().data_reply(server, envelope)


def deliver_counting(
    ledger: Ledger, messages: list[OutgoingMessage], url: str, options: SendOptions
) -> tuple[DeliveryStats, CountingJournal]:
    async def source() -> AsyncIterator[list[OutgoingMessage]]:
        yield messages[: len(messages) // 2]
        yield messages[len(messages) // 2 :]

    async def deliver() -> tuple[DeliveryStats, CountingJournal]:
        journal = CountingJournal(ledger.path)
        delivery = Delivery(parse_smtp_url(url), options, journal)
        await delivery.probe()
        await journal.open()
        try:
            return await delivery.run(source()), journal
        finally:
            await journal.close()

    return asyncio.run(deliver())


@pytest.mark.parametrize("pipelining", [False, True])
def test_engine_throttled_claims_at_most_two_messages_per_connection(
    ledger: Ledger, pipelining: bool
) -> None:
    """Throttled, a message is claimed only as a connection is about to write it: one
    being written or awaiting its reply, one more whose envelope is pipelined behind it.
    Retries (a greylisted address) are claimed the same way."""
    people = make_volunteers(40)
    add_volunteers(ledger, people)
    messages = plain_messages(ledger, people)
    options = SendOptions(rate=400, concurrency=3, backoff=0.01, backoff_max=0.05, timeout=5.0)
    assert options.throttled
    assert options.max_unsettled == CLAIMS_PER_CONNECTION * 3
    handler = SlowHandler({people[4].email: ["451", "ok"]}, pipelining=pipelining)
    with Sink(handler=handler) as server:
        stats, journal = deliver_counting(ledger, messages, server.url, options)
        received = server.messages
    assert stats.counts == {"sent": 40}
    assert len(received) == 40
    assert ledger.state_counts("plain") == {"sent": 40}
    assert set(journal.claim_sizes) == {1}  # one by one, as each goes out
    assert journal.claimed == 41  # every message, and the greylisted one again
    # Never more in `sending` than two per connection (one per connection without
    # pipelining: nothing is prepared behind the message being written).
    assert 1 <= journal.most_unsettled <= (2 if pipelining else 1) * options.concurrency
    assert ledger.verify().ok


def test_engine_unthrottled_claims_in_windows_bounded_by_the_connections(ledger: Ledger) -> None:
    people = make_volunteers(60)
    add_volunteers(ledger, people)
    messages = plain_messages(ledger, people)
    options = SendOptions(concurrency=2, timeout=5.0)
    assert not options.throttled
    assert SendOptions(concurrency=8).max_unsettled == 2 * options.max_unsettled * 2
    assert options.max_unsettled == 4 * options.claim_window
    with Sink(handler=SlowHandler()) as server:
        stats, journal = deliver_counting(ledger, messages, server.url, options)
    assert stats.counts == {"sent": 60}
    assert max(journal.claim_sizes) == options.claim_window  # batched for throughput
    assert journal.most_unsettled <= options.max_unsettled
    assert ledger.state_counts("plain") == {"sent": 60}
