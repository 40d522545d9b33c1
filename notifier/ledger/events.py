"""Reading events back: by the ids they name, by kind, for one person or one campaign.

Events that name only a message (a bounce matched by Message-ID, say) still belong to the
person and the campaign of that message: `volunteer_events` and `campaign_events` find
them through the messages table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from notifier.ledger.chain import EVENT_COLUMNS, Event


def events(
    conn: sqlite3.Connection,
    *,
    volunteer_id: str | None = None,
    campaign_id: str | None = None,
    message_id: str | None = None,
    kinds: Sequence[str] | None = None,
    newest_first: bool = False,
) -> Iterator[Event]:
    """Events in chain order (or newest first), filtered by any of the given attributes."""
    clauses, params = [], []
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


def volunteer_events(conn: sqlite3.Connection, volunteer_id: str) -> list[Event]:
    """Every event naming the volunteer or one of their messages, in chain order."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE volunteer_id = ? OR message_id IN "  # noqa: S608
        "(SELECT message_id FROM messages WHERE volunteer_id = ?) ORDER BY seq"
    )
    return list(_read(conn, sql, (volunteer_id, volunteer_id)))


def campaign_events(conn: sqlite3.Connection, campaign_id: str) -> list[Event]:
    """Every event naming the campaign or one of its messages, in chain order."""
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE campaign_id = ? OR message_id IN "  # noqa: S608
        "(SELECT message_id FROM messages WHERE campaign_id = ?) ORDER BY seq"
    )
    return list(_read(conn, sql, (campaign_id, campaign_id)))


def _read(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Iterator[Event]:
    for row in conn.execute(sql, params):
        yield Event(
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
