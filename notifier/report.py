"""Proof of notification: who was told what, when, and what happened to each message.

Everything here reads the ledger and returns frozen dataclasses; the renderers at the end
turn a `CampaignReport` into JSON, CSV or one self-contained HTML file for a regulator.

Where the facts come from. A recipient's state is the `messages.state` column, the same
one `notifier status` shows; its times, replies and diagnostics come from the hash-chained
events, which `Ledger.verify()` vouches for. The state column itself is not covered by the
chain, so each state is checked against the events: the state must be the kind of one of
the message's events (each event that moves a message names the state it moves it to;
`queued` means `pending`). A message whose state no event backs is listed in
`CampaignReport.state_mismatches`: a sign that the messages table was edited by hand.

The ledger's sha256. SQLite in WAL mode keeps recent writes in the `-wal` file next to the
ledger, so the ledger file alone may not hold everything. Before hashing we checkpoint
(`PRAGMA wal_checkpoint(TRUNCATE)`, which copies the WAL into the file and empties it),
then open a read transaction and check that the WAL is still empty. While that read
transaction is open no checkpoint can change the file, so the sha256 is of exactly the
bytes the report was computed from, and equals `sha256sum` of the file afterwards as long
as nothing writes to it. If a send keeps writing, we retry a few times and otherwise say
in `LedgerDigest.note` that the hash covers the file without the writes still in its WAL.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from notifier.errors import CampaignError, VolunteerNotFound
from notifier.ledger import EVENT_COLUMNS, Event, Ledger, VerifyResult
from notifier.message import MessageState
from notifier.volunteer import EXPOSURES, LOCALES, display_name

NOT_RECORDED = "not recorded"

# Event kinds that are an attempt to hand the message to a server.
ATTEMPT_KINDS: frozenset[str] = frozenset(
    {"sending", "sent", "deferred", "failed_temporary", "failed_permanent", "uncertain"}
)
# Event kinds whose data carries the server's reply at the end of DATA (or its refusal).
REPLY_KINDS: frozenset[str] = frozenset(
    {"sent", "deferred", "failed_temporary", "failed_permanent", "uncertain"}
)
# Event kinds whose data carries a delivery status notification's diagnostic.
BOUNCE_KINDS: frozenset[str] = frozenset({"bounced_hard", "bounced_soft"})
# Event kinds that count as "the notice reached the person" (unless a hard bounce of the
# same message follows).
REACHED_KINDS: frozenset[str] = frozenset({"sent", "delivered"})

# Why someone is on the unreachable list; the event kind that puts them there.
REASON_BY_KIND: Mapping[str, str] = {
    "bounced_hard": "hard_bounce",
    "failed_permanent": "failed_permanent",
    "failed_temporary": "failed_temporary",
    "suppressed": "suppressed",
}
REASON_REJECTED = "rejected_at_import"
REASON_SUPPRESSED = "suppressed"

REPORT_CSV_COLUMNS: tuple[str, ...] = (
    "volunteer_id",
    "email",
    "locale",
    "exposure",
    "state",
    "first_attempt_at",
    "final_at",
    "attempts",
    "smtp_reply",
    "queue_id",
    "diagnostic",
)
UNREACHABLE_CSV_COLUMNS: tuple[str, ...] = (
    "volunteer_id",
    "name",
    "email",
    "locale",
    "exposure",
    "postal_address",
    "reason",
    "detail",
    "campaign",
    "at",
    "import_file",
    "import_row",
)

_SNAPSHOT_TRIES = 3
_CHECKPOINT_BUSY_MS = 2000


def state_of_event(kind: str) -> str | None:
    """The message state an event of this kind moves its message to, if any."""
    if kind == "queued":
        return "pending"
    return kind if kind in tuple(MessageState) else None


# --- data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerDigest:
    """The sha256 of the ledger file, and whether it covers every committed write."""

    sha256: str
    complete: bool
    note: str = ""


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
    recipients: tuple[RecipientOutcome, ...]
    state_mismatches: tuple[str, ...]  # message ids whose state no event backs

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
    try:
        volunteer_id = ledger.get_volunteer(volunteer_id_or_email).volunteer_id
    except VolunteerNotFound:
        # Someone can have events without a roster row (their row was removed by hand,
        # or only a rejection was recorded); their history is still worth showing.
        volunteer_id = volunteer_id_or_email.strip()
        if (
            ledger.conn.execute(
                "SELECT 1 FROM events WHERE volunteer_id = ? LIMIT 1", (volunteer_id,)
            ).fetchone()
            is None
        ):
            raise
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE volunteer_id = ? OR message_id IN "  # noqa: S608
        "(SELECT message_id FROM messages WHERE volunteer_id = ?) ORDER BY seq"
    )
    return list(_events_from(ledger.conn.execute(sql, (volunteer_id, volunteer_id))))


def _events_from(rows: Iterable[Sequence[Any]]) -> Iterator[Event]:
    for row in rows:
        yield Event(
            row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7], row[8]
        )


# --- the ledger snapshot ----------------------------------------------------------------


@contextlib.contextmanager
def read_snapshot(ledger: Ledger) -> Iterator[LedgerDigest]:
    """A read transaction over a checkpointed ledger, and the sha256 of its file.

    Everything read inside the `with` block sees the same state as the hashed bytes.
    """
    if ledger.conn.in_transaction:
        # The caller holds a transaction: we cannot checkpoint, so hash what is there.
        yield _digest(ledger, complete=_wal_is_empty(ledger.path))
        return
    for attempt in range(1, _SNAPSHOT_TRIES + 1):
        _checkpoint(ledger)
        ledger.conn.execute("BEGIN")
        try:
            # The first read starts the snapshot. If the WAL is empty now, the snapshot is
            # the file itself, and no checkpoint can change the file until we end.
            ledger.conn.execute("SELECT count(*) FROM meta").fetchone()
            complete = _wal_is_empty(ledger.path)
            if complete or attempt == _SNAPSHOT_TRIES:
                yield _digest(ledger, complete=complete)
                return
        finally:
            ledger.conn.execute("ROLLBACK")  # we only read


def _checkpoint(ledger: Ledger) -> None:
    """Copy the WAL into the ledger file, waiting only briefly for a writer to pause."""
    conn = ledger.conn
    previous = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute(f"PRAGMA busy_timeout={_CHECKPOINT_BUSY_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError:
        pass  # busy: the caller sees a non-empty WAL and says so
    finally:
        conn.execute(f"PRAGMA busy_timeout={previous}")


def _wal_is_empty(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def _digest(ledger: Ledger, *, complete: bool) -> LedgerDigest:
    sha = hashlib.sha256()
    with ledger.path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    note = (
        ""
        if complete
        else "the ledger was being written while this report was made: the sha256 covers "
        "the ledger file without the writes still in its -wal file; make the report again "
        "when no send or bounce ingest is running"
    )
    return LedgerDigest(sha.hexdigest(), complete, note)


def ledger_sha256(ledger: Ledger) -> LedgerDigest:
    """The sha256 of the ledger file after a checkpoint (see the module docstring)."""
    with read_snapshot(ledger) as digest:
        return digest


# --- the campaign report ----------------------------------------------------------------


def campaign_report(
    ledger: Ledger, campaign_id: str, *, templates_sha256: str | None = None
) -> CampaignReport:
    """Everything a regulator may ask about one campaign, from one snapshot of the ledger.

    `templates_sha256` is the hash of the templates as they are now, if the caller
    computed it; it is shown next to the hash recorded at registration.
    """
    with read_snapshot(ledger) as digest:
        campaign = ledger.conn.execute(
            "SELECT campaign_id, title, follows, templates_sha256, registered_at "
            "FROM campaigns WHERE campaign_id = ?",
            (campaign_id,),
        ).fetchone()
        if campaign is None:
            raise CampaignError(
                f"no campaign {campaign_id!r} in the ledger",
                file=ledger.path,
                hint="list the registered campaigns with: notifier campaign list",
            )
        verification = ledger.verify()
        events = list(_campaign_events(ledger, campaign_id))
        recipients, mismatches = _recipients(ledger, campaign_id, events)
    states = _ordered_states(r.state for r in recipients)
    return CampaignReport(
        campaign_id=campaign[0],
        title=campaign[1] or "",
        follows=campaign[2],
        registered_at=campaign[4],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ledger_file=ledger.path.name,
        ledger=digest,
        verification=verification,
        templates=TemplatesDigest(campaign[3] or None, templates_sha256),
        counts=_count(recipients, states),
        counts_by_locale=_count_by(recipients, "locale", LOCALES, states),
        counts_by_exposure=_count_by(recipients, "exposure", EXPOSURES, states),
        timeline=_timeline(events),
        recipients=recipients,
        state_mismatches=mismatches,
    )


def _campaign_events(ledger: Ledger, campaign_id: str) -> Iterator[Event]:
    """The campaign's events, including those that name only one of its messages."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE campaign_id = ? OR message_id IN "  # noqa: S608
        "(SELECT message_id FROM messages WHERE campaign_id = ?) ORDER BY seq"
    )
    return _events_from(ledger.conn.execute(sql, (campaign_id, campaign_id)))


