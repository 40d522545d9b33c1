"""Reading events back for one person or one campaign, through their messages too."""

from __future__ import annotations

from smtp_helpers import make_volunteers

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, Move, volunteer_to_row
from notifier.message import NewMessage


def test_events_of_a_person_and_of_a_campaign_include_those_naming_only_a_message(
    ledger: Ledger,
) -> None:
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in make_volunteers(2)])
    for campaign in ("first", "second"):
        ledger.register_campaign(
            campaign, title=campaign, follows=None, definition={}, templates_sha256=""
        )
        ledger.ensure_messages(
            campaign,
            [NewMessage(f"<{campaign}.{i}@x>", f"HMR-{i:05d}", f"{campaign}{i}") for i in range(2)],
        )
    # Events about a message are written by the transition function, naming the message
    # and its campaign and volunteer; one named only by its message (an event written
    # before that) still belongs to the person and the campaign.
    ledger.claim_for_sending(["<first.0@x>"])
    ledger.move_messages([Move("<first.0@x>", EventKind.SENT, {})])
    ledger.db.execute("UPDATE events SET campaign_id = NULL, volunteer_id = NULL WHERE seq = 8")
    (report,) = ledger.events(kinds=["sent"])
    ledger.record([EventDraft(EventKind.TEST_SENT, volunteer_id="HMR-00000")])

    mine = ledger.volunteer_events("HMR-00000")
    assert [(e.kind, e.campaign_id) for e in mine] == [
        ("queued", "first"),
        ("queued", "second"),
        ("sending", "first"),
        ("sent", None),
        ("test_sent", None),
    ]
    first = ledger.campaign_events("first")
    assert [e.kind for e in first] == [
        "campaign_registered",
        "queued",
        "queued",
        "sending",
        "sent",
    ]
    assert first[-1] == report
    assert ledger.volunteer_events("nobody") == []
    assert ledger.campaign_events("none") == []
