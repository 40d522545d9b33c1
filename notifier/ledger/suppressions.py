"""The suppression list: addresses no notice is sent to any more (after a hard bounce).

One rule says whether two addresses are the same here, `address_key`: case does not
matter, in any script. Every lookup goes through it, in Python, so the list, a single
address and a roster matched against the list never disagree (SQLite's own lower() folds
ASCII letters only). And one rule says whether a volunteer is suppressed, `is_suppressed`:
either form of their address (as written, or with its domain in A-label form) is on the
list. The send's selection, the cohort and the postal worklist all ask it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

from notifier.event import EventKind
from notifier.ledger.chain import EventDraft, append, utc_now
from notifier.volunteer import Volunteer


def address_key(email: str) -> str:
    """What a suppressed address is compared by."""
    return email.lower()


def is_suppressed(volunteer: Volunteer, keys: Collection[str]) -> bool:
    """Whether either form of the volunteer's address is on the list (`keys`: the
    address_key of every suppressed address, `suppressed_addresses`)."""
    return address_key(volunteer.email) in keys or (
        bool(volunteer.email_ascii) and address_key(volunteer.email_ascii) in keys
    )


@dataclass(frozen=True)
class Suppression:
    email: str  # as it was suppressed (the roster address, or the report's recipient)
    reason: str
    at: str
    event_seq: int | None  # the event that caused it (the hard bounce), when recorded

    @property
    def key(self) -> str:
        return address_key(self.email)


def suppressions(conn: sqlite3.Connection) -> list[Suppression]:
    """The whole list, oldest first."""
    return [
        Suppression(
            email=row["email"],
            reason=row["reason"] or "",
            at=row["at"] or "",
            event_seq=row["event_seq"],
        )
        for row in conn.execute("SELECT email, reason, at, event_seq FROM suppressions ORDER BY at")
    ]


def suppressed_addresses(conn: sqlite3.Connection) -> set[str]:
    """The address_key() of every suppressed address, for checking many at once."""
    return {address_key(row["email"]) for row in conn.execute("SELECT email FROM suppressions")}


def address_is_suppressed(conn: sqlite3.Connection, email: str) -> bool:
    return address_key(email) in suppressed_addresses(conn)


def add(
    conn: sqlite3.Connection,
    email: str,
    reason: str,
    *,
    event_seq: int | None,
    campaign_id: str | None = None,
    volunteer_id: str | None = None,
    message_id: str | None = None,
) -> Suppression:
    """Put an address on the list, as of now, with its `address_suppressed` event (the
    chain vouches for the list). Within a transaction."""
    suppression = Suppression(email, reason, utc_now(), event_seq)
    append(
        conn,
        [
            EventDraft(
                EventKind.ADDRESS_SUPPRESSED,
                campaign_id=campaign_id,
                volunteer_id=volunteer_id,
                message_id=message_id,
                data={"email": email, "reason": reason, "bounce_seq": event_seq},
            )
        ],
        suppression.at,
    )
    conn.execute(
        "INSERT INTO suppressions(email, reason, at, event_seq) VALUES (?, ?, ?, ?)",
        (suppression.email, suppression.reason, suppression.at, suppression.event_seq),
    )
    return suppression
