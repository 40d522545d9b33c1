"""The one outcome rule: a server's answer, or its silence, as a message state."""

from __future__ import annotations

import aiosmtplib
import pytest

from notifier.bounces.dsn import classify
from notifier.message import ATTEMPT_OUTCOMES, STATE_WORDS, MessageState, state_words
from notifier.smtp.outcome import (
    STATUS_PATTERN,
    classify_smtp_outcome,
    describe_error,
    failure_kind,
    parse_queue_id,
    reply_of,
)


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (250, "sent"),
        (251, "sent"),
        (421, "deferred"),
        (450, "deferred"),
        (451, "deferred"),
        (452, "deferred"),
        (None, "deferred"),  # refused, reset, timeout, dropped mid-DATA
        (354, "deferred"),  # unexpected: try again rather than give up
        (550, "failed_permanent"),
        (552, "failed_permanent"),
        (554, "failed_permanent"),
    ],
)
def test_outcome_classify_smtp_outcome(code: int | None, state: str) -> None:
    assert classify_smtp_outcome(code, "") == state
    assert state in ATTEMPT_OUTCOMES


# A refusal at RCPT or DATA time is judged by the rule a delivery report's status is
# judged by, in the same words: (reply, state at SMTP time, kind in a report).
ONE_RULE = [
    ("5.1.1 <a@example.org>: Recipient address rejected: User unknown", "failed_permanent", "hard"),
    ("5.4.4 Unable to route", "failed_permanent", "hard"),
    ("5.2.2 Mailbox full", "bounced_soft", "soft"),
    ("5.2.2 <a@example.org>: Recipient address rejected: quota exceeded", "bounced_soft", "soft"),
    ("5.3.4 Message too big for system", "bounced_soft", "soft"),
    ("5.7.1 Relaying denied", "blocked", "blocked"),
    ("5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", "blocked", "blocked"),
    ("5.7.26 Unauthenticated email is not accepted (DMARC)", "blocked", "blocked"),
    ("5.0.0 mailbox is full", "bounced_soft", "soft"),  # a generic status: the words decide
    ("Requested action not taken: mailbox unavailable", "failed_permanent", "hard"),
]


@pytest.mark.parametrize(("reply", "state", "kind"), ONE_RULE)
def test_a_refusal_at_smtp_time_is_judged_as_a_report_status_is(
    reply: str, state: str, kind: str
) -> None:
    assert classify_smtp_outcome(550, reply) == state
    status = STATUS_PATTERN.search(reply)
    assert failure_kind(status.group(1) if status else None, reply) == kind
    # The report's own rule reads a failed Action with the same status the same way.
    assert classify("failed", status.group(1) if status else None, reply) == kind
    assert state_words(state) == STATE_WORDS[MessageState(state)]


@pytest.mark.parametrize("code", [554, 550, 421, None])
def test_outcome_refusal_while_connecting_is_deferred(code: int | None) -> None:
    """A 5xx greeting refuses us, not this recipient: try again later."""
    assert classify_smtp_outcome(code, "", connecting=True) == "deferred"


@pytest.mark.parametrize(
    ("reply", "queue_id"),
    [
        ("2.0.0 Ok: queued as 4F3A2B", "4F3A2B"),
        ("OK id=1jK2Lm-0003Ab-Cd", "1jK2Lm-0003Ab-Cd"),
        ("2.0.0 Ok", None),
        ("<x@y> Message accepted for delivery", None),
    ],
)
def test_outcome_parse_queue_id(reply: str, queue_id: str | None) -> None:
    assert parse_queue_id(reply) == queue_id


def test_outcome_reply_of_an_exception() -> None:
    assert reply_of(aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b")) == (
        550,
        "no such user",
    )
    lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
    lost.__cause__ = ConnectionResetError("reset by peer")
    assert reply_of(lost) == (None, "Connection lost (reset by peer)")
    assert reply_of(TimeoutError()) == (None, "TimeoutError")


def test_outcome_describe_error_is_one_line() -> None:
    assert describe_error(OSError("first\nsecond")) == "first second"
