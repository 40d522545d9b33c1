"""Volunteers with the state of their message in given campaigns: the rows a cohort, a
follow-up's audience and a campaign's standing are decided from.

Both forms are answered by SQLite, so a million-person roster costs a scan, never a
dict of every person in Python: `with_states` streams the rows in volunteer_id order
(one index lookup per person and campaign, on messages' unique (campaign_id,
volunteer_id) index), and `count_with_states` counts them by every attribute a cohort's
rule reads (exposure, locale, the states, suppressed, named in an --ids file) with
`GROUP BY`: a few dozen groups however many people.

The two comparisons that are Python's (an address's `address_key`, an id's casefold:
SQLite's lower() folds ASCII letters only) run inside SQLite as functions of this
connection, so a count and a stream decide every person by the same rule.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from notifier.ledger.suppressions import address_key
from notifier.ledger.volunteers import _COLUMNS, VolunteerQuery, volunteer_from_row
from notifier.volunteer import Volunteer

# Rows are read from SQLite this many at a time.
CHUNK_ROWS = 2000


@dataclass(frozen=True)
class StateGroup:
    """How many volunteers share these attributes and message states."""

    exposure: str
    locale: str
    states: tuple[str | None, ...]  # of their message in each campaign asked about
    suppressed: bool  # either form of their address is on the suppression list
    named: bool  # named in the ids given (True when none were given)
    count: int


def _state_columns(campaigns: Sequence[str]) -> tuple[str, list[str]]:
    """One column per campaign: the state of the person's message in it (NULL: none)."""
    columns = "".join(
        f", (SELECT state FROM messages WHERE campaign_id = ?"  # noqa: S608
        f" AND volunteer_id = volunteers.volunteer_id) AS state{i}"
        for i in range(len(campaigns))
    )
    return columns, list(campaigns)


def with_states(
    conn: sqlite3.Connection, query: VolunteerQuery, campaigns: Sequence[str]
) -> Iterator[tuple[Volunteer, tuple[str | None, ...]]]:
    """The volunteers the query selects, in volunteer_id order, each with the state of
    their message in each of `campaigns` (None: they have none), read a chunk at a time."""
    states, params = _state_columns(campaigns)
    where, where_params = query.where()
    sql = f"SELECT {_COLUMNS}{states} FROM volunteers{where} ORDER BY volunteer_id"  # noqa: S608
    cursor = conn.execute(sql, [*params, *where_params])
    names = [f"state{i}" for i in range(len(campaigns))]
    while rows := cursor.fetchmany(CHUNK_ROWS):
        for row in rows:
            yield volunteer_from_row(row), tuple(row[name] for name in names)


def count_with_states(
    conn: sqlite3.Connection,
    query: VolunteerQuery,
    campaigns: Sequence[str],
    *,
    suppressed: Collection[str] = (),
    ids: Collection[str] | None = None,
) -> list[StateGroup]:
    """The volunteers the query selects, counted by exposure, locale, the state of their
    message in each of `campaigns`, whether their address is in `suppressed` (address_key
    values: `is_suppressed`'s rule) and whether they are named in `ids` (casefolded ids or
    addresses: `cohort`'s rule)."""
    conn.create_function("notifier_address_key", 1, _address_key, deterministic=True)
    conn.create_function("notifier_casefold", 1, _casefold, deterministic=True)
    states, params = _state_columns(campaigns)
    if suppressed:
        keys = "(SELECT value FROM json_each(?))"
        is_suppressed = (
            f"(notifier_address_key(email) IN {keys} OR (coalesce(email_ascii, '') != ''"
            f" AND notifier_address_key(email_ascii) IN {keys}))"
        )
        params += [json.dumps(sorted(suppressed))] * 2
    else:
        is_suppressed = "0"
    if ids is not None:
        named_ids = "(SELECT value FROM json_each(?))"
        # An empty email_ascii reads as the email, as Volunteer.from_texts reads it.
        is_named = (
            f"(notifier_casefold(volunteer_id) IN {named_ids}"
            f" OR notifier_casefold(email) IN {named_ids}"
            f" OR notifier_casefold(coalesce(nullif(email_ascii, ''), email)) IN {named_ids})"
        )
        params += [json.dumps(sorted(ids))] * 3
    else:
        is_named = "1"
    where, where_params = query.where()
    group = ", ".join(f"state{i}" for i in range(len(campaigns)))
    sql = (
        f"SELECT exposure, locale{states}, {is_suppressed} AS suppressed,"  # noqa: S608
        f" {is_named} AS named, count(*) AS n FROM volunteers{where}"
        f" GROUP BY exposure, locale{', ' if group else ''}{group}, suppressed, named"
    )
    return [
        StateGroup(
            exposure=row["exposure"],
            locale=row["locale"],
            states=tuple(row[f"state{i}"] for i in range(len(campaigns))),
            suppressed=bool(row["suppressed"]),
            named=bool(row["named"]),
            count=int(row["n"]),
        )
        for row in conn.execute(sql, [*params, *where_params])
    ]


