"""Classification by the address's fate, the recipient we sent to, and the blocked state."""

from __future__ import annotations

import json

import pytest
from test_bounces import (
    FIXTURE_KEY,
    fixture,
    kinds_for,
    seed_ledger,
    state_of,
    suppressed,
)

from notifier.bounces import classify, ingest, parse_full_report, parse_report
from notifier.ledger import Ledger
from notifier.message import RESENDABLE_STATES, MessageState, state_after_report


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind"),
    [
        ("failed", "5.1.1", None, "hard"),  # no such user
        ("failed", "5.1.2", None, "hard"),  # no such domain
        ("failed", "5.4.4", None, "hard"),  # no route
        # The queue lifetime ran out: Postfix reports `failed` with the last temporary
        # status it saw, whatever it was; X.4.7 says "delivery time expired" itself.
        ("failed", "4.4.7", None, "expired"),
        ("failed", "4.4.1", "connect to mx.example.org: Connection refused", "expired"),
        ("failed", "4.2.2", None, "expired"),
        ("failed", "5.4.7", None, "expired"),
        ("failed", "5.2.2", None, "soft"),  # mailbox full
        ("failed", "5.3.4", None, "soft"),  # message too big
        ("failed", "5.2.3", None, "soft"),
        ("failed", "5.7.1", None, "blocked"),  # policy
        ("failed", "5.7.26", None, "blocked"),  # DMARC
        ("delayed", "4.7.1", None, "delayed"),  # still being tried: nothing decided
        ("error", "5.1.1", None, "hard"),  # non-standard Action
        ("error", "5.7.1", None, "blocked"),
        ("error", "4.4.1", None, "unparseable"),  # no standard Action, no failure status
        ("failed", "5.0.0", "550 5.1.1 <a@example.org>: User unknown", "hard"),
        ("failed", "5.0.0", "552 5.2.2 Mailbox full", "soft"),
        ("failed", "5.0.0", "554 Sorry, mailbox is full", "soft"),
        ("failed", None, "550 over quota", "soft"),
        ("failed", "5.0.0", "554 rejected: blocked using zen.spamhaus.org", "blocked"),
        ("failed", None, "550 Mailbox not found", "hard"),
        # A specific status outranks the words: 5.1.1 is hard whatever the text says.
        ("failed", "5.1.1", "550 5.1.1 unknown user (mailbox full of spam)", "hard"),
    ],
)
def test_classification_by_fate(
    action: str, status: str | None, diagnostic: str | None, kind: str
) -> None:
    assert classify(action, status, diagnostic) == kind


ALIASED = fixture("postfix-hard-511.eml").replace(
    b"Final-Recipient: rfc822; alice@example.org",
    b"Final-Recipient: rfc822; a.smith@mailstore.example.org",
)


def test_original_recipient_is_the_recipient_and_both_are_kept() -> None:
    (record,) = parse_report(ALIASED, source="x")
    assert record.recipient == "alice@example.org"
    assert record.original_recipient == "rfc822;alice@example.org"
    assert record.final_recipient == "rfc822; a.smith@mailstore.example.org"


def test_final_recipient_when_there_is_no_original() -> None:
    data = ALIASED.replace(b"Original-Recipient: rfc822;alice@example.org\n", b"")
    (record,) = parse_report(data, source="x")
    assert (record.recipient, record.original_recipient) == ("a.smith@mailstore.example.org", None)


def test_aliased_report_is_about_our_address(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("aliased.eml", ALIASED)], key=FIXTURE_KEY)
    assert (summary.hard, summary.suppressed) == (1, 1)
    (event, _suppression) = ledger.events(kinds=["bounced_hard", "address_suppressed"])
    assert event.data["recipient"] == "alice@example.org"
    detail = json.loads(ledger.conn.execute("SELECT detail FROM bounce_reports").fetchone()[0])
    assert detail["records"][0]["final_recipient"] == "rfc822; a.smith@mailstore.example.org"


def test_non_standard_action_error_is_a_failure() -> None:
    data = fixture("postfix-hard-511.eml").replace(b"Action: failed\n", b"Action: error\n")
    (record,) = parse_full_report(data, source="x").records
    assert (record.action, record.kind) == ("error", "hard")


POLICY_REFUSAL = (
    fixture("postfix-hard-511.eml")
    .replace(b"Status: 5.1.1", b"Status: 5.7.1")
    .replace(
        b"550 5.1.1 <alice@example.org>: Recipient address\n"
        b"    rejected: User unknown in local recipient table",
        b"550 5.7.1 Message rejected\n    due to sender reputation",
    )
)


def test_policy_refusal_is_blocked() -> None:
    (record,) = parse_report(POLICY_REFUSAL, source="x")
    assert (record.status, record.kind) == ("5.7.1", "blocked")
    assert record.diagnostic == "550 5.7.1 Message rejected due to sender reputation"


def test_blocked_is_recorded_counted_and_never_suppresses(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("policy.eml", POLICY_REFUSAL)], key=FIXTURE_KEY)
    assert (summary.blocked, summary.hard, summary.suppressed) == (1, 0, 0)
    assert state_of(ledger, 1) == "blocked"
    assert kinds_for(ledger, 1) == ["blocked"]
    assert suppressed(ledger) == set()
    # The same notice later bounces hard: that is the stronger fact, and it suppresses.
    ingest(ledger, [("hard.eml", fixture("postfix-hard-511.eml"))], key=FIXTURE_KEY)
    assert state_of(ledger, 1) == "bounced_hard"
    assert suppressed(ledger) == {"alice@example.org"}


@pytest.mark.parametrize(
    ("current", "proposed", "moved"),
    [
        ("sent", "blocked", "blocked"),
        ("delivered", "blocked", "blocked"),
        ("bounced_soft", "blocked", "blocked"),
        ("blocked", "delivered", None),
        ("blocked", "bounced_soft", None),
        ("blocked", "bounced_hard", "bounced_hard"),
        ("bounced_hard", "blocked", None),
        ("failed_permanent", "blocked", None),
    ],
)
def test_blocked_rank_among_reports(current: str, proposed: str, moved: str | None) -> None:
    assert state_after_report(current, MessageState(proposed)) == moved


def test_blocked_can_be_sent_again() -> None:
    assert MessageState.BLOCKED in RESENDABLE_STATES
