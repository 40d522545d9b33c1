"""Messages: one campaign to one volunteer, where each stands, and the events that move them.

A message's state is a cached column (`notifier.message.MessageState`), written only by
`move`, the one transition function: it reads each message's state inside the caller's
write transaction, refuses any move `notifier.message.TRANSITIONS` does not allow
(IllegalTransition, nothing written), and appends the event that records the move with
the table update, so "what happened" and "where it stands" never disagree
(`notifier.event.state_after_event` reads the state back from the event).

Write-ahead intent: a message is committed as `sending` (`claim`) before its bytes go to
the server, and as sent/deferred/failed (`record_outcomes`) after. A claim is conditional:
a message is claimed only if it is, at that moment, in a state the run may send from, so
two senders that both got past every lock still cannot both send one message (the second
claim finds it `sending` or `sent` and leaves it). A message found in `sending` by a later
run, with no live run to finish it, was in flight when a run died: nobody knows whether
the server took it, so `mark_uncertain` says so instead of guessing.

Every function that writes does so within the caller's transaction.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from notifier import verp
from notifier.errors import IllegalTransition, LedgerError, LedgerTampered
from notifier.event import REPORT_KINDS, SELF_NAMING_KINDS, EventKind
from notifier.ledger.chain import Appended, EventDraft, append, utc_now
from notifier.ledger.schema import MESSAGE_ONLY
from notifier.message import (
    CLAIMABLE_STATES,
    DeliveryOutcome,
    MessageRow,
    MessageState,
    NewMessage,
    can_move,
)

# SQLite limits the number of parameters in one statement.
_CHUNK = 500


@dataclass(frozen=True)
class Move:
    """One event about one message, and the state it moves the message to.

    For an event whose kind is a state (`sent`, `uncertain`, ...) the state is the kind;
    for a report's event it is `to`, or None when the report leaves the state as it is.
    """

    message_id: str
    kind: EventKind
    data: Mapping[str, Any] = field(default_factory=dict)
    to: MessageState | None = None

    @property
    def state(self) -> MessageState | None:
        if self.kind in SELF_NAMING_KINDS:
            return MessageState(self.kind)
        return self.to


def move(
    conn: sqlite3.Connection,
    moves: Sequence[Move],
    at: str | None = None,
    *,
    claiming: bool = False,
    write_states: bool = True,
    current: Mapping[str, Current] | None = None,
) -> Appended:
    """Append each move's event and move its message, if every move is allowed.

    Moves are checked in order (one message may move twice in a batch) against the
    states as this transaction reads them; the first one not allowed raises
    IllegalTransition and nothing is written. An event whose state is the message's own
    records a fact without moving it (a second report of the same kind, an unsendable
    message failed again), except `sending`: only `claim` moves a message there
    (`claiming`), and never one already claimed. `current`: the messages as this
    transaction has just read them (a claim reads them first), not read again.
    """
    current = (
        dict(current) if current is not None else _current(conn, {m.message_id for m in moves})
    )
    drafts: list[EventDraft] = []
    for m in moves:
        if m.kind == EventKind.SENDING and not claiming:
            raise IllegalTransition(f"{m.message_id}: only a claim moves a message to sending")
        if m.kind not in SELF_NAMING_KINDS and m.kind not in REPORT_KINDS:
            raise IllegalTransition(f"{m.message_id}: a {m.kind} event does not move a message")
        found = current.get(m.message_id)
        if found is None:
            raise LedgerError(f"no such message in the ledger: {m.message_id}")
        campaign_id, volunteer_id, state, attempts = found
        to = m.state
        if to is not None and not (to == state and to != MessageState.SENDING):
            if not can_move(state, to):
                raise IllegalTransition(
                    f"{m.message_id}: a message that is {state} cannot become {to}",
                    hint="nothing was written; the ledger keeps every message's history "
                    "in the order the states allow",
                )
            current[m.message_id] = Current(campaign_id, volunteer_id, to, attempts)
        data = dict(m.data)
        if m.kind not in SELF_NAMING_KINDS and to is not None:
            data["moved_to"] = str(to)  # a report's event says where it moved its message
        drafts.append(EventDraft(m.kind, campaign_id, volunteer_id, m.message_id, data))
    appended = append(conn, drafts, at)
    updates = [(str(m.state), appended.at, m.message_id) for m in moves if m.state is not None]
    if updates and write_states:
        conn.executemany(
            "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?", updates
        )
    return appended


class Current(NamedTuple):
    """A message as this transaction reads it: what a move or a claim decides by."""

    campaign_id: str
    volunteer_id: str
    state: MessageState
    attempts: int


def _current(conn: sqlite3.Connection, message_ids: Collection[str]) -> dict[str, Current]:
    """message_id -> the message as this transaction reads it."""
    found: dict[str, Current] = {}
    ids = list(message_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = conn.execute(
            "SELECT message_id, campaign_id, volunteer_id, state, attempts"  # noqa: S608
            f" FROM messages WHERE message_id IN ({', '.join('?' for _ in chunk)})",
            chunk,
        )
        for row in rows:
            found[row["message_id"]] = Current(
                row["campaign_id"],
                row["volunteer_id"],
                MessageState(row["state"]),
                int(row["attempts"] or 0),
            )
    return found


def current_state(conn: sqlite3.Connection, message_id: str) -> MessageState:
    """The state of one message as this transaction reads it."""
    found = _current(conn, [message_id]).get(message_id)
    if found is None:
        raise LedgerError(f"no such message in the ledger: {message_id}")
    return found.state


def ensure(
    conn: sqlite3.Connection,
    campaign_id: str,
    messages: Iterable[NewMessage],
    verp_key: Callable[[], bytes],
) -> list[NewMessage]:
    """Register each message as pending (a `queued` event) unless it exists; the new ones,
    each with its VERP token (the next numbered ones, in the order given, for those that
    came without: `verp_key()` gives the key that makes them, asked only then).

    Only the given messages are looked up (a chunk of a send), never the campaign's whole
    list: the cost is the chunk's, whatever the campaign's size. Call within a write
    transaction: the numbers are read and taken in it, so two senders never take one.

    A message whose row is gone but whose events are in the chain is never registered
    again (LedgerTampered): its person was queued, and perhaps sent, that notice already."""
    given = list(messages)
    known = _current(conn, [m.message_id for m in given])
    new = [m for m in given if m.message_id not in known]
    if not new:
        return []
    _refuse_registered_before(conn, campaign_id, new)
    new = _with_tokens(new, conn, verp_key)
    now = utc_now()
    conn.executemany(
        "INSERT INTO messages(message_id, campaign_id, volunteer_id, verp_token, state,"
        " attempts, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?)",
        [(m.message_id, campaign_id, m.volunteer_id, m.verp_token, now) for m in new],
    )
    # Inserted as pending above: a new message's first state. Each event carries its
    # VERP token, so the chain vouches for the whole row.
    append(
        conn,
        [
            EventDraft(
                EventKind.QUEUED,
                campaign_id,
                m.volunteer_id,
                m.message_id,
                {"verp_token": m.verp_token},
            )
            for m in new
        ],
        now,
    )
    return new


# Events of one campaign's messages to these people (the ids as one JSON parameter):
# through the index by volunteer, as every event about a message names its volunteer
# (`+campaign_id`: not through the index by campaign, which holds the whole campaign's),
# and through the index of the few from long ago that name the message only.
_EARLIER_EVENTS = (
    "SELECT message_id FROM events WHERE volunteer_id IN (SELECT value FROM json_each(?))"  # noqa: S608
    " AND +campaign_id = ? AND message_id IS NOT NULL"
    " UNION ALL SELECT message_id FROM events INDEXED BY idx_events_message_only"
    f" WHERE {MESSAGE_ONLY} AND message_id IN (SELECT value FROM json_each(?)) LIMIT 1"
)


def _refuse_registered_before(
    conn: sqlite3.Connection, campaign_id: str, new: Sequence[NewMessage]
) -> None:
    """LedgerTampered when the chain already holds an event of one of these messages, or
    of another message of this campaign to one of these people: the messages table lost
    its row (deleted outside notifier). Registered again, it would be pending, its
    events would end in a fresh `queued`, and the person would be mailed twice."""
    people = json.dumps([m.volunteer_id for m in new])
    ids = json.dumps([m.message_id for m in new])
    found = conn.execute(_EARLIER_EVENTS, (people, campaign_id, ids)).fetchone()
    if found is not None:
        raise LedgerTampered(
            f"table messages, row message_id {found[0]}: is missing (deleted)",
            hint="run notifier ledger verify; nothing was sent to the people it names",
        )


def _with_tokens(
    new: list[NewMessage], conn: sqlite3.Connection, verp_key: Callable[[], bytes]
) -> list[NewMessage]:
    """The messages, those without a VERP token given the next numbered ones in order."""
    if all(m.verp_token for m in new):
        return new
    key = verp_key()
    numbers = itertools.count(next_token_number(conn, key))
    return [
        m if m.verp_token else replace(m, verp_token=verp.numbered_token(key, next(numbers)))
        for m in new
    ]


def next_token_number(conn: sqlite3.Connection, verp_key: bytes) -> int:
    """The number the next numbered VERP token takes: one past the highest issued (found
    through the tokens' index, at its end), or the ledger's keyed first number."""
    low, high = verp.NUMBERED_RANGE
    (highest,) = conn.execute(
        "SELECT max(verp_token) FROM messages WHERE verp_token >= ? AND verp_token < ?",
        (low, high),
    ).fetchone()
    number = verp.token_number(highest) if highest else None
    if number is None:
        return verp.first_number(verp_key)
    if number + 1 >= 10**verp.NUMBER_DIGITS:  # 9e14 after the first: only an edit gets here
        raise LedgerError(
            f"the ledger's VERP token numbers are used up (a message holds {highest})",
            hint="run notifier ledger verify: the messages table was edited outside notifier",
        )
    return number + 1


def claim(
    conn: sqlite3.Connection,
    message_ids: Sequence[str],
    claimable: Collection[MessageState],
    wire: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, int]:
    """Claim for sending each message that is, now, in one of the `claimable` states;
    returns the attempt number of each one claimed. See the module docstring.

    A message in any other state (already claimed, sent, or moved on by another process
    since the caller chose it) is left as it is and missing from the result: its bytes
    must not go out. `wire`: message_id -> (recipient, sha256 of the bytes): the
    `sending` event records where the message goes and exactly what goes, before it goes.
    """
    if not message_ids:
        return {}
    allowed = CLAIMABLE_STATES.intersection(claimable)
    wire = wire or {}
    current = _current(conn, message_ids)
    missing = set(message_ids) - current.keys()
    if missing:
        raise LedgerError(f"no such message in the ledger: {sorted(missing)[0]}")
    # message_id -> the number its next attempt will have, in the order given.
    attempts = {m: current[m].attempts + 1 for m in message_ids if current[m].state in allowed}
    moves = []
    for message_id, attempt in attempts.items():
        data: dict[str, Any] = {"attempt": attempt}
        going = wire.get(message_id)
        if going is not None:
            data["recipient"], data["sha256"] = going
        moves.append(Move(message_id, EventKind.SENDING, data))
    if not moves:
        return {}
    when = move(conn, moves, claiming=True, write_states=False, current=current).at
    # The state, the attempt and the time in one statement a message.
    conn.executemany(
        "UPDATE messages SET state = 'sending', attempts = ?, updated_at = ? WHERE message_id = ?",
        [(attempt, when, message_id) for message_id, attempt in attempts.items()],
    )
    return attempts


def record_outcomes(conn: sqlite3.Connection, outcomes: Sequence[DeliveryOutcome]) -> int:
    """Move each message to its outcome (kind = the new state), keeping the server's reply."""
    if not outcomes:
        return 0
    when = move(
        conn,
        [Move(o.message_id, EventKind(o.state), o.event_data(), o.state) for o in outcomes],
        write_states=False,
    ).at
    # One statement a message: the state, and the reply when there is one (a message's
    # earlier reply stays when this outcome has none).
    conn.executemany(
        "UPDATE messages SET state = ?, updated_at = ?, smtp_reply = ?, queue_id = ?"
        " WHERE message_id = ?",
        [
            (str(o.state), when, o.reply or o.reason, o.queue_id, o.message_id)
            for o in outcomes
            if o.reply or o.reason
        ],
    )
    conn.executemany(
        "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
        [(str(o.state), when, o.message_id) for o in outcomes if not (o.reply or o.reason)],
    )
    return len(outcomes)


def mark_uncertain(conn: sqlite3.Connection, campaign_id: str) -> list[MessageRow]:
    """Messages left `sending` by a run that died: move them to `uncertain`, with an event.

    Call only while holding the ledger's send lease: then no live run can own them.
    """
    stuck = campaign_messages(conn, campaign_id, states=(MessageState.SENDING,))
    if stuck:
        move(
            conn,
            [
                Move(
                    m.message_id,
                    EventKind.UNCERTAIN,
                    {
                        "attempt": m.attempts,
                        "reason": "a send stopped while this message was in flight: "
                        "the server may or may not have it",
                    },
                )
                for m in stuck
            ],
        )
    return stuck


def campaign_messages(
    conn: sqlite3.Connection,
    campaign_id: str,
    *,
    states: Sequence[str] | None = None,
    volunteer_ids: Collection[str] | None = None,
) -> list[MessageRow]:
    """A campaign's messages with their recipients, in volunteer order (of these
    volunteers only, when given: a chunk of a send)."""
    sql = (
        "SELECT m.message_id, m.campaign_id, m.volunteer_id, m.verp_token, m.state,"
        " m.attempts, v.email, m.smtp_reply, m.queue_id, m.updated_at"
        " FROM messages m JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
        " WHERE m.campaign_id = ?"
    )
    params: list[Any] = [campaign_id]
    if states is not None:
        # Only placeholders are joined into the SQL; the states go in as parameters. With
        # volunteers given, the unary plus keeps SQLite on their (campaign, volunteer)
        # lookups: by the state index it would read every message in those states, per
        # chunk of a send (quadratic in the campaign's size).
        plus = "+" if volunteer_ids is not None else ""
        sql += f" AND {plus}m.state IN ({', '.join('?' for _ in states)})"
        params.extend(states)
    if volunteer_ids is not None:
        sql += " AND m.volunteer_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(sorted(volunteer_ids)))
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
        state=MessageState(row["state"]),
        attempts=int(row["attempts"] or 0),
        email=email,
        smtp_reply=row["smtp_reply"] or "",
        queue_id=row["queue_id"] or "",
        updated_at=row["updated_at"],
    )


