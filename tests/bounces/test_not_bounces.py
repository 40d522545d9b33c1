"""Mail that looks like a bounce but is not one never suppresses anyone."""

from __future__ import annotations

import pytest
from test_bounces import (
    FIXTURE_KEY,
    PEOPLE,
    fixture,
    kinds_for,
    mid,
    report_events,
    seed_ledger,
    state_of,
    suppressed,
    token,
)

from notifier.bounces import ingest, parse_full_report, parse_report
from notifier.ledger import Ledger

# Sendmail's words, quoted by a vacation responder that returns what it was sent.
QUOTED_BOUNCE = """\
I am away until 4 May and will read your message when I return.

Your message:

----- The following addresses had permanent fatal errors -----
{address}

----- Transcript of session follows -----
550 5.1.1 {address}... User unknown
"""


def reply_from(
    n: int, *, headers: str, body: str, subject: str = "Re: Important: a data breach"
) -> bytes:
    """A message from volunteer n to the VERP address of their notice."""
    return (
        f"From: {PEOPLE[n]}\nTo: bounces+{token(n)}@notify.example.org\n"
        f"Subject: {subject}\n{headers}"
        f"Content-Type: text/plain; charset=utf-8\n\n{body}"
    ).encode()


def vacation(n: int, marker: str, subject: str = "Re: Important: a data breach") -> bytes:
    return reply_from(
        n, headers=f"{marker}\n", body=QUOTED_BOUNCE.format(address=PEOPLE[n]), subject=subject
    )


AUTO_REPLY_MARKERS = [
    "Auto-Submitted: auto-replied",
    "Auto-Submitted: auto-generated",
    'Auto-Submitted: auto-replied; owner-email="alice@example.org"',
    "X-Autoreply: yes",
    "X-Autorespond: vacation",
    "Precedence: auto_reply",
    "Precedence: bulk",
    "Precedence: junk",
    "Precedence: List",
    "X-Auto-Response-Suppress: All",
    "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply",
]

# What vacation responders put in the subject, when they mark nothing else.
AUTO_REPLY_SUBJECTS = [
    "Automatic reply: Important: a data breach",
    "Auto: Important: a data breach",
    "Out of Office: Important: a data breach",
    "AutoReply: away until 4 May",
    "=?utf-8?b?6Ieq5YuV5b+c562U?= Important",  # 自動応答
    "不在のお知らせ",
]


def test_the_quoted_bounce_alone_would_be_taken_for_a_hard_bounce() -> None:
    """Why the markers matter: without them the text heuristics see a bounce."""
    (record,) = parse_report(vacation(1, "X-Note: none"), source="x")
    assert (record.recipient, record.kind) == (PEOPLE[1], "hard")


@pytest.mark.parametrize("marker", AUTO_REPLY_MARKERS)
def test_auto_reply_quoting_a_bounce_is_an_auto_reply(marker: str) -> None:
    report = parse_full_report(vacation(1, marker), source="x")
    assert (report.category, report.records) == ("auto_reply", ())
    assert report.problem is not None and "automatic reply" in report.problem
    assert report.verp_token == token(1)


@pytest.mark.parametrize("subject", AUTO_REPLY_SUBJECTS)
def test_an_auto_reply_subject_alone_marks_an_auto_reply(subject: str) -> None:
    report = parse_full_report(vacation(1, "X-Note: none", subject), source="x")
    assert (report.category, report.records) == ("auto_reply", ())
    assert report.problem is not None and "subject" in report.problem


@pytest.mark.parametrize(
    ("marker", "subject"),
    [
        ("Precedence: bulk", "Re: Important: a data breach"),
        ("X-Auto-Response-Suppress: All", "Re: Important: a data breach"),
        ("X-Note: none", "Automatic reply: Important: a data breach"),
    ],
    ids=["precedence-bulk", "auto-response-suppress", "automatic-reply-subject"],
)
def test_the_vacation_replies_that_suppressed_people_suppress_no_one(
    ledger: Ledger, marker: str, subject: str
) -> None:
    """Three vacation replies without Auto-Submitted, each quoting "permanent fatal
    errors", used to be taken for hard bounces and suppress the person who sent them."""
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("vacation.eml", vacation(1, marker, subject))], key=FIXTURE_KEY)
    assert (summary.auto_replies, summary.hard, summary.suppressed) == (1, 0, 0)
    assert suppressed(ledger) == set() and state_of(ledger, 1) == "sent"


