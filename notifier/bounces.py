"""Bounces: read delivery reports, classify each recipient, tie them to the message sent.

A report comes in as raw bytes (from a Maildir, an mbox, `.eml` files or an IMAP folder).
RFC 3464 delivery status notifications are parsed here, including SMTPUTF8 ones
(`message/global-delivery-status`, RFC 6533), which Python's `email` parser leaves as one
opaque payload. Reports that are not DSNs (old Postfix, qmail, Exim, Yahoo, ...) go to
flufl.bounce, a maintained collection of detectors, rather than heuristics of our own.

Correlation, in order of trust:
  1. the VERP token in the address the report was delivered to (`bounces+TOKEN@domain`);
     its HMAC is checked, and a report whose token is not authentic is refused as forged,
     because a forged bounce would otherwise get a person suppressed;
  2. `Original-Envelope-Id` (the sender passes the token as ENVID);
  3. the `Message-ID` of the returned message or headers.

State rule: a report never moves a message to a better state than one it already holds
(`notifier.message.REPORT_RANK`). A `delivered` DSN that arrives after a hard bounce is
recorded as an event, but the message stays `bounced_hard`; a hard bounce after a `delivered` DSN (a
relay that accepted, then failed) does move it. `Action: delayed` is recorded as
`bounced_soft`, the state `notifier resend --status bounced_soft` selects.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.policy
import hashlib
import imaplib
import logging
import mailbox
import os
import quopri
import re
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from notifier import verp
from notifier.config import IMAP_PASSWORD_ENV, ReportLimits, imap_password
from notifier.errors import BounceError
from notifier.ledger import EventDraft, Ledger, MatchedMessage
from notifier.message import MessageState, state_after_report

log = logging.getLogger(__name__)

Kind = Literal["hard", "soft", "blocked", "delivered", "unknown"]
# What a message read as a report turned out to be. Only a "report" is searched for
# recipients; the others are recorded (once) with the reason, and never move a message.
Category = Literal["report", "auto_reply", "not_a_bounce", "unparseable"]

DEFAULT_LIMITS = ReportLimits()
# How much of a report that is not tied to one of our messages is kept in the ledger: a
# person can read it, and a forger cannot grow the ledger by sending large reports.
KEPT_BYTES = 64 * 1024

# The JSON keys of `notifier bounces parse --format json`, in order (a contract).
RECORD_KEYS: tuple[str, ...] = (
    "file",
    "action",
    "status",
    "recipient",
    "kind",
    "original_message_id",
    "envelope_id",
    "verp_token",
    "diagnostic",
)

# Headers of the report that carry the address it was delivered to; the ones the
# receiving MTA writes itself (Delivered-To, X-Original-To, Envelope-to) come first.
VERP_HEADERS: tuple[str, ...] = (
    "delivered-to",
    "x-original-to",
    "envelope-to",  # Exim's Delivered-To
    "to",
    "return-path",
)

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
RETURNED_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/global-headers",
        "message/rfc822-headers",  # not registered, but written by some MTAs
    }
)

# The message state each kind of report moves a message to, and the event kind.
EVENT_FOR_KIND: dict[str, MessageState] = {
    "hard": MessageState.BOUNCED_HARD,
    "soft": MessageState.BOUNCED_SOFT,
    "blocked": MessageState.BLOCKED,
    "delivered": MessageState.DELIVERED,
}

MAX_IMAP_MESSAGES = 100_000


@dataclass(frozen=True)
class BounceRecord:
    """What one report says about one recipient."""

    file: str
    action: str | None
    status: str | None
    recipient: str | None
    kind: Kind
    original_message_id: str | None
    envelope_id: str | None
    verp_token: str | None
    diagnostic: str | None
    # Both recipient fields as the report gives them (`recipient` is the one we sent to).
    original_recipient: str | None = None
    final_recipient: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {key: getattr(self, key) for key in RECORD_KEYS}


@dataclass(frozen=True)
class ParsedReport:
    """A whole report: the per-report facts used for correlation, and its records."""

    source: str
    envelope_id: str | None
    verp_token: str | None
    original_message_id: str | None
    is_dsn: bool
    records: tuple[BounceRecord, ...] = field(default_factory=tuple)
    category: Category = "report"
    problem: str | None = None  # why it is not read as a report (a limit, an auto-reply)


@dataclass(frozen=True)
class IngestSummary:
    reports: int = 0  # read from the sources
    duplicates: int = 0  # already in the ledger: not recorded again
    matched: int = 0
    unmatched: int = 0  # no message found, or no delivery status found in it
    forged: int = 0  # VERP token present but not authentic: refused
    hard: int = 0
    soft: int = 0
    blocked: int = 0  # refused for policy or reputation: the sender has to act
    delivered: int = 0
    unknown: int = 0
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


# --- classification -------------------------------------------------------------------


# What each standard Action value (RFC 3464) says happened to the message.
_ACTION_OUTCOME: dict[str, Literal["failed", "delayed", "delivered"]] = {
    "failed": "failed",
    "failure": "failed",  # non-standard, but common
    "delayed": "delayed",
    "delivered": "delivered",
    "relayed": "delivered",
    "expanded": "delivered",
}

# The fate of the address when delivery failed, by status (RFC 3463): a whole code first,
# then its class.subject. A status not listed here is a hard bounce: a permanent failure
# says nothing better, and `failed` with a 4.x.x status means the queue lifetime ran out
# (Postfix keeps the last temporary status) and the message will not be retried.
_FAILURE_BY_STATUS: dict[str, Kind] = {
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
_FAILURE_BY_WORDS: tuple[tuple[re.Pattern[str], Kind], ...] = (
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


def classify(action: str | None, status: str | None, diagnostic: str | None = None) -> Kind:
    """The one rule from a report's Action, Status (and the server's words) to a kind.

    hard: the address does not exist or cannot receive (5.1.x, 5.4.4, `failed` after the
    queue lifetime ran out); only these suppress the address. soft: temporary, or on the
    mailbox's side (`delayed`, mailbox full, message too big). blocked: refused for policy
    or reputation (5.7.x): the address is fine, the sender has to act. A non-standard
    Action with a 5.x.x status is a failure; without an Action there is no telling what
    happened (unknown). The words of `diagnostic` are read only when the status says
    nothing more specific than X.0.0, and an enhanced status in them is used first.
    """
    word = (action or "").strip().lower()
    outcome = _ACTION_OUTCOME.get(word)
    if outcome is None and word and (status or "").startswith("5."):
        outcome = "failed"  # "Action: error", "bounced", ...: still a permanent failure
    if outcome is None:
        return "unknown"
    if outcome == "delivered":
        return "delivered"
    if outcome == "delayed":
        return "soft"
    return _failure_kind(status, diagnostic)


def _failure_kind(status: str | None, diagnostic: str | None) -> Kind:
    specific = _specific_status(status)
    if specific is None and diagnostic:
        found = _STATUS.search(diagnostic)
        specific = _specific_status(found.group(1) if found else None)
    if specific is not None:
        class_subject = specific.rsplit(".", 1)[0]
        return _FAILURE_BY_STATUS.get(specific) or _FAILURE_BY_STATUS.get(class_subject, "hard")
    for pattern, kind in _FAILURE_BY_WORDS:
        if diagnostic and pattern.search(diagnostic):
            return kind
    return "hard"


def _specific_status(status: str | None) -> str | None:
    """The status, unless it is missing or generic (X.0.0 says only "it failed")."""
    if not status or status.endswith(".0.0"):
        return None
    return status


# --- parsing --------------------------------------------------------------------------

_FOLD = re.compile(r"\s*\r?\n[ \t]*")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_UTF8_ADDR_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ADDR_TYPE = re.compile(r"^\s*([A-Za-z0-9-]+)\s*;\s*(.*)$", re.DOTALL)
_ANGLE = re.compile(r"<([^<>\s]+)>")


def parse_report(data: bytes, *, source: str) -> list[BounceRecord]:
    """The per-recipient records in one report (empty if it holds no delivery status)."""
    return list(parse_full_report(data, source=source).records)


def parse_full_report(
    data: bytes, *, source: str, limits: ReportLimits = DEFAULT_LIMITS
) -> ParsedReport:
    """Parse a report, keeping the per-report facts even when no recipient is found.

    Never raises: a report over `limits` (or one the parser cannot follow) comes back as
    `unparseable` with the reason, and auto-replies, read receipts and replies from
    people come back without records, before any text heuristic is run on them.
    """
    problem = _over_limits_unread(data, limits)
    if problem is not None:
        return _unparseable(data, source, problem)
    try:
        # compat32 never raises on malformed headers; it records defects and moves on,
        # which is what a reader of mail from arbitrary servers needs.
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        parts, problem = _mime_parts(msg, limits)
        if problem is not None:
            return _unparseable(data, source, problem)
        return _parse_message(msg, parts, source, limits)
    except RecursionError:
        # The email package recurses once per level; the lexical check above caught the
        # usual shapes, this catches the rest (message/rfc822 inside message/rfc822 ...).
        return _unparseable(data, source, "MIME parts nested too deeply for the parser")
    except Exception as exc:  # one odd report must never stop an ingest; it is recorded
        log.warning("%s: this report could not be read", source, exc_info=True)
        return _unparseable(data, source, f"could not be read ({type(exc).__name__})")


def _parse_message(
    msg: Message, parts: list[Message], source: str, limits: ReportLimits
) -> ParsedReport:
    token = _verp_token(msg)
    not_a_report = _not_a_report(msg, parts)
    if not_a_report is not None:
        category, why = not_a_report
        return ParsedReport(source, None, token, None, is_dsn=False, category=category, problem=why)
    envelope_id: str | None = None
    message_id: str | None = None
    blocks: list[list[tuple[str, str]]] = []
    is_dsn = False
    for part in parts:
        ctype = part.get_content_type()
        if ctype in DSN_TYPES and not is_dsn:
            is_dsn = True
            blocks = _status_blocks(part)
        elif ctype in RETURNED_TYPES and message_id is None:
            message_id = _returned_message_id(part)
    if len(blocks) > limits.max_parts:
        problem = f"{len(blocks)} delivery status blocks, over the limit of {limits.max_parts}"
        return ParsedReport(source, None, token, message_id, is_dsn, (), "unparseable", problem)
    recipient_blocks = []
    for block in blocks:
        fields = dict(block)
        if envelope_id is None and "original-envelope-id" in fields:
            envelope_id = _xtext_decode(fields["original-envelope-id"]) or None
        if "final-recipient" in fields or "original-recipient" in fields or "action" in fields:
            recipient_blocks.append(fields)
    records = [
        _record_from_block(fields, source, envelope_id, message_id, token)
        for fields in recipient_blocks
    ]
    if not records:
        records = _records_from_library(msg, source, envelope_id, message_id, token)
    return ParsedReport(
        source=source,
        envelope_id=envelope_id,
        verp_token=token,
        original_message_id=message_id,
        is_dsn=is_dsn,
        records=tuple(records),
    )


# --- limits ---------------------------------------------------------------------------

_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))""", re.IGNORECASE)


