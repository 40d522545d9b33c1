"""Proof of notification: who was told what, when, and what happened to each message.

Everything here reads the ledger through its API and returns frozen dataclasses: a
person's history, a campaign's report, the people no notice reached. Turning them into
JSON, CSV or HTML is `notifier.report_formats`' job.

Where the facts come from. A recipient's state is the `messages.state` column, the same
one `notifier status` shows; its times, replies and diagnostics come from the hash-chained
events, which `Ledger.verify()` vouches for. The state column itself is not covered by the
chain, so each state is checked against the events: the state must be the kind of one of
the message's events (each event that moves a message names the state it moves it to;
`queued` means `pending`). A message whose state no event backs is listed in
`CampaignReport.state_mismatches`: a sign that the messages table was edited by hand.

A campaign report is read from one `Ledger.snapshot()`, so its figures, its verification
and the sha256 of the ledger file it names all describe the same bytes.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any

from notifier.audience import history_applies, select_audience
from notifier.campaign import Campaign
from notifier.errors import CampaignError, VolunteerNotFound
from notifier.event import BOOKKEEPING_KINDS, STATE_OF_KIND, state_after_event
from notifier.ledger import (
    Event,
    Holder,
    Ledger,
    LedgerDigest,
    MessageWithEvents,
    OutcomeEvent,
    Suppression,
    VerifyResult,
    VolunteerQuery,
    address_key,
)
from notifier.message import REACHED_STATES, MessageState
from notifier.outputs import in_blocks
from notifier.owed_counts import OWED_REASONS, ordered_reasons, owed_counts
from notifier.volunteer import EXPOSURES, LOCALES, Volunteer, display_name

# Event kinds that are an attempt to hand the message to a server.
ATTEMPT_KINDS: frozenset[str] = frozenset(
    {"sending", "sent", "deferred", "failed_temporary", "failed_permanent", "uncertain"}
)
# Event kinds whose data carries the server's reply at the end of DATA (or its refusal).
REPLY_KINDS: frozenset[str] = frozenset(
    {"sent", "deferred", "failed_temporary", "failed_permanent", "uncertain"}
)
# Event kinds whose data carries a delivery status notification's diagnostic.
BOUNCE_KINDS: frozenset[str] = frozenset({"bounced_hard", "bounced_soft", "blocked", "expired"})
# Event kinds that count as "the notice reached the person" (unless a hard bounce of the
# same message follows).
REACHED_KINDS: frozenset[str] = frozenset({"sent", "delivered"})

# Why someone is on the unreachable list; the event kind that puts them there.
REASON_BY_KIND: Mapping[str, str] = {
    "bounced_hard": "hard_bounce",
    "failed_permanent": "failed_permanent",
    "failed_temporary": "failed_temporary",
    "suppressed": "suppressed",
    # Open outcomes count while the message is still in them: a notice that bounced soft,
    # was refused for policy, or is still waiting to be retried has not reached anyone.
    "bounced_soft": "bounced_soft",
    "blocked": "blocked",
    "expired": "expired",
    "deferred": "deferred",
}
# Failures that hold only while their message is still in that state (a later report or
# retry may settle them).
OPEN_KINDS: frozenset[str] = frozenset({"bounced_soft", "blocked", "expired", "deferred"})
REASON_REJECTED = "rejected_at_import"
REASON_SUPPRESSED = "suppressed"
# Event kinds of a test send (notifier.testsend): a campaign's message sent to the operator
# only. Reported apart: counted with the real sends they would read as people notified.
TEST_SEND_KINDS: frozenset[str] = frozenset({"test_sent", "test_refused"})


# --- data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplatesDigest:
    recorded: str | None  # campaigns.templates_sha256, written when the campaign was registered
    current: str | None = None  # the templates on disk now, if the caller computed it

    @property
    def matches(self) -> bool | None:
        if self.recorded is None or self.current is None:
            return None
        return self.recorded == self.current


@dataclass(frozen=True)
class TimelineBucket:
    hour: str  # "2020-04-01T10:00Z": events from this hour up to the next
    counts: Mapping[str, int]  # event kind -> number


@dataclass(frozen=True)
class Timeline:
    first_send_at: str | None
    last_send_at: str | None
    hours: tuple[TimelineBucket, ...]


@dataclass(frozen=True)
class RecipientOutcome:
    volunteer_id: str
    name: str
    email: str
    locale: str
    exposure: str
    message_id: str
    state: str
    first_attempt_at: str | None
    final_at: str | None
    attempts: int
    smtp_reply: str
    queue_id: str
    diagnostic: str


@dataclass(frozen=True)
class OwedPerson:
    volunteer_id: str
    name: str
    email: str
    locale: str
    exposure: str
    state: str | None  # of their message in this campaign; None: they have none yet
    reason: str


@dataclass(frozen=True)
class Owed:
    """Who a campaign is meant for now (its audience), whom its notice reached (`sent`:
    a server accepted it and no report since said it failed), and who is still owed it,
    each with the reason."""

    audience: int
    sent: int
    people: tuple[OwedPerson, ...]

    @property
    def count(self) -> int:
        return len(self.people)

    @property
    def reasons(self) -> dict[str, int]:
        """How many are owed for each reason, in the order of OWED_REASONS."""
        return ordered_reasons(Counter(p.reason for p in self.people))


@dataclass(frozen=True)
class OwedFigures:
    """Owed, counted in one pass over the audience, with the people owed read again from
    the ledger each time they are iterated (so a million of them are never held): what a
    report made by `open_campaign_report` carries."""

    audience: int
    sent: int
    count: int
    reasons: Mapping[str, int]
    people: Iterable[OwedPerson]


# People whose messages' states are read per query, as the audience streams past.
_STATES_CHUNK = 1000


def _audience_states(
    ledger: Ledger, campaign: Campaign | None, campaign_id: str
) -> Iterator[tuple[Volunteer, MessageState | None]]:
    """The campaign's audience now (as `send` and `check` choose it: notifier.audience),
    each with the state of their message in it (None: they have none), read a chunk of
    people at a time. `campaign` is None for a campaign only the ledger knows (sent from
    a file elsewhere): its messages are its audience."""
    if campaign is None:
        audience: Iterable[Volunteer] = ledger.volunteers(VolunteerQuery(in_campaign=campaign_id))
    else:
        audience = select_audience(ledger, campaign, history_applies(ledger, campaign))
    iterator = iter(audience)
    while chunk := list(itertools.islice(iterator, _STATES_CHUNK)):
        states = ledger.message_states(campaign_id, volunteer_ids=[v.volunteer_id for v in chunk])
        for volunteer in chunk:
            yield volunteer, states.get(volunteer.volunteer_id)


def _owed_person(volunteer: Volunteer, state: MessageState | None) -> OwedPerson:
    return OwedPerson(
        volunteer.volunteer_id,
        volunteer.display_name,
        volunteer.email,
        volunteer.locale,
        volunteer.exposure,
        state,
        OWED_REASONS.get(state, str(state)),
    )


def owed(ledger: Ledger, campaign: Campaign | None, campaign_id: str) -> Owed:
    """The campaign's audience now, and who of it the notice has not reached, and why
    (every one of them held: for a report of any size, `owed_figures`)."""
    size = sent = 0
    people = []
    for volunteer, state in _audience_states(ledger, campaign, campaign_id):
        size += 1
        if state in REACHED_STATES:
            sent += 1
        else:
            people.append(_owed_person(volunteer, state))
    return Owed(size, sent, tuple(people))


def owed_figures(ledger: Ledger, campaign: Campaign | None, campaign_id: str) -> OwedFigures:
    """owed(), counted by the ledger (as `status` counts it); the people are read again
    when the report lists them (inside the same read of the ledger)."""
    counts = owed_counts(ledger, campaign, campaign_id)
    people = OwedPeople(ledger, campaign, campaign_id)
    return OwedFigures(counts.audience, counts.sent, counts.count, counts.reasons, people)


@dataclass(frozen=True)
class TestSend:
    """One test message of the campaign: sent to the operator, not to the volunteer whose
    message it showed."""

    __test__ = False  # not a pytest test class, whatever its name

    at: str
    to: str  # the test address
    shown_as: str  # the volunteer whose message it was
    accepted: bool  # the server took it (`test_sent`), or refused it (`test_refused`)
    reply: str


@dataclass(frozen=True)
class RejectedRow:
    """A roster row refused at an import: nobody was e-mailed from it. A later import
    (or another row) may have brought the same person in since: `on_roster_as`."""

    import_file: str
    imported_at: str
    row: int  # spreadsheet row: the header is row 1
    volunteer_id: str  # as the file has them ("" for an empty cell)
    name: str
    email: str
    reason: str  # every problem of the row: "column: reason; ..."
    # The volunteer id the person is on the roster under now (matched by the row's
    # volunteer id, else by its address), or None: they are not, and were never e-mailed.
    on_roster_as: str | None

    @property
    def fixed(self) -> bool:
        return self.on_roster_as is not None


@dataclass(frozen=True)
class CampaignReport:
    campaign_id: str
    title: str
    follows: str | None
    registered_at: str | None
    generated_at: str
    ledger_file: str
    ledger: LedgerDigest
    verification: VerifyResult
    templates: TemplatesDigest
    counts: Mapping[str, int]  # state -> number of recipients
    counts_by_locale: Mapping[str, Mapping[str, int]]  # locale -> state -> number
    counts_by_exposure: Mapping[str, Mapping[str, int]]  # exposure -> state -> number
    timeline: Timeline
    # Each recipient's outcome: a tuple, or (open_campaign_report) read as it is iterated
    recipients: Collection[RecipientOutcome]
    state_mismatches: tuple[str, ...]  # message ids whose state no event backs
    # `SEQ:HASH` of the ledger's last event: an anchor for `notifier ledger verify --anchor`
    ledger_head: str = ""
    # Who the campaign is meant for now, and who is still owed its notice (and why)
    owed: Owed | OwedFigures | None = None
    # A send (or an import) holding the ledger as the report was made: its figures are
    # a moment of a run still going on
    running: Holder | None = None
    # Test messages of the campaign (to the operator): apart from the counts and timeline
    test_sends: tuple[TestSend, ...] = ()
    # Every row refused at any import of the roster: people no campaign could e-mail
    rejected_rows: tuple[RejectedRow, ...] = ()

    @property
    def total(self) -> int:
        return len(self.recipients)

    @property
    def states(self) -> tuple[str, ...]:
        """The states that occur, in lifecycle order: the columns of the count tables."""
        return tuple(self.counts)


@dataclass(frozen=True)
class UnreachablePerson:
    volunteer_id: str | None  # None for a row rejected at import: not on the roster
    name: str
    email: str
    locale: str
    exposure: str
    postal_address: str
    reason: str  # hard_bounce | suppressed | failed_permanent | failed_temporary | ...
    detail: str  # the diagnostic, the server's reply, or why the row was rejected
    campaign_id: str | None
    at: str
    import_file: str | None = None
    import_row: int | None = None


# --- history --------------------------------------------------------------------------


def volunteer_history(ledger: Ledger, volunteer_id_or_email: str) -> list[Event]:
    """Every event about one person, in chain (time) order.

    That is the events naming the volunteer, plus events about their messages that name
    only the message (a bounce matched by Message-ID, say).
    """
    with ledger.reading():
        try:
            volunteer_id = ledger.get_volunteer(volunteer_id_or_email).volunteer_id
        except VolunteerNotFound:
            # Someone can have events without a roster row (their row was removed by hand,
            # or only a rejection was recorded); their history is still worth showing.
            events = _happened(ledger.volunteer_events(volunteer_id_or_email.strip()))
            if not events:
                raise
            return events
        return _happened(ledger.volunteer_events(volunteer_id))


def _happened(events: list[Event]) -> list[Event]:
    """Events without the ledger's own upkeep (rows adopted by `ledger upgrade`)."""
    return [e for e in events if e.kind not in BOOKKEEPING_KINDS]


