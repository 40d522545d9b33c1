"""Delivery reports in the ledger: the messages they are matched to, and the reports kept."""

from __future__ import annotations

import pytest
from smtp_helpers import make_volunteers

from notifier.errors import LedgerError
from notifier.event import EventKind
from notifier.ledger import Ledger, MatchedMessage, ReportEvent, volunteer_to_row
from notifier.message import DeliveryOutcome, MessageState, NewMessage


@pytest.fixture
def sent(ledger: Ledger) -> Ledger:
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in make_volunteers(2)])
    ledger.register_campaign("c", title="t", follows=None, definition={}, templates_sha256="")
    ledger.ensure_messages(
        "c", [NewMessage(f"<m{i}@example.org>", f"HMR-{i:05d}", f"tok{i}") for i in range(2)]
    )
    return ledger


def test_message_found_by_token_or_message_id(sent: Ledger) -> None:
    volunteer = make_volunteers(2)[1]
    expected = MatchedMessage(
        "<m1@example.org>", "c", "HMR-00001", "pending", volunteer.email, volunteer.email_ascii
    )
    assert sent.message_by_verp_token("tok1") == expected
    assert sent.message_by_message_id("<m1@example.org>") == expected
    assert sent.message_by_message_id(" m1@example.org ") == expected  # MTAs drop the brackets
    assert sent.message_by_verp_token("nope") is None
    assert sent.message_by_message_id("<nope@example.org>") is None
    assert expected.is_addressed_to(volunteer.email.upper())
    assert not expected.is_addressed_to("someone@example.org") and not expected.is_addressed_to(
        None
    )


def test_reports_are_kept_once_with_their_detail(sent: Ledger) -> None:
    assert not sent.bounce_report_recorded("a" * 64)
    message = sent.message_by_message_id("<m0@example.org>")
    assert message is not None
    sent.claim_for_sending([message.message_id])
    sent.record_outcomes(
        [DeliveryOutcome(message.message_id, "c", "HMR-00000", MessageState.SENT, 1, 250, "ok")]
    )
    kept = sent.record_report(
        "a" * 64,
        "new/1.eml",
        message=message,
        events=[ReportEvent(EventKind.DELIVERED, {"status": "2.0.0"})],
        detail={"outcome": "matched", "records": [{"recipient": "鈴木@example.jp"}]},
    )
    # An auto-reply tied to a message: kept, with the message, but not matched.
    auto = sent.message_by_message_id("<m1@example.org>")
    sent.record_report(
        "b" * 64,
        "new/2.eml",
        message=auto,
        events=[ReportEvent(EventKind.BOUNCE_UNMATCHED, {"reason": "an automatic reply"})],
        detail={"raw": "x"},
    )
    assert sent.bounce_report_recorded("a" * 64)
    assert sent.bounce_reports()[0] == kept
    assert kept.detail["records"][0]["recipient"] == "鈴木@example.jp"
    assert [r.sha256 for r in sent.bounce_reports(matched=True)] == ["a" * 64]
    (unmatched,) = sent.bounce_reports(matched=False)
    assert (unmatched.source, unmatched.message_id, unmatched.matched) == (
        "new/2.eml",
        "<m1@example.org>",
        False,
    )
    # Each report is kept with its events, and its time is theirs: the chain vouches for it.
    delivered, auto_reply = sent.events(kinds=["delivered", "bounce_unmatched"])
    assert delivered.data["report_sha256"] == "a" * 64 and delivered.at == kept.received_at
    assert delivered.data["moved_to"] == "delivered"
    assert auto_reply.data["report_sha256"] == "b" * 64 and "moved_to" not in auto_reply.data
    assert sent.message_states("c") == {"HMR-00000": "delivered", "HMR-00001": "pending"}


def test_a_report_is_matched_with_its_events_or_kept_with_one(sent: Ledger) -> None:
    message = sent.message_by_message_id("<m0@example.org>")
    with pytest.raises(LedgerError):  # a matched report is about a message
        sent.record_report(
            "c" * 64, "x", message=None, events=[ReportEvent(EventKind.DELIVERED)], detail={}
        )
    with pytest.raises(LedgerError):  # and says what it says about it
        sent.record_report("c" * 64, "x", message=message, events=[], detail={})
    with pytest.raises(LedgerError):  # never both
        sent.record_report(
            "c" * 64,
            "x",
            message=message,
            events=[ReportEvent(EventKind.DELIVERED), ReportEvent(EventKind.BOUNCE_FORGED)],
            detail={},
        )
    assert not sent.bounce_report_recorded("c" * 64)
