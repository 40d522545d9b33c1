"""The one outcome rule: a server's answer, or its silence, as a message state."""

from __future__ import annotations

import aiosmtplib
import pytest

from notifier.message import ATTEMPT_OUTCOMES
from notifier.smtp.outcome import classify_smtp_outcome, describe_error, parse_queue_id, reply_of


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