# --- the campaign report ----------------------------------------------------------------

# Events in no count, timeline or recipient's history: the ledger's upkeep, and test sends
# (listed apart).
_LEFT_OUT: tuple[str, ...] = tuple(sorted({*BOOKKEEPING_KINDS, *TEST_SEND_KINDS}))


# How a report writes its recipients out as text: (recipients, the ledger head the
# report is made from) -> the text, a piece at a time (notifier.report_formats).
RecipientsWriter = Callable[[Iterable[RecipientOutcome], str], Iterable[str]]


class Recipients(Collection[RecipientOutcome]):
    """A campaign's recipients, each with their outcome, read from the ledger a chunk of
    messages at a time every time they are iterated (in volunteer order): a million
    recipients are written out without being held. Iterate them only inside the `with`
    block of `open_campaign_report`, whose snapshot they read."""

    def __init__(self, ledger: Ledger, campaign_id: str, count: int) -> None:
        self._ledger = ledger
        self._campaign_id = campaign_id
        self._count = count
        self._written: _WrittenAhead | None = None

    def __len__(self) -> int:
        return self._count

    def __contains__(self, item: object) -> bool:
        return any(item == outcome for outcome in self)

    def __iter__(self) -> Iterator[RecipientOutcome]:
        for item in self._ledger.messages_with_events(self._campaign_id, _LEFT_OUT):
            yield _outcome(item)

    @property
    def written_ahead(self) -> bool:
        return self._written is not None

    def written_as(self, writer: RecipientsWriter, head: str) -> Iterator[str]:
        """The recipients as `writer` writes them: the text written ahead (`write_ahead`)
        when it was this writer's, else written now."""
        ahead = self._written
        if ahead is not None and ahead.writer is writer and ahead.head == head:
            return ahead.pieces()
        return iter(writer(self, head))

    def write_ahead(self, writer: RecipientsWriter, head: str, spool: IO[bytes]) -> None:
        """Write the recipients out now, as `writer` does, into `spool` (an unnamed
        temporary file beside the ledger, open for reading and writing): done while
        other processes verify the ledger, and copied into the report after its verdict
        (a report's JSON and CSV name the verdict before the recipients). Memory holds
        a block of text; the file is the size of that part of the report."""
        for block in in_blocks(writer(self, head)):
            spool.write(block.encode("utf-8"))
        spool.flush()
        self._written = _WrittenAhead(writer, head, spool)


