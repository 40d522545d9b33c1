"""Today's report builder, kept as it was before reports were streamed: the oracle the
streamed report, its formats and the unreachable list are compared with (tests only).

It holds every message, event and volunteer in memory, which is why it was replaced; on
the small scenario ledgers of the tests that is what makes it easy to trust. Its JSON and
CSV renderers are the ones of that time, too.

What is kept here is the old *algorithm*: which events count and how each recipient's
outcome, the count tables, the timeline, who is still owed the notice (and why), who is
unreachable and which rejected rows are fixed are worked out from the whole ledger in
memory, and how the report and the list were rendered. Those are what the streamed code
(chunks, SQL counts, lazy collections) does differently, so they must not be shared.

What is imported from production instead is what was copied unchanged and decides
nothing by itself: the vocabulary both builders are written against (the event-kind sets
ATTEMPT_KINDS, REPLY_KINDS, BOUNCE_KINDS, REACHED_KINDS, OPEN_KINDS, TEST_SEND_KINDS, the
reason words REASON_BY_KIND, REASON_* and OWED_REASONS from notifier.owed_counts), the CSV
columns (notifier.report_formats), the frozen dataclasses the results are held in
(identical to the old ones field for field, `_Failure` included; Owed.reasons orders its
counts by the same rule, now shared with `status` as owed_counts.ordered_reasons;
CampaignReport only widened `recipients` to any collection and `owed` to OwedFigures too,
which the tuples and Owed built here still are), the trivial readers `_int`, `_text`
and `_hour`, and the parse of the import events into refused rows (`_RefusedRow`,
`_refused_rows`: how the streamed code finds each row on the roster is what differs).
A copy of these could only ever be kept equal to production by hand, so it
checked nothing; a wrong rule in the streamed builders or renderers still gives different
output from the algorithms here, and the results compare as objects of the same types.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from notifier.audience import history_applies, select_audience
from notifier.campaign import Campaign
from notifier.errors import CampaignError
from notifier.event import BOOKKEEPING_KINDS, state_after_event
from notifier.ledger import Event, Ledger, Suppression, VolunteerQuery, address_key
from notifier.message import REACHED_STATES, MessageRow, MessageState
from notifier.outputs import csv_text, json_text
from notifier.owed_counts import OWED_REASONS
from notifier.report import (
    ATTEMPT_KINDS,
    BOUNCE_KINDS,
    OPEN_KINDS,
    REACHED_KINDS,
    REASON_BY_KIND,
    REASON_REJECTED,
    REASON_SUPPRESSED,
    REPLY_KINDS,
    TEST_SEND_KINDS,
    CampaignReport,
    Owed,
    OwedPerson,
    RecipientOutcome,
    RejectedRow,
    TemplatesDigest,
    TestSend,
    Timeline,
    TimelineBucket,
    UnreachablePerson,
    _Failure,
    _hour,
    _int,
    _refused_rows,
    _RefusedRow,
    _text,
)
from notifier.report_formats import REPORT_CSV_COLUMNS, UNREACHABLE_CSV_COLUMNS
from notifier.volunteer import EXPOSURES, LOCALES, Volunteer


def owed(ledger: Ledger, campaign: Campaign | None, campaign_id: str) -> Owed:
    """The campaign's audience now (as `send` and `check` choose it: notifier.audience),
    and who of it the notice has not reached, and why. `campaign` is None for a campaign
    only the ledger knows (sent from a file elsewhere): its messages are its audience."""
    states = ledger.message_states(campaign_id)
    if campaign is None:
        audience: Iterable[Volunteer] = ledger.volunteers(VolunteerQuery(in_campaign=campaign_id))
    else:
        audience = select_audience(ledger, campaign, history_applies(ledger, campaign))
    size = sent = 0
    people = []
    for volunteer in audience:
        size += 1
        state = states.get(volunteer.volunteer_id)
        if state in REACHED_STATES:
            sent += 1
            continue
        people.append(
            OwedPerson(
                volunteer.volunteer_id,
                volunteer.display_name,
                volunteer.email,
                volunteer.locale,
                volunteer.exposure,
                state,
                OWED_REASONS.get(state, str(state)),
            )
        )
    return Owed(size, sent, tuple(people))


# --- the campaign report ----------------------------------------------------------------


def _happened(events: list[Event]) -> list[Event]:
    """Events without the ledger's own upkeep (rows adopted by `ledger upgrade`)."""
    return [e for e in events if e.kind not in BOOKKEEPING_KINDS]


