"""The tables that decide sending, rebuilt from the chain and compared with the file.

The volunteers, messages, suppressions and rejected_rows tables are projections: every
row was written with a chained event that says what it holds. `Replay` reads the events
(one pass, in chain order, inside `chain.verify`) and keeps what each row must be:

    volunteers     volunteer_added / volunteer_updated / volunteer_adopted carry the
                   sha256 of the row's canonical text (`volunteer_row_sha256`)
    messages       queued (campaign, volunteer, VERP token), sending (attempt), the
                   outcome kinds and any event with `moved_to` (the state)
    suppressions   address_suppressed / suppression_adopted (address, reason, event)
    rejected_rows  row_rejected / rejected_row_adopted, in the order they were written

`ledger_upgraded` starts the projections afresh: an old ledger's rows are adopted, each
by its own event, when it is re-keyed (`notifier ledger upgrade`).

`first_difference` then reads each table in primary-key order and names the first row
that is not what the chain says (edited, inserted or deleted). A 200,000-person ledger
keeps one short entry a row in memory, not the rows themselves.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from notifier.ledger.chain import canonical_json
from notifier.message import ATTEMPT_OUTCOMES, MessageState
from notifier.volunteer import TEXT_FIELDS

# Events whose kind is the state their message moves to (appended with the table update).
OUTCOME_KINDS = frozenset({*ATTEMPT_OUTCOMES, MessageState.UNCERTAIN, MessageState.SUPPRESSED})
_VOLUNTEER_KINDS = frozenset({"volunteer_added", "volunteer_updated", "volunteer_adopted"})
_SUPPRESSION_KINDS = frozenset({"address_suppressed", "suppression_adopted"})
_REJECTED_KINDS = frozenset({"row_rejected", "rejected_row_adopted"})
UPGRADED = "ledger_upgraded"
# Events that record the ledger's own upkeep, not something that happened to anyone.
BOOKKEEPING = frozenset(
    {
        UPGRADED,
        "volunteer_adopted",
        "message_adopted",
        "suppression_adopted",
        "rejected_row_adopted",
    }
)


def volunteer_row_sha256(volunteer_id: str, texts: Sequence[str | None]) -> str:
    """What a volunteer's chained events vouch for: their id and every text field."""
    return hashlib.sha256(canonical_json([volunteer_id, *texts]).encode()).hexdigest()


# A message as the chain says it is: campaign, volunteer, VERP token, state, attempts.
_Message = list[Any]


