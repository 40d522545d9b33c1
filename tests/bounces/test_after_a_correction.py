"""A report that arrives after the roster was corrected is about the address the notice
went to, not the one the roster holds now."""

from __future__ import annotations

from dataclasses import replace

from smtp_helpers import add_volunteers, make_volunteers, send

from notifier.bounces import ingest
from notifier.campaign import load_campaign
from notifier.ledger import Ledger
from notifier.sink import Sink

FIRST = "2020-03-breach"


def hard_bounce(return_path: str, recipient: str) -> bytes:
    """A delivery report as an MTA writes it, sent to the message's VERP return path."""
    return (
        f"From: MAILER-DAEMON@mx.example.com\r\nTo: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe address does not exist.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown\r\n"
        "--b--\r\n"
    ).encode()


def test_a_late_hard_bounce_suppresses_the_dead_address_not_the_corrected_one(
    ledger: Ledger,
) -> None:
    people = make_volunteers(2)
    add_volunteers(ledger, people)
    with Sink() as sink:
        send(ledger, load_campaign(FIRST), people, sink.url)
    bob = people[0]
    (sent,) = [m for m in sink.messages if bob.email in m.rcpt_tos]
    # The roster is corrected before the bounce comes in.
    corrected = replace(bob, email="bob.fixed@example.net", email_ascii="bob.fixed@example.net")
    add_volunteers(ledger, [corrected])

    summary = ingest(
        ledger, [("late.eml", hard_bounce(sent.mail_from, bob.email))], key=ledger.verp_key()
    )

    assert summary.matched == 1
    assert ledger.suppressed(bob.email)
    assert not ledger.suppressed(corrected.email)  # the follow-up can still reach them
    (message,) = [m for m in ledger.campaign_messages(FIRST) if m.volunteer_id == bob.volunteer_id]
    assert message.state == "bounced_hard"
    assert ledger.verify().ok