def campaign_report(
    ledger: Ledger,
    campaign_id: str,
    *,
    templates_sha256: str | None = None,
    campaign_now: Campaign | None = None,
) -> CampaignReport:
    """Everything a regulator may ask about one campaign, from one snapshot of the ledger.

    `templates_sha256` is the hash of the templates as they are now, if the caller
    computed it; it is shown next to the hash recorded at registration. `campaign_now`:
    the campaign as it would be sent now, for its audience (who is still owed the
    notice); without it, the people it has messages for.
    """
    with ledger.snapshot() as digest:
        campaign = ledger.campaign(campaign_id)
        if campaign is None:
            raise CampaignError(
                f"no campaign {campaign_id!r} in the ledger",
                file=ledger.path,
                hint="list the registered campaigns with: notifier campaign list",
            )
        verification = ledger.verify()
        head = ledger.head()
        happened = _happened(ledger.campaign_events(campaign_id))
        messages = ledger.messages(campaign_id)
        people = {
            v.volunteer_id: v for v in ledger.volunteers(VolunteerQuery(in_campaign=campaign_id))
        }
        still_owed = owed(ledger, campaign_now, campaign_id)
        running = ledger.running()
        refused = rejected_rows(ledger)
    events = [e for e in happened if e.kind not in TEST_SEND_KINDS]
    recipients, mismatches = _recipients(messages, people, events)
    states = _ordered_states(r.state for r in recipients)
    return CampaignReport(
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
        counts=_count(recipients, states),
        counts_by_locale=_count_by(recipients, "locale", LOCALES, states),
        counts_by_exposure=_count_by(recipients, "exposure", EXPOSURES, states),
        timeline=_timeline(events),
        recipients=recipients,
        state_mismatches=mismatches,
        owed=still_owed,
        running=running,
        test_sends=tuple(_test_send(e) for e in happened if e.kind in TEST_SEND_KINDS),
        rejected_rows=tuple(refused),
    )


def _test_send(event: Event) -> TestSend:
    return TestSend(
        at=event.at,
        to=_text(event.data.get("to")),
        shown_as=_text(event.data.get("as")) or (event.volunteer_id or ""),
        accepted=event.kind == "test_sent",
        reply=_text(event.data.get("reply")),
    )


def _recipients(
    messages: Sequence[MessageRow],
    people: Mapping[str, Volunteer],
    events: Sequence[Event],
) -> tuple[tuple[RecipientOutcome, ...], tuple[str, ...]]:
    by_message: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.message_id is not None:
            by_message[event.message_id].append(event)
    outcomes = []
    mismatches = []
    for message in messages:
        outcome, backed = _outcome(
            message, people.get(message.volunteer_id), by_message.get(message.message_id, [])
        )
        if not backed:
            mismatches.append(message.message_id)
        outcomes.append(outcome)
    return tuple(outcomes), tuple(mismatches)