def recipients_written(report: CampaignReport, writer: RecipientsWriter) -> Iterator[str]:
    """The report's recipients as `writer` writes them (written ahead, if they were)."""
    recipients = report.recipients
    if isinstance(recipients, Recipients):
        return recipients.written_as(writer, report.ledger_head)
    return iter(writer(recipients, report.ledger_head))


@dataclass(frozen=True)
class _WrittenAhead:
    writer: RecipientsWriter
    head: str
    spool: IO[bytes]

    def pieces(self) -> Iterator[str]:
        # Each reading keeps its own place in the file: two may be read side by side.
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        while True:  # bounded: each turn reads on, to the end of the file
            self.spool.seek(offset)
            data = self.spool.read(_SPOOL_BLOCK)
            offset += len(data)
            text = decoder.decode(data, final=not data)
            if text:
                yield text
            if not data:
                return


_SPOOL_BLOCK = 1 << 20


class OwedPeople:
    """Who of a campaign's audience is still owed its notice, read from the ledger every
    time they are iterated (inside the report's `with` block)."""

    def __init__(self, ledger: Ledger, campaign: Campaign | None, campaign_id: str) -> None:
        self._ledger = ledger
        self._campaign = campaign
        self._campaign_id = campaign_id

    def __iter__(self) -> Iterator[OwedPerson]:
        for volunteer, state in _audience_states(self._ledger, self._campaign, self._campaign_id):
            if state not in REACHED_STATES:
                yield _owed_person(volunteer, state)


