"""Delivery reports as the ledger keeps them, and the messages they are matched to.

Every report read is kept once (`bounce_reports`, keyed by the sha256 of its bytes): the
matched ones with the message they are about, the others with the raw report, so a person
can read them or match them by hand later. `record` writes the row together with the
events the report makes, each naming the report's sha256: what it says about its
message (moving it through the one transition function, as far as REPORT_RANK allows;
a hard bounce also suppresses the address, `notifier.ledger.suppressions`), or why it
was kept unmatched. So the chain vouches for every row: a row deleted (the report would
be read again) or made up (a genuine report would be skipped as "already recorded") is
found by `ledger verify`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from notifier.errors import LedgerError
from notifier.event import NOTE_KINDS, REPORT_KINDS, UNMATCHED_REPORT_KINDS, EventKind
from notifier.ledger import suppressions
from notifier.ledger.chain import EventDraft, append
from notifier.ledger.messages import Move, current_state, move
from notifier.message import MessageState, state_after_report


@dataclass(frozen=True)
class MatchedMessage:
    """The message a report is about, with its recipient's addresses on the roster."""

    message_id: str
    campaign_id: str
    volunteer_id: str
    state: str
    email: str | None  # the roster address now
    email_ascii: str | None
    # The address the message went to (its latest `sending` event), which a roster
    # import may since have corrected; None for a message never sent.
    sent_to: str | None = None

    def is_addressed_to(self, recipient: str | None) -> bool:
        """Whether `recipient` is this message's: the address it went to, or the roster's."""
        if not recipient:
            return False
        wanted = recipient.casefold()
        addresses = (self.sent_to, self.email, self.email_ascii)
        return any(a and a.casefold() == wanted for a in addresses)

    @property
    def bounced_address(self) -> str | None:
        """What a hard bounce of this message suppresses: the roster's address, unless
        the roster has moved on from the address the message went to (a correction
        imported since), which is then the dead one."""
        roster = {a.casefold() for a in (self.email, self.email_ascii) if a}
        if self.sent_to and self.sent_to.casefold() not in roster:
            return self.sent_to
        return self.email


@dataclass(frozen=True)
class RecordedReport:
    """One delivery report as kept in the ledger."""

    sha256: str  # notifier.bounces.report_digest() of its bytes: its identity
    source: str  # where it was read: a file, an mbox message, an IMAP UID
    received_at: str
    matched: bool
    message_id: str | None  # the message it was matched to
    detail: Mapping[str, Any]  # the outcome, the per-recipient records, the raw report
    suppressed: tuple[str, ...] = ()  # addresses this report put on the suppression list


@dataclass(frozen=True)
class ReportEvent:
    """One thing a report says: for a matched report, a REPORT_KINDS event about its
    message (`suppress`: for a hard bounce, the address it bounced from); else one
    UNMATCHED_REPORT_KINDS event (it may still name the message an auto-reply was to)."""

    kind: EventKind
    data: Mapping[str, Any] = field(default_factory=dict)
    suppress: str | None = None


_SELECT_MESSAGE = (
    "SELECT m.message_id, m.campaign_id, m.volunteer_id, m.state, v.email, v.email_ascii,"
    " (SELECT json_extract(e.data, '$.recipient') FROM events e"
    "  WHERE e.volunteer_id = m.volunteer_id AND e.message_id = m.message_id"
    "  AND e.kind = 'sending'"
    "  ORDER BY e.seq DESC LIMIT 1) AS sent_to"
    " FROM messages m LEFT JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
)


def message_by_verp_token(conn: sqlite3.Connection, token: str) -> MatchedMessage | None:
    row = conn.execute(f"{_SELECT_MESSAGE} WHERE m.verp_token = ? LIMIT 1", (token,)).fetchone()
    return _matched(row)


def message_by_message_id(conn: sqlite3.Connection, message_id: str) -> MatchedMessage | None:
    """The message with this Message-ID, compared with and without its angle brackets:
    MTAs differ."""
    bare = message_id.strip().strip("<>")
    row = conn.execute(
        f"{_SELECT_MESSAGE} WHERE m.message_id IN (?, ?) LIMIT 1", (bare, f"<{bare}>")
    ).fetchone()
    return _matched(row)


