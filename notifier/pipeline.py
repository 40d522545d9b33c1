"""A send run: audience -> one selection -> messages in the ledger -> composed bytes -> SMTP.

`select_messages` is the one answer to "who gets a message in this run": the dry run
(`plan_send`), the real send, a resend of chosen states and --resend-uncertain all use
it. It is made once, before the ledger is set up, and what it chose is exactly what is
composed (first, in worker processes, while the ledger set-up runs), recorded and sent.

Each volunteer's message has a stable Message-ID and VERP token; what happens to it is
appended to the ledger as events, and its `attempts` counter grows with every try.

This is the machinery, not the way in: `notifier.service.Workspace.send` runs it once
every rule holds (approval, a clean check, the ledger's lease, an intact ledger) and
records the run. Whatever the caller, a message is sent only once the ledger has let
this run claim it (notifier.ledger.messages.claim).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from notifier import verp
from notifier.approval import templates_sha256
from notifier.audience import history_applies
from notifier.campaign import Campaign
from notifier.cohort import CohortFilter, select_cohort
from notifier.compose import load_dkim_key, message_id_for, sender_domain
from notifier.compose_pool import ComposeJob, Composing, compose_workers_for, start_composing
from notifier.config import Settings, credentials_from_env
from notifier.delivery import Delivery, DeliveryStats, SendOptions
from notifier.errors import CampaignError, CohortError, LedgerTampered
from notifier.journal import ThreadedLedgerJournal
from notifier.ledger import Holder, Ledger
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


def read_selection(
    ledger: Ledger, campaign_id: str, audience: Iterable[Volunteer], scope: SendScope
) -> Selection:
    """`select_messages` with the campaign's states and the suppressions in the ledger."""
    return select_messages(
        audience, ledger.message_states(campaign_id), ledger.suppressed_addresses(), scope
    )


def send_audience(ledger: Ledger, campaign: Campaign, cohort: CohortFilter) -> list[Volunteer]:
    """The volunteers a send of `campaign` considers: its cohort, narrowed by `cohort`
    (a follow-up only once the notice it follows was sent: `require_followed_sent`)."""
    require_followed_sent(ledger, campaign)
    return select_cohort(ledger, campaign, cohort, history=history_applies(ledger, campaign))


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
    audience: Sequence[Volunteer]  # the volunteers considered (see send_audience)
    options: SendOptions = field(default_factory=SendOptions)
    scope: SendScope = field(default_factory=SendScope)
    smtp_url: str | None = None  # default: the settings' [smtp] url
    compose_workers: int | None = None  # default: by the size of the send

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
    audience = _by_id(request.audience)
    selection = read_selection(ledger, campaign_id, audience.values(), request.scope)
    by_group = Counter((v.locale, v.exposure) for v in selection.send)
    states = ledger.state_counts(campaign_id)
    return SendPlan(
        campaign_id=campaign_id,
        audience=len(audience),
        to_send=len(selection.send),
        by_group=dict(sorted(by_group.items())),
        states=states,
        suppressed=len(selection.suppressed),
        uncertain=sum(n for s, n in states.items() if is_uncertain(s, run_is_live=run_is_live)),
        target=str(request.target(settings)),
        rate=request.options.rate,
        chosen=tuple(v.volunteer_id for v in selection.send) if chosen else (),
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


def new_messages(
    ids: MessageIds, volunteers: Iterable[Volunteer], verp_key: bytes
) -> list[NewMessage]:
    result = []
    for v in volunteers:
        message_id = ids.message_id(v.volunteer_id)
        result.append(NewMessage(message_id, v.volunteer_id, verp.make_token(verp_key, message_id)))
    return result


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
) -> SendSummary:
    """Send the campaign to the request's audience: new messages, and those still to go.

    `holder` is this run's hold on the ledger's lease (notifier.service takes it): while
    it is held no other run can be live, so what is left `sending` was a dead run's.
    Messages already sent (or failed for good) are not sent again; the request's scope
    adds states to send again (as further attempts of the same message) and the messages
    whose outcome a crash left unknown. With `handle_signals`, SIGINT/SIGTERM stop
    gracefully: messages in flight are finished and recorded, the rest stay pending for
    the next run.
    """
    campaign = request.campaign
    target = request.target(settings)
    key = ledger.verp_key()
    ids = MessageIds.of(ledger, campaign)
    dkim = load_dkim_key(settings)  # a half-set or unusable key stops the send here
    audience = _by_id(request.audience)
    states = ledger.message_states(campaign.campaign_id)
    selection = select_messages(
        audience.values(), states, ledger.suppressed_addresses(), request.scope
    )
    workers = compose_workers_for(len(selection.send), request.compose_workers)
    composing = start_composing(workers, campaign, dkim)
    try:
        # The server is not known yet: guess a non-ASCII address goes with SMTPUTF8.
        composing.submit_ahead([ids.job(v, not v.email.isascii()) for v in selection.send])
        # A resumed run has most messages already: their IDs and tokens are not made again.
        fresh = [v for volunteer_id, v in audience.items() if volunteer_id not in states]
        newly_uncertain = _set_up_ledger(ledger, campaign, new_messages(ids, fresh, key))
        rows = {
            row.volunteer_id: row
            for row in ledger.campaign_messages(
                campaign.campaign_id, states=sorted(request.scope.states)
            )
        }
        _record_suppressed(ledger, rows, selection.suppressed)
        run = _Run(request, target, key, ids, selection, rows, composing, observer, ledger)
        stats, server = DeliveryStats(), None
        if selection.send:
            stats, server = asyncio.run(
                run.deliver(ledger.path, ledger.secret(), holder, handle_signals=handle_signals)
            )
    finally:
        composing.close()
    if run.tampered:
        raise LedgerTampered(
            f"the ledger fails verification: {run.tampered}",
            file=ledger.path,
            hint="run notifier ledger verify; the send stopped before the rows it names",
        )
    return SendSummary(
        campaign_id=campaign.campaign_id,
        planned=len(selection.send),
        counts=dict(stats.counts),
        states=ledger.state_counts(campaign.campaign_id),
        uncertain=tuple(
            m
            for m in ledger.claimed_messages(campaign.campaign_id)
            if is_uncertain(m.state, run_is_live=False)
        ),
        newly_uncertain=newly_uncertain,
        suppressed=len(selection.suppressed),
        elapsed=stats.elapsed if selection.send else 0.0,
        stopped=stats.stopped,
        target=str(target),
        server=server,
        taken_elsewhere=stats.taken_elsewhere,
        deferred=stats.deferred,
        held_by_retries=stats.held_by_retries,
    )


