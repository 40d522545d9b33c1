"""Reading events back: by the ids they name, by kind, for one person or one campaign.

Events that name only a message (a bounce matched by Message-ID, say) still belong to the
person and the campaign of that message: `volunteer_events` and `campaign_events` find
them through the messages table. An event naming a message names its volunteer too
(whenever notifier writes one), so a message's events are found through the index by
volunteer; the few naming no volunteer, through an index of their own
(schema.MESSAGE_ONLY).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from notifier.ledger.chain import EVENT_COLUMNS, Event
from notifier.ledger.schema import MESSAGE_ONLY


def events(
    conn: sqlite3.Connection,
    *,
    volunteer_id: str | None = None,
    campaign_id: str | None = None,
    message_id: str | None = None,
    kinds: Sequence[str] | None = None,
    newest_first: bool = False,
    after_seq: int = 0,
) -> Iterator[Event]:
    """Events in chain order (or newest first), filtered by any of the given attributes
    (`after_seq`: only those after that position)."""
    clauses: list[str] = []
    params: list[Any] = []
    if after_seq:
        clauses.append("seq > ?")
        params.append(after_seq)
    for column, value in (
        ("volunteer_id", volunteer_id),
        ("campaign_id", campaign_id),
        ("message_id", message_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "DESC" if newest_first else ""
    # Only fixed column names are joined into the SQL; values go in as parameters.
    sql = f"SELECT {EVENT_COLUMNS} FROM events {where} ORDER BY seq {order}"  # noqa: S608
    return _read(conn, sql, params)


def latest_seq(
    conn: sqlite3.Connection, *, kind: str | None = None, campaign_id: str | None = None
) -> int:
    """The seq of the latest event of `kind` (an event naming no campaign) or naming
    `campaign_id`; 0 when there is none. Both are read through the (campaign, kind) index."""
    if campaign_id is not None:
        row = conn.execute(
            "SELECT max(seq) AS seq FROM events WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT max(seq) AS seq FROM events WHERE campaign_id IS NULL AND kind = ?", (kind,)
        ).fetchone()
    return int(row["seq"] or 0)


def first_sent(
    conn: sqlite3.Connection, campaign_id: str, volunteer_ids: Iterable[str]
) -> dict[str, tuple[int, str]]:
    """volunteer_id -> (seq, recipient) of the first `sent` event of the campaign's message
    to each of these volunteers (those it was sent to); recipient "" when not recorded."""
    found: dict[str, tuple[int, str]] = {}
    ids = list(volunteer_ids)
    for start in range(0, len(ids), _CHUNK):
        # SQLite takes a bare column of min() from the row with that minimum.
        rows = conn.execute(
            "SELECT volunteer_id, min(seq) AS seq, json_extract(data, '$.recipient') AS rcpt"
            " FROM events WHERE kind = 'sent' AND campaign_id = ?"
            " AND volunteer_id IN (SELECT value FROM json_each(?)) GROUP BY volunteer_id",
            (campaign_id, json.dumps(ids[start : start + _CHUNK])),
        )
        for row in rows:
            found[row["volunteer_id"]] = (int(row["seq"]), str(row["rcpt"] or ""))
    return found


def sent_recipients(
    conn: sqlite3.Connection, campaign_id: str | None = None
) -> Iterator[tuple[str, str, str]]:
    """(volunteer_id, campaign_id, recipient) of every `sent` event (of one campaign, if
    given) that recorded its recipient, in chain order, read as they are used."""
    where = "kind = 'sent'" + (" AND campaign_id = ?" if campaign_id is not None else "")
    cursor = conn.execute(
        "SELECT volunteer_id, campaign_id, json_extract(data, '$.recipient') AS rcpt"  # noqa: S608
        f" FROM events WHERE {where} ORDER BY seq",
        (campaign_id,) if campaign_id is not None else (),
    )
    for row in cursor:
        if row["rcpt"] and row["volunteer_id"]:
            yield row["volunteer_id"], row["campaign_id"] or "", str(row["rcpt"])


# Ids per query: well under SQLite's limits, and one round trip per thousand.
_CHUNK = 1000


def volunteer_events(conn: sqlite3.Connection, volunteer_id: str) -> list[Event]:
    """Every event naming the volunteer or one of their messages, in chain order."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE volunteer_id = ?"  # noqa: S608
        f" OR ({MESSAGE_ONLY} AND EXISTS (SELECT 1 FROM messages m"
        " WHERE m.message_id = events.message_id AND m.volunteer_id = ?)) ORDER BY seq"
    )
    return list(_read(conn, sql, (volunteer_id, volunteer_id)))


def campaign_events(conn: sqlite3.Connection, campaign_id: str) -> list[Event]:
    """Every event naming the campaign or one of its messages, in chain order."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE campaign_id = ?"  # noqa: S608
        " OR (campaign_id IS NULL AND message_id IN"
        " (SELECT message_id FROM messages WHERE campaign_id = ?)) ORDER BY seq"
    )
    return list(_read(conn, sql, (campaign_id, campaign_id)))


def _read(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Iterator[Event]:
    for row in conn.execute(sql, params):
        yield event_from_row(row)


def event_from_row(row: sqlite3.Row) -> Event:
    """The event an `events` row (read with its EVENT_COLUMNS, by name) holds."""
    return Event(
        seq=row["seq"],
        at=row["at"],
        kind=row["kind"],
        campaign_id=row["campaign_id"],
        volunteer_id=row["volunteer_id"],
        message_id=row["message_id"],
        data=json.loads(row["data"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