def test_auto_submitted_no_is_not_an_auto_reply() -> None:
    report = parse_full_report(vacation(1, "Auto-Submitted: no"), source="x")
    assert report.category == "report"


def test_auto_reply_never_suppresses(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    data = vacation(1, "Auto-Submitted: auto-replied")
    summary = ingest(ledger, [("vacation.eml", data)], key=FIXTURE_KEY)
    assert (summary.auto_replies, summary.hard, summary.matched, summary.unmatched) == (1, 0, 0, 0)
    assert suppressed(ledger) == set()
    assert state_of(ledger, 1) == "sent"
    assert kinds_for(ledger, 1) == ["bounce_unmatched"]  # kept, tied to the notice
    (event,) = report_events(ledger, 1)
    assert "Auto-Submitted: auto-replied" in str(event.data["reason"])


def test_postfix_bounce_marked_auto_replied_is_still_a_report() -> None:
    data = fixture("postfix-real-smtputf8.eml")
    assert b"Auto-Submitted: auto-replied" in data
    report = parse_full_report(data, source="x")
    assert report.category == "report"
    assert [r.kind for r in report.records] == ["hard"]


def test_mailbox_full_notice_is_soft_and_never_suppresses(ledger: Ledger) -> None:
    # Prodigy's old format, which flufl.bounce reports as a permanent failure.
    data = (
        f"From: MAILER-DAEMON@mail.example.net\nTo: bounces+{token(1)}@notify.example.org\n"
        "Subject: Returned mail: User's mailbox is full\n\n"
        f"User's mailbox is full: <{PEOPLE[1]}>\nUnable to deliver mail.\n"
    ).encode()
    (record,) = parse_report(data, source="x")
    assert (record.recipient, record.action, record.kind) == (PEOPLE[1], "failed", "soft")
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("full.eml", data)], key=FIXTURE_KEY)
    assert (summary.soft, summary.hard, summary.suppressed) == (1, 0, 0)
    assert state_of(ledger, 1) == "bounced_soft"
    assert suppressed(ledger) == set()


def test_read_receipt_is_not_a_bounce() -> None:
    data = f"""\
From: {PEOPLE[1]}
To: bounces+{token(1)}@notify.example.org
Subject: Read: Important: a data breach
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="mdn"

--mdn
Content-Type: text/plain

The following addresses had permanent fatal errors (quoted by mistake)
{PEOPLE[1]}

--mdn
Content-Type: message/disposition-notification

Reporting-UA: mail.example.org; Webmail
Final-Recipient: rfc822;{PEOPLE[1]}
Original-Message-ID: {mid(1)}
Disposition: manual-action/MDN-sent-manually; displayed

--mdn--
""".encode()
    report = parse_full_report(data, source="x")
    assert (report.category, report.records) == ("not_a_bounce", ())
    assert report.problem is not None and "read receipt" in report.problem


def test_reply_from_a_person_is_not_a_bounce(ledger: Ledger) -> None:
    data = reply_from(
        1,
        headers=f"Return-Path: <{PEOPLE[1]}>\nIn-Reply-To: {mid(1)}\n",
        body="Thanks. Earlier you sent:\n\n" + QUOTED_BOUNCE.format(address=PEOPLE[1]),
    )
    report = parse_full_report(data, source="x")
    assert (report.category, report.records) == ("not_a_bounce", ())
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("reply.eml", data)], key=FIXTURE_KEY)
    assert (summary.not_bounces, summary.hard, summary.suppressed) == (1, 0, 0)
    assert state_of(ledger, 1) == "sent"


def test_bounce_from_a_mail_system_answering_a_message_is_still_read() -> None:
    """In-Reply-To alone does not make a reply: a null sender or MAILER-DAEMON is a system."""
    data = reply_from(
        1,
        headers=f"Return-Path: <>\nIn-Reply-To: {mid(1)}\n",
        body=QUOTED_BOUNCE.format(address=PEOPLE[1]),
    ).replace(f"From: {PEOPLE[1]}".encode(), b"From: MAILER-DAEMON@mx.example.org")
    (record,) = parse_report(data, source="x")
    assert record.kind == "hard"