@contextlib.contextmanager
def open_campaign_report(
    ledger: Ledger,
    campaign_id: str,
    *,
    templates_sha256: str | None = None,
    campaign_now: Campaign | None = None,
    read_ahead: RecipientsWriter | None = None,
) -> Iterator[CampaignReport]:
    """Everything a regulator may ask about one campaign, from one snapshot of the ledger,
    in bounded memory: the figures are counted by the database, and the recipients and
    the people still owed the notice are read a chunk at a time as they are written out.
    Use the report (and iterate its recipients) inside the `with` block: the snapshot
    is held until it ends.

    `templates_sha256` is the hash of the templates as they are now, if the caller
    computed it; it is shown next to the hash recorded at registration. `campaign_now`:
    the campaign as it would be sent now, for its audience (who is still owed the
    notice); without it, the people it has messages for. `read_ahead`: the report will
    list every recipient with this writer (JSON, CSV): while other processes verify a
    large ledger (Ledger.verify_started), this one writes the recipients out into a
    temporary file (`Recipients.write_ahead`), so the two halves of the work share the
    cores.
    """
    with ledger.snapshot() as digest, contextlib.ExitStack() as spools:
        campaign = ledger.campaign(campaign_id)
        if campaign is None:
            raise CampaignError(
                f"no campaign {campaign_id!r} in the ledger",
                file=ledger.path,
                hint="list the registered campaigns with: notifier campaign list",
            )
        verified = ledger.verify_started()
        head = ledger.head()
        groups = ledger.state_counts_by_group(campaign_id)
        states = _ordered_states(state for _l, _e, state, _n in groups)
        total = sum(n for *_, n in groups)
        # Everything but the verdict is read while the other processes verify.
        timeline = _timeline(ledger.events_per_hour(campaign_id, _LEFT_OUT))
        mismatches = tuple(ledger.unbacked_messages(campaign_id, STATE_OF_KIND, _LEFT_OUT))
        owes = owed_figures(ledger, campaign_now, campaign_id)
        test_sends = tuple(
            _test_send(e)
            for e in ledger.campaign_events_of_kinds(campaign_id, sorted(TEST_SEND_KINDS))
        )
        rejected = tuple(rejected_rows(ledger))
        recipients = Recipients(ledger, campaign_id, total)
        if read_ahead is not None and verified.apart and total:
            try:
                spool = spools.enter_context(tempfile.TemporaryFile(dir=ledger.path.parent))
            except OSError:  # a folder this user cannot write: written out after the verdict
                pass
            else:
                try:
                    recipients.write_ahead(read_ahead, head, spool)
                except OSError:  # a full disk: the same, and the spool's space given back
                    spool.truncate(0)
        verification = verified()
        yield CampaignReport(
            campaign_id=campaign.campaign_id,
            title=campaign.title,
            follows=campaign.follows,
            registered_at=campaign.registered_at,
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            ledger_file=ledger.path.name,
            ledger=digest,
            ledger_head=head,
            verification=verification,
            templates=TemplatesDigest(campaign.templates_sha256, templates_sha256),
            counts={state: sum(n for *_, s, n in groups if s == state) for state in states},
            counts_by_locale=_grouped(_sum_by(groups, lambda g: g[0], states), LOCALES),
            counts_by_exposure=_grouped(_sum_by(groups, lambda g: g[1], states), EXPOSURES),
            timeline=timeline,
            recipients=recipients,
            state_mismatches=mismatches,
            owed=owes,
            running=ledger.running(),
            test_sends=test_sends,
            rejected_rows=rejected,
        )