def _recipients(
    ledger: Ledger, campaign_id: str, events: Sequence[Event]
) -> tuple[tuple[RecipientOutcome, ...], tuple[str, ...]]:
    by_message: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.message_id is not None:
            by_message[event.message_id].append(event)
    rows = ledger.conn.execute(
        "SELECT m.message_id, m.volunteer_id, m.state, m.attempts, m.smtp_reply, m.queue_id,"
        " m.updated_at, v.email, v.family_name, v.given_name, v.locale, v.exposure"
        " FROM messages m LEFT JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
        " WHERE m.campaign_id = ? ORDER BY m.volunteer_id",
        (campaign_id,),
    ).fetchall()
    outcomes = []
    mismatches = []
    for row in rows:
        outcome, backed = _outcome(row, by_message.get(row[0], []))
        if not backed:
            mismatches.append(row[0])
        outcomes.append(outcome)
    return tuple(outcomes), tuple(mismatches)


def _outcome(row: Sequence[Any], events: Sequence[Event]) -> tuple[RecipientOutcome, bool]:
    """One recipient's outcome, and whether its stored state is backed by an event."""
    (message_id, volunteer_id, state, attempts, reply, queue_id, updated_at) = row[:7]
    email, family, given, locale, exposure = row[7:]
    final_at = None
    first_attempt_at = None
    diagnostic = ""
    sending = 0
    for event in events:
        if state_of_event(event.kind) == state:
            final_at = event.at
        if event.kind in ATTEMPT_KINDS and first_attempt_at is None:
            first_attempt_at = event.at
        sending += event.kind == "sending"
        attempts = max(attempts or 0, _int(event.data.get("attempt")))
        if event.kind in REPLY_KINDS:
            reply = _text(event.data.get("reply")) or reply
            queue_id = _text(event.data.get("queue_id")) or queue_id
        if event.kind in BOUNCE_KINDS:
            diagnostic = _text(event.data.get("diagnostic")) or diagnostic
    # A pending message may have been inserted without an event; any other state was set
    # by an event of that kind, or by someone editing the table.
    backed = final_at is not None or state == "pending" or not events
    outcome = RecipientOutcome(
        volunteer_id=volunteer_id,
        name=display_name(family or "", given or "", locale or ""),
        email=email or "",
        locale=locale or "",
        exposure=exposure or "",
        message_id=message_id,
        state=state,
        first_attempt_at=first_attempt_at,
        final_at=final_at or updated_at,
        # The sender's counter, the attempt numbers in its events, or the number of
        # times it went out: whichever is largest, so no attempt goes uncounted.
        attempts=max(attempts or 0, sending),
        smtp_reply=reply or "",
        queue_id=queue_id or "",
        diagnostic=diagnostic,
    )
    return outcome, backed


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str:
    return "" if value is None else str(value)


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
    """Everyone no notice reached, so they can be sent a letter instead.

    The rule, person by person, over all campaigns:
    - A failure is a hard bounce, a permanent failure, a temporary failure that ran out of
      retries, a message skipped because the address is suppressed, or the address being
      on the suppression list.
    - A message reached the person at its first `sent` or `delivered` event (a delivery
      report confirms an earlier hand-over; it does not make it later). A hard bounce of
      that message is itself a failure that comes after, so it is never cleared by the
      message it bounced.
    - A person is unreachable when some failure is not followed (in chain order) by a
      message that reached them. Each is listed once, with the latest such failure.
    - Rows rejected at import because of their address (latest import only) are listed
      too, unless the same address is on the roster through another row: they never
      became volunteers, and the ledger keeps only the refused cell of a rejected row,
      so the address as written, the row number and the reasons are all that is known.
      The address column is recognised by its header ("email", any case or width); a
      roster imported with a --mapping that renamed it is not recognised.
    People whose outcome is open (pending, deferred, uncertain, soft-bounced) are not
    listed: `notifier status` shows them.
    """
    with _read_transaction(ledger):
        people = _unreachable_volunteers(ledger)
        people.extend(_rejected_at_import(ledger))
    return people


