"""A follow-up's cohort names the people its first notice has not reached (soft-bounced,
not sent), so nobody falls off the worklists unnoticed."""

from __future__ import annotations

from conftest import REPO, Notifier, write_org_config

from notifier.event import EventKind
from notifier.ledger import Ledger, ReportEvent
from notifier.sink import Sink

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"


def test_cohort_excluded_names_the_soft_bounced(notifier: Notifier) -> None:
    write_org_config(notifier.cwd)
    assert notifier("roster", "import", str(REPO / "examples" / "volunteers.csv")).exit_code == 0
    assert notifier("approve", FIRST, "--by", "Test approver").exit_code == 0
    with Sink() as sink:
        sent = notifier("send", FIRST, "--yes", "--smtp", sink.url)
        assert sent.exit_code == 0, sent.output
    with Ledger(notifier.ledger_path) as led:
        message = next(m for m in led.messages(FIRST) if m.volunteer_id == "HMR-0004")
        # A report: the mailbox is full (as `bounces ingest` records one).
        led.record_report(
            "f" * 64,
            "new/1.eml",
            message=led.message_by_message_id(message.message_id),
            events=[
                ReportEvent(EventKind.BOUNCED_SOFT, {"diagnostic": "smtp; 452 4.2.2 Mailbox full"})
            ],
            detail={"outcome": "matched"},
        )
    out = notifier("cohort", UPDATE, "--excluded").stdout
    assert "1 left out because the earlier notice has not reached them" in out
    assert "HMR-0004  Ava Wright: bounced_soft (bounced for now: mailbox full" in out
    # ... and they are on the postal worklist, with their state, and counted by status.
    letters = notifier("export", "unreachable").stdout
    assert "HMR-0004,Ava Wright,ava.wright@example.org" in letters and "bounced_soft" in letters
    status = " ".join(notifier("status", FIRST).stdout.split())
    assert "still owed: 1" in status
    assert "1 bounced for now: mailbox full or unavailable" in status
    assert f"notifier resend {FIRST} --status bounced_soft,failed_temporary --yes" in status