def campaign_report(
    ledger: Ledger,
    campaign_id: str,
    *,
    templates_sha256: str | None = None,
    campaign_now: Campaign | None = None,
) -> CampaignReport:
    """open_campaign_report(), read whole: every recipient and person owed held in
    memory. For a small campaign, or a test; a large one is written out as it is read."""
    with open_campaign_report(
        ledger, campaign_id, templates_sha256=templates_sha256, campaign_now=campaign_now
    ) as report:
        return materialised(report)


def materialised(report: CampaignReport) -> CampaignReport:
    """A report from open_campaign_report() with its recipients and the people owed read
    into memory, so it can be used after its `with` block has ended."""
    owes = report.owed
    return replace(
        report,
        recipients=tuple(report.recipients),
        owed=None if owes is None else Owed(owes.audience, owes.sent, tuple(owes.people)),
    )


def _test_send(event: Event) -> TestSend:
    return TestSend(
        at=event.at,
        to=_text(event.data.get("to")),
        shown_as=_text(event.data.get("as")) or (event.volunteer_id or ""),
        accepted=event.kind == "test_sent",
        reply=_text(event.data.get("reply")),
    )


def _outcome(message: MessageWithEvents) -> RecipientOutcome:
    """One recipient's outcome, from their message and its events (kind, time, data as
    stored; in chain order). Whether an event backs the stored state is the database's
    to say (Ledger.unbacked_messages), for the whole campaign at once."""
    state = message.state
    attempts = message.attempts
    reply: str = message.smtp_reply
    queue_id: str = message.queue_id
    final_at = None
    first_attempt_at = None
    diagnostic = ""
    sending = 0
    for kind, at, data_json in message.events:
        if state_after_event(kind, data_json) == state:
            final_at = at
        if kind in ATTEMPT_KINDS and first_attempt_at is None:
            first_attempt_at = at
        if kind == "sending":
            # A new attempt: an earlier attempt's reply or bounce says nothing about it,
            # and shown beside "sent" it would read as this message's fate.
            sending += 1
            reply, queue_id, diagnostic = "", "", ""
        data = _data_read(kind, data_json)
        if data is None:
            continue  # nothing in it this report shows
        attempts = max(attempts, _int(data.get("attempt")))
        if kind in REPLY_KINDS:
            reply = _text(data.get("reply")) or reply
            queue_id = _text(data.get("queue_id")) or queue_id
        if kind in BOUNCE_KINDS:
            diagnostic = _text(data.get("diagnostic")) or diagnostic
    return RecipientOutcome(
        volunteer_id=message.volunteer_id,
        name=message.name,
        email=message.email,
        locale=message.locale,
        exposure=message.exposure,
        message_id=message.message_id,
        state=state,
        first_attempt_at=first_attempt_at,
        final_at=final_at or message.updated_at,
        # The sender's counter, the attempt numbers in its events, or the number of
        # times it went out: whichever is largest, so no attempt goes uncounted.
        attempts=max(attempts, sending),
        smtp_reply=reply,
        queue_id=queue_id,
        diagnostic=diagnostic,
    )


_READ_KINDS: frozenset[str] = REPLY_KINDS | BOUNCE_KINDS