def _over_limits_unread(data: bytes, limits: ReportLimits) -> str | None:
    """Why a report is too big or too deep to parse at all, from its bytes alone."""
    if len(data) > limits.max_bytes:
        return f"{len(data)} bytes, over the limit of {limits.max_bytes}"
    depth = _multipart_depth(data, stop_after=limits.max_depth)
    if depth > limits.max_depth:
        return f"MIME parts nested over {limits.max_depth} deep, the limit"
    return None


def _multipart_depth(data: bytes, *, stop_after: int) -> int:
    """How deeply multiparts nest, read from boundaries without parsing (no recursion).

    Stops counting once past `stop_after`, so a crafted report costs one pass over its
    lines. A nesting it cannot see (message/rfc822 in message/rfc822) is left to the
    parser's own count in _mime_parts.
    """
    open_boundaries: list[bytes] = []
    deepest = 0
    for line in data.splitlines():
        if line.startswith(b"--") and open_boundaries:
            delimiter = line.rstrip()
            for level in range(len(open_boundaries) - 1, -1, -1):
                boundary = b"--" + open_boundaries[level]
                if delimiter == boundary + b"--":
                    del open_boundaries[level:]  # closes this multipart and any inside it
                    break
                if delimiter == boundary:
                    del open_boundaries[level + 1 :]  # a new part: inner ones have ended
                    break
        found = _BOUNDARY_PARAM.search(line)
        if found:
            open_boundaries.append(found.group(1) or found.group(2))
            deepest = max(deepest, len(open_boundaries))
            if deepest > stop_after:
                return deepest
    return deepest