@contextlib.contextmanager
def _read_transaction(ledger: Ledger) -> Iterator[None]:
    """Several queries over one consistent state of the ledger."""
    if ledger.conn.in_transaction:
        yield
        return
    ledger.conn.execute("BEGIN")
    try:
        yield
    finally:
        ledger.conn.execute("ROLLBACK")  # we only read


def _unreachable_volunteers(ledger: Ledger) -> list[UnreachablePerson]:
    owner = {
        row[0]: (row[1], row[2])
        for row in ledger.conn.execute("SELECT message_id, volunteer_id, campaign_id FROM messages")
    }
    failures: dict[str, list[_Failure]] = defaultdict(list)
    first_reach: dict[str, tuple[str, int]] = {}  # message -> (volunteer, seq)
    for event in ledger.events(kinds=(*REASON_BY_KIND, *REACHED_KINDS)):
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
    suppressed = _suppressions_by_volunteer(ledger)
    people = []
    for volunteer in ledger.volunteers():
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


def _suppressions_by_volunteer(ledger: Ledger) -> dict[str, list[_Failure]]:
    """Suppressed addresses that belong to someone on the roster.

    A suppression of an address no volunteer has any more (they gave a new one) is about
    no one on the roster, so it is left out.
    """
    rows = ledger.conn.execute(
        "SELECT v.volunteer_id, s.reason, s.at, s.event_seq FROM suppressions s"
        " JOIN volunteers v ON lower(v.email) = lower(s.email)"
        " OR lower(v.email_ascii) = lower(s.email)"
    ).fetchall()
    found: dict[str, list[_Failure]] = defaultdict(list)
    for volunteer_id, reason, at, event_seq in rows:
        seq = float(event_seq) if event_seq is not None else float("inf")
        found[volunteer_id].append(
            _Failure(seq, REASON_SUPPRESSED, reason or "address suppressed", None, at or "")
        )
    return found