def _data_read(kind: str, data_json: str) -> dict[str, Any] | None:
    """An event's data, decoded when it may hold something the report shows (a reply, a
    diagnostic, an attempt number); None when it cannot: most events of a large
    campaign (`queued`) are never decoded. An escape (\\u) might spell a key: decoded."""
    if kind in _READ_KINDS or '"attempt"' in data_json or "\\u" in data_json:
        read = json.loads(data_json)
        return read if isinstance(read, dict) else {}
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _ordered_states(states: Iterable[str]) -> tuple[str, ...]:
    present = set(states)
    known = [s for s in tuple(MessageState) if s in present]
    return (*known, *sorted(present - set(known)))


def _sum_by(
    groups: Sequence[tuple[str, str, str, int]],
    key: Callable[[tuple[str, str, str, int]], str],
    states: Sequence[str],
) -> dict[str, dict[str, int]]:
    """(locale, exposure, state, number) rows summed into key -> state -> number, every
    state present in each (0 where a group has none)."""
    sums: dict[str, dict[str, int]] = {}
    for group in groups:
        counts = sums.setdefault(key(group), dict.fromkeys(states, 0))
        counts[group[2]] += group[3]
    return sums


def _grouped(sums: Mapping[str, dict[str, int]], order: Sequence[str]) -> dict[str, dict[str, int]]:
    """The groups in their known order, unknown ones after, sorted."""
    keys = [k for k in order if k in sums] + sorted(set(sums) - set(order))
    return {key: sums[key] for key in keys}


def _timeline(hours: Sequence[tuple[str | None, str, int, str, str]]) -> Timeline:
    """The timeline from the database's count of events per hour and kind."""
    buckets: dict[str, dict[str, int]] = defaultdict(dict)
    attempts: list[str] = []
    for hour, kind, n, first, last in hours:
        # An event time SQLite cannot read (it never writes one) is bucketed as Python reads it.
        bucket = buckets[hour if hour is not None else _hour(first)]
        bucket[kind] = bucket.get(kind, 0) + n
        if kind in ATTEMPT_KINDS:
            attempts.extend((first, last))
    return Timeline(
        first_send_at=min(attempts, default=None),
        last_send_at=max(attempts, default=None),
        hours=tuple(TimelineBucket(hour, buckets[hour]) for hour in sorted(buckets)),
    )


def _hour(at: str) -> str:
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")


# --- who no notice reached ----------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    seq: float  # position in the chain; inf when unknown, so nothing clears it
    reason: str
    detail: str
    campaign_id: str | None
    at: str


def unreachable(ledger: Ledger) -> list[UnreachablePerson]:
    """Everyone no notice has reached (`unreachable_people`), held in a list."""
    with ledger.reading():
        return list(unreachable_people(ledger))


_IMPORT_KINDS = ("roster_imported", "row_rejected")


def unreachable_people(ledger: Ledger) -> Iterator[UnreachablePerson]:
    """Everyone no notice has reached, so they can be written to another way: the
    people on the roster in volunteer order, then the rows rejected at import.

    The rule, person by person, over all campaigns:
    - A failure is a hard bounce, a permanent failure, a temporary failure that ran out of
      retries, a message skipped because the address is suppressed, the address being on
      the suppression list, or a message still soft-bounced, blocked or deferred (these
      last hold only while the message is in that state; the reason names the state).
    - A message reached the person at its first `sent` or `delivered` event (a delivery
      report confirms an earlier hand-over; it does not make it later). A bounce of that
      message is itself a failure that comes after, so it is never cleared by the message
      it bounced.
    - A person is unreachable when some failure is not followed (in chain order) by a
      message that reached them. Each is listed once, with the latest such failure.
    - Every row rejected at any import is listed, with its row number and the id, name,
      address and postal address as the file has them, until that person is on the roster
      (by the row's volunteer id, else by its address): they are in no campaign at all.

    Read a chunk of people at a time, with their events (through the volunteer index), so
    memory holds one chunk, the suppression list and the rejected rows, whatever the
    roster's size. An event is the person's whose message it names; one naming someone
    else than its message's owner (a hand edit) is not looked for under the owner. Use it
    inside `ledger.reading()`, for one consistent read.
    """
    kinds = (*REASON_BY_KIND, *REACHED_KINDS)
    by_key: dict[str, list[Suppression]] = defaultdict(list)
    for suppression in ledger.suppressions():
        by_key[suppression.key].append(suppression)
    # Events naming a message but no person (a report matched by Message-ID): few.
    unnamed: dict[str, list[OutcomeEvent]] = defaultdict(list)
    for found in ledger.outcome_events_naming_no_volunteer(kinds):
        if found.owner is not None:
            unnamed[found.owner].append(found)
    refused = _refused_rows(list(ledger.events_naming_no_campaign(_IMPORT_KINDS)))
    finder = _RosterFinder(refused)
    for chunk in ledger.volunteers_in_chunks():
        finder.see(chunk)
        ids = [v.volunteer_id for v in chunk]
        events = ledger.outcome_events_of(ids, kinds)
        events.extend(e for vid in ids for e in unnamed.get(vid, ()))
        events.sort(key=lambda found: found.event.seq)
        yield from _unreachable_volunteers(chunk, events, by_key)
    yield from _rejected_at_import(refused, finder.find)


