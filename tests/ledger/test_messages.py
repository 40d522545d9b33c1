"""Messages in the ledger: registering them, the write-ahead claim, outcomes, and the events
that move each message's state in the same statement as they are written."""

from __future__ import annotations

import pytest
from smtp_helpers import add_volunteers, make_volunteers

from notifier.errors import LedgerError
from notifier.ledger import EventDraft, Ledger
from notifier.message import DeliveryOutcome, MessageRow, NewMessage

IDS = [f"<m{i}@example.org>" for i in range(3)]


@pytest.fixture
def campaign(ledger: Ledger) -> Ledger:
    """Campaign `c` with three pending messages, to HMR-00000 .. HMR-00002."""
    add_volunteers(ledger, make_volunteers(3))
    assert ledger.register_campaign(
        "c", title="t", follows=None, definition={}, templates_sha256="0" * 64
    )
    new = [NewMessage(IDS[i], f"HMR-{i:05d}", f"t{i}") for i in range(3)]
    assert ledger.ensure_messages("c", new) == 3
    assert ledger.ensure_messages("c", new) == 0  # known messages are left as they are
    return ledger


def test_messages_are_registered_pending_with_a_queued_event(campaign: Ledger) -> None:
    assert campaign.has_messages("c") and not campaign.has_messages("other")
    assert campaign.state_counts("c") == {"pending": 3}
    assert campaign.message_states("c") == {f"HMR-{i:05d}": "pending" for i in range(3)}
    assert [e.kind for e in campaign.events(campaign_id="c")] == ["campaign_registered"] + [
        "queued"
    ] * 3
    first = campaign.messages("c")[0]
    assert first == MessageRow(
        message_id=IDS[0],
        campaign_id="c",
        volunteer_id="HMR-00000",
        verp_token="t0",
        state="pending",
        attempts=0,
        smtp_reply="",
        queue_id="",
        updated_at=first.updated_at,
    )
    assert campaign.messages() == campaign.messages("c")
    assert [m.email for m in campaign.campaign_messages("c")] == [
        v.email for v in make_volunteers(3)
    ]


def test_claims_and_outcomes_move_messages_in_one_statement(campaign: Ledger) -> None:
    assert campaign.claim_for_sending(IDS) == dict.fromkeys(IDS, 1)
    campaign.record_outcomes(
        [
            DeliveryOutcome(
                IDS[0], "c", "HMR-00000", "sent", 1, 250, "2.0.0 Ok: queued as Q1", "Q1"
            ),
            DeliveryOutcome(IDS[1], "c", "HMR-00001", "deferred", 1, None, "Connection lost"),
            DeliveryOutcome(IDS[2], "c", "HMR-00002", "failed_permanent", 1, reason="no way"),
        ]
    )
    assert campaign.claim_for_sending([IDS[1]]) == {IDS[1]: 2}
    rows = {m.message_id: m for m in campaign.campaign_messages("c")}
    assert (rows[IDS[0]].state, rows[IDS[0]].queue_id) == ("sent", "Q1")
    assert (rows[IDS[1]].state, rows[IDS[1]].attempts) == ("sending", 2)
    assert rows[IDS[1]].smtp_reply == "Connection lost"  # kept from the deferral
    assert (rows[IDS[2]].state, rows[IDS[2]].smtp_reply) == ("failed_permanent", "no way")
    updated = {m.message_id: m.updated_at for m in campaign.messages("c")}
    last = {e.message_id: e.at for e in campaign.events(campaign_id="c") if e.message_id}
    assert updated == last  # a message's time is that of its latest event
    assert campaign.verify().ok


def test_claiming_an_unknown_message_claims_nothing(campaign: Ledger) -> None:
    events = campaign.count("events")
    with pytest.raises(LedgerError, match="no such message"):
        campaign.claim_for_sending([IDS[0], "<nobody@example.org>"])
    assert campaign.count("events") == events
    assert campaign.state_counts("c") == {"pending": 3}
    assert campaign.claim_for_sending([]) == {}
    assert campaign.record_outcomes([]) == 0


def test_messages_left_sending_become_uncertain(campaign: Ledger) -> None:
    campaign.claim_for_sending(IDS[:2])
    assert [m.message_id for m in campaign.uncertain_messages("c")] == IDS[:2]
    stuck = campaign.mark_uncertain("c")
    assert [m.message_id for m in stuck] == IDS[:2]
    assert campaign.state_counts("c") == {"pending": 1, "uncertain": 2}
    (event, _) = campaign.events(kinds=["uncertain"])
    assert event.data["attempt"] == 1 and "in flight" in event.data["reason"]
    assert campaign.mark_uncertain("c") == []  # nothing left sending


def test_event_with_state_moves_its_message(campaign: Ledger) -> None:
    (event,) = campaign.append_events(
        [EventDraft("sent", "c", "HMR-00000", IDS[0], state="sent")],
        at="2020-04-01T10:00:00.000000+00:00",
    )
    moved = {m.message_id: m for m in campaign.messages("c")}[IDS[0]]
    assert (moved.state, moved.updated_at) == ("sent", event.at)
    # An event without a state records, and moves nothing.
    campaign.append_event(EventDraft("delivered", "c", "HMR-00001", IDS[1]))
    assert campaign.message_states("c")["HMR-00001"] == "pending"
