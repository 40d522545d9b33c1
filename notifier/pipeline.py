"""A send run: audience -> one selection -> messages in the ledger -> composed bytes -> SMTP,
a chunk of volunteers at a time.

`select_messages` is the one answer to "who gets a message in this run": the real send,
a resend of chosen states and --resend-uncertain all use it, on each chunk of the audience
in volunteer_id order (`audience_chunks`, `_Run.chosen`). The counts (the dry run's
`plan_send`; a run's summary, record and progress bar) are the same rule counted by the
database (`count_selection`), for a run beside its sending, so a send on a million-person
ledger starts its first message without a pass over everyone; a limit's chosen people are
read only as far as the limit reaches (`choose`).
A send reads a chunk of volunteers from the ledger, selects from it, queues its new
messages and records its suppressed ones in one transaction, then composes, checks and
claims what it chose, and reads the next chunk only as the sending needs it: memory holds
a few chunks whatever the campaign's size, and the first message goes out as soon as
its chunk is ready. What it chose is exactly what is composed, recorded and sent.

Each volunteer's message has a stable Message-ID and VERP token; what happens to it is
appended to the ledger as events, and its `attempts` counter grows with every try.

This is the machinery, not the way in: `notifier.service.Workspace.send` runs it once
every rule holds (approval, a clean check, the ledger's lease, an intact ledger) and
records the run. Whatever the caller, a message is sent only once the ledger has let
this run claim it (notifier.ledger.messages.claim).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from notifier import verp
from notifier.approval import templates_sha256
from notifier.audience import (
    followed_message_states,
    history_applies,
    membership,
    membership_by,
)
from notifier.campaign import Campaign
from notifier.cohort import CohortFilter, narrow_campaign
from notifier.cohort import _matches_ids as matches_ids
from notifier.compose import load_dkim_key, message_id_for, sender_domain
from notifier.compose_pool import ComposeJob, Composing, compose_workers_for, start_composing
from notifier.config import Settings, credentials_from_env
from notifier.delivery import Delivery, DeliveryStats, SendOptions
from notifier.errors import CampaignError, CohortError, LedgerTampered
from notifier.journal import ThreadedLedgerJournal
from notifier.ledger import Holder, Ledger, VolunteerQuery
from notifier.ledger.suppressions import is_suppressed
from notifier.message import (
    REACHED_STATES,
    RESENDABLE_STATES,
    RESUMABLE_STATES,
    DeliveryOutcome,
    MessageRow,
    MessageState,
    NewMessage,
    OutgoingMessage,
    is_uncertain,
)
from notifier.secret import LedgerSecret
from notifier.smtp.session import ServerInfo
from notifier.smtp.target import SmtpTarget, target_for
from notifier.volunteer import Volunteer

log = logging.getLogger(__name__)


# --- who gets a message -------------------------------------------------------------


@dataclass(frozen=True)
class SendScope:
    """Which messages a run sends besides the ones still to go (new, pending, deferred)."""

    resend_states: tuple[MessageState, ...] = ()  # send these again, as new attempts (`resend`)
    resend_uncertain: bool = False  # also those whose outcome a crash left unknown
    limit: int | None = None  # send at most this many messages in this run

    def __post_init__(self) -> None:
        object.__setattr__(self, "resend_states", resend_states(self.resend_states))

    @property
    def command(self) -> str:
        """How the operator asked for this run, as `status` and a refused sender name it."""
        if self.resend_states:
            return "resend"
        return "send --resend-uncertain" if self.resend_uncertain else "send"

    @property
    def states(self) -> frozenset[MessageState]:
        """The message states this run sends. `sending` counts with --resend-uncertain: a
        run marks what it finds in flight as uncertain before it selects."""
        states: set[MessageState] = {*RESUMABLE_STATES, *self.resend_states}
        if self.resend_uncertain:
            states |= {MessageState.UNCERTAIN, MessageState.SENDING}
        return frozenset(states)

    @property
    def claimable(self) -> frozenset[MessageState]:
        """The states this run may claim a message from, when it is about to send it:
        its own states, less `sending` (a message someone else is sending)."""
        return self.states - {MessageState.SENDING}


def resend_states(values: Iterable[str]) -> tuple[MessageState, ...]:
    """The states a person asked `resend` to send again (`--status a,b`), checked: one
    clean error naming those that cannot be re-sent, and which can."""
    wanted = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    refused = [s for s in wanted if s not in RESENDABLE_STATES]
    if refused:
        # Not sent/delivered (that would tell someone twice) nor bounced_hard
        # (suppressed: a letter), nor a state that does not exist.
        raise CohortError(
            f"{', '.join(refused)} cannot be re-sent; choose from {', '.join(RESENDABLE_STATES)}",
            field="--status",
        )
    return tuple(MessageState(s) for s in wanted)


@dataclass(frozen=True)
class Selection:
    """Who gets a message in this run."""

    send: tuple[Volunteer, ...]  # in volunteer_id order, at most the scope's limit
    suppressed: tuple[Volunteer, ...]  # due, but the address is suppressed: not sent


def select_messages(
    audience: Iterable[Volunteer],
    states: Mapping[str, MessageState],
    suppressed: Collection[str],
    scope: SendScope,
) -> Selection:
    """The one selection: of the audience, those whose message is in a state the scope
    sends (no message yet counts as pending), in volunteer_id order; a suppressed address
    is set aside (whatever the limit), and at most `scope.limit` are sent.

    `states`: volunteer_id -> state of the campaign's message; `suppressed`: the
    suppression list's keys (notifier.ledger.suppressions.is_suppressed).
    """
    wanted = scope.states
    send: list[Volunteer] = []
    skipped: list[Volunteer] = []
    for volunteer in sorted(audience, key=lambda v: v.volunteer_id):
        if states.get(volunteer.volunteer_id, MessageState.PENDING) not in wanted:
            continue
        if is_suppressed(volunteer, suppressed):
            skipped.append(volunteer)
        elif scope.limit is None or len(send) < scope.limit:
            send.append(volunteer)
    return Selection(tuple(send), tuple(skipped))


# Volunteers read, selected, queued and checked at a time. Large enough that a chunk's
# few statements cost little per person; small enough that a few chunks in hand (being
# composed, claimed, sent) keep a send's memory flat.
CHUNK_SIZE = 1000


@dataclass(frozen=True)
class CohortAudience:
    """A send's audience as the ledger holds it: the campaign's cohort narrowed by
    `cohort`, read a chunk at a time (never listed whole). `history`: whether the
    follow-up rule applies (notifier.audience.history_applies)."""

    cohort: CohortFilter = field(default_factory=CohortFilter)
    history: bool = True


# A send's audience: read from the ledger, or (a test's, a narrow tool's) given as a list.
Audience = CohortAudience | Sequence[Volunteer]


def audience_chunks(
    ledger: Ledger, campaign: Campaign, audience: Audience, size: int = CHUNK_SIZE
) -> Iterator[list[Volunteer]]:
    """The audience in volunteer_id order, a chunk at a time (a chunk may come out short:
    it is a page of the roster, less those outside the audience).

    The one place the send asks the audience rule (notifier.audience.membership, through
    the cohort's narrowing) who is in: page by page, with the followed campaign's states
    of that page only. Each page is read whole before it is handed on, so the caller may
    write between pages.
    """
    if not isinstance(audience, CohortAudience):
        ordered = sorted(audience, key=lambda v: v.volunteer_id)
        for start in range(0, len(ordered), size):
            yield ordered[start : start + size]
        return
    narrowed = narrow_campaign(campaign, audience.cohort)
    ids = audience.cohort.ids
    scan = VolunteerQuery(exposures=narrowed.audience.exposures, locales=narrowed.audience.locales)
    after: str | None = None
    while True:  # bounded: each page starts after the last one's last volunteer
        page = ledger.volunteer_page(scan, after=after, size=size)
        if not page:
            return
        after = page[-1].volunteer_id
        history = audience.history
        states = (
            followed_message_states(ledger, narrowed, [v.volunteer_id for v in page])
            if history
            else {}
        )
        yield [
            v
            for v in page
            if membership(narrowed, v, states.get(v.volunteer_id), history=history).included
            and (ids is None or matches_ids(v, ids))
        ]


@dataclass
class Tally:
    """What a selection over the whole audience comes to, counted a chunk at a time."""

    audience: int = 0
    to_send: int = 0
    suppressed: int = 0
    by_group: Counter[tuple[str, str]] = field(default_factory=Counter)
    chosen: list[str] = field(default_factory=list)  # only when asked for

    def room(self, scope: SendScope) -> SendScope:
        """The scope for the next chunk: what is left of the limit."""
        if scope.limit is None:
            return scope
        return dataclasses.replace(scope, limit=max(0, scope.limit - self.to_send))

    def add(self, chunk: Sequence[Volunteer], selection: Selection, *, chosen: bool) -> None:
        self.audience += len(chunk)
        self.to_send += len(selection.send)
        self.suppressed += len(selection.suppressed)
        self.by_group.update((v.locale, v.exposure) for v in selection.send)
        if chosen:
            self.chosen += [v.volunteer_id for v in selection.send]


def select_chunk(
    ledger: Ledger,
    campaign_id: str,
    chunk: Sequence[Volunteer],
    suppressed: Collection[str],
    scope: SendScope,
) -> tuple[Selection, Mapping[str, MessageState]]:
    """`select_messages` on one chunk, with its volunteers' states read from the ledger
    (returned too: who has no message yet)."""
    states = ledger.message_states(campaign_id, volunteer_ids=[v.volunteer_id for v in chunk])
    return select_messages(chunk, states, suppressed, scope), states


def tally_selection(
    ledger: Ledger,
    campaign: Campaign,
    audience: Audience,
    scope: SendScope,
    *,
    chosen: bool = False,
    size: int = CHUNK_SIZE,
) -> Tally:
    """The selection over the whole audience, counted (reading only). An audience read
    from the ledger is counted by the database (`count_selection`: no pass over everyone
    in Python); a given list, walked. With a limit (or `chosen`), whom it chooses is read
    from the ledger only as far as the limit reaches (`choose`)."""
    if not isinstance(audience, CohortAudience):
        return _walked_tally(ledger, campaign, audience, scope, chosen=chosen, size=size)
    tally = count_selection(ledger, campaign, audience, scope)
    if scope.limit is not None or chosen:
        picked = choose(ledger, campaign, audience, scope, size=size)
        tally.to_send = len(picked)
        tally.by_group = Counter((v.locale, v.exposure) for v in picked)
        tally.chosen = [v.volunteer_id for v in picked] if chosen else []
    return tally


def _walked_tally(
    ledger: Ledger,
    campaign: Campaign,
    audience: Audience,
    scope: SendScope,
    *,
    chosen: bool,
    size: int,
) -> Tally:
    """The selection over the audience, a chunk at a time (a given list's way)."""
    tally = Tally()
    suppressed = ledger.suppressed_addresses()
    for chunk in audience_chunks(ledger, campaign, audience, size):
        selection, _states = select_chunk(
            ledger, campaign.campaign_id, chunk, suppressed, tally.room(scope)
        )
        tally.add(chunk, selection, chosen=chosen)
    return tally


def count_selection(
    ledger: Ledger, campaign: Campaign, audience: CohortAudience, scope: SendScope
) -> Tally:
    """What `select_messages` over the whole audience comes to, without its limit and
    without `chosen`: counted by the database (ledger.count_with_states, the query
    `cohort` counts with: a few dozen groups however many people), each group decided by
    the audience rule (`membership_by`), the --ids file and the suppression list as the
    walk decides them one person at a time."""
    narrowed = narrow_campaign(campaign, audience.cohort)
    follows = (campaign.follows,) if campaign.follows and audience.history else ()
    scan = VolunteerQuery(exposures=narrowed.audience.exposures, locales=narrowed.audience.locales)
    groups = ledger.count_with_states(
        scan,
        (*follows, campaign.campaign_id),
        suppressed=ledger.suppressed_addresses(),
        ids=audience.cohort.ids,
    )
    wanted = scope.states
    tally = Tally()
    for group in groups:
        followed = group.states[0] if follows else None
        verdict = membership_by(
            narrowed, group.exposure, group.locale, followed, history=audience.history
        )
        if not (verdict.included and group.named):
            continue
        tally.audience += group.count
        if (group.states[-1] or MessageState.PENDING) not in wanted:
            continue
        if group.suppressed:
            tally.suppressed += group.count
        else:
            tally.to_send += group.count
            tally.by_group[(group.locale, group.exposure)] += group.count
    return tally


def choose(
    ledger: Ledger, campaign: Campaign, audience: Audience, scope: SendScope, *, size: int
) -> list[Volunteer]:
    """Whom the selection sends to, in volunteer_id order, at most `scope.limit`: the
    audience read a chunk at a time only until the limit is reached (reading only)."""
    picked: list[Volunteer] = []
    suppressed = ledger.suppressed_addresses()
    for chunk in audience_chunks(ledger, campaign, audience, size):
        room = None if scope.limit is None else scope.limit - len(picked)
        if room is not None and room <= 0:
            break
        selection, _states = select_chunk(
            ledger,
            campaign.campaign_id,
            chunk,
            suppressed,
            dataclasses.replace(scope, limit=room),
        )
        picked += selection.send
    return picked


def read_selection(
    ledger: Ledger, campaign_id: str, audience: Iterable[Volunteer], scope: SendScope
) -> Selection:
    """`select_messages` with the campaign's states and the suppressions in the ledger
    (for a given, small audience: a send streams instead)."""
    people = list(audience)
    return select_messages(
        people,
        ledger.message_states(campaign_id, volunteer_ids=[v.volunteer_id for v in people]),
        ledger.suppressed_addresses(),
        scope,
    )


def send_audience(ledger: Ledger, campaign: Campaign, cohort: CohortFilter) -> CohortAudience:
    """The volunteers a send of `campaign` considers: its cohort, narrowed by `cohort`
    (a follow-up only once the notice it follows was sent: `require_followed_sent`)."""
    require_followed_sent(ledger, campaign)
    return CohortAudience(cohort, history=history_applies(ledger, campaign))


def require_followed_sent(ledger: Ledger, campaign: Campaign) -> None:
    """Refuse a follow-up before the campaign it follows has been sent.

    A follow-up is chosen by the outcomes of the campaign it follows: sent before it,
    everyone matching its filters would get a correction of a notice they never received.
    (`check` and `preview` may still look at it.)
    """
    if campaign.follows and not ledger.has_messages(campaign.follows):
        raise CampaignError(
            f"{campaign.campaign_id} follows {campaign.follows}, which has not been sent yet: "
            "nobody has an earlier notice for it to follow",
            hint=f"send {campaign.follows} first; `notifier check {campaign.campaign_id}` "
            "works already",
        )


# --- the request, the plan, the summary ------------------------------------------------


@dataclass(frozen=True)
class SendRequest:
    """One send of a campaign: to whom, which of their messages, and how."""

    campaign: Campaign
    audience: Audience  # the volunteers considered (see send_audience)
    options: SendOptions = field(default_factory=SendOptions)
    scope: SendScope = field(default_factory=SendScope)
    smtp_url: str | None = None  # default: the settings' [smtp] url
    compose_workers: int | None = None  # default: by the size of the send
    chunk_size: int = CHUNK_SIZE  # volunteers read, queued, checked and claimed at a time

    def target(self, settings: Settings) -> SmtpTarget:
        return target_for(self.smtp_url, settings.smtp_url)


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
    chosen: tuple[str, ...] = ()  # the volunteer ids it would send to, when asked for


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
    # Chosen by this run, but claimed by another sender (or moved on) before this one
    # could: not sent by this run.
    taken_elsewhere: int = 0
    deferred: int = 0  # messages the server deferred at first (each retried, or given up)
    held_by_retries: float = 0.0  # seconds the run waited only for deferred ones' retries
    audience: int = 0  # volunteers the run considered

    @property
    def nothing_to_send(self) -> bool:
        return self.planned == 0

    @property
    def rate(self) -> float:
        done = sum(self.counts.values())
        return done / self.elapsed if self.elapsed > 0 else 0.0


class SendObserver(Protocol):
    """Told what happens, for a progress display."""

    def started(self, total: int | None, server: ServerInfo) -> None:
        """The first message is about to go; `total`: how many the run will try, or None
        while that is still being counted (then `counted` says it)."""

    def counted(self, total: int) -> None:
        """How many the run will try, once counted (after `started` said None)."""

    def outcome(self, outcome: DeliveryOutcome) -> None: ...


def plan_send(
    ledger: Ledger,
    request: SendRequest,
    settings: Settings,
    *,
    chosen: bool = False,
    run_is_live: bool = False,
) -> SendPlan:
    """What a send would do now, without writing anything (with `chosen`, also whom).
    `run_is_live`: a send of this campaign holds the ledger (its claims are in flight)."""
    campaign_id = request.campaign.campaign_id
    tally = tally_selection(
        ledger,
        request.campaign,
        request.audience,
        request.scope,
        chosen=chosen,
        size=request.chunk_size,
    )
    states = ledger.state_counts(campaign_id)
    return SendPlan(
        campaign_id=campaign_id,
        audience=tally.audience,
        to_send=tally.to_send,
        by_group=dict(sorted(tally.by_group.items())),
        states=states,
        suppressed=tally.suppressed,
        uncertain=sum(n for s, n in states.items() if is_uncertain(s, run_is_live=run_is_live)),
        target=str(request.target(settings)),
        rate=request.options.rate,
        chosen=tuple(tally.chosen),
    )


# --- identity of messages and templates -----------------------------------------------


@dataclass(frozen=True)
class MessageIds:
    """The Message-IDs of one send: those the ledger issued (looked up, never recomputed:
    a ledger upgraded from before keyed IDs keeps its old ones), keyed new ones for the
    rest, and for a follow-up the earlier notice's, for In-Reply-To."""

    campaign_id: str
    domain: str
    key: bytes | None  # Ledger.message_id_key(); None: a preview without the key file
    issued: Mapping[str, str]  # volunteer_id -> Message-ID, this campaign
    # volunteer_id -> Message-ID of the notice it follows, for those it reached (sent or
    # delivered): only those are threaded under it, and read "as we told you".
    earlier: Mapping[str, str]
    follows: bool = False  # a follow-up

    @classmethod
    def of(cls, ledger: Ledger, campaign: Campaign, *, keyed: bool = True) -> MessageIds:
        return cls(
            campaign.campaign_id,
            sender_domain(campaign),
            ledger.message_id_key() if keyed else None,
            ledger.message_ids(campaign.campaign_id),
            ledger.message_ids(campaign.follows, states=REACHED_STATES) if campaign.follows else {},
            follows=bool(campaign.follows),
        )

    def message_id(self, volunteer_id: str) -> str:
        issued = self.issued.get(volunteer_id)
        return issued or message_id_for(self.campaign_id, volunteer_id, self.domain, self.key)

    def job(self, volunteer: Volunteer, smtputf8: bool) -> ComposeJob:
        vid = volunteer.volunteer_id
        return ComposeJob(volunteer, smtputf8, self.message_id(vid), self.in_reply_to(vid))

    def in_reply_to(self, volunteer_id: str) -> str | None:
        """For a follow-up, the notice it follows as this person got it; "" when that
        notice never reached them (nothing to thread under); None for a first notice."""
        return self.earlier.get(volunteer_id, "") if self.follows else None


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


# --- the send ------------------------------------------------------------------------


def send_campaign(
    ledger: Ledger,
    request: SendRequest,
    settings: Settings,
    *,
    holder: Holder,
    observer: SendObserver | None = None,
    handle_signals: bool = True,
    plan: SendPlan | None = None,
    stop: threading.Event | None = None,
) -> SendSummary:
    """Send the campaign to the request's audience: new messages, and those still to go.

    `holder` is this run's hold on the ledger's lease (notifier.service takes it): while
    it is held no other run can be live, so what is left `sending` was a dead run's.
    Messages already sent (or failed for good) are not sent again; the request's scope
    adds states to send again (as further attempts of the same message) and the messages
    whose outcome a crash left unknown. With `handle_signals`, SIGINT/SIGTERM stop
    gracefully: messages in flight are finished and recorded, the rest stay pending for
    the next run. The counts (the summary's, the progress bar's total) are made beside
    the sending (`_Counting`); `plan`: this send's `plan_send`, when the caller has it
    already (its counts are used instead). `stop`: set from another thread (the
    console's stop button, the console stopping), it stops the send the same graceful
    way a signal does.
    """
    campaign = request.campaign
    target = request.target(settings)
    dkim = load_dkim_key(settings)  # a half-set or unusable key stops the send here
    newly_uncertain = _set_up_ledger(ledger, campaign)
    # The counts (the summary's, the progress bar's total) are made by the database beside
    # the sending, from one snapshot of the ledger as it stands now: the first message
    # does not wait for a count of everyone.
    counting = _Counting.start(ledger, request, plan)
    workers = compose_workers_for(_size_bound(ledger, request), request.compose_workers)
    composing = start_composing(workers, campaign, dkim)
    run = _Run(request, target, ledger, composing, observer, counting)
    try:
        with ledger.tuned_for_sending():
            stats, server = DeliveryStats(), None
            dues = run.chosen()
            first = next(dues, None)  # queues the audience up to the first message due
            if first is not None:
                stats, server = asyncio.run(
                    run.deliver(
                        itertools.chain((first,), dues),
                        ledger.secret(),
                        holder,
                        handle_signals=handle_signals,
                        stop=stop,
                    )
                )
                run.tell_total(wait=True)  # counted after the last chunk was read: now
    finally:
        composing.close()
    if run.tampered:
        raise LedgerTampered(
            f"the ledger fails verification: {run.tampered}",
            file=ledger.path,
            hint="run notifier ledger verify; the send stopped before the rows it names",
        )
    counted = counting.result()
    if counted is None:  # counting failed: the run's own walk, as far as it went
        counted = run.walked
    return SendSummary(
        campaign_id=campaign.campaign_id,
        planned=_planned(counted, request.scope),
        counts=dict(stats.counts),
        states=ledger.state_counts(campaign.campaign_id),
        uncertain=tuple(
            m
            for m in ledger.claimed_messages(campaign.campaign_id)
            if is_uncertain(m.state, run_is_live=False)
        ),
        newly_uncertain=newly_uncertain,
        suppressed=counted.suppressed,
        elapsed=stats.elapsed if first is not None else 0.0,
        stopped=stats.stopped,
        target=str(target),
        server=server,
        taken_elsewhere=stats.taken_elsewhere,
        deferred=stats.deferred,
        held_by_retries=stats.held_by_retries,
        audience=counted.audience,
    )


def _planned(tally: Tally, scope: SendScope) -> int:
    """What a selection counted without its limit sends with it."""
    return tally.to_send if scope.limit is None else min(scope.limit, tally.to_send)


class _Counting:
    """A send's plan counts (`count_selection`), made by the database on a connection of
    its own while the send starts and runs. It reads one snapshot of the ledger, taken
    before the run writes anything, so its counts are those a plan made just before the
    send gives (notifier.ledger.Ledger.reading)."""

    def __init__(self, tally: Tally | None = None) -> None:
        self._tally = tally
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, ledger: Ledger, request: SendRequest, plan: SendPlan | None) -> _Counting:
        if plan is not None:  # counted already by the caller
            return cls(Tally(plan.audience, plan.to_send, plan.suppressed))
        audience, scope = request.audience, request.scope
        if not isinstance(audience, CohortAudience):  # a given list: small, walked here
            return cls(tally_selection(ledger, request.campaign, audience, scope))
        counting = cls()
        taken = threading.Event()

        def count() -> None:
            try:
                with Ledger(ledger.path, create=False, secret=ledger.secret()) as reader:
                    with reader.reading():
                        # The first read takes the snapshot every later read sees.
                        reader.count("campaigns")
                        taken.set()
                        counting._tally = count_selection(reader, request.campaign, audience, scope)
            except Exception:  # the send goes on; its own walk gives the counts
                log.exception("counting the send's audience failed")
            finally:
                taken.set()

        counting._thread = threading.Thread(target=count, name="send-count", daemon=True)
        counting._thread.start()
        taken.wait()  # the snapshot is taken (or the count failed): the run may write
        return counting

    def ready(self) -> Tally | None:
        """The counts, once made (None before, or when counting failed)."""
        if self._thread is not None and self._thread.is_alive():
            return None
        return self._tally

    def result(self) -> Tally | None:
        """The counts, waiting for them (None: counting failed)."""
        if self._thread is not None:
            self._thread.join()
        return self._tally


def _size_bound(ledger: Ledger, request: SendRequest) -> int:
    """About how many messages the send can try, from counts the database has at hand
    (the roster's size less the campaign's messages in states it does not send): enough
    to choose between composing in this process and in workers, without reading the
    audience (the exact count comes beside the sending)."""
    audience, scope = request.audience, request.scope
    if not isinstance(audience, CohortAudience):
        return len(audience)
    states = ledger.state_counts(request.campaign.campaign_id)
    done = sum(n for state, n in states.items() if state not in scope.states)
    bound = max(0, ledger.count("volunteers") - done)
    if audience.cohort.ids is not None:
        bound = min(bound, len(audience.cohort.ids))
    return bound if scope.limit is None else min(bound, scope.limit)


def _set_up_ledger(ledger: Ledger, campaign: Campaign) -> int:
    """Register the campaign; mark what an earlier run left in flight as uncertain.
    Returns how many that was. (Its messages are queued a chunk at a time, as sent.)"""
    ledger.register_campaign(
        campaign.campaign_id,
        title=campaign.title,
        follows=campaign.follows,
        definition=campaign_definition(campaign),
        templates_sha256=templates_sha256(campaign),
    )
    newly_uncertain = ledger.mark_uncertain(campaign.campaign_id)  # no live run owns them
    if newly_uncertain:
        log.warning(
            "%d message(s) of %s were in flight when an earlier send stopped: now uncertain",
            len(newly_uncertain),
            campaign.campaign_id,
        )
    return len(newly_uncertain)


def _not_sent(row: MessageRow, state: MessageState, reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(
        message_id=row.message_id,
        campaign_id=row.campaign_id,
        volunteer_id=row.volunteer_id,
        state=state,
        attempt=row.attempts,
        reason=reason,
    )


_SUPPRESSED_REASON = "the address is on the suppression list (an earlier hard bounce)"


@dataclass(frozen=True)
class _Due:
    """One message this run chose, as the ledger has it after its chunk was queued."""

    volunteer: Volunteer
    row: MessageRow
    in_reply_to: str | None  # ComposeJob.in_reply_to


@dataclass
class _Run:
    """One send, a chunk of the audience at a time: each chunk selected, its new messages
    queued, its rows checked against their events and its suppressed ones recorded (one
    transaction, on the run's own connection), then composed, claimed and sent (the
    claims and outcomes on the journal's connection)."""

    request: SendRequest
    target: SmtpTarget
    ledger: Ledger  # the run's connection: reads the chunks, queues their messages
    composing: Composing
    observer: SendObserver | None
    counting: _Counting  # the plan's counts, made beside the sending: the progress total
    tampered: str = ""  # what the check of a chunk found: the run stopped there
    # The selection as this run's walk met it (what the counting gives, should it fail).
    walked: Tally = field(default_factory=Tally)
    told: bool = False  # the observer has the progress bar's total

    def chosen(self) -> Iterator[_Due]:
        """The messages to send, in volunteer_id order, queued a chunk at a time as the
        sending asks for them; at most the scope's limit. After the limit, the rest of
        the audience is still walked: its new messages queued, its suppressed ones
        recorded, as a run without a limit would (one rule for what the ledger holds)."""
        ledger, campaign, scope = self.ledger, self.request.campaign, self.request.scope
        cid = campaign.campaign_id
        id_key, domain = ledger.message_id_key(), sender_domain(campaign)
        suppressed = ledger.suppressed_addresses()
        tally = self.walked
        due_states = sorted(scope.states)
        chunks = audience_chunks(ledger, campaign, self.request.audience, self.request.chunk_size)
        for chunk in chunks:
            selection, states = select_chunk(ledger, cid, chunk, suppressed, tally.room(scope))
            tally.add(chunk, selection, chosen=False)
            fresh = []
            for v in chunk:
                if v.volunteer_id not in states:
                    message_id = message_id_for(cid, v.volunteer_id, domain, id_key)
                    fresh.append(NewMessage(message_id, v.volunteer_id))  # token: the ledger's
            picked = [v.volunteer_id for v in (*selection.send, *selection.suppressed)]
            try:
                rows = self._queued(cid, fresh, picked, selection.suppressed, due_states)
            except LedgerTampered as exc:  # a message's row deleted: nothing of it written
                self.tampered = exc.message
            if self.tampered:
                return  # what earlier chunks hold (checked) still goes; the run then fails
            earlier = (
                ledger.message_ids(
                    campaign.follows,
                    states=REACHED_STATES,
                    volunteer_ids=[v.volunteer_id for v in selection.send],
                )
                if campaign.follows and selection.send
                else {}
            )
            for volunteer in selection.send:
                vid = volunteer.volunteer_id
                row = rows.get(vid)
                if row is None:  # changed by another process since it was read: leave it
                    log.warning("%s: its message is no longer due; skipped", vid)
                    continue
                # A follow-up threads under the notice it follows, "" when that never
                # reached this person; None for a first notice.
                reply_to = earlier.get(vid, "") if campaign.follows else None
                yield _Due(volunteer, row, reply_to)

    def _queued(
        self,
        cid: str,
        fresh: list[NewMessage],
        picked: list[str],
        suppressed: Sequence[Volunteer],
        due_states: list[MessageState],
    ) -> dict[str, MessageRow]:
        """One chunk's transaction: its new messages queued, its due rows read and held to
        their own events (the start-up verified the chain only since its last checkpoint),
        its suppressed people recorded; the due rows by volunteer. What the check finds
        goes in `tampered`, and the chunk's suppressions are then not recorded."""
        ledger = self.ledger
        with ledger.transaction():
            queued_now = [m.volunteer_id for m in ledger.ensure_messages(cid, fresh)]
            rows = {
                row.volunteer_id: row
                for row in ledger.campaign_messages(cid, states=due_states, volunteer_ids=picked)
            }
            self.tampered = ledger.rows_differ(picked, cid, queued_now=queued_now) or ""
            outcomes = [
                _not_sent(rows[v.volunteer_id], MessageState.SUPPRESSED, _SUPPRESSED_REASON)
                for v in suppressed
                if v.volunteer_id in rows and not self.tampered
            ]
            if outcomes:
                ledger.record_outcomes(outcomes)
        return rows

    async def deliver(
        self,
        dues: Iterator[_Due],
        secret: LedgerSecret,
        holder: Holder,
        *,
        handle_signals: bool,
        stop: threading.Event | None = None,
    ) -> tuple[DeliveryStats, ServerInfo]:
        """Send the messages `dues` gives (`chosen`, the first of them in hand)."""
        journal = ThreadedLedgerJournal(
            self.ledger.path, claimable=self.request.scope.claimable, secret=secret, holder=holder
        )
        observer = self.observer
        delivery = Delivery(
            self.target,
            self.request.options,
            journal,
            credentials=credentials_from_env(),
            progress=observer.outcome if observer is not None else None,
            stop=stop,
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
            try:
                server = await delivery.probe()
            except BaseException:
                # Still queue the audience's new messages and record the suppressed ones,
                # as a send does, so the ledger shows who is owed a message.
                for _due in dues:
                    pass  # bounded: the audience's chunks run out
                raise
            if observer is not None:
                total = self._total(self.counting.ready())
                observer.started(total, server)
                self.told = total is not None
            await journal.open()
            try:
                stats = await delivery.run(self._outgoing(dues, server, delivery))
            finally:
                await journal.close()
        finally:
            if handle_signals:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
        return stats, server

    def _total(self, counted: Tally | None) -> int | None:
        return None if counted is None else _planned(counted, self.request.scope)

    def tell_total(self, *, wait: bool = False) -> None:
        """Give the observer the progress bar's total, once it is counted (with `wait`:
        waiting for it), unless `started` gave it already."""
        if self.told or self.observer is None:
            return
        counted = self.counting.result() if wait else self.counting.ready()
        if counted is not None:
            self.observer.counted(_planned(counted, self.request.scope))
            self.told = True

    async def _outgoing(
        self, dues: Iterator[_Due], server: ServerInfo, delivery: Delivery
    ) -> AsyncIterator[list[OutgoingMessage]]:
        """The chosen messages as wire-ready chunks, composed ahead of the sending."""
        domain, key = sender_domain(self.request.campaign), self.ledger.verp_key()
        # Chosen and handed to the composer, not yet sent: as many as the composer holds
        # ahead (a few chunks), whatever the campaign's size.
        held: dict[str, _Due] = {}

        def jobs() -> Iterator[ComposeJob]:
            for due in dues:
                problem = _address_problem(due.volunteer, server)
                if problem:
                    delivery.record_unsent(
                        _not_sent(due.row, MessageState.FAILED_PERMANENT, problem)
                    )
                    continue
                held[due.volunteer.volunteer_id] = due
                utf8 = _needs_smtputf8(due.volunteer, server)
                yield ComposeJob(due.volunteer, utf8, due.row.message_id, due.in_reply_to)

        async for chunk in self.composing.composed(jobs(), lambda: delivery.stopping):
            self.tell_total()
            ready: list[OutgoingMessage] = []
            for done in chunk:
                due = held.pop(done.volunteer_id)
                row, volunteer = due.row, due.volunteer
                if done.data is None:
                    delivery.record_unsent(
                        _not_sent(row, MessageState.FAILED_PERMANENT, done.error)
                    )
                    continue
                utf8 = _needs_smtputf8(volunteer, server)
                token = row.verp_token or verp.make_token(key, row.message_id)
                ready.append(
                    OutgoingMessage(
                        message_id=row.message_id,
                        campaign_id=row.campaign_id,
                        volunteer_id=row.volunteer_id,
                        envelope_from=verp.verp_address(token, domain),
                        envelope_id=token,
                        recipient=volunteer.email if utf8 else volunteer.email_ascii,
                        data=done.data,
                        smtputf8=utf8,
                        wire=done.wire,
                        sha256=done.sha256,
                    )
                )
            yield ready


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