def _rejected_at_import(ledger: Ledger) -> list[UnreachablePerson]:
    latest = ledger.conn.execute(
        "SELECT id, file_name, imported_at FROM imports ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if latest is None:
        return []
    import_id, file_name, imported_at = latest
    rows = ledger.conn.execute(
        'SELECT "row", "column", value, reason, field FROM rejected_rows WHERE import_id = ?'
        ' ORDER BY "row", id',
        (import_id,),
    ).fetchall()
    reasons: dict[int, list[str]] = defaultdict(list)
    addresses: dict[int, str] = {}
    for row_number, column, value, reason, field in rows:
        reasons[row_number].append(f"{column}: {reason}" if column else str(reason))
        if field == "email" and row_number not in addresses:
            addresses[row_number] = value or ""
    known = {
        str(r[0]).casefold()
        for r in ledger.conn.execute(
            "SELECT email FROM volunteers UNION SELECT email_ascii FROM volunteers"
        )
        if r[0]
    }
    people = []
    for row_number, address in addresses.items():
        if address.strip().casefold() in known:
            continue  # e.g. a duplicate row: the person is on the roster through another
        people.append(
            UnreachablePerson(
                volunteer_id=None,
                name="",
                email=address,
                locale="",
                exposure="",
                postal_address="",
                reason=REASON_REJECTED,
                detail="; ".join(reasons[row_number]),
                campaign_id=None,
                at=imported_at or "",
                import_file=file_name,
                import_row=row_number,
            )
        )
    return people


# --- renderers ----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def report_as_dict(report: CampaignReport) -> dict[str, Any]:
    return {
        "campaign": report.campaign_id,
        "title": report.title,
        "follows": report.follows,
        "registered_at": report.registered_at,
        "generated_at": report.generated_at,
        "ledger": {"file": report.ledger_file, **asdict(report.ledger)},
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
    }


def report_as_json(report: CampaignReport) -> str:
    return json.dumps(report_as_dict(report), ensure_ascii=False, indent=2) + "\n"


def report_as_csv(report: CampaignReport) -> str:
    return _csv(
        REPORT_CSV_COLUMNS,
        ([getattr(r, column) for column in REPORT_CSV_COLUMNS] for r in report.recipients),
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
    return json.dumps(unreachable_as_dicts(people), ensure_ascii=False, indent=2) + "\n"


def unreachable_as_csv(people: Iterable[UnreachablePerson]) -> str:
    records = unreachable_as_dicts(people)
    return _csv(
        UNREACHABLE_CSV_COLUMNS,
        ([r[column] for column in UNREACHABLE_CSV_COLUMNS] for r in records),
    )


def history_as_dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [asdict(e) for e in events]


_HTML_ENV = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)

# One self-contained file: inline CSS, no scripts, no external resources, no links, so
# it can be attached to a regulator's file and read the same way in ten years.
_HTML_TEMPLATE = _HTML_ENV.from_string(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Notification report: {{ r.campaign_id }}</title>
<style>
body { font-family: Georgia, "Times New Roman", serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 0.85em; word-break: break-all; }
.ok { color: #0a5d00; font-weight: bold; }
.bad { color: #a00000; font-weight: bold; }
@media print { body { margin: 0; } h2 { page-break-after: avoid; } tr { page-break-inside: avoid; } }
</style>
</head>
<body>
<h1>Notification report: {{ r.campaign_id }}</h1>
<p>{{ r.title }}</p>
<table>
<tr><th>Campaign</th><td>{{ r.campaign_id }}</td></tr>
{% if r.follows %}<tr><th>Follows up</th><td>{{ r.follows }}</td></tr>{% endif %}
<tr><th>Registered at (UTC)</th><td>{{ r.registered_at or "not recorded" }}</td></tr>
<tr><th>Report generated at (UTC)</th><td>{{ r.generated_at }}</td></tr>
<tr><th>Recipients</th><td class="n">{{ r.total }}</td></tr>
<tr><th>First send attempt</th><td>{{ r.timeline.first_send_at or "none" }}</td></tr>
<tr><th>Last send attempt</th><td>{{ r.timeline.last_send_at or "none" }}</td></tr>
</table>

<h2>Integrity of the record</h2>
<table>
<tr><th>Ledger verification</th><td>
{% if r.verification.ok %}
<span class="ok">PASSED</span>: {{ r.verification.events }} events, hash chain intact
{% else %}
<span class="bad">FAILED</span>: {{ r.verification.reason }}
(first bad event: {{ r.verification.first_bad_seq }}; {{ r.verification.events }} events before it are intact)
{% endif %}
</td></tr>
<tr><th>Head hash (last intact event)</th><td><code>{{ r.verification.head }}</code></td></tr>
<tr><th>Ledger file</th><td>{{ r.ledger_file }}</td></tr>
<tr><th>SHA-256 of the ledger file</th><td><code>{{ r.ledger.sha256 }}</code>
{% if r.ledger.note %}<br>{{ r.ledger.note }}{% endif %}</td></tr>
<tr><th>SHA-256 of the templates used</th><td><code>{{ r.templates.recorded or not_recorded }}</code>
{% if r.templates.current %}<br>templates now: <code>{{ r.templates.current }}</code>
{% if r.templates.matches %}(unchanged){% elif r.templates.matches is not none %}<span class="bad">(changed since the campaign was registered)</span>{% endif %}
{% endif %}</td></tr>
{% if r.state_mismatches %}
<tr><th>Message table</th><td><span class="bad">{{ r.state_mismatches|length }} message(s)</span>
have a stored state that differs from their recorded events; the states below come from the events:
{% for m in r.state_mismatches %}<code>{{ m }}</code>{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endif %}
</table>
<p>How to check this later: every event in the ledger carries the hash of the one before
it, so <code>notifier ledger verify</code> on this ledger file finds any event edited,
deleted, inserted or reordered since, and ends at the head hash above. The ledger file's
SHA-256 (e.g. <code>sha256sum {{ r.ledger_file }}</code>) equals the value above for as long
as nothing has been written to the ledger since this report was made.</p>

<h2>Outcome by state</h2>
<table>
<tr><th>State</th><th>Recipients</th></tr>
{% for state, n in r.counts.items() %}
<tr><td>{{ state }}</td><td class="n">{{ n }}</td></tr>
{% endfor %}
<tr><th>Total</th><th class="n">{{ r.total }}</th></tr>
</table>
{% for title, groups in (("By language", r.counts_by_locale), ("By exposure", r.counts_by_exposure)) %}

<h2>{{ title }}</h2>
<table>
<tr><th></th>{% for state in r.states %}<th>{{ state }}</th>{% endfor %}<th>total</th></tr>
{% for key, counts in groups.items() %}
<tr><th>{{ key }}</th>{% for state in r.states %}<td class="n">{{ counts[state] }}</td>{% endfor %}<td class="n">{{ counts.values()|sum }}</td></tr>
{% endfor %}
</table>
{% endfor %}

<h2>Timeline (events per hour, UTC)</h2>
<table>
<tr><th>Hour</th>{% for kind in kinds %}<th>{{ kind }}</th>{% endfor %}</tr>
{% for bucket in r.timeline.hours %}
<tr><td>{{ bucket.hour }}</td>{% for kind in kinds %}<td class="n">{{ bucket.counts.get(kind, 0) }}</td>{% endfor %}</tr>
{% endfor %}
</table>

<h2>Recipients</h2>
<table>
<tr><th>Volunteer</th><th>Name</th><th>Address</th><th>Language</th><th>Exposure</th><th>State</th><th>First attempt (UTC)</th><th>Final state at (UTC)</th><th>Attempts</th><th>Server reply</th><th>Queue id</th><th>Bounce diagnostic</th></tr>
{% for p in r.recipients %}
<tr><td>{{ p.volunteer_id }}</td><td>{{ p.name }}</td><td>{{ p.email }}</td><td>{{ p.locale }}</td><td>{{ p.exposure }}</td><td>{{ p.state }}</td><td>{{ p.first_attempt_at or "" }}</td><td>{{ p.final_at or "" }}</td><td class="n">{{ p.attempts }}</td><td>{{ p.smtp_reply }}</td><td>{{ p.queue_id }}</td><td>{{ p.diagnostic }}</td></tr>
{% endfor %}
</table>
<p>Times are UTC. States and times are taken from the ledger's hash-chained events.</p>
</body>
</html>
"""  # noqa: E501 (HTML rows read better unbroken)
)


# The order of the timeline's columns: the order things happen in.
_KIND_ORDER: tuple[str, ...] = (
    "campaign_registered",
    "queued",
    "resend_requested",
    *tuple(MessageState),
    "address_suppressed",
)


def timeline_kinds(timeline: Timeline) -> list[str]:
    """The event kinds in a timeline, in lifecycle order, unknown ones last."""
    present = {kind for bucket in timeline.hours for kind in bucket.counts}
    return [k for k in _KIND_ORDER if k in present] + sorted(present - set(_KIND_ORDER))


def report_as_html(report: CampaignReport) -> str:
    kinds = timeline_kinds(report.timeline)
    return _HTML_TEMPLATE.render(r=report, kinds=kinds, not_recorded=NOT_RECORDED)