def _mime_parts(msg: Message, limits: ReportLimits) -> tuple[list[Message], str | None]:
    """Every part, in the order Message.walk() gives them, counted without recursion."""
    parts: list[Message] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > limits.max_depth:
            return parts, f"MIME parts nested over {limits.max_depth} deep, the limit"
        parts.append(part)
        if len(parts) > limits.max_parts:
            return parts, f"more than {limits.max_parts} MIME parts, the limit"
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))
    return parts, None


def _unparseable(data: bytes, source: str, problem: str) -> ParsedReport:
    """A report skipped unread: only its headers (within the kept bytes) are looked at."""
    token: str | None = None
    with contextlib.suppress(Exception):  # the headers are a help, not a requirement
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(_header_bytes(data))
        token = _verp_token(headers)
    if " bytes" not in problem:  # say how big it was, whatever the limit
        problem = f"{problem}; {len(data)} bytes"
    log.warning("%s: skipped, not read: %s", source, problem)
    return ParsedReport(
        source, None, token, None, is_dsn=False, category="unparseable", problem=problem
    )


def _header_bytes(data: bytes) -> bytes:
    """The header block of a message, within the first KEPT_BYTES."""
    head = data[:KEPT_BYTES]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[: end + len(separator)]
    return head


def kept_copy(data: bytes) -> dict[str, Any]:
    """What the ledger keeps of a report not tied to a message of ours.

    Its headers and at most its first KEPT_BYTES: enough for a person to read it or match
    it by hand, and a forged 10 MB report costs the ledger no more than a small one.
    """
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(_header_bytes(data))
    return {
        "headers": [[name, _text(value)] for name, value in headers.raw_items()],
        "raw": data[:KEPT_BYTES].decode("utf-8", "replace"),
        "size": len(data),
        "truncated": len(data) > KEPT_BYTES,
    }


