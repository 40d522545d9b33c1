"""Reading events back for one person or one campaign, through their messages too."""

from __future__ import annotations

from smtp_helpers import make_volunteers

from notifier.ledger import EventDraft, Ledger, volunteer_to_row
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
    # A delivery report matched by Message-ID names only the message.
    (report,) = ledger.append_events([EventDraft("delivered", message_id="<first.0@x>")])
    ledger.append_event(EventDraft("volunteer_updated", volunteer_id="HMR-00000"))

    mine = ledger.volunteer_events("HMR-00000")
    assert [(e.kind, e.campaign_id) for e in mine] == [
        ("queued", "first"),
        ("queued", "second"),
        ("delivered", None),
        ("volunteer_updated", None),
    ]
    first = ledger.campaign_events("first")
    assert [e.kind for e in first] == ["campaign_registered", "queued", "queued", "delivered"]
    assert first[-1] == report
    assert ledger.volunteer_events("nobody") == []
    assert ledger.campaign_events("none") == []