def _unreachable_volunteers(
    volunteers: Sequence[Volunteer],
    events: Sequence[OutcomeEvent],
    suppressions: Mapping[str, Sequence[Suppression]],
) -> Iterator[UnreachablePerson]:
    """Who of these volunteers no notice reached, from their outcome events (chain order)."""
    failures: dict[str, list[_Failure]] = defaultdict(list)
    first_reach: dict[str, tuple[str, int]] = {}  # message -> (volunteer, seq)
    for found in events:
        event, volunteer_id = found.event, found.owner
        if event.message_id is None or volunteer_id is None:
            continue
        if event.kind in REACHED_KINDS:
            first_reach.setdefault(event.message_id, (volunteer_id, event.seq))
            continue
        if event.kind in OPEN_KINDS and found.message_state != event.kind:
            continue  # settled since: retried, delivered, or a worse report
        failures[volunteer_id].append(
            _Failure(
                event.seq,
                REASON_BY_KIND[event.kind],
                _failure_detail(event.data),
                event.campaign_id or found.campaign_id,
                event.at,
            )
        )
    last_reach: dict[str, int] = defaultdict(int)  # volunteer -> seq
    for volunteer_id, seq in first_reach.values():
        last_reach[volunteer_id] = max(last_reach[volunteer_id], seq)
    for volunteer in volunteers:
        vid = volunteer.volunteer_id
        reached_at = last_reach.get(vid, 0)
        open_failures = [f for f in failures.get(vid, []) if f.seq > reached_at]
        if not open_failures:
            # Listed for its suppression only when no event explains it better.
            open_failures = [
                f for f in _suppressions_of(volunteer, suppressions) if f.seq > reached_at
            ]
        if not open_failures:
            continue
        latest = max(open_failures, key=lambda f: f.seq)
        yield UnreachablePerson(
            volunteer_id=vid,
            name=volunteer.display_name,
            email=volunteer.email,
            locale=volunteer.locale,
            exposure=volunteer.exposure,
            postal_address=volunteer.postal_address,
            reason=latest.reason,
            detail=latest.detail,
            campaign_id=latest.campaign_id,
            at=latest.at,
        )


def _failure_detail(data: Mapping[str, Any]) -> str:
    for key in ("diagnostic", "reply", "reason"):
        value = data.get(key)
        if value:
            return str(value)
    return ""


def _suppressions_of(
    volunteer: Volunteer, by_key: Mapping[str, Sequence[Suppression]]
) -> list[_Failure]:
    """The suppressions of this volunteer's address (either form of it).

    A suppression of an address no volunteer has any more (they gave a new one) is about
    no one on the roster, so it is never found.
    """
    keys = {address_key(volunteer.email), address_key(volunteer.email_ascii)}
    return [
        _Failure(
            float(s.event_seq) if s.event_seq is not None else float("inf"),
            REASON_SUPPRESSED,
            s.reason or "address suppressed",
            None,
            s.at,
        )
        for key in keys
        for s in by_key.get(key, [])
    ]


@dataclass(frozen=True)
class _RefusedRow:
    """One row refused at an import, as its `row_rejected` events record it."""

    import_id: int
    file_name: str
    imported_at: str
    row: int
    who: Mapping[str, str]  # the row's id, names, address ... as the file has them
    problems: tuple[Event, ...]

    @property
    def volunteer_id(self) -> str:
        return self.who.get("volunteer_id", "").strip()

    @property
    def email(self) -> str:
        return self.who.get("email", "").strip()

    @property
    def name(self) -> str:
        family = self.who.get("family_name", "").strip()
        given = self.who.get("given_name", "").strip()
        locale = self.who.get("locale", "").strip()
        if locale not in LOCALES:  # a rejected row's locale may be what was wrong with it
            locale = "en" if (family + given).isascii() else "ja"
        return display_name(family, given, locale)

    @property
    def detail(self) -> str:
        return "; ".join(
            f"{p.data.get('column')}: {p.data.get('reason')}"
            if p.data.get("column")
            else _text(p.data.get("reason"))
            for p in self.problems
        )