# --- auto-replies and other mail that is not a bounce ---------------------------------

_DELIVERY_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_AUTO_REPLY_MARKERS = ("x-autoreply", "x-autorespond")
# Senders a bounce comes from when it has no null Return-Path to show for it.
_MAIL_SYSTEMS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon)@", re.IGNORECASE)


def _not_a_report(msg: Message, parts: list[Message]) -> tuple[Category, str] | None:
    """(category, reason) for mail that is no delivery report, from headers and structure.

    Decided before anything reads the text: an auto-reply that quotes a bounce ("The
    following addresses had permanent fatal errors") must not suppress the person who
    sent it. A real delivery report is one whatever its headers say: Postfix marks its
    own bounces `Auto-Submitted: auto-replied`.
    """
    if _is_delivery_report(msg):
        return None
    auto = _first_header(msg, "auto-submitted")
    if auto is not None and auto.split(";")[0].strip().lower() != "no":
        return "auto_reply", f"an automatic reply (Auto-Submitted: {auto}), not a bounce"
    for name in _AUTO_REPLY_MARKERS:
        if _first_header(msg, name) is not None:
            return "auto_reply", f"an automatic reply ({name} header), not a bounce"
    if (_first_header(msg, "precedence") or "").lower() == "auto_reply":
        return "auto_reply", "an automatic reply (Precedence: auto_reply), not a bounce"
    if _is_read_receipt(msg, parts):
        return "not_a_bounce", "a read receipt (message disposition notification), not a bounce"
    if _is_reply_from_a_person(msg):
        return "not_a_bounce", "a reply from a person (In-Reply-To, not a mail system)"
    return None


def _first_header(msg: Message, name: str) -> str | None:
    values = _raw_headers(msg, name)
    return values[0] if values else None


def _is_delivery_report(msg: Message) -> bool:
    ctype = msg.get_content_type()
    if ctype in DSN_TYPES:
        return True
    report_type = str(msg.get_param("report-type", "") or "").strip().lower()
    return ctype == "multipart/report" and report_type in _DELIVERY_REPORT_TYPES


def _is_read_receipt(msg: Message, parts: list[Message]) -> bool:
    report_type = str(msg.get_param("report-type", "") or "").strip().lower()
    if msg.get_content_type() == "multipart/report" and report_type == "disposition-notification":
        return True
    return any(p.get_content_type() == "message/disposition-notification" for p in parts)


