"""The one outcome rule: what a server's answer (or its silence) means for a message.

`classify_smtp_outcome` is the only place an SMTP reply becomes a message state;
`reply_of` turns whatever an attempt raised into the code and text it is judged by.
"""

from __future__ import annotations

import re

import aiosmtplib

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


def classify_smtp_outcome(code: int | None, reply: str = "", *, connecting: bool = False) -> str:
    """The one rule that turns a server's answer into a message state.

    2xx at the end of DATA: sent. 5xx: failed_permanent (no retry). 4xx, no reply at all
    (refused, reset, timeout, dropped mid-DATA, code None) or anything unexpected:
    deferred, to be retried. `connecting`: the answer came while the connection was being
    opened (a 5xx greeting refuses us, not this recipient): deferred, whatever the code.
    """
    if code is None:
        return "deferred"
    if 200 <= code < 300:
        return "sent"
    if 500 <= code < 600 and not connecting:
        return "failed_permanent"
    return "deferred"


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
