"""SMTP, the client side: where to send (`target`), the bytes and replies on the wire
(`protocol`), one connection carrying many messages (`session`), and the one rule that
turns a server's answer into a message state (`outcome`).

Nothing here knows the ledger or campaigns: `notifier.delivery` drives sessions and
journals what they report.
"""

from notifier.smtp.outcome import classify_smtp_outcome, describe_error, parse_queue_id
from notifier.smtp.session import ServerInfo, SessionOptions, SmtpSession
from notifier.smtp.target import SmtpTarget, parse_smtp_url

__all__ = [
    "ServerInfo",
    "SessionOptions",
    "SmtpSession",
    "SmtpTarget",
    "classify_smtp_outcome",
    "describe_error",
    "parse_queue_id",
    "parse_smtp_url",
]