def _is_reply_from_a_person(msg: Message) -> bool:
    """A reply: it answers a message, and neither its envelope nor From is a mail system."""
    if _first_header(msg, "in-reply-to") is None and _first_header(msg, "references") is None:
        return False
    return_path = _first_header(msg, "return-path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return False  # a null sender: mail systems write bounces that way
    senders = [address for _name, address in getaddresses(_raw_headers(msg, "from"))]
    return bool(senders) and not any(_MAIL_SYSTEMS.match(a) for a in senders)


def _text(value: object) -> str:
    """A header value as text: raw 8-bit bytes (SMTPUTF8) read as UTF-8, folds undone."""
    raw = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _FOLD.sub(" ", raw).strip()


def _raw_headers(msg: Message, name: str) -> list[str]:
    return [_text(v) for k, v in msg.raw_items() if k.lower() == name]


def _status_blocks(part: Message) -> list[list[tuple[str, str]]]:
    """The header blocks of a delivery-status part, as (lowercase name, unfolded value)."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        # The email package splits message/delivery-status into its blocks itself.
        return [
            [(k.lower(), _text(v)) for k, v in block.raw_items()]
            for block in payload
            if isinstance(block, Message)
        ]
    # message/global-delivery-status: the email package reads it as one message whose
    # headers are the first block and whose body is the rest; put the text back together.
    body = _part_bytes(part)
    if body is None:
        return []
    return parse_header_blocks(body.decode("utf-8", "replace"))


def _part_bytes(part: Message) -> bytes | None:
    """The decoded body of a part, also for message/* parts the parser split."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        body = part.get_payload(decode=True)
        return body if isinstance(body, bytes) else None
    raw = b"\n\n".join(_message_source(m) for m in payload if isinstance(m, Message))
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(raw)
        if encoding == "quoted-printable":
            return quopri.decodestring(raw)
    except (ValueError, binascii.Error):
        return None
    return raw


def _message_source(msg: Message) -> bytes:
    """Headers as received (folds kept) and the body, as bytes, as the parser stored them."""
    head = "".join(f"{name}: {value}\n" for name, value in msg.raw_items())
    # get_payload(decode=True) gives back the original 8-bit bytes; without decode the
    # email package would replace every non-ASCII byte with U+FFFD.
    body = msg.get_payload(decode=True)
    tail = b"\n" + body if isinstance(body, bytes) else b""
    return head.encode("utf-8", "surrogateescape") + tail


def parse_header_blocks(text: str) -> list[list[tuple[str, str]]]:
    """Header blocks separated by blank lines, as RFC 3464 and RFC 6533 lay them out."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
        elif line[0] in " \t":
            if current:  # a continuation of the previous field
                name, value = current[-1]
                current[-1] = (name, f"{value} {line.strip()}".strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            current.append((name.strip().lower(), value.strip()))
    if current:
        blocks.append(current)
    return blocks


def _xtext_decode(value: str) -> str:
    """RFC 3461 xtext (`+2B` for `+`), as ENVID is written."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value.strip())


def _address(value: str | None) -> str | None:
    """The address in `rfc822; someone@example.org` (or `utf-8; ...`), else None."""
    if not value:
        return None
    match = _ADDR_TYPE.match(value)
    kind, addr = (match.group(1).lower(), match.group(2)) if match else ("rfc822", value)
    if kind not in ("rfc822", "utf-8", "utf8"):
        return None  # e.g. x400: not an Internet address
    addr = _UTF8_ADDR_ESCAPE.sub(_unescape_codepoint, addr).strip().strip("<>").strip()
    return addr if "@" in addr else None


def _unescape_codepoint(match: re.Match[str]) -> str:
    codepoint = int(match.group(1), 16)
    return chr(codepoint) if codepoint <= 0x10FFFF else match.group(0)


def _recipient(fields: dict[str, str]) -> str | None:
    """The address we sent to: Original-Recipient when it is an address, else Final-.

    Final-Recipient is where the mail system ended up (an alias expanded, an internal
    name); Original-Recipient is the address in our RCPT TO, the one on our roster.
    """
    original = _address(fields.get("original-recipient"))
    if original:
        return original
    final = _address(fields.get("final-recipient"))
    if final:
        return final
    raw = fields.get("original-recipient") or fields.get("final-recipient")
    return raw or None


def _diagnostic(value: str | None) -> str | None:
    """The server's words, without the `smtp;` type label."""
    if not value:
        return None
    match = _ADDR_TYPE.match(value)
    text = match.group(2) if match else value
    return " ".join(text.split()) or None


def _record_from_block(
    fields: dict[str, str],
    source: str,
    envelope_id: str | None,
    message_id: str | None,
    token: str | None,
) -> BounceRecord:
    action_words = fields.get("action", "").split()
    action = action_words[0].lower() if action_words else None
    status_match = _STATUS.search(fields.get("status", ""))
    status = status_match.group(1) if status_match else None
    diagnostic = _diagnostic(fields.get("diagnostic-code"))
    return BounceRecord(
        file=source,
        action=action,
        status=status,
        recipient=_recipient(fields),
        kind=classify(action, status, diagnostic),
        original_message_id=message_id,
        envelope_id=envelope_id,
        verp_token=token,
        diagnostic=diagnostic,
        original_recipient=fields.get("original-recipient") or None,
        final_recipient=fields.get("final-recipient") or None,
    )


def _returned_message_id(part: Message) -> str | None:
    """The Message-ID of a returned message or returned headers part."""
    payload = part.get_payload()
    headers: Message | None = None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        headers = payload[0]  # message/rfc822, already parsed
    else:
        # text/rfc822-headers, message/global(-headers): parse the bytes ourselves.
        body = part.get_payload(decode=True)
        if isinstance(body, bytes):
            headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(body)
    if headers is None:
        return None
    values = _raw_headers(headers, "message-id")
    if not values or not values[0]:
        return None
    match = _ANGLE.search(values[0])
    return f"<{match.group(1)}>" if match else values[0].split()[0]


def _verp_token(msg: Message) -> str | None:
    for name in VERP_HEADERS:
        values = _raw_headers(msg, name)
        for _display, address in getaddresses(values):
            token = verp.token_from_address(address)
            if token:
                return token
    return None


def _records_from_library(
    msg: Message,
    source: str,
    envelope_id: str | None,
    message_id: str | None,
    token: str | None,
) -> list[BounceRecord]:
    """Non-DSN bounces: ask flufl.bounce which recipients failed, and how."""
    # Imported here: its detectors take a noticeable time to load, and every notifier
    # command (a send above all) would pay for it; only non-DSN reports need them.
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector tripping over odd input must not stop an ingest
        log.warning("%s: flufl.bounce could not scan this report", source, exc_info=True)
        return []
    # The report's own words (not the copy of our message it returns) say whether a
    # failure was a full mailbox or a refusal; flufl.bounce only says "permanent".
    words = _report_text(msg)
    records = []
    for action, addresses in (("failed", permanent), ("delayed", temporary)):
        for raw in sorted(addresses):
            recipient = raw.decode("ascii", "replace").strip().strip("<>")
            records.append(
                BounceRecord(
                    file=source,
                    action=action,
                    status=None,
                    recipient=recipient or None,
                    kind=classify(action, None, words),
                    original_message_id=message_id,
                    envelope_id=envelope_id,
                    verp_token=token,
                    diagnostic=None,
                )
            )
    return records


# Where the report's own text ends and the returned copy of our message begins.
_RETURNED_COPY = re.compile(
    r"^(-+ ?(below this line|this is a copy|original message)|"
    r"(return-path|received|message-id|from|subject|date):)",
    re.IGNORECASE | re.MULTILINE,
)
_REPORT_TEXT_CHARS = 8192


def _report_text(msg: Message) -> str:
    """The first text part of a report, up to the returned copy of our message."""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            continue
        text = body[: _REPORT_TEXT_CHARS * 4].decode("utf-8", "replace")[:_REPORT_TEXT_CHARS]
        end = _RETURNED_COPY.search(text)
        return text[: end.start()] if end else text
    return ""


# --- sources --------------------------------------------------------------------------


def read_sources(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(source label, raw bytes) for every report in Maildirs, mboxes, .eml files, folders.

    Every path is checked before any is read, so a typo fails the run before it starts.
    """
    for path in paths:
        if not path.exists():
            raise BounceError(
                "no such file or folder",
                file=path,
                hint="give a Maildir, an mbox file, .eml files or a folder of them",
            )
        if not os.access(path, os.R_OK):
            raise BounceError("cannot read this (permission denied)", file=path)
    return _iter_sources(paths)


def _iter_sources(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        if path.is_dir():
            if (path / "cur").is_dir() or (path / "new").is_dir():
                files = [f for sub in ("cur", "new") for f in _files_in(path / sub)]
            else:
                files = [f for f in _files_in(path) if f.suffix.lower() == ".eml"]
            for file in files:
                yield str(file), _read(file)
        elif _is_mbox(path):
            yield from _read_mbox(path)
        else:
            yield str(path), _read(path)


def _files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    # Maildir readers skip dot files (Dovecot's index files, editors' droppings).
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BounceError(f"cannot read this ({exc.strerror or exc})", file=path) from exc


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() == ".eml":
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError as exc:
        raise BounceError(f"cannot read this ({exc.strerror or exc})", file=path) from exc


def _read_mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.keys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
    except OSError as exc:
        raise BounceError(f"cannot read this mbox ({exc})", file=path) from exc
    finally:
        box.close()


def read_imap(
    url: str, password: str | None = None, *, ca_file: Path | None = None
) -> Iterator[tuple[str, bytes]]:
    """Reports in an IMAP folder: `imaps://user@host[:port]/FOLDER` (or imap:// + STARTTLS).

    The password comes from NOTIFIER_IMAP_PASSWORD, never from the URL (it would land in
    shell history and process lists). Messages are fetched read-only with BODY.PEEK, so
    nothing is marked as read or deleted. The server's certificate is always verified;
    `ca_file` (PEM, `[imap] ca_file` / NOTIFIER_IMAP_CA_FILE) adds CAs to trust besides
    the system's, for a server with a private CA.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise BounceError(
            "expected an IMAP URL like imaps://user@mail.example.org/INBOX",
            field="--imap",
        )
    password = password if password is not None else imap_password()
    if not password:
        raise BounceError(
            f"no IMAP password: set {IMAP_PASSWORD_ENV}",
            field="--imap",
            hint="the password is read from the environment, never from the URL",
        )
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    user = unquote(parts.username)
    try:
        port = parts.port
    except ValueError as exc:  # urlsplit checks the port only when asked for it
        raise BounceError("the port is not a number", field="--imap") from exc
    where = f"{parts.hostname}:{port}" if port else parts.hostname
    label = f"{parts.scheme}://{parts.username}@{where}/{folder}"
    context = _imap_tls_context(ca_file)
    return _iter_imap(context, parts.scheme, parts.hostname, port, user, password, folder, label)


def _imap_tls_context(ca_file: Path | None) -> ssl.SSLContext:
    # Checked here, before connecting, so a bad path is its own clear error.
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise BounceError(
                f"cannot load CA certificates from this file ({exc.strerror or exc})",
                file=ca_file,
                field="imap.ca_file",
                hint="set [imap] ca_file (or NOTIFIER_IMAP_CA_FILE) to a PEM file of CA "
                "certificates",
            ) from exc
    return context


def _iter_imap(
    context: ssl.SSLContext,
    scheme: str,
    host: str,
    port: int | None,
    user: str,
    password: str,
    folder: str,
    label: str,
) -> Iterator[tuple[str, bytes]]:
    client: imaplib.IMAP4 | None = None
    try:
        if scheme == "imaps":
            client = imaplib.IMAP4_SSL(host, port or 993, ssl_context=context, timeout=60)
        else:
            client = imaplib.IMAP4(host, port or 143, timeout=60)
            client.starttls(ssl_context=context)  # no password over a plain connection
        client.login(user, password)
    except (OSError, imaplib.IMAP4.error) as exc:
        if client is not None:  # connected but refused: no session to log out of
            with contextlib.suppress(OSError):
                client.shutdown()
        raise BounceError(f"cannot log in to IMAP: {_imap_reason(exc)}", file=label) from exc
    try:
        status, _ = client.select(_imap_quote(folder), readonly=True)
        if status != "OK":
            raise BounceError("no such IMAP folder", file=label)
        status, found = client.uid("SEARCH", "ALL")
        uids = found[0].split() if status == "OK" and found and found[0] else []
        for uid in uids[:MAX_IMAP_MESSAGES]:
            status, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                raise BounceError(f"IMAP fetch of UID {uid.decode()} failed", file=label)
            yield f"{label};UID={uid.decode()}", raw
    except (OSError, imaplib.IMAP4.error) as exc:
        raise BounceError(f"IMAP error: {_imap_reason(exc)}", file=label) from exc
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            log.info("IMAP logout failed; the connection is closed anyway")


def _imap_reason(exc: BaseException) -> str:
    """The server's words: imaplib passes its reply as bytes, which str() shows as b'...'."""
    reply = exc.args[0] if len(exc.args) == 1 else None
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return str(exc)


def _imap_quote(folder: str) -> str:
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --- ingest ---------------------------------------------------------------------------


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
    counts = {"hard": 0, "soft": 0, "blocked": 0, "delivered": 0, "unknown": 0, "suppressed": 0}
    state = message.state
    # One message goes to one person, but a report may list others (a message that was
    # expanded, or someone else's report): keep to the blocks about this person when
    # there are any; otherwise (forwarding, aliases) every block is about this message.
    records = [r for r in report.records if message.is_addressed_to(r.recipient)]
    for record in records or report.records:
        counts[record.kind] += 1
        event_kind = EVENT_FOR_KIND.get(record.kind)
        if event_kind is None:
            continue  # no Action we understand: kept in bounce_reports.detail only
        moved = state_after_report(state, event_kind)
        state = moved or state
        data = {
            "status": record.status,
            "action": record.action,
            "diagnostic": record.diagnostic,
            "recipient": record.recipient,
            "source": report.source,
            "report_sha256": digest,
            "correlated_by": correlation.by,
        }
        (bounce_event,) = ledger.append_events(
            [
                EventDraft(
                    event_kind,
                    campaign_id=message.campaign_id,
                    volunteer_id=message.volunteer_id,
                    message_id=message.message_id,
                    data=data,
                    state=moved,
                )
            ]
        )
        if record.kind == "hard":
            counts["suppressed"] += _suppress(ledger, message, record, bounce_event.seq)
    _insert_report(ledger, report, correlation, digest, matched=True, message=message)
    return counts


def _suppress(
    ledger: Ledger, message: MatchedMessage, record: BounceRecord, bounce_seq: int
) -> int:
    """Suppress the address on the roster (what later campaigns send to); 1 if new."""
    address = message.email or record.recipient
    if not address:
        return 0
    if ledger.suppressed(address):
        return 0
    reason = f"bounced_hard {record.status or ''}".strip()
    # The `address_suppressed` event is appended with the row (notifier.ledger).
    ledger.add_suppression(
        address,
        reason,
        event_seq=bounce_seq,
        campaign_id=message.campaign_id,
        volunteer_id=message.volunteer_id,
        message_id=message.message_id,
    )
    return 1


def _record_unmatched(
    ledger: Ledger, report: ParsedReport, correlation: Correlation, digest: str, data: bytes
) -> None:
    kind = _UNMATCHED_EVENT.get(correlation.outcome, "bounce_unmatched")
    message = correlation.message
    ledger.append_events(
        [
            EventDraft(
                kind,
                campaign_id=message.campaign_id if message else None,
                volunteer_id=message.volunteer_id if message else None,
                message_id=message.message_id if message else None,
                data={
                    "source": report.source,
                    "report_sha256": digest,
                    "reason": report.problem or _REASONS[correlation.outcome],
                    "verp_token": report.verp_token,
                    "envelope_id": report.envelope_id,
                    "original_message_id": report.original_message_id,
                    "recipients": [r.recipient for r in report.records],
                },
            )
        ]
    )
    # Its headers and first bytes are kept so a person can read it, or match it by hand.
    kept = kept_copy(data)
    _insert_report(ledger, report, correlation, digest, matched=False, message=message, kept=kept)


_UNMATCHED_EVENT = {"forged": "bounce_forged", "unparseable": "bounce_unparseable"}


_REASONS = {
    "matched": "matched",
    "unmatched": "no message in the ledger has this token, envelope id or Message-ID",
    "forged": "VERP token is not authentic (HMAC does not match): refused as forged",
    "unrecognised": "no delivery status found in it (not a bounce?)",
    "auto_reply": "an automatic reply, not a bounce",
    "not_a_bounce": "not a bounce (a read receipt or a reply)",
    "unparseable": "over a limit on size, MIME depth or parts: skipped unread",
}


def _insert_report(
    ledger: Ledger,
    report: ParsedReport,
    correlation: Correlation,
    digest: str,
    *,
    matched: bool,
    message: MatchedMessage | None = None,
    kept: dict[str, Any] | None = None,
) -> None:
    detail: dict[str, Any] = {
        "outcome": correlation.outcome,
        "correlated_by": correlation.by,
        "reason": report.problem or _REASONS[correlation.outcome],
        "records": [asdict(r) for r in report.records],
    }
    if kept is not None:
        detail.update(kept)
    ledger.record_bounce_report(
        digest,
        report.source,
        matched=matched,
        message_id=message.message_id if message else None,
        detail=detail,
    )


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