def _outcome(
    message: MessageRow, person: Volunteer | None, events: Sequence[Event]
) -> tuple[RecipientOutcome, bool]:
    """One recipient's outcome, and whether its stored state is backed by an event.

    `person` is None when the message's volunteer is not on the roster (removed by hand).
    """
    state = message.state
    attempts = message.attempts
    reply: str = message.smtp_reply
    queue_id: str = message.queue_id
    final_at = None
    first_attempt_at = None
    diagnostic = ""
    sending = 0
    for event in events:
        if state_after_event(event.kind, event.data) == state:
            final_at = event.at
        if event.kind in ATTEMPT_KINDS and first_attempt_at is None:
            first_attempt_at = event.at
        if event.kind == "sending":
            # A new attempt: an earlier attempt's reply or bounce says nothing about it,
            # and shown beside "sent" it would read as this message's fate.
            sending += 1
            reply, queue_id, diagnostic = "", "", ""
        attempts = max(attempts, _int(event.data.get("attempt")))
        if event.kind in REPLY_KINDS:
            reply = _text(event.data.get("reply")) or reply
            queue_id = _text(event.data.get("queue_id")) or queue_id
        if event.kind in BOUNCE_KINDS:
            diagnostic = _text(event.data.get("diagnostic")) or diagnostic
    # A pending message may have been inserted without an event; any other state was set
    # by an event of that kind, or by someone editing the table.
    backed = final_at is not None or state == "pending" or not events
    outcome = RecipientOutcome(
        volunteer_id=message.volunteer_id,
        name=person.display_name if person else "",
        email=person.email if person else "",
        locale=person.locale if person else "",
        exposure=person.exposure if person else "",
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
    return outcome, backed


def _ordered_states(states: Iterable[str]) -> tuple[str, ...]:
    present = set(states)
    known = [s for s in tuple(MessageState) if s in present]
    return (*known, *sorted(present - set(known)))


def _count(recipients: Iterable[RecipientOutcome], states: Sequence[str]) -> dict[str, int]:
    counter = Counter(r.state for r in recipients)
    return {state: counter[state] for state in states}


def _count_by(
    recipients: Sequence[RecipientOutcome],
    attribute: str,
    order: Sequence[str],
    states: Sequence[str],
) -> dict[str, dict[str, int]]:
    groups: dict[str, list[RecipientOutcome]] = defaultdict(list)
    for r in recipients:
        groups[getattr(r, attribute)].append(r)
    keys = [k for k in order if k in groups] + sorted(set(groups) - set(order))
    return {key: _count(groups[key], states) for key in keys}


def _timeline(events: Sequence[Event]) -> Timeline:
    buckets: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        buckets[_hour(event.at)][event.kind] += 1
    attempts = [e.at for e in events if e.kind in ATTEMPT_KINDS]
    return Timeline(
        first_send_at=min(attempts, default=None),
        last_send_at=max(attempts, default=None),
        hours=tuple(TimelineBucket(hour, dict(buckets[hour])) for hour in sorted(buckets)),
    )


# --- who no notice reached ----------------------------------------------------------------


def unreachable(ledger: Ledger) -> list[UnreachablePerson]:
    """Everyone no notice has reached, so they can be written to another way.

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
    """
    with ledger.reading():
        volunteers = list(ledger.volunteers())
        messages = ledger.messages()
        events = list(ledger.events(kinds=(*REASON_BY_KIND, *REACHED_KINDS)))
        suppressions = ledger.suppressions()
        imports = list(ledger.events(kinds=("roster_imported", "row_rejected")))
    people = _unreachable_volunteers(volunteers, messages, events, suppressions)
    people.extend(_rejected_at_import(imports, volunteers))
    return people


def _unreachable_volunteers(
    volunteers: Sequence[Volunteer],
    messages: Sequence[MessageRow],
    events: Sequence[Event],
    suppressions: Sequence[Suppression],
) -> list[UnreachablePerson]:
    owner = {m.message_id: (m.volunteer_id, m.campaign_id) for m in messages}
    state = {m.message_id: m.state for m in messages}
    failures: dict[str, list[_Failure]] = defaultdict(list)
    first_reach: dict[str, tuple[str, int]] = {}  # message -> (volunteer, seq)
    for event in events:
        if event.message_id is None:
            continue
        volunteer_id, campaign_id = owner.get(
            event.message_id, (event.volunteer_id, event.campaign_id)
        )
        if volunteer_id is None:
            continue
        if event.kind in REACHED_KINDS:
            first_reach.setdefault(event.message_id, (volunteer_id, event.seq))
            continue
        if event.kind in OPEN_KINDS and state.get(event.message_id) != event.kind:
            continue  # settled since: retried, delivered, or a worse report
        failures[volunteer_id].append(
            _Failure(
                event.seq,
                REASON_BY_KIND[event.kind],
                _failure_detail(event.data),
                event.campaign_id or campaign_id,
                event.at,
            )
        )
    last_reach: dict[str, int] = defaultdict(int)  # volunteer -> seq
    for volunteer_id, seq in first_reach.values():
        last_reach[volunteer_id] = max(last_reach[volunteer_id], seq)
    suppressed = _suppressions_by_volunteer(volunteers, suppressions)
    people = []
    for volunteer in volunteers:
        vid = volunteer.volunteer_id
        reached_at = last_reach.get(vid, 0)
        open_failures = [f for f in failures.get(vid, []) if f.seq > reached_at]
        if not open_failures:
            # Listed for its suppression only when no event explains it better.
            open_failures = [f for f in suppressed.get(vid, []) if f.seq > reached_at]
        if not open_failures:
            continue
        latest = max(open_failures, key=lambda f: f.seq)
        people.append(
            UnreachablePerson(
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
        )
    return people


def _failure_detail(data: Mapping[str, Any]) -> str:
    for key in ("diagnostic", "reply", "reason"):
        value = data.get(key)
        if value:
            return str(value)
    return ""


def _suppressions_by_volunteer(
    volunteers: Iterable[Volunteer], suppressions: Iterable[Suppression]
) -> dict[str, list[_Failure]]:
    """Suppressed addresses that belong to someone on the roster (either form of it).

    A suppression of an address no volunteer has any more (they gave a new one) is about
    no one on the roster, so it is left out.
    """
    by_key: dict[str, list[Suppression]] = defaultdict(list)
    for suppression in suppressions:
        by_key[suppression.key].append(suppression)
    found: dict[str, list[_Failure]] = defaultdict(list)
    for volunteer in volunteers:
        keys = {address_key(volunteer.email), address_key(volunteer.email_ascii)}
        for key in keys:
            for s in by_key.get(key, []):
                seq = float(s.event_seq) if s.event_seq is not None else float("inf")
                found[volunteer.volunteer_id].append(
                    _Failure(seq, REASON_SUPPRESSED, s.reason or "address suppressed", None, s.at)
                )
    return found


def _roster_finder(volunteers: Iterable[Volunteer]) -> Callable[[_RefusedRow], str | None]:
    """Who on the roster a refused row is about: by the row's volunteer id, else (an empty
    id cell) by its address; None when nobody is."""
    ids: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for v in volunteers:
        ids[v.volunteer_id.casefold()] = v.volunteer_id
        for address in (v.email, v.email_ascii):
            if address:
                addresses.setdefault(address.casefold(), v.volunteer_id)

    def find(row: _RefusedRow) -> str | None:
        if row.volunteer_id:
            return ids.get(row.volunteer_id.casefold())
        return addresses.get(row.email.casefold()) if row.email else None

    return find


def rejected_rows(ledger: Ledger) -> list[RejectedRow]:
    """Every row refused at any import of the roster, and for each whether the person is
    on the roster now (a later import, or another row, brought them in)."""
    with ledger.reading():
        volunteers = list(ledger.volunteers())
        imports = list(ledger.events(kinds=("roster_imported", "row_rejected")))
    on_roster = _roster_finder(volunteers)
    return [
        RejectedRow(
            import_file=row.file_name,
            imported_at=row.imported_at,
            row=row.row,
            volunteer_id=row.volunteer_id,
            name=row.name,
            email=row.email,
            reason=row.detail,
            on_roster_as=on_roster(row),
        )
        for row in _refused_rows(imports)
    ]


def _rejected_at_import(
    events: Sequence[Event], volunteers: Iterable[Volunteer]
) -> list[UnreachablePerson]:
    """The people whose rows were refused at an import and who are not on the roster."""
    on_roster = _roster_finder(volunteers)
    latest: dict[str, UnreachablePerson] = {}  # one entry per person, the latest import's
    for row in _refused_rows(events):
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


# --- the renderers of that time --------------------------------------------------------


def report_as_dict(report: CampaignReport) -> dict[str, Any]:
    return {
        "campaign": report.campaign_id,
        "title": report.title,
        "follows": report.follows,
        "registered_at": report.registered_at,
        "generated_at": report.generated_at,
        "ledger": {"file": report.ledger_file, **asdict(report.ledger)},
        "ledger_head": report.ledger_head,
        "verification": asdict(report.verification),
        "templates_sha256": {
            "recorded": report.templates.recorded,
            "current": report.templates.current,
            "matches": report.templates.matches,
        },
        "total": report.total,
        "counts": dict(report.counts),
        "counts_by_locale": {k: dict(v) for k, v in report.counts_by_locale.items()},
        "counts_by_exposure": {k: dict(v) for k, v in report.counts_by_exposure.items()},
        "timeline": {
            "first_send_at": report.timeline.first_send_at,
            "last_send_at": report.timeline.last_send_at,
            "hours": [{"hour": b.hour, "counts": dict(b.counts)} for b in report.timeline.hours],
        },
        "recipients": [asdict(r) for r in report.recipients],
        "state_mismatches": list(report.state_mismatches),
        # Who the campaign is for now, and who of them is still owed its notice (and why).
        "audience": report.owed.audience if report.owed else None,
        "sent": report.owed.sent if report.owed else None,
        "owed": report.owed.count if report.owed else None,
        "owed_reasons": report.owed.reasons if report.owed else {},
        "owed_people": [asdict(p) for p in report.owed.people] if report.owed else [],
        # A send (or an import) that held the ledger as the report was made.
        "running": asdict(report.running) if report.running else None,
        # Test messages (to the sender): in no count or timeline above.
        "test_sends": [asdict(t) for t in report.test_sends],
        # Every roster row refused at an import, and whether that person is on the roster now.
        "rejected_rows": [{**asdict(row), "fixed": row.fixed} for row in report.rejected_rows],
    }


def report_as_json(report: CampaignReport) -> str:
    return json_text(report_as_dict(report)) + "\n"


def report_as_csv(report: CampaignReport) -> str:
    # Every row carries the ledger's head (SEQ:HASH), so a copy of the sheet is an anchor.
    return csv_text(
        (*REPORT_CSV_COLUMNS, "ledger_head"),
        (
            [*(getattr(r, column) for column in REPORT_CSV_COLUMNS), report.ledger_head]
            for r in report.recipients
        ),
    )


def unreachable_as_dicts(people: Iterable[UnreachablePerson]) -> list[dict[str, Any]]:
    return [
        {
            **{k: v for k, v in asdict(p).items() if k != "campaign_id"},
            "campaign": p.campaign_id,
        }
        for p in people
    ]


def unreachable_as_json(people: Iterable[UnreachablePerson]) -> str:
    return json_text(unreachable_as_dicts(people)) + "\n"


def unreachable_as_csv(people: Iterable[UnreachablePerson]) -> str:
    records = unreachable_as_dicts(people)
    return csv_text(
        UNREACHABLE_CSV_COLUMNS,
        ([r[column] for column in UNREACHABLE_CSV_COLUMNS] for r in records),
    )