def _matched(row: sqlite3.Row | None) -> MatchedMessage | None:
    if row is None:
        return None
    return MatchedMessage(
        message_id=row["message_id"],
        campaign_id=row["campaign_id"],
        volunteer_id=row["volunteer_id"],
        state=row["state"],
        email=row["email"],
        email_ascii=row["email_ascii"],
        sent_to=row["sent_to"],
    )


def is_recorded(conn: sqlite3.Connection, sha256: str) -> bool:
    row = conn.execute("SELECT 1 FROM bounce_reports WHERE sha256 = ?", (sha256,)).fetchone()
    return row is not None


def record(
    conn: sqlite3.Connection,
    sha256: str,
    source: str,
    *,
    message: MatchedMessage | None,
    events: Sequence[ReportEvent],
    detail: Mapping[str, Any],
) -> RecordedReport:
    """Keep one report, received now, with its events. Within a transaction.

    `message` is the message the report is tied to: with REPORT_KINDS events it is
    matched; with an UNMATCHED_REPORT_KINDS event it is only named (an auto-reply to it).
    """
    matched = any(e.kind in REPORT_KINDS for e in events)
    if not events or (matched and message is None):
        raise LedgerError("a report is kept with what it says, about a message if matched")
    if matched != all(e.kind in REPORT_KINDS for e in events) or not (
        matched or (len(events) == 1 and events[0].kind in UNMATCHED_REPORT_KINDS)
    ):
        raise LedgerError("a report is either matched (its events) or kept unmatched (one)")
    common = {"report_sha256": sha256, "source": source}
    suppressed: list[str] = []
    if matched:
        assert message is not None
        state = current_state(conn, message.message_id)
        for event in events:
            moved = None
            if event.kind not in NOTE_KINDS:
                moved = state_after_report(state, MessageState(event.kind))
            state = moved or state
            data = {**event.data, **common}
            (written,) = move(conn, [Move(message.message_id, event.kind, data, moved)]).events()
            if event.suppress and not suppressions.address_is_suppressed(conn, event.suppress):
                reason = f"bounced_hard {event.data.get('status') or ''}".strip()
                suppressions.add(
                    conn,
                    event.suppress,
                    reason,
                    event_seq=written.seq,
                    campaign_id=message.campaign_id,
                    volunteer_id=message.volunteer_id,
                    message_id=message.message_id,
                )
                suppressed.append(event.suppress)
        at = written.at
    else:
        (event,) = events
        at = append(
            conn,
            [
                EventDraft(
                    event.kind,
                    campaign_id=message.campaign_id if message else None,
                    volunteer_id=message.volunteer_id if message else None,
                    message_id=message.message_id if message else None,
                    data={**event.data, **common},
                )
            ],
        ).at
    report = RecordedReport(
        sha256,
        source,
        at,
        matched,
        message.message_id if message else None,
        detail,
        tuple(suppressed),
    )
    conn.execute(
        "INSERT INTO bounce_reports(sha256, source, received_at, matched, message_id, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            report.sha256,
            report.source,
            report.received_at,
            int(report.matched),
            report.message_id,
            json.dumps(report.detail, ensure_ascii=False, sort_keys=True),
        ),
    )
    return report


def unbacked_reports(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Kept reports that no event names (kept by a notifier that wrote none for them)."""
    kinds = sorted({*REPORT_KINDS, *UNMATCHED_REPORT_KINDS})
    return list(
        conn.execute(
            "SELECT * FROM bounce_reports b WHERE NOT EXISTS (SELECT 1 FROM events e"  # noqa: S608
            f" WHERE e.kind IN ({', '.join('?' for _ in kinds)})"
            " AND json_extract(e.data, '$.report_sha256') = b.sha256) ORDER BY sha256",
            kinds,
        )
    )


def reports(conn: sqlite3.Connection, *, matched: bool | None = None) -> list[RecordedReport]:
    """The reports kept (only the matched, or unmatched, ones if asked), oldest first."""
    where, params = ("WHERE matched = ?", (int(matched),)) if matched is not None else ("", ())
    sql = f"SELECT * FROM bounce_reports {where} ORDER BY received_at, sha256"  # noqa: S608
    return [
        RecordedReport(
            sha256=row["sha256"],
            source=row["source"],
            received_at=row["received_at"],
            matched=bool(row["matched"]),
            message_id=row["message_id"],
            detail=json.loads(row["detail"] or "{}"),
        )
        for row in conn.execute(sql, params)
    ]
