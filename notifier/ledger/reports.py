"""The reads a campaign report and the unreachable list are made of, in bounded memory.

A report of a million-person campaign must not hold a million messages or events: the
figures (counts by state, locale and exposure; events per hour; the messages whose
stored state no event backs) are aggregate queries the database answers, and the
per-person rows come a chunk of people at a time, each with their events, in the order
the report lists them. Every generator here reads inside the caller's read transaction
(`Ledger.snapshot()` / `reading()`): use them before it ends.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from notifier.ledger.chain import EVENT_COLUMNS, Event
from notifier.ledger.events import _read, event_from_row
from notifier.ledger.schema import MESSAGE_ONLY
from notifier.ledger.volunteers import volunteer_from_row
from notifier.volunteer import TEXT_FIELDS, Volunteer, display_name

# People (or messages) read per query: a bounded working set, and few round trips.
CHUNK = 1000


def _marks(values: Collection[object]) -> str:
    return ", ".join("?" for _ in values)


def state_counts_by_group(conn: sqlite3.Connection, campaign_id: str) -> Iterator[sqlite3.Row]:
    """(locale, exposure, state, n) of the campaign's messages; locale and exposure ""
    for a message whose volunteer is not on the roster."""
    return iter(
        conn.execute(
            "SELECT coalesce(v.locale, '') AS locale, coalesce(v.exposure, '') AS exposure,"
            " m.state AS state, count(*) AS n FROM messages m"
            " LEFT JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
            " WHERE m.campaign_id = ? GROUP BY 1, 2, 3",
            (campaign_id,),
        )
    )


def events_per_hour(
    conn: sqlite3.Connection, campaign_id: str, leave_out: Collection[str]
) -> Iterator[sqlite3.Row]:
    """(hour, kind, n, first, last) of the campaign's events but the `leave_out` kinds:
    the hour in UTC as "2020-04-01T10:00Z" (an event time without a zone is UTC), the
    first and last event time of that kind in that hour; the kinds of an hour in the
    order they first happened in it."""
    # The campaign's events: those naming it (through the (campaign, kind) index), and
    # those naming no campaign but one of its messages (a delivery report matched by its
    # Message-ID; through the same index, at campaign NULL). notifier names a message's
    # own campaign whenever it names one: an event naming another campaign's message
    # could only be written with the chain's key.
    leave = f"kind NOT IN ({_marks(leave_out)})"
    sql = (
        "SELECT strftime('%Y-%m-%dT%H:00Z', at) AS hour, kind, count(*) AS n,"  # noqa: S608
        " min(at) AS first, max(at) AS last FROM ("
        f" SELECT seq, at, kind FROM events WHERE campaign_id = ? AND {leave}"
        " UNION ALL SELECT e.seq, e.at, e.kind FROM events e"
        " JOIN messages m ON m.message_id = e.message_id"
        f" WHERE e.campaign_id IS NULL AND m.campaign_id = ? AND e.{leave}"
        ") GROUP BY 1, 2 ORDER BY 1, min(seq)"
    )
    return iter(conn.execute(sql, (campaign_id, *leave_out, campaign_id, *leave_out)))


def campaign_events_of_kinds(
    conn: sqlite3.Connection, campaign_id: str, kinds: Collection[str]
) -> Iterator[Event]:
    """The campaign's events of these kinds (through the (campaign, kind) index), in chain
    order: the few that name the campaign only, such as test sends."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE campaign_id = ?"  # noqa: S608
        f" AND kind IN ({_marks(kinds)}) ORDER BY seq"
    )
    return _read(conn, sql, (campaign_id, *kinds))