def _address_key(email: str | None) -> str | None:
    return None if email is None else address_key(email)


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


@dataclass(frozen=True)
class UpdatedSince:
    """One volunteer's roster updates recorded after a campaign's message to them was sent
    (the first time), with that `sent` event's position and the recipient it recorded."""

    volunteer: Volunteer  # as the roster has them now
    sent_seq: int
    recipient: str  # "" when the event did not record it
    updates: tuple[tuple[int, str], ...]  # (seq, the event's data as JSON), in chain order


def updated_since_sent(
    conn: sqlite3.Connection, campaign_id: str, after_seq: int
) -> Iterator[UpdatedSince]:
    """Everyone with a `volunteer_updated` event after `after_seq` (the campaign's first
    `sent`) and a `sent` of the campaign's message, in volunteer_id order: one sorted
    query, read a chunk at a time, each person's updates together."""
    # The unary pluses keep SQLite's planner on the right indexes: a person's few events
    # through the volunteer_id index (not every `sent` of the campaign, per person), and
    # the updates by their place in the chain, sorted after (not the whole chain in
    # volunteer order, a table lookup each).
    sent = (
        "FROM events s WHERE s.volunteer_id = e.volunteer_id AND +s.kind = 'sent'"
        " AND +s.campaign_id = ? ORDER BY s.seq LIMIT 1"
    )
    columns = ", ".join(f"v.{name}" for name in _COLUMNS.split(", "))
    cursor = conn.execute(
        f"SELECT {columns}, e.seq AS seq, e.data AS data,"  # noqa: S608
        f" (SELECT s.seq {sent}) AS sent_seq,"
        f" (SELECT json_extract(s.data, '$.recipient') {sent}) AS recipient"
        " FROM events e JOIN volunteers v ON v.volunteer_id = e.volunteer_id"
        " WHERE e.kind = 'volunteer_updated' AND e.seq > ?"
        " ORDER BY +e.volunteer_id, e.seq",
        (campaign_id, campaign_id, after_seq),
    )
    person: list[sqlite3.Row] = []
    while rows := cursor.fetchmany(CHUNK_ROWS):
        for row in rows:
            if person and person[0]["volunteer_id"] != row["volunteer_id"]:
                yield from _updated(person)
                person = []
            person.append(row)
    yield from _updated(person)


def _updated(rows: list[sqlite3.Row]) -> Iterator[UpdatedSince]:
    if rows and rows[0]["sent_seq"] is not None:
        yield UpdatedSince(
            volunteer_from_row(rows[0]),
            int(rows[0]["sent_seq"]),
            str(rows[0]["recipient"] or ""),
            tuple((int(row["seq"]), str(row["data"])) for row in rows),
        )
