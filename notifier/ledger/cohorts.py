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
