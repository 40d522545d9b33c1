"""A message's events are found through its volunteer (schema 5 has no index of events by
Message-ID): what every reader of a message's events relies on, and what `verify` holds
every event to."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from report_scenario import C1, C2, append, at, build, mid

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger
from notifier.ledger.schema import MESSAGE_ONLY


def _statements_reading_events(ledger: Ledger, reads: list[Callable[[], object]]) -> list[str]:
    """The SELECTs on events that these reads run, as SQLite ran them (bound values
    written in)."""
    seen: list[str] = []
    ledger.conn.set_trace_callback(seen.append)
    try:
        for read in reads:
            result = read()
            if isinstance(result, Iterator):
                list(result)  # a generator's queries run as it is read
    finally:
        ledger.conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith("SELECT") and "events" in s]


def test_no_reader_of_a_messages_events_reads_every_event(ledger: Ledger) -> None:
    """Each query a report, a person's history, a bounce's match or a send's check of a
    chunk runs finds its events through an index: none walks the events table (on a
    large ledger, millions of rows for each message or chunk)."""
    build(ledger)
    message = ledger.message_by_message_id(mid(C1, "v01"))
    assert message is not None
    token = ledger.conn.execute(
        "SELECT verp_token FROM messages WHERE message_id = ?", (mid(C1, "v02"),)
    ).fetchone()[0]
    statements = _statements_reading_events(
        ledger,
        [
            lambda: ledger.messages_with_events(C1, ["volunteer_added"]),
            lambda: ledger.unbacked_messages(C1, {"sent": "sent"}, ["volunteer_added"]),
            lambda: ledger.volunteer_events("v01"),
            lambda: ledger.message_by_verp_token(token),
            lambda: ledger.message_by_message_id(mid(C1, "v03")),
            lambda: ledger.rows_differ(["v01", "v02", "v03"], C1),
        ],
    )
    assert len(statements) >= 6
    for sql in statements:
        plan = [row[3] for row in ledger.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        walks = [
            step for step in plan if step.split(" ")[:2] in (["SCAN", "events"], ["SCAN", "e"])
        ]
        assert not walks, f"{sql}\n{plan}"


def test_a_message_only_event_is_still_part_of_its_persons_history(ledger: Ledger) -> None:
    """The scenario's delivery report for v01 names only the message (as a report matched
    by Message-ID once could): it is in v01's history and v01's report line, through the
    index of such events."""
    build(ledger)
    history = ledger.volunteer_events("v01")
    assert any(e.kind == "delivered" and e.volunteer_id is None for e in history)
    (line,) = [m for m in ledger.messages_with_events(C1, []) if m.volunteer_id == "v01"]
    assert "delivered" in [kind for kind, _at, _data in line.events]
    assert ledger.verify().ok


@pytest.mark.parametrize(
    ("campaign", "person", "said"),
    [
        (C1, "v04", "volunteer_id ('v02', the events say 'v04')"),
        (C2, "v02", f"campaign_id ('{C1}', the events say '{C2}')"),
    ],
    ids=["another-person", "another-campaign"],
)
def test_an_event_naming_a_message_as_someone_elses_fails_verify(
    ledger: Ledger, campaign: str, person: str, said: str
) -> None:
    """Written with the chain's key, an event naming v02's message of the first campaign
    but another person (or campaign) would be missed by every reader that finds that
    message's events through v02: verify holds the row to it, so the ledger fails and the
    row is named."""
    build(ledger)
    assert ledger.verify().ok
    append(
        ledger,
        [
            EventDraft(
                EventKind.DELIVERED,
                campaign_id=campaign,
                volunteer_id=person,
                message_id=mid(C1, "v02"),
                data={"status": "2.0.0"},
            )
        ],
        at("13:00"),
    )
    result = ledger.verify()
    assert not result.ok
    assert f"table messages, row message_id {mid(C1, 'v02')}" in result.reason
    assert said in result.reason


def test_the_index_by_message_id_is_gone_and_message_only_events_have_theirs(
    ledger: Ledger,
) -> None:
    indexes = {
        row[0]: row[1]
        for row in ledger.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
        )
    }
    assert "idx_events_message_id" not in indexes
    assert indexes["idx_events_message_only"].endswith(f"WHERE {MESSAGE_ONLY}")