def message_states(
    conn: sqlite3.Connection, campaign_id: str, volunteer_ids: Collection[str] | None = None
) -> dict[str, MessageState]:
    """volunteer_id -> state of the campaign's messages (volunteers without one left out),
    of these volunteers only when given (one person's costs one index lookup)."""
    sql = "SELECT volunteer_id, state FROM messages WHERE campaign_id = ?"
    params: list[str] = [campaign_id]
    if volunteer_ids is not None:
        sql += " AND volunteer_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(sorted(volunteer_ids)))
    return {
        str(row["volunteer_id"]): MessageState(row["state"]) for row in conn.execute(sql, params)
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


def message_ids(
    conn: sqlite3.Connection,
    campaign_id: str,
    states: Collection[str] | None = None,
    volunteer_ids: Collection[str] | None = None,
) -> dict[str, str]:
    """volunteer_id -> Message-ID of the campaign's messages (in one of `states`, if
    given; of these volunteers only, when given)."""
    sql = "SELECT volunteer_id, message_id FROM messages WHERE campaign_id = ?"
    params: list[str] = [campaign_id]
    if states is not None:
        # With volunteers given, by their lookups, not the state index (campaign_messages).
        plus = "+" if volunteer_ids is not None else ""
        sql += f" AND {plus}state IN (SELECT value FROM json_each(?))"  # noqa: S608
        params.append(json.dumps(sorted(map(str, states))))
    if volunteer_ids is not None:
        sql += " AND volunteer_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(sorted(volunteer_ids)))
    return {str(row["volunteer_id"]): str(row["message_id"]) for row in conn.execute(sql, params)}


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
    if settled:
        move(
            conn,
            [Move(s.message.message_id, EventKind(s.state), s.data, s.state) for s in settled],
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
