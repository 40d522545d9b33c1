"""Reports into the ledger: which message each is about, its events, suppression.

Correlation, in order of trust:
  1. the VERP token in the address the report was delivered to (`bounces+TOKEN@domain`);
     its HMAC is checked, and a report whose token is not authentic is refused as forged,
     because a forged bounce would otherwise get a person suppressed;
  2. `Original-Envelope-Id` (the sender passes the token as ENVID);
  3. the `Message-ID` of the returned message or headers.

State rule (applied by the ledger as it records the report): a report never moves a
message to a better state than one it already holds (`notifier.message.REPORT_RANK`). A
`delivered` DSN that arrives after a hard bounce is recorded as an event, but the
message stays `bounced_hard`; a hard bounce after a `delivered` DSN (a relay that
accepted, then failed) does move it. `Action: delayed` (the mail system is still trying)
is noted on the message and changes nothing: offering it for a resend would deliver
twice once the first attempt gets through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from notifier import verp
from notifier.bounces.dsn import (
    DEFAULT_LIMITS,
    ParsedReport,
    kept_copy,
    parse_full_report,
)
from notifier.config import ReportLimits
from notifier.event import EventKind
from notifier.ledger import Ledger, MatchedMessage, ReportEvent

# The event each kind of report block is recorded as (the state it moves its message to,
# but for the notes: `delayed`, and `unparseable`: tied to the message, it says nothing we
# understand), and the IngestSummary count each adds to.
EVENT_FOR_KIND: dict[str, EventKind] = {
    "hard": EventKind.BOUNCED_HARD,
    "soft": EventKind.BOUNCED_SOFT,
    "delayed": EventKind.DELAY_REPORTED,
    "blocked": EventKind.BLOCKED,
    "expired": EventKind.EXPIRED,
    "delivered": EventKind.DELIVERED,
    "unparseable": EventKind.BOUNCE_UNCLEAR,
}
_COUNT_OF_KIND: dict[str, str] = {kind: kind for kind in EVENT_FOR_KIND} | {
    "unparseable": "unclear"
}


@dataclass(frozen=True)
class IngestSummary:
    reports: int = 0  # read from the sources
    duplicates: int = 0  # already in the ledger: not recorded again
    matched: int = 0
    unmatched: int = 0  # no message found, or no delivery status found in it
    forged: int = 0  # VERP token present but not authentic: refused
    hard: int = 0
    soft: int = 0
    delayed: int = 0  # still being retried by the mail system: noted, nothing changes
    blocked: int = 0  # refused for policy or reputation: the sender has to act
    expired: int = 0  # the mail system gave up while a server was down: not suppressed
    delivered: int = 0
    unclear: int = 0  # tied to a message, but no Action we can read
    suppressed: int = 0  # addresses newly suppressed
    auto_replies: int = 0  # vacation and other automatic replies: not bounces
    not_bounces: int = 0  # read receipts and replies from people
    unparseable: int = 0  # over a size, depth or parts limit (or unreadable): skipped


@dataclass(frozen=True)
class UnmatchedReport:
    sha256: str
    source: str
    received_at: str
    reason: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Correlation:
    outcome: Literal[
        "matched",
        "unmatched",
        "forged",
        "unrecognised",
        "auto_reply",
        "not_a_bounce",
        "unparseable",
    ]
    message: MatchedMessage | None = None
    by: str | None = None


def report_digest(data: bytes) -> str:
    """The identity of a report: sha256 over its bytes with CRLF line endings.

    The same bounce read from a Maildir file (LF) and over IMAP (CRLF) is one report.
    """
    normalised = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return hashlib.sha256(normalised).hexdigest()


def ingest(
    ledger: Ledger,
    sources: Iterable[tuple[str, bytes]],
    *,
    key: bytes,
    limits: ReportLimits = DEFAULT_LIMITS,
) -> IngestSummary:
    """Record every report in the ledger, once; one transaction per report.

    A report over `limits` is recorded as unparseable (once) and the next one is read.
    """
    counts = {f.name: 0 for f in fields(IngestSummary)}
    for source, data in sources:
        counts["reports"] += 1
        digest = report_digest(data)
        report = parse_full_report(data, source=source, limits=limits)
        with ledger.transaction():
            if ledger.bounce_report_recorded(digest):
                counts["duplicates"] += 1
                continue
            correlation = correlate(ledger, report, key=key)
            counts[_COUNTER[correlation.outcome]] += 1
            if correlation.outcome == "matched":
                for name, value in _record_matched(ledger, report, correlation, digest).items():
                    counts[name] += value
            else:
                _record_unmatched(ledger, report, correlation, digest, data)
    return IngestSummary(**counts)


_COUNTER = {
    "matched": "matched",
    "unmatched": "unmatched",
    "unrecognised": "unmatched",
    "forged": "forged",
    "auto_reply": "auto_replies",
    "not_a_bounce": "not_bounces",
    "unparseable": "unparseable",
}


def correlate(ledger: Ledger, report: ParsedReport, *, key: bytes) -> Correlation:
    """Which message a report is about: VERP token, then ENVID, then Message-ID.

    A report with no delivery status in it (an auto-reply, say) is "unrecognised" even
    when it can be tied to a message: there is nothing to record about the message.
    """
    found = _find_message(ledger, report, key=key)
    if report.category != "report":  # kept, tied to its message if it can be, never more
        return Correlation(report.category, found.message, found.by)
    if found.outcome == "matched" and not report.records:
        return Correlation("unrecognised", found.message, found.by)
    return found


def _find_message(ledger: Ledger, report: ParsedReport, *, key: bytes) -> Correlation:
    if report.verp_token is not None:
        if not verp.token_is_authentic(key, report.verp_token):
            return Correlation("forged")
        found = ledger.message_by_verp_token(report.verp_token)
        if found:
            return Correlation("matched", found, "verp_token")
    if report.envelope_id:
        envid = report.envelope_id.strip()
        found = ledger.message_by_verp_token(envid.lower()) or ledger.message_by_message_id(envid)
        if found:
            return Correlation("matched", found, "envelope_id")
    if report.original_message_id:
        found = ledger.message_by_message_id(report.original_message_id)
        if found:
            return Correlation("matched", found, "message_id")
    return Correlation("unmatched" if report.records else "unrecognised")


def _record_matched(
    ledger: Ledger, report: ParsedReport, correlation: Correlation, digest: str
) -> dict[str, int]:
    message = correlation.message
    assert message is not None
    counts = dict.fromkeys([*_COUNT_OF_KIND.values(), "suppressed"], 0)
    # One message goes to one person, but a report may list others (a message that was
    # expanded, or someone else's report): keep to the blocks about this person when
    # there are any; otherwise (forwarding, aliases) every block is about this message.
    records = [r for r in report.records if message.is_addressed_to(r.recipient)]
    events = []
    for record in records or report.records:
        counts[_COUNT_OF_KIND[record.kind]] += 1
        data = {
            "status": record.status,
            "action": record.action,
            "diagnostic": record.diagnostic,
            "recipient": record.recipient,
            "correlated_by": correlation.by,
        }
        # A hard bounce suppresses the address the message bounced from (the roster's,
        # unless a correction has been imported since: MatchedMessage.bounced_address).
        suppress = (message.bounced_address or record.recipient) if record.kind == "hard" else None
        events.append(ReportEvent(EVENT_FOR_KIND[record.kind], data, suppress or None))
    kept = ledger.record_report(
        digest,
        report.source,
        message=message,
        events=events,
        detail=_detail(report, correlation),
    )
    counts["suppressed"] = len(kept.suppressed)
    return counts


def _record_unmatched(
    ledger: Ledger, report: ParsedReport, correlation: Correlation, digest: str, data: bytes
) -> None:
    kind = _UNMATCHED_EVENT.get(correlation.outcome, EventKind.BOUNCE_UNMATCHED)
    event = ReportEvent(
        kind,
        {
            "reason": report.problem or _REASONS[correlation.outcome],
            "verp_token": report.verp_token,
            "envelope_id": report.envelope_id,
            "original_message_id": report.original_message_id,
            "recipients": [r.recipient for r in report.records],
        },
    )
    # Its headers and first bytes are kept so a person can read it, or match it by hand.
    ledger.record_report(
        digest,
        report.source,
        message=correlation.message,
        events=[event],
        detail={**_detail(report, correlation), **kept_copy(data)},
    )


_UNMATCHED_EVENT = {
    "forged": EventKind.BOUNCE_FORGED,
    "unparseable": EventKind.BOUNCE_UNPARSEABLE,
}


_REASONS = {
    "matched": "matched",
    "unmatched": "no message in the ledger has this token, envelope id or Message-ID",
    "forged": "VERP token is not authentic (HMAC does not match): refused as forged",
    "unrecognised": "no delivery status found in it (not a bounce?)",
    "auto_reply": "an automatic reply, not a bounce",
    "not_a_bounce": "not a bounce (a read receipt or a reply)",
    "unparseable": "over a limit on size, MIME depth or parts: skipped unread",
}


def _detail(report: ParsedReport, correlation: Correlation) -> dict[str, Any]:
    """What is kept of a report beside its events, for a person to read later."""
    return {
        "outcome": correlation.outcome,
        "correlated_by": correlation.by,
        "reason": report.problem or _REASONS[correlation.outcome],
        "records": [asdict(r) for r in report.records],
    }


def unmatched_reports(ledger: Ledger) -> list[UnmatchedReport]:
    """Reports not tied to any message (forged ones included), oldest first."""
    found = []
    for kept in ledger.bounce_reports(matched=False):
        detail = kept.detail
        recipients = tuple(
            str(r.get("recipient")) for r in detail.get("records", []) if r.get("recipient")
        )
        found.append(
            UnmatchedReport(
                kept.sha256,
                kept.source,
                kept.received_at,
                str(detail.get("reason", "")),
                recipients,
            )
        )
    return found
