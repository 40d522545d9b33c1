"""Messages: one campaign to one volunteer, where each stands, and the events that move them.

A message's state is a cached column (`notifier.message.MessageState`), updated in the
same transaction as the event that moves it: for events about one message, the event's
kind is the state it moves the message to (`EventDraft.state`), so "what happened" and
"where it stands" never disagree.

Write-ahead intent: a message is committed as `sending` (claim_for_sending) before its
bytes go to the server, and as sent/deferred/failed (record_outcomes) after. A message
found in `sending` by a later run was in flight when a run died: nobody knows whether the
server took it, so mark_uncertain() says so instead of guessing.

Every function that writes does so within the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from notifier.errors import LedgerError
from notifier.ledger.chain import Appended, EventDraft, append, utc_now
from notifier.ledger.projections import OUTCOME_KINDS
from notifier.message import DeliveryOutcome, MessageRow, MessageState, NewMessage, can_move

# SQLite limits the number of parameters in one statement.
_CHUNK = 500


def append_events(
    conn: sqlite3.Connection, drafts: Sequence[EventDraft], at: str | None = None
) -> Appended:
    """Append events, and move each message named by a draft with a `state` to it.

    An event whose kind does not name the state it moves to (a report's, say) records it
    as `moved_to`, so the messages table can be rebuilt from the chain.
    """
    drafts = [
        replace(d, data={**d.data, "moved_to": d.state})
        if d.state is not None and d.message_id is not None and d.kind not in OUTCOME_KINDS
        else d
        for d in drafts
    ]
    appended = append(conn, drafts, at)
    moves = [
        (d.state, appended.at, d.message_id)
        for d in drafts
        if d.state is not None and d.message_id is not None
    ]
    if moves:
        conn.executemany(
            "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?", moves
        )
    return appended


def ensure(conn: sqlite3.Connection, campaign_id: str, messages: Iterable[NewMessage]) -> int:
    """Register each message as pending (a `queued` event) unless it exists; count new."""
    known = {
        row["message_id"]
        for row in conn.execute(
            "SELECT message_id FROM messages WHERE campaign_id = ?", (campaign_id,)
        )
    }
    new = [m for m in messages if m.message_id not in known]
    if not new:
        return 0
    now = utc_now()
    conn.executemany(
        "INSERT INTO messages(message_id, campaign_id, volunteer_id, verp_token, state,"
        " attempts, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?)",
        [(m.message_id, campaign_id, m.volunteer_id, m.verp_token, now) for m in new],
    )
    # Inserted as pending above: the events need not move them. Each carries its VERP
    # token, so the chain vouches for the whole row.
    append(
        conn,
        [
            EventDraft(
                "queued", campaign_id, m.volunteer_id, m.message_id, {"verp_token": m.verp_token}
            )
            for m in new
        ],
        now,
    )
    return len(new)


def claim_for_sending(
    conn: sqlite3.Connection,
    message_ids: Sequence[str],
    wire: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, int]:
    """Mark messages `sending`; returns each one's attempt number. See the module docstring.

    `wire`: message_id -> (recipient, sha256 of the bytes): the `sending` event records
    where the message goes and exactly what goes, before it goes.
    """
    if not message_ids:
        return {}
    wire = wire or {}
    attempts: dict[str, int] = {}
    drafts: list[EventDraft] = []
    for start in range(0, len(message_ids), _CHUNK):
        chunk = list(message_ids[start : start + _CHUNK])
        rows = conn.execute(
            "SELECT message_id, campaign_id, volunteer_id, attempts FROM messages"  # noqa: S608
            f" WHERE message_id IN ({', '.join('?' for _ in chunk)})",
            chunk,
        )
        for row in rows:
            attempt = int(row["attempts"] or 0) + 1
            message_id = row["message_id"]
            attempts[message_id] = attempt
            data: dict[str, Any] = {"attempt": attempt}
            going = wire.get(message_id)
            if going is not None:
                data["recipient"], data["sha256"] = going
            drafts.append(
                EventDraft("sending", row["campaign_id"], row["volunteer_id"], message_id, data)
            )
    missing = set(message_ids) - attempts.keys()
    if missing:
        raise LedgerError(f"no such message in the ledger: {sorted(missing)[0]}")
    when = append(conn, drafts).at
    # The state, the attempt and the time in one statement a message.
    conn.executemany(
        "UPDATE messages SET state = 'sending', attempts = ?, updated_at = ? WHERE message_id = ?",
        [(attempt, when, message_id) for message_id, attempt in attempts.items()],
    )
    return attempts


def record_outcomes(conn: sqlite3.Connection, outcomes: Sequence[DeliveryOutcome]) -> int:
    """Append one event per outcome (kind = new state) and keep the server's reply."""
    if not outcomes:
        return 0
    when = append(
        conn,
        [
            EventDraft(o.state, o.campaign_id, o.volunteer_id, o.message_id, o.event_data())
            for o in outcomes
        ],
    ).at
    # One statement a message: the state, and the reply when there is one (a message's
    # earlier reply stays when this outcome has none).
    conn.executemany(
        "UPDATE messages SET state = ?, updated_at = ?, smtp_reply = ?, queue_id = ?"
        " WHERE message_id = ?",
        [
            (o.state, when, o.reply or o.reason, o.queue_id, o.message_id)
            for o in outcomes
            if o.reply or o.reason
        ],
    )
    conn.executemany(
        "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
        [(o.state, when, o.message_id) for o in outcomes if not (o.reply or o.reason)],
    )
    return len(outcomes)


def mark_uncertain(conn: sqlite3.Connection, campaign_id: str) -> list[MessageRow]:
    """Messages left `sending` by a run that died: move them to `uncertain`, with an event."""
    stuck = campaign_messages(conn, campaign_id, states=("sending",))
    if stuck:
        append_events(
            conn,
            [
                EventDraft(
                    "uncertain",
                    campaign_id=campaign_id,
                    volunteer_id=m.volunteer_id,
                    message_id=m.message_id,
                    data={
                        "attempt": m.attempts,
                        "reason": "a send stopped while this message was in flight: "
                        "the server may or may not have it",
                    },
                    state="uncertain",
                )
                for m in stuck
            ],
        )
    return stuck


def campaign_messages(
    conn: sqlite3.Connection, campaign_id: str, *, states: Sequence[str] | None = None
) -> list[MessageRow]:
    """A campaign's messages with their recipients, in volunteer order."""
    sql = (
        "SELECT m.message_id, m.campaign_id, m.volunteer_id, m.verp_token, m.state,"
        " m.attempts, v.email, m.smtp_reply, m.queue_id, m.updated_at"
        " FROM messages m JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
        " WHERE m.campaign_id = ?"
    )
    params: list[Any] = [campaign_id]
    if states is not None:
        # Only placeholders are joined into the SQL; the states go in as parameters.
        sql += f" AND m.state IN ({', '.join('?' for _ in states)})"
        params.extend(states)
    sql += " ORDER BY m.volunteer_id"
    return [_message_row(row, row["email"]) for row in conn.execute(sql, params)]


def messages(conn: sqlite3.Connection, campaign_id: str | None = None) -> list[MessageRow]:
    """The messages of one campaign (default: of every campaign), in volunteer order, as
    the table holds them (no address: `campaign_messages` joins it)."""
    where, params = ("WHERE campaign_id = ?", (campaign_id,)) if campaign_id else ("", ())
    sql = f"SELECT * FROM messages {where} ORDER BY volunteer_id, campaign_id"  # noqa: S608
    return [_message_row(row, "") for row in conn.execute(sql, params)]


def _message_row(row: sqlite3.Row, email: str) -> MessageRow:
    return MessageRow(
        message_id=row["message_id"],
        campaign_id=row["campaign_id"],
        volunteer_id=row["volunteer_id"],
        verp_token=row["verp_token"] or "",
        state=row["state"],
        attempts=int(row["attempts"] or 0),
        email=email,
        smtp_reply=row["smtp_reply"] or "",
        queue_id=row["queue_id"] or "",
        updated_at=row["updated_at"],
    )


def message_states(conn: sqlite3.Connection, campaign_id: str) -> dict[str, str]:
    """volunteer_id -> state of the campaign's messages (volunteers without one left out)."""
    return {
        str(row["volunteer_id"]): str(row["state"])
        for row in conn.execute(
            "SELECT volunteer_id, state FROM messages WHERE campaign_id = ?", (campaign_id,)
        )
    }


def state_counts(conn: sqlite3.Connection, campaign_id: str) -> dict[str, int]:
    """Number of the campaign's messages in each state (states with none are left out)."""
    return {
        row["state"]: int(row["n"])
        for row in conn.execute(
            "SELECT state, count(*) AS n FROM messages WHERE campaign_id = ? GROUP BY state"
            " ORDER BY state",
            (campaign_id,),
        )
    }


def message_ids(conn: sqlite3.Connection, campaign_id: str) -> dict[str, str]:
    """volunteer_id -> Message-ID of the campaign's messages."""
    return {
        str(row["volunteer_id"]): str(row["message_id"])
        for row in conn.execute(
            "SELECT volunteer_id, message_id FROM messages WHERE campaign_id = ?", (campaign_id,)
        )
    }


def has_messages(conn: sqlite3.Connection, campaign_id: str) -> bool:
    """True when the ledger holds any message of this campaign (it has been sent)."""
    row = conn.execute(
        "SELECT 1 FROM messages WHERE campaign_id = ? LIMIT 1", (campaign_id,)
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class Settled:
    """What reconciliation decided for one uncertain message."""

    message: MessageRow
    state: MessageState  # sent (the evidence shows it was received) or pending (it does not)
    data: dict[str, Any]  # the event's data: the evidence, or why it goes back to pending


def settle_uncertain(
    conn: sqlite3.Connection,
    campaign_id: str,
    found: Mapping[str, Mapping[str, str]],
    searched: str,
) -> list[Settled]:
    """Settle a campaign's uncertain messages from evidence of what the mail system received.

    `found` maps a bare Message-ID (no angle brackets) to the evidence's event data (file
    and line, queue id, the MTA's fate); `searched` names the evidence looked in. Messages
    left `sending` by a run that died become uncertain first (with their own event). A
    message in `found` moves uncertain -> sent; any other uncertain message -> pending, so a
    plain resume sends it. Call within one transaction with no sender running.
    """
    mark_uncertain(conn, campaign_id)
    settled: list[Settled] = []
    for m in campaign_messages(conn, campaign_id, states=(MessageState.UNCERTAIN,)):
        evidence = found.get(m.message_id.strip().strip("<>"))
        if evidence is not None:
            data: dict[str, Any] = {"attempt": m.attempts, "reconciled": True, **evidence}
            settled.append(Settled(m, MessageState.SENT, data))
        else:
            data = {
                "attempt": m.attempts,
                "reconciled": True,
                "searched": searched,
                "reason": "not in the evidence of what the mail system received: "
                "it was never taken, and goes back to be sent",
            }
            settled.append(Settled(m, MessageState.PENDING, data))
    for s in settled:
        if not can_move(s.message.state, s.state):  # pragma: no cover - the table allows both
            raise LedgerError(f"cannot move {s.message.message_id} from {s.message.state}")
    if settled:
        append_events(
            conn,
            [
                EventDraft(
                    s.state,
                    campaign_id=campaign_id,
                    volunteer_id=s.message.volunteer_id,
                    message_id=s.message.message_id,
                    data=s.data,
                    state=s.state,
                )
                for s in settled
            ],
        )
        # A sent message keeps the MTA's queue id, as a sent reply would have given it.
        conn.executemany(
            "UPDATE messages SET queue_id = ? WHERE message_id = ?",
            [
                (s.data["queue_id"], s.message.message_id)
                for s in settled
                if s.state is MessageState.SENT and s.data.get("queue_id")
            ],
        )
    return settled
