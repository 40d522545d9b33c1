"""The one outcome rule: what a server's answer (or its silence) means for a message.

`classify_smtp_outcome` is the only place an SMTP reply becomes a message state;
`reply_of` turns whatever an attempt raised into the code and text it is judged by.

`failure_kind` is the one reading of why delivery failed, from an enhanced status code
(RFC 3463) and the server's words: the same for a refusal at RCPT or DATA time and for
a delivery report that comes later (notifier.bounces.dsn.classify), so a full mailbox is
"soft" and a policy refusal "blocked" however the news arrives, in the same words.
"""

from __future__ import annotations

import re
from typing import Literal

import aiosmtplib

from notifier.message import MessageState

# Why delivery failed: the address does not exist or cannot receive (hard), the mailbox
# cannot take this message now (soft), or our mail was refused for policy or reputation
# and the address is fine (blocked).
FailureKind = Literal["hard", "soft", "blocked"]

# An enhanced status code, as a reply or a report writes it.
STATUS_PATTERN = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")

# The fate of the address when delivery failed, by status (RFC 3463): a whole code first,
# then its class.subject. A status not listed here is hard: a permanent failure says
# nothing better, and a report's `failed` with a 4.x.x status means the queue lifetime
# ran out (Postfix keeps the last temporary status) and the message will not be retried.
_FAILURE_BY_STATUS: dict[str, FailureKind] = {
    # The mailbox exists but cannot take this message now: the person can fix it.
    "4.2.2": "soft",  # mailbox full
    "5.2.2": "soft",  # mailbox full (quota): permanent for this message, not the address
    "4.2.3": "soft",  # message too big for the mailbox
    "5.2.3": "soft",
    "4.3.4": "soft",  # message too big for the system
    "5.3.4": "soft",
    # Policy, reputation, authentication: the address is fine, our mail was refused.
    "5.7": "blocked",
    # The address does not exist or cannot be reached.
    "5.1": "hard",
    "5.4.4": "hard",  # no route to the domain
}

# When a failure comes with no status, or only a generic one (X.0.0), the server's words.
_FAILURE_BY_WORDS: tuple[tuple[re.Pattern[str], FailureKind], ...] = (
    (
        re.compile(
            r"mailbox (is )?full|over ?quota|quota (is )?exceeded|exceeds? (the )?"
            r"(storage|quota)|insufficient (system )?storage|message (is )?too (big|large)",
            re.IGNORECASE,
        ),
        "soft",
    ),
    (
        re.compile(
            r"\b(blocked|black ?listed|block ?listed|deny ?listed|spam|spamhaus|reputation)\b",
            re.IGNORECASE,
        ),
        "blocked",
    ),
)

# What a refusal at SMTP time makes of the message, by the kind of failure.
_STATE_OF_REFUSAL: dict[FailureKind, MessageState] = {
    "hard": MessageState.FAILED_PERMANENT,
    "soft": MessageState.BOUNCED_SOFT,
    "blocked": MessageState.BLOCKED,
}


def failure_kind(status: str | None, words: str | None) -> FailureKind:
    """Why delivery failed, from an enhanced status and the server's words.

    The words are read only when the status says nothing more specific than X.0.0, and
    an enhanced status in them is used first.
    """
    specific = _specific_status(status)
    if specific is None and words:
        found = STATUS_PATTERN.search(words)
        specific = _specific_status(found.group(1) if found else None)
    if specific is not None:
        class_subject = specific.rsplit(".", 1)[0]
        return _FAILURE_BY_STATUS.get(specific) or _FAILURE_BY_STATUS.get(class_subject, "hard")
    for pattern, kind in _FAILURE_BY_WORDS:
        if words and pattern.search(words):
            return kind
    return "hard"


def _specific_status(status: str | None) -> str | None:
    """The status, unless it is missing or generic (X.0.0 says only "it failed")."""
    if not status or status.endswith(".0.0"):
        return None
    return status


_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([A-Za-z0-9][A-Za-z0-9._-]*)", re.IGNORECASE),  # Postfix, aiosmtpd
    re.compile(r"\bid=([A-Za-z0-9][A-Za-z0-9._-]*)"),  # Exim
    re.compile(r"^\S+\s+Message accepted for delivery", re.IGNORECASE),  # sendmail: no id
)


def parse_queue_id(reply: str) -> str | None:
    """The server's queue id in a 2xx reply, e.g. `250 2.0.0 Ok: queued as 4F3A2B`."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply)
        if match and match.groups():
            return match.group(1)
    return None


def classify_smtp_outcome(
    code: int | None, reply: str = "", *, connecting: bool = False
) -> MessageState:
    """The one rule that turns a server's answer into a message state.

    2xx at the end of DATA: sent. 5xx: refused, no retry, judged by `failure_kind` as a
    report would be: failed_permanent (hard: 5.1.x, or nothing more specific),
    bounced_soft (mailbox full, too big: 5.2.2, 5.3.4), blocked (policy, 5.7.x). 4xx, no
    reply at all (refused, reset, timeout, dropped mid-DATA, code None) or anything
    unexpected: deferred, to be retried. `connecting`: the answer came while the
    connection was being opened (a 5xx greeting refuses us, not this recipient):
    deferred, whatever the code.
    """
    if code is None:
        return MessageState.DEFERRED
    if 200 <= code < 300:
        return MessageState.SENT
    if 500 <= code < 600 and not connecting:
        return _STATE_OF_REFUSAL[failure_kind(None, reply)]
    return MessageState.DEFERRED


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a network-level failure."""
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text.replace("\n", " ")


def reply_of(exc: BaseException) -> tuple[int | None, str]:
    """The reply code (None: the server gave none) and text an attempt that raised `exc`
    is judged by."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code, exc.message
    return None, describe_error(exc)
