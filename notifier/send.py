"""Sending a campaign: audience -> messages in the ledger -> composed bytes -> SMTP -> events.

`send_campaign` takes the audience as an argument (the volunteers to consider), so a
follow-up narrowed by attributes or history, or a resend of chosen states, uses the same
path. Each volunteer's message has a stable Message-ID and VERP token; what happens to it
is appended to the ledger as events, and its `attempts` counter grows with every try.

Composition (Jinja2 rendering and MIME) runs in worker processes for large sends, so the
main process only speaks SMTP and writes the ledger: that uses both cores. The first
messages are composed while the ledger is still being set up (see _compose_ahead).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from notifier.campaign import Campaign
from notifier.compose import (
    build_message,
    load_dkim_key,
    message_id_for,
    sender_domain,
    sign_dkim,
)
from notifier.config import Settings, credentials_from_env
from notifier.deliver import (
    Delivery,
    DeliveryStats,
    OutgoingMessage,
    SendOptions,
    ServerInfo,
    SmtpTarget,
    ThreadedLedgerJournal,
    parse_smtp_url,
    wire_form,
)
from notifier.errors import ComposeError
from notifier.ledger import Ledger
from notifier.message import RESUMABLE_STATES, DeliveryOutcome, MessageRow, NewMessage
from notifier.render import Renderer
from notifier.verp import key_path_for, load_or_create_key, make_token, verp_address
from notifier.volunteer import Volunteer

log = logging.getLogger(__name__)

# Composing in worker processes pays off from about this many messages (start-up ~0.5 s).
POOL_THRESHOLD = 2000
CHUNK = 128  # messages composed per worker call
# Messages handed to the workers before the ledger is set up (registering the campaign and
# its messages takes most of a second on one core, while the other is idle), and so the
# most composed messages held ahead of the sending (about 13 KB each, some 40 MB in all).
PRECOMPOSE = 2048


# --- plan and summary -----------------------------------------------------------------


@dataclass(frozen=True)
class SendPlan:
    """What `notifier send ID` (without --yes) would do now."""

    campaign_id: str
    audience: int  # volunteers considered
    to_send: int  # messages this run would try
    by_group: dict[tuple[str, str], int]  # (locale, exposure) -> messages to send
    states: dict[str, int]  # current ledger states of the campaign's messages
    suppressed: int  # would be skipped: address on the suppression list
    uncertain: int  # outcome unknown after a crash (sent only with --resend-uncertain)
    target: str
    rate: float


@dataclass(frozen=True)
class SendSummary:
    campaign_id: str
    planned: int  # messages this run set out to send
    counts: dict[str, int]  # this run's final outcomes: state -> messages
    states: dict[str, int]  # the campaign's states in the ledger afterwards
    uncertain: tuple[MessageRow, ...]  # outcome unknown (after a crash), not re-sent
    newly_uncertain: int  # found in `sending` at the start of this run
    suppressed: int
    elapsed: float  # seconds spent delivering
    stopped: bool  # interrupted (Ctrl-C): run again to resume
    target: str
    server: ServerInfo | None = None

    @property
    def nothing_to_send(self) -> bool:
        return self.planned == 0

    @property
    def rate(self) -> float:
        done = sum(self.counts.values())
        return done / self.elapsed if self.elapsed > 0 else 0.0


class SendObserver(Protocol):
    """Told what happens, for a progress display."""

    def started(self, total: int, server: ServerInfo) -> None: ...

    def outcome(self, outcome: DeliveryOutcome) -> None: ...


@dataclass
class _Selection:
    rows: list[MessageRow]
    volunteers: dict[str, Volunteer]
    suppressed: list[MessageRow] = field(default_factory=list)


# --- identity of messages and templates -----------------------------------------------


def verp_key(settings: Settings, ledger: Ledger) -> bytes:
    """The HMAC key for VERP tokens: the configured secret file, or one beside the ledger."""
    return load_or_create_key(settings.secret_file or key_path_for(ledger.path))


def new_messages(
    campaign: Campaign, volunteers: Iterable[Volunteer], key: bytes
) -> list[NewMessage]:
    domain = sender_domain(campaign)
    result = []
    for v in volunteers:
        message_id = message_id_for(campaign.campaign_id, v.volunteer_id, domain)
        result.append(NewMessage(message_id, v.volunteer_id, make_token(key, message_id)))
    return result


def templates_sha256(campaign: Campaign) -> str:
    """One sha256 over the campaign's templates and catalogs, for every locale it uses.

    Stored when the campaign is first sent, so a report can show which wording went out.
    """
    digest = hashlib.sha256()
    roots = [campaign.templates_dir / loc for loc in campaign.locales]
    roots += [campaign.locale_dir / loc for loc in campaign.locales]
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".mo"):
            digest.update(path.relative_to(root.parent).as_posix().encode("utf-8") + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def campaign_definition(campaign: Campaign) -> dict[str, Any]:
    """The campaign as plain JSON-able data, to keep in the ledger."""

    def plain(value: Any) -> Any:
        if isinstance(value, date | Path):
            return str(value)
        if hasattr(value, "__dataclass_fields__"):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, dict) or hasattr(value, "items"):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    data: dict[str, Any] = plain(campaign)
    return data


# --- selection -----------------------------------------------------------------------


def _wanted_states(options: SendOptions, extra: Sequence[str]) -> tuple[str, ...]:
    states = [*RESUMABLE_STATES, *extra]
    if options.resend_uncertain:
        states.append("uncertain")
    return tuple(dict.fromkeys(states))


def plan_send(
    ledger: Ledger,
    campaign: Campaign,
    volunteers: Iterable[Volunteer],
    options: SendOptions,
    settings: Settings,
    *,
    smtp_url: str | None = None,
    resend_states: Sequence[str] = (),
) -> SendPlan:
    """What a send would do now, without writing anything."""
    audience = {v.volunteer_id: v for v in volunteers}
    existing = {
        row.volunteer_id: row
        for row in ledger.campaign_messages(campaign.campaign_id)
        if row.volunteer_id in audience
    }
    wanted = set(_wanted_states(options, resend_states))
    if options.resend_uncertain:
        wanted.add("sending")  # becomes uncertain at the start of the run
    suppressed_set = ledger.suppressed_addresses()
    by_group: Counter[tuple[str, str]] = Counter()
    suppressed = 0
    to_send = 0
    for volunteer_id, volunteer in audience.items():
        row = existing.get(volunteer_id)
        if row is not None and row.state not in wanted:
            continue
        if volunteer.email.lower() in suppressed_set:
            suppressed += 1
            continue
        if options.limit is not None and to_send >= options.limit:
            continue
        to_send += 1
        by_group[(volunteer.locale, volunteer.exposure)] += 1
    states = ledger.state_counts(campaign.campaign_id)
    return SendPlan(
        campaign_id=campaign.campaign_id,
        audience=len(audience),
        to_send=to_send,
        by_group=dict(sorted(by_group.items())),
        states=states,
        suppressed=suppressed,
        uncertain=states.get("uncertain", 0) + states.get("sending", 0),
        target=str(parse_smtp_url(smtp_url or settings.smtp_url)),
        rate=options.rate,
    )


def _select(
    ledger: Ledger,
    campaign: Campaign,
    audience: dict[str, Volunteer],
    options: SendOptions,
    resend_states: Sequence[str],
) -> _Selection:
    rows = [
        row
        for row in ledger.campaign_messages(
            campaign.campaign_id, states=_wanted_states(options, resend_states)
        )
        if row.volunteer_id in audience
    ]
    suppressed_set = ledger.suppressed_addresses()
    selection = _Selection([], audience)
    for row in rows:
        if row.email.lower() in suppressed_set:
            selection.suppressed.append(row)
        elif options.limit is None or len(selection.rows) < options.limit:
            selection.rows.append(row)
    return selection


# --- composing -----------------------------------------------------------------------


@dataclass(frozen=True)
class _ComposeJob:
    volunteer: Volunteer
    smtputf8: bool


@dataclass(frozen=True)
class _Composed:
    volunteer_id: str
    data: bytes | None
    error: str = ""  # a ComposeError for this person: recorded as failed_permanent
    # The DATA content (notifier.deliver.wire_form), made here rather than in the sending
    # process; usually `data` itself, which pickling then carries once.
    wire: bytes | None = None


# Chunks of jobs already submitted to the workers, in the order they are meant to go.
_Submitted = list[tuple[list[_ComposeJob], "concurrent.futures.Future[list[_Composed]]"]]


class _Composer:
    """Renders and composes messages; one per process (see _init_worker)."""

    def __init__(self, campaign: Campaign, dkim: tuple[str, bytes] | None) -> None:
        self.campaign = campaign
        self.renderer = Renderer(campaign)
        self.dkim = dkim
        self.domain = sender_domain(campaign)

    def compose(self, jobs: Sequence[_ComposeJob]) -> list[_Composed]:
        now = datetime.now(UTC)
        out = []
        for job in jobs:
            try:
                composed = build_message(
                    self.renderer, self.campaign, job.volunteer, date=now, smtputf8=job.smtputf8
                )
            except ComposeError as exc:
                out.append(_Composed(job.volunteer.volunteer_id, None, exc.message))
                continue
            data = composed.data
            if self.dkim is not None:
                selector, key = self.dkim
                data = sign_dkim(data, selector=selector, domain=self.domain, private_key=key)
            out.append(_Composed(job.volunteer.volunteer_id, data, wire=wire_form(data, crlf=True)))
        return out


_worker_composer: _Composer | None = None


def _init_worker(campaign: Campaign, dkim: tuple[str, bytes] | None) -> None:
    global _worker_composer
    # Ctrl-C goes to the whole process group: the parent stops gracefully, and needs its
    # workers alive to finish the messages in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_composer = _Composer(campaign, dkim)


def _warm_up() -> None:
    """Nothing: submitted so that a worker process starts (and initialises) early."""


def _compose_in_worker(jobs: Sequence[_ComposeJob]) -> list[_Composed]:
    assert _worker_composer is not None
    return _worker_composer.compose(jobs)


def _dkim_config(settings: Settings) -> tuple[str, bytes] | None:
    """The DKIM selector and key for the workers; a half-set or unusable key is an error."""
    key = load_dkim_key(settings)
    return None if key is None else (key.selector, key.private_key)


def compose_workers_for(count: int, requested: int | None = None) -> int:
    """Worker processes for composing `count` messages (0: compose in this process)."""
    if requested is not None:
        return max(0, requested)
    if count < POOL_THRESHOLD:
        return 0
    return max(1, min(2, (os.cpu_count() or 1) - 1))


# --- the send ------------------------------------------------------------------------


def send_campaign(
    ledger: Ledger,
    campaign: Campaign,
    volunteers: Iterable[Volunteer],
    options: SendOptions,
    settings: Settings,
    *,
    smtp_url: str | None = None,
    observer: SendObserver | None = None,
    resend_states: Sequence[str] = (),
    compose_workers: int | None = None,
    handle_signals: bool = True,
) -> SendSummary:
    """Send the campaign to these volunteers: new messages, and those still to go.

    Messages already sent (or failed for good) are not sent again; `resend_states` adds
    states to send again (as further attempts of the same message), and
    `options.resend_uncertain` adds the messages whose outcome a crash left unknown.
    With `handle_signals`, SIGINT/SIGTERM stop gracefully: messages in flight are
    finished and recorded, the rest stay pending for the next run.
    """
    target = parse_smtp_url(smtp_url or settings.smtp_url)
    audience = {v.volunteer_id: v for v in volunteers}
    key = verp_key(settings, ledger)
    dkim = _dkim_config(settings)
    # Compose workers start now, sized for the whole audience (the most this run can
    # send): their start-up, a fresh interpreter and the templates, overlaps the ledger
    # work below instead of holding up the first messages.
    pool = _start_pool(compose_workers_for(len(audience), compose_workers), campaign, dkim)
    try:
        return _send(
            ledger,
            campaign,
            audience,
            options,
            target,
            key=key,
            dkim=dkim,
            pool=pool,
            observer=observer,
            resend_states=resend_states,
            compose_workers=compose_workers,
            handle_signals=handle_signals,
        )
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _start_pool(
    workers: int, campaign: Campaign, dkim: tuple[str, bytes] | None
) -> concurrent.futures.ProcessPoolExecutor | None:
    if not workers:
        return None
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(campaign, dkim),
    )
    for _ in range(workers):
        pool.submit(_warm_up)  # processes start at the first jobs, so give them some
    return pool


def _send(
    ledger: Ledger,
    campaign: Campaign,
    audience: dict[str, Volunteer],
    options: SendOptions,
    target: SmtpTarget,
    *,
    key: bytes,
    dkim: tuple[str, bytes] | None,
    pool: concurrent.futures.ProcessPoolExecutor | None,
    observer: SendObserver | None,
    resend_states: Sequence[str],
    compose_workers: int | None,
    handle_signals: bool,
) -> SendSummary:
    states = ledger.message_states(campaign.campaign_id)
    ahead: _Submitted = []
    if pool is not None:
        ahead = _compose_ahead(
            pool, campaign, audience, states, ledger, options, resend_states, compose_workers
        )
    ledger.register_campaign(
        campaign.campaign_id,
        title=campaign.title,
        follows=campaign.follows,
        definition=campaign_definition(campaign),
        templates_sha256=templates_sha256(campaign),
    )
    # A resumed run has most messages already: their IDs and tokens need not be made again.
    fresh = [v for volunteer_id, v in audience.items() if volunteer_id not in states]
    ledger.ensure_messages(campaign.campaign_id, new_messages(campaign, fresh, key))
    newly_uncertain = ledger.mark_uncertain(campaign.campaign_id)
    if newly_uncertain:
        log.warning(
            "%d message(s) of %s were in flight when an earlier send stopped: now uncertain",
            len(newly_uncertain),
            campaign.campaign_id,
        )
    selection = _select(ledger, campaign, audience, options, resend_states)
    if selection.suppressed:
        ledger.record_outcomes(
            DeliveryOutcome(
                message_id=row.message_id,
                campaign_id=row.campaign_id,
                volunteer_id=row.volunteer_id,
                state="suppressed",
                attempt=row.attempts,
                reason="the address is on the suppression list (an earlier hard bounce)",
            )
            for row in selection.suppressed
        )
    stats = DeliveryStats()
    server: ServerInfo | None = None
    if selection.rows:
        workers = compose_workers_for(len(selection.rows), compose_workers)
        stats, server = asyncio.run(
            _deliver(
                ledger,
                campaign,
                selection,
                options,
                target_url=str(target),
                key=key,
                dkim=dkim,
                observer=observer,
                pool=pool if workers else None,
                workers=workers,
                ahead=ahead,
                handle_signals=handle_signals,
            )
        )
    return SendSummary(
        campaign_id=campaign.campaign_id,
        planned=len(selection.rows),
        counts=dict(stats.counts),
        states=ledger.state_counts(campaign.campaign_id),
        uncertain=tuple(ledger.uncertain_messages(campaign.campaign_id)),
        newly_uncertain=len(newly_uncertain),
        suppressed=len(selection.suppressed),
        elapsed=stats.elapsed if selection.rows else 0.0,
        stopped=stats.stopped,
        target=str(target),
        server=server,
    )


async def _deliver(
    ledger: Ledger,
    campaign: Campaign,
    selection: _Selection,
    options: SendOptions,
    *,
    target_url: str,
    key: bytes,
    dkim: tuple[str, bytes] | None,
    observer: SendObserver | None,
    pool: concurrent.futures.ProcessPoolExecutor | None,
    workers: int,
    ahead: _Submitted,
    handle_signals: bool,
) -> tuple[DeliveryStats, ServerInfo]:
    journal = ThreadedLedgerJournal(ledger.path)
    delivery = Delivery(
        parse_smtp_url(target_url),
        options,
        journal,
        credentials=credentials_from_env(),
        progress=observer.outcome if observer is not None else None,
    )
    loop = asyncio.get_running_loop()
    if handle_signals:

        def on_signal() -> None:
            log.warning("stopping: finishing the messages in flight (Ctrl-C again to abort)")
            delivery.request_stop()
            # A second Ctrl-C interrupts at once; what was in flight becomes uncertain.
            loop.remove_signal_handler(signal.SIGINT)

        loop.add_signal_handler(signal.SIGINT, on_signal)
        loop.add_signal_handler(signal.SIGTERM, on_signal)
    try:
        # Connect first: a server that cannot be used fails the send before any claim.
        server = await delivery.probe()
        if observer is not None:
            observer.started(len(selection.rows), server)
        await journal.open()
        try:
            source = _outgoing(
                ledger, campaign, selection, server, key, dkim, pool, workers, ahead, delivery
            )
            stats = await delivery.run(source)
        finally:
            await journal.close()
    finally:
        if handle_signals:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    return stats, server


async def _outgoing(
    ledger: Ledger,
    campaign: Campaign,
    selection: _Selection,
    server: ServerInfo,
    key: bytes,
    dkim: tuple[str, bytes] | None,
    pool: concurrent.futures.ProcessPoolExecutor | None,
    workers: int,
    ahead_jobs: _Submitted,
    delivery: Delivery,
) -> AsyncIterator[list[OutgoingMessage]]:
    """The selected messages as wire-ready chunks, composed ahead of the sending."""
    domain = sender_domain(campaign)
    rows: dict[str, MessageRow] = {}
    jobs: list[_ComposeJob] = []
    unsendable: list[DeliveryOutcome] = []
    for row in selection.rows:
        volunteer = selection.volunteers[row.volunteer_id]
        problem = _address_problem(volunteer, server)
        if problem:
            unsendable.append(
                DeliveryOutcome(
                    message_id=row.message_id,
                    campaign_id=row.campaign_id,
                    volunteer_id=row.volunteer_id,
                    state="failed_permanent",
                    attempt=row.attempts,
                    reason=problem,
                )
            )
            continue
        rows[row.volunteer_id] = row
        jobs.append(_ComposeJob(volunteer, _needs_smtputf8(volunteer, server)))
    for outcome in unsendable:
        delivery.record_unsent(outcome)

    def outgoing(done: _Composed) -> OutgoingMessage | None:
        row = rows[done.volunteer_id]
        if done.data is None:
            failed = DeliveryOutcome(
                message_id=row.message_id,
                campaign_id=row.campaign_id,
                volunteer_id=row.volunteer_id,
                state="failed_permanent",
                attempt=row.attempts,
                reason=done.error,
            )
            delivery.record_unsent(failed)
            return None
        volunteer = selection.volunteers[row.volunteer_id]
        utf8 = _needs_smtputf8(volunteer, server)
        token = row.verp_token or make_token(key, row.message_id)
        return OutgoingMessage(
            message_id=row.message_id,
            campaign_id=row.campaign_id,
            volunteer_id=row.volunteer_id,
            envelope_from=verp_address(token, domain),
            envelope_id=token,
            recipient=volunteer.email if utf8 else volunteer.email_ascii,
            data=done.data,
            smtputf8=utf8,
            wire=done.wire,
        )

    if pool is None:
        for _jobs, submitted in ahead_jobs:
            submitted.cancel()
        chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
        composer = _Composer(campaign, dkim)
        for chunk in chunks:
            if delivery.stopping:
                return
            # Small pieces, so the event loop (and the SMTP connections) keep moving.
            for start in range(0, len(chunk), 16):
                ready = [outgoing(c) for c in composer.compose(chunk[start : start + 16])]
                yield [m for m in ready if m is not None]
                await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    # Each chunk in hand, with the volunteers whose message in it is to be sent (None: all).
    ahead: deque[tuple[asyncio.Future[list[_Composed]], set[str] | None]] = deque()
    # What was composed during the set-up goes first, where it is what the run sends (the
    # guess was right: the normal case); the rest of it is dropped, and composed anew.
    expected = {job.volunteer.volunteer_id: job.smtputf8 for job in jobs}
    covered: set[str] = set()
    for chunk, submitted in ahead_jobs:
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
    if covered:
        jobs = [job for job in jobs if job.volunteer.volunteer_id not in covered]
    # Enough chunks in hand to keep every worker busy, few enough to keep memory flat.
    lookahead = max(2 * workers, len(ahead))
    pending = (jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK))

    def top_up() -> None:
        while len(ahead) < lookahead:
            following = next(pending, None)
            if following is None:
                return
            ahead.append((loop.run_in_executor(pool, _compose_in_worker, following), None))

    top_up()
    while ahead:
        if delivery.stopping:
            for future, _keys in ahead:
                future.cancel()
            return
        future, keys = ahead.popleft()
        composed = await future
        top_up()
        ready = [outgoing(c) for c in composed if keys is None or c.volunteer_id in keys]
        yield [m for m in ready if m is not None]


def _compose_ahead(
    pool: concurrent.futures.ProcessPoolExecutor,
    campaign: Campaign,
    audience: dict[str, Volunteer],
    states: dict[str, str],
    ledger: Ledger,
    options: SendOptions,
    resend_states: Sequence[str],
    compose_workers: int | None,
) -> _Submitted:
    """Hand the workers the first messages this run will most likely send, before the
    ledger set-up: the selection _select will make, in its order (by volunteer_id).

    Nothing is written and nothing is sent: _outgoing uses what matches the real selection.
    The server is not known yet, so a non-ASCII address is guessed to go with SMTPUTF8.
    """
    wanted = set(_wanted_states(options, resend_states))
    if options.resend_uncertain:
        wanted.add("sending")  # becomes uncertain before the selection
    suppressed = ledger.suppressed_addresses()
    jobs: list[_ComposeJob] = []
    count = 0
    for volunteer_id in sorted(audience):
        state = states.get(volunteer_id)
        if state is not None and state not in wanted:
            continue
        volunteer = audience[volunteer_id]
        if volunteer.email.lower() in suppressed:
            continue
        if options.limit is not None and count >= options.limit:
            break
        count += 1
        if len(jobs) < PRECOMPOSE:
            jobs.append(_ComposeJob(volunteer, not volunteer.email.isascii()))
    if not compose_workers_for(count, compose_workers):
        return []  # composed in this process: no workers to use
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    return [(chunk, pool.submit(_compose_in_worker, chunk)) for chunk in chunks]


def _needs_smtputf8(volunteer: Volunteer, server: ServerInfo) -> bool:
    """Non-ASCII addresses go with SMTPUTF8 when the server offers it."""
    return server.smtputf8 and not volunteer.email.isascii()


def _address_problem(volunteer: Volunteer, server: ServerInfo) -> str:
    """Why this address cannot go to this server at all, or ''."""
    if server.smtputf8 or volunteer.email.isascii():
        return ""
    local = volunteer.email.rpartition("@")[0]
    if local.isascii() and volunteer.email_ascii.isascii():
        return ""  # the A-label form carries it
    return (
        f"the address {volunteer.email} has a non-ASCII local part and the server does not "
        "offer SMTPUTF8: it cannot be sent in A-label form; send through a server with "
        "SMTPUTF8, or reach this person by post"
    )