def unbacked_messages(
    conn: sqlite3.Connection,
    campaign_id: str,
    state_of_kind: Mapping[str, str],
    leave_out: Collection[str],
) -> list[str]:
    """Message ids of the campaign whose stored state no event of theirs backs, in the
    report's order (by volunteer): a message not `pending` that has events (but the
    `leave_out` kinds), none of which puts it in its state. An event puts a message in
    the state its kind names (`state_of_kind`), else the state its data's `moved_to`
    names (notifier.event.state_after_event)."""
    cases = " ".join("WHEN ? THEN ?" for _ in state_of_kind)
    named = [value for pair in state_of_kind.items() for value in pair]
    moved = f"CASE e.kind {cases} ELSE json_extract(e.data, '$.moved_to') END"
    leave = f"e.kind NOT IN ({_marks(leave_out)})"
    # The message's events: through the index by volunteer, or naming the message only.
    mine = (
        "e.message_id = m.message_id AND (e.volunteer_id = m.volunteer_id"
        " OR (e.volunteer_id IS NULL AND e.message_id IS NOT NULL))"
    )
    sql = (
        "SELECT m.message_id FROM messages m WHERE m.campaign_id = ? AND m.state != 'pending'"  # noqa: S608
        f" AND EXISTS (SELECT 1 FROM events e WHERE {mine} AND {leave})"
        f" AND NOT EXISTS (SELECT 1 FROM events e WHERE {mine}"
        f" AND {leave} AND {moved} = m.state)"
        " ORDER BY m.volunteer_id"
    )
    params = [campaign_id, *leave_out, *leave_out, *named]
    return [str(row["message_id"]) for row in conn.execute(sql, params)]


# One of a message's events as a report reads it: kind, time, and its data as stored
# (canonical JSON), decoded only by whoever needs a field of it (a million messages have
# three million events, and most of their data is never looked at).
EventStep = tuple[str, str, str]


class MessageWithEvents(NamedTuple):
    """A campaign's message as a report lists it: the message's row, who it is to as the
    roster has them now, and its events. A tuple of plain values, not a MessageRow and a
    Volunteer: a million are read for a report, and only these fields are shown."""

    message_id: str
    volunteer_id: str
    state: str
    attempts: int
    smtp_reply: str
    queue_id: str
    updated_at: str | None
    on_roster: bool  # False: the message's volunteer is not on the roster (removed by hand)
    name: str  # as the person's locale writes it ("" when not on the roster)
    email: str
    locale: str
    exposure: str
    events: tuple[EventStep, ...]  # the message's events but the left-out kinds, chain order


_RECIPIENT_SQL = (
    "SELECT m.message_id, m.volunteer_id, m.state, m.attempts, m.smtp_reply, m.queue_id,"
    " m.updated_at, v.volunteer_id, v.family_name, v.given_name, v.email, v.locale,"
    " v.exposure FROM messages m LEFT JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
    " WHERE m.campaign_id = ? AND m.volunteer_id > ? ORDER BY m.volunteer_id LIMIT ?"
)


def messages_with_events(
    conn: sqlite3.Connection,
    campaign_id: str,
    leave_out: Collection[str],
    *,
    chunk: int | None = None,
) -> Iterator[MessageWithEvents]:
    """The campaign's messages in volunteer order, each with its volunteer and events,
    read `chunk` messages at a time (through the (campaign, volunteer) and message
    indexes), so memory holds one chunk whatever the campaign's size."""
    chunk = chunk or CHUNK
    after = ""
    # Through the index by volunteer (a message's events name its volunteer), and the
    # index of the few naming a message only.
    kept = f"message_id IN (SELECT value FROM json_each(?)) AND kind NOT IN ({_marks(leave_out)})"  # noqa: S608
    events_sql = (
        "SELECT seq, message_id, kind, at, data FROM events"  # noqa: S608
        f" WHERE volunteer_id IN (SELECT value FROM json_each(?)) AND {kept}"
        f" UNION ALL SELECT seq, message_id, kind, at, data FROM events"
        f" WHERE {MESSAGE_ONLY} AND {kept} ORDER BY seq"
    )
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a chunk's thousands of rows
    while rows := cursor.execute(_RECIPIENT_SQL, (campaign_id, after, chunk)).fetchall():
        by_message: dict[str, list[EventStep]] = defaultdict(list)
        volunteers, messages = json.dumps([r[1] for r in rows]), json.dumps([r[0] for r in rows])
        params = (volunteers, messages, *leave_out, messages, *leave_out)
        for _seq, message_id, kind, at, data in cursor.execute(events_sql, params):
            by_message[message_id].append((kind, at, data))
        for message_id, vid, state, attempts, reply, queue_id, updated_at, *person in rows:
            on_roster, family, given, email, locale, exposure = person
            yield MessageWithEvents(
                message_id,
                vid,
                state,
                int(attempts or 0),
                reply or "",
                queue_id or "",
                updated_at,
                on_roster is not None,
                display_name(family, given or "", locale) if on_roster is not None else "",
                email or "",
                locale or "",
                exposure or "",
                tuple(by_message.get(message_id, ())),
            )
        after = str(rows[-1][1])


