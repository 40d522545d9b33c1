"""Appending events: the lean path sending uses (Ledger._append_rows, through append_events,
claim_for_sending and record_outcomes) must hash exactly what verify() recomputes with
event_hash(), whatever the text in the events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_helpers import make_volunteers

from notifier.ledger import EventDraft, Ledger, event_hash, volunteer_to_row
from notifier.message import DeliveryOutcome, NewMessage

# Any text: quotes, backslashes, control characters, line separators, non-BMP.
TEXT = st.text(max_size=20)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
DRAFT = st.builds(
    EventDraft,
    kind=TEXT,
    campaign_id=st.none() | TEXT,
    volunteer_id=st.none() | TEXT,
    message_id=st.none() | TEXT,
    data=st.dictionaries(TEXT, JSON_VALUE, max_size=4),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drafts=st.lists(DRAFT, min_size=1, max_size=5))
def test_ledger_append_hashes_what_verify_recomputes(
    tmp_path: Path, drafts: list[EventDraft]
) -> None:
    path = tmp_path / "append.db"
    path.unlink(missing_ok=True)
    with Ledger(path) as ledger:
        events = ledger.append_events(drafts)
        assert ledger.verify().ok
    prev = events[0].prev_hash
    for event, draft in zip(events, drafts, strict=True):
        fields: dict[str, Any] = {
            "kind": draft.kind,
            "campaign_id": draft.campaign_id,
            "volunteer_id": draft.volunteer_id,
            "message_id": draft.message_id,
            "data": draft.data,
        }
        assert event.prev_hash == prev
        assert event.hash == event_hash(prev, event.seq, event.at, fields)
        prev = event.hash


def test_ledger_append_claims_and_outcomes_move_messages_in_one_statement(
    tmp_path: Path,
) -> None:
    with Ledger(tmp_path / "claims.db") as ledger:
        ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in make_volunteers(3)])
        ledger.register_campaign(
            "c", title="t", follows=None, definition={}, templates_sha256="0" * 64
        )
        ledger.ensure_messages(
            "c", [NewMessage(f"<m{i}@example.org>", f"HMR-{i:05d}", f"t{i}") for i in range(3)]
        )
        ids = [f"<m{i}@example.org>" for i in range(3)]
        assert ledger.claim_for_sending(ids) == dict.fromkeys(ids, 1)
        ledger.record_outcomes(
            [
                DeliveryOutcome(
                    ids[0], "c", "HMR-00000", "sent", 1, 250, "2.0.0 Ok: queued as Q1", "Q1"
                ),
                DeliveryOutcome(ids[1], "c", "HMR-00001", "deferred", 1, None, "Connection lost"),
                DeliveryOutcome(ids[2], "c", "HMR-00002", "failed_permanent", 1, reason="no way"),
            ]
        )
        assert ledger.claim_for_sending([ids[1]]) == {ids[1]: 2}
        rows = {m.message_id: m for m in ledger.campaign_messages("c")}
        assert (rows[ids[0]].state, rows[ids[0]].queue_id) == ("sent", "Q1")
        assert (rows[ids[1]].state, rows[ids[1]].attempts) == ("sending", 2)
        assert rows[ids[1]].smtp_reply == "Connection lost"  # kept from the deferral
        assert (rows[ids[2]].state, rows[ids[2]].smtp_reply) == ("failed_permanent", "no way")
        updated = {
            row[0]: row[1]
            for row in ledger.conn.execute("SELECT message_id, updated_at FROM messages")
        }
        last = {e.message_id: e.at for e in ledger.events(campaign_id="c") if e.message_id}
        assert updated == last  # a message's time is that of its latest event
        assert ledger.verify().ok