def _refused_rows(events: Sequence[Event]) -> list[_RefusedRow]:
    """Every row refused at an import, in import then row order, from the
    `roster_imported` and `row_rejected` events."""
    files: dict[int, tuple[str, str]] = {}  # import_id -> (file name, imported at)
    rows: dict[tuple[int, int], list[Event]] = defaultdict(list)
    for event in events:
        import_id = _int(event.data.get("import_id"))
        if event.kind == "roster_imported":
            files[import_id] = (_text(event.data.get("file")), event.at)
        else:
            rows[import_id, _int(event.data.get("row"))].append(event)
    refused = []
    for (import_id, row_number), problems in sorted(rows.items()):
        who: dict[str, str] = {}
        for problem in problems:
            raw = problem.data.get("who")
            if isinstance(raw, dict):
                who.update({str(k): _text(v) for k, v in raw.items()})
            elif problem.data.get("column") == "email":  # recorded before rows kept `who`
                who.setdefault("email", _text(problem.data.get("value")))
        file_name, imported_at = files.get(import_id, ("", problems[0].at))
        refused.append(
            _RefusedRow(import_id, file_name, imported_at, row_number, who, tuple(problems))
        )
    return refused


class _RosterFinder:
    """Who on the roster each refused row is about: by the row's volunteer id, else (an
    empty id cell) by its address; None when nobody is. The roster is shown to it a chunk
    at a time (`see`, in volunteer order), and it keeps only what the rows look for."""

    def __init__(self, rows: Iterable[_RefusedRow]) -> None:
        self._wanted_ids = {row.volunteer_id.casefold() for row in rows if row.volunteer_id}
        self._wanted_addresses = {
            row.email.casefold() for row in rows if not row.volunteer_id and row.email
        }
        self._ids: dict[str, str] = {}
        self._addresses: dict[str, str] = {}

    @property
    def wanted(self) -> bool:
        return bool(self._wanted_ids or self._wanted_addresses)

    def see(self, volunteers: Iterable[Volunteer]) -> None:
        if not self.wanted:
            return
        for v in volunteers:
            key = v.volunteer_id.casefold()
            if key in self._wanted_ids:
                self._ids[key] = v.volunteer_id
            for address in (v.email, v.email_ascii):
                folded = address.casefold() if address else ""
                if folded in self._wanted_addresses:
                    self._addresses.setdefault(folded, v.volunteer_id)

    def find(self, row: _RefusedRow) -> str | None:
        if row.volunteer_id:
            return self._ids.get(row.volunteer_id.casefold())
        return self._addresses.get(row.email.casefold()) if row.email else None


def rejected_rows(ledger: Ledger) -> list[RejectedRow]:
    """Every row refused at any import of the roster, and for each whether the person is
    on the roster now (a later import, or another row, brought them in). Holds the rows,
    not the roster: it is read a chunk at a time to find them."""
    with ledger.reading():
        refused = _refused_rows(list(ledger.events_naming_no_campaign(_IMPORT_KINDS)))
        finder = _RosterFinder(refused)
        if finder.wanted:
            for chunk in ledger.volunteers_in_chunks():
                finder.see(chunk)
    return [
        RejectedRow(
            import_file=row.file_name,
            imported_at=row.imported_at,
            row=row.row,
            volunteer_id=row.volunteer_id,
            name=row.name,
            email=row.email,
            reason=row.detail,
            on_roster_as=finder.find(row),
        )
        for row in refused
    ]


def _rejected_at_import(
    refused: Sequence[_RefusedRow], on_roster: Callable[[_RefusedRow], str | None]
) -> list[UnreachablePerson]:
    """The people whose rows were refused at an import and who are not on the roster."""
    latest: dict[str, UnreachablePerson] = {}  # one entry per person, the latest import's
    for row in refused:
        if on_roster(row) is not None:
            continue  # imported correctly since (or through another row)
        volunteer_id, address = row.volunteer_id, row.email
        if not volunteer_id and not address and not row.who:
            continue  # nothing says who the row was about: `roster rejects` shows it
        key = volunteer_id.casefold() or address.casefold() or f"{row.file_name}:{row.row}"
        latest[key] = UnreachablePerson(
            volunteer_id=volunteer_id or None,
            name=row.name,
            email=address,
            locale=row.who.get("locale", "").strip(),
            exposure="",
            postal_address=row.who.get("postal_address", "").strip(),
            reason=REASON_REJECTED,
            detail=row.detail,
            campaign_id=None,
            at=row.imported_at,
            import_file=row.file_name or None,
            import_row=row.row,
        )
    return sorted(latest.values(), key=lambda p: p.import_row or 0)