@dataclass(frozen=True)
class OutcomeEvent:
    """An event that may make someone unreachable or reached, with what its message
    (if the messages table still holds it) says: whose it is, of which campaign, and
    the state it is in."""

    event: Event
    owner: str | None  # the message's volunteer, else the event's
    campaign_id: str | None  # the message's campaign, else the event's
    message_state: str | None  # None: the message is not in the table


def _outcome_events(
    conn: sqlite3.Connection, where: str, params: Sequence[object]
) -> list[OutcomeEvent]:
    columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS.split(", "))
    sql = (
        f"SELECT {columns}, m.volunteer_id AS m_volunteer, m.campaign_id AS m_campaign,"  # noqa: S608
        " m.state AS m_state FROM events e LEFT JOIN messages m ON m.message_id = e.message_id"
        f" WHERE e.message_id IS NOT NULL AND {where} ORDER BY e.seq"
    )
    found = []
    for row in conn.execute(sql, params):
        event = event_from_row(row)
        mine = row["m_volunteer"] is not None
        found.append(
            OutcomeEvent(
                event,
                row["m_volunteer"] if mine else event.volunteer_id,
                row["m_campaign"] if mine else event.campaign_id,
                row["m_state"] if mine else None,
            )
        )
    return found


def outcome_events_of(
    conn: sqlite3.Connection, volunteer_ids: Sequence[str], kinds: Collection[str]
) -> list[OutcomeEvent]:
    """The events of these kinds naming one of these volunteers (through the volunteer
    index) and a message, in chain order."""
    where = (
        "e.volunteer_id IN (SELECT value FROM json_each(?))"  # noqa: S608
        f" AND e.kind IN ({_marks(kinds)})"
    )
    return _outcome_events(conn, where, (json.dumps(list(volunteer_ids)), *kinds))


def outcome_events_naming_no_volunteer(
    conn: sqlite3.Connection, kinds: Collection[str]
) -> list[OutcomeEvent]:
    """The events of these kinds that name a message but no volunteer (a delivery report
    matched by its Message-ID, say), in chain order: few, read once."""
    return _outcome_events(
        conn, f"e.volunteer_id IS NULL AND e.kind IN ({_marks(kinds)})", tuple(kinds)
    )


def volunteers_in_chunks(
    conn: sqlite3.Connection, *, chunk: int | None = None
) -> Iterator[list[Volunteer]]:
    """Every volunteer in volunteer_id order, `chunk` at a time."""
    chunk = chunk or CHUNK
    columns = ", ".join(("volunteer_id", *TEXT_FIELDS))
    after = ""
    while True:
        rows = conn.execute(
            f"SELECT {columns} FROM volunteers WHERE volunteer_id > ?"  # noqa: S608
            " ORDER BY volunteer_id LIMIT ?",
            (after, chunk),
        ).fetchall()
        if not rows:
            return
        yield [volunteer_from_row(row) for row in rows]
        after = str(rows[-1]["volunteer_id"])


def events_naming_no_campaign(conn: sqlite3.Connection, kinds: Collection[str]) -> Iterator[Event]:
    """The events of these kinds that name no campaign (a roster import's, say), in chain
    order, through the (campaign, kind) index: not a scan of every event."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE campaign_id IS NULL"  # noqa: S608
        f" AND kind IN ({_marks(kinds)}) ORDER BY seq"
    )
    return _read(conn, sql, tuple(kinds))