def _by_id(volunteers: Iterable[Volunteer]) -> dict[str, Volunteer]:
    return {v.volunteer_id: v for v in volunteers}


def _set_up_ledger(ledger: Ledger, campaign: Campaign, fresh: list[NewMessage]) -> int:
    """Register the campaign and its new messages; mark what an earlier run left in
    flight as uncertain. Returns how many that was."""
    ledger.register_campaign(
        campaign.campaign_id,
        title=campaign.title,
        follows=campaign.follows,
        definition=campaign_definition(campaign),
        templates_sha256=templates_sha256(campaign),
    )
    ledger.ensure_messages(campaign.campaign_id, fresh)
    newly_uncertain = ledger.mark_uncertain(campaign.campaign_id)  # no live run owns them
    if newly_uncertain:
        log.warning(
            "%d message(s) of %s were in flight when an earlier send stopped: now uncertain",
            len(newly_uncertain),
            campaign.campaign_id,
        )
    return len(newly_uncertain)


def _record_suppressed(
    ledger: Ledger, rows: Mapping[str, MessageRow], suppressed: Iterable[Volunteer]
) -> None:
    outcomes = [
        _not_sent(
            rows[v.volunteer_id],
            MessageState.SUPPRESSED,
            "the address is on the suppression list (an earlier hard bounce)",
        )
        for v in suppressed
        if v.volunteer_id in rows
    ]
    if outcomes:
        ledger.record_outcomes(outcomes)


def _not_sent(row: MessageRow, state: MessageState, reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(
        message_id=row.message_id,
        campaign_id=row.campaign_id,
        volunteer_id=row.volunteer_id,
        state=state,
        attempt=row.attempts,
        reason=reason,
    )


@dataclass
class _Run:
    """The delivery part of one send: the selection's messages, composed and sent."""

    request: SendRequest
    target: SmtpTarget
    key: bytes
    ids: MessageIds
    selection: Selection
    rows: Mapping[str, MessageRow]  # volunteer_id -> the message, as the ledger has it
    composing: Composing
    observer: SendObserver | None
    ledger: Ledger  # to check each chunk's rows against the chain before it is claimed
    tampered: str = ""  # what that check found: the run stopped there

    async def deliver(
        self, ledger_path: Path, secret: LedgerSecret, holder: Holder, *, handle_signals: bool
    ) -> tuple[DeliveryStats, ServerInfo]:
        journal = ThreadedLedgerJournal(
            ledger_path, claimable=self.request.scope.claimable, secret=secret, holder=holder
        )
        observer = self.observer
        delivery = Delivery(
            self.target,
            self.request.options,
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
                observer.started(len(self.selection.send), server)
            await journal.open()
            try:
                stats = await delivery.run(self._outgoing(server, delivery))
            finally:
                await journal.close()
        finally:
            if handle_signals:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
        return stats, server

    async def _outgoing(
        self, server: ServerInfo, delivery: Delivery
    ) -> AsyncIterator[list[OutgoingMessage]]:
        """The selected messages as wire-ready chunks, composed ahead of the sending."""
        domain = sender_domain(self.request.campaign)
        volunteers: dict[str, Volunteer] = {}
        jobs: list[ComposeJob] = []
        for volunteer in self.selection.send:
            row = self.rows.get(volunteer.volunteer_id)
            if row is None:  # changed by another process since the selection: leave it
                log.warning("%s: its message is no longer due; skipped", volunteer.volunteer_id)
                continue
            problem = _address_problem(volunteer, server)
            if problem:
                delivery.record_unsent(_not_sent(row, MessageState.FAILED_PERMANENT, problem))
                continue
            volunteers[volunteer.volunteer_id] = volunteer
            jobs.append(self.ids.job(volunteer, _needs_smtputf8(volunteer, server)))

        campaign_id = self.request.campaign.campaign_id
        async for chunk in self.composing.composed(jobs, lambda: delivery.stopping):
            # The start-up verified the chain only since its last checkpoint: what this
            # chunk is sent from (addresses, states) is held to its own events now.
            problem = self.ledger.rows_differ([d.volunteer_id for d in chunk], campaign_id) or ""
            if problem:
                self.tampered = problem
                delivery.request_stop()
                return
            ready: list[OutgoingMessage] = []
            for done in chunk:
                row = self.rows[done.volunteer_id]
                if done.data is None:
                    delivery.record_unsent(
                        _not_sent(row, MessageState.FAILED_PERMANENT, done.error)
                    )
                    continue
                volunteer = volunteers[done.volunteer_id]
                utf8 = _needs_smtputf8(volunteer, server)
                token = row.verp_token or verp.make_token(self.key, row.message_id)
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