class Replay:
    """The projections as the events say they are; `visit` is chain.verify's visitor."""

    def __init__(self) -> None:
        self.volunteers: dict[str, str] = {}
        self.messages: dict[str, _Message] = {}
        self.suppressions: dict[str, tuple[str, str | None, int | None]] = {}
        self.rejected: list[tuple[Any, ...]] = []

    def _start_afresh(self) -> None:
        self.volunteers = {}
        self.messages = {}
        self.suppressions = {}
        self.rejected = []

    def visit(
        self,
        seq: int,
        kind: str,
        campaign_id: str | None,
        volunteer_id: str | None,
        message_id: str | None,
        data_json: str,
    ) -> None:
        if message_id is not None:
            self._message_event(kind, campaign_id, volunteer_id, message_id, data_json)
            if kind not in _SUPPRESSION_KINDS:
                return
        if kind in _VOLUNTEER_KINDS and volunteer_id is not None:
            digest = json.loads(data_json).get("row_sha256")
            if digest is not None:
                self.volunteers[volunteer_id] = digest
        elif kind in _SUPPRESSION_KINDS:
            data = json.loads(data_json)
            email = data.get("email")
            if isinstance(email, str):
                self.suppressions[email] = (email, data.get("reason"), data.get("bounce_seq"))
        elif kind in _REJECTED_KINDS:
            d = json.loads(data_json)
            self.rejected.append(
                (
                    d.get("import_id"),
                    d.get("row"),
                    d.get("column"),
                    d.get("value"),
                    d.get("reason"),
                    d.get("field"),
                )
            )
        elif kind == UPGRADED:
            self._start_afresh()  # the adopted rows follow

    def _message_event(
        self,
        kind: str,
        campaign_id: str | None,
        volunteer_id: str | None,
        message_id: str,
        data_json: str,
    ) -> None:
        if kind == MessageState.SENDING:
            message = self.messages.get(message_id)
            if message is not None:
                message[3] = MessageState.SENDING
                message[4] = json.loads(data_json).get("attempt")
        elif kind in OUTCOME_KINDS:
            message = self.messages.get(message_id)
            if message is not None:
                message[3] = kind
        elif kind == "queued":
            token = json.loads(data_json).get("verp_token") if data_json != "{}" else None
            self.messages[message_id] = [campaign_id, volunteer_id, token, "pending", 0]
        elif kind == "message_adopted":
            d = json.loads(data_json)
            self.messages[message_id] = [
                campaign_id,
                volunteer_id,
                d.get("verp_token"),
                d.get("state"),
                d.get("attempts"),
            ]
        elif '"moved_to"' in data_json:  # a report's event that moved its message
            message = self.messages.get(message_id)
            moved = json.loads(data_json).get("moved_to")
            if message is not None and moved is not None:
                message[3] = moved

    def first_difference(self, conn: sqlite3.Connection) -> str | None:
        """The first table row that is not what the events say, in words; None if none."""
        return (
            self._volunteers(conn)
            or self._messages(conn)
            or self._suppressions(conn)
            or self._rejected(conn)
        )

    def _volunteers(self, conn: sqlite3.Connection) -> str | None:
        expected = self.volunteers
        cursor = conn.cursor()
        cursor.row_factory = None  # 200,000 rows: plain tuples, in the order selected
        sql = f"SELECT volunteer_id, {', '.join(TEXT_FIELDS)} FROM volunteers ORDER BY volunteer_id"  # noqa: S608
        for volunteer_id, *texts in cursor.execute(sql):
            want = expected.pop(volunteer_id, None)
            if want is None:
                return _row("volunteers", f"volunteer_id {volunteer_id}", "is not in the chain")
            if volunteer_row_sha256(volunteer_id, texts) != want:
                return _row("volunteers", f"volunteer_id {volunteer_id}", "differs from the chain")
        if expected:
            return _row("volunteers", f"volunteer_id {min(expected)}", "is missing (deleted)")
        return None

    def _messages(self, conn: sqlite3.Connection) -> str | None:
        expected = self.messages
        cursor = conn.cursor()
        cursor.row_factory = None
        sql = (
            "SELECT message_id, campaign_id, volunteer_id, verp_token, state, attempts"
            " FROM messages ORDER BY message_id"
        )
        for message_id, *stored in cursor.execute(sql):
            want = expected.pop(message_id, None)
            if want is None:
                return _row("messages", f"message_id {message_id}", "is not in the chain")
            if want[2] is None:  # an old `queued` event without its token (adopted since)
                want[2] = stored[2]
            if stored != want:
                columns = ("campaign_id", "volunteer_id", "verp_token", "state", "attempts")
                column = next(c for c, a, b in zip(columns, stored, want, strict=True) if a != b)
                return _row(
                    "messages",
                    f"message_id {message_id}",
                    f"differs from the chain in {column} ({stored[columns.index(column)]!r},"
                    f" the events say {want[columns.index(column)]!r})",
                )
        if expected:
            return _row("messages", f"message_id {min(expected)}", "is missing (deleted)")
        return None

    def _suppressions(self, conn: sqlite3.Connection) -> str | None:
        expected = self.suppressions
        for row in conn.execute("SELECT email, reason, event_seq FROM suppressions ORDER BY email"):
            want = expected.pop(row["email"], None)
            if want is None:
                return _row("suppressions", f"email {row['email']}", "is not in the chain")
            if (row["email"], row["reason"], row["event_seq"]) != want:
                return _row("suppressions", f"email {row['email']}", "differs from the chain")
        if expected:
            return _row("suppressions", f"email {min(expected)}", "is missing (deleted)")
        return None

    def _rejected(self, conn: sqlite3.Connection) -> str | None:
        expected = iter(self.rejected)
        sql = (
            "SELECT id, import_id, [row], [column], value, reason, field FROM rejected_rows"
            " ORDER BY id"
        )
        for row in conn.execute(sql):
            want = next(expected, None)
            where = f"id {row['id']} (import {row['import_id']}, row {row['row']})"
            if want is None:
                return _row("rejected_rows", where, "is not in the chain")
            stored = (
                row["import_id"],
                row["row"],
                row["column"],
                row["value"],
                row["reason"],
                row["field"] if want[5] is not None else None,
            )
            if stored != want:
                return _row("rejected_rows", where, "differs from the chain")
        missing = next(expected, None)
        if missing is not None:
            return _row(
                "rejected_rows", f"import {missing[0]}, row {missing[1]}", "is missing (deleted)"
            )
        return None


def _row(table: str, row: str, what: str) -> str:
    return f"table {table}, row {row}: {what}; it was edited outside notifier"
