"""Delivery reports read: RFC 3464 and SMTPUTF8 (RFC 6533) DSNs, limits, the one `classify`.

A report comes in as raw bytes. RFC 3464 delivery status notifications are parsed here,
including SMTPUTF8 ones (`message/global-delivery-status`, RFC 6533), which Python's
`email` parser leaves as one opaque payload. Reports that are not DSNs (old Postfix,
qmail, Exim, Yahoo, ...) go to flufl.bounce, a maintained collection of detectors, rather
than heuristics of our own. Auto-replies, read receipts and replies from people are told
apart from reports before any text is read, and a report over the size, depth or parts
limits is skipped unread. Nothing here touches the ledger.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.errors
import email.header
import email.policy
import logging
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, Literal

from notifier import verp
from notifier.config import ReportLimits
from notifier.smtp.outcome import STATUS_PATTERN, failure_kind

log = logging.getLogger(__name__)

# What one report says happened to one recipient, and (not_a_bounce, unparseable) what a
# report that says nothing about a recipient is: `bounces parse` gives exactly these.
Kind = Literal[
    "hard",
    "soft",
    "blocked",
    "expired",
    "delayed",
    "delivered",
    "not_a_bounce",
    "unparseable",
]
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


def classify(action: str | None, status: str | None, diagnostic: str | None = None) -> Kind:
    """The one rule from a report's Action, Status (and the server's words) to a kind.

    `failed` with a 4.x.x status, or with X.4.7 (delivery time expired), is expired: the
    mail system kept the message for its queue lifetime and gave up, because a server was
    down or slow, not because the address is bad; Postfix reports the last temporary
    status it saw. Any other failure is judged by `notifier.smtp.outcome.failure_kind`, the
    rule a refusal at SMTP time is judged by: hard (the address does not exist or cannot
    receive: 5.1.x, 5.4.4; only these suppress the address), soft (on the mailbox's side:
    mailbox full, message too big), blocked (refused for policy or reputation, 5.7.x: the
    address is fine, the sender has to act). `delayed`: the mail system is still trying,
    nothing is decided yet. A non-standard Action with a 5.x.x status is a failure;
    without an Action there is no telling what happened (unparseable).
    """
    word = (action or "").strip().lower()
    outcome = _ACTION_OUTCOME.get(word)
    if outcome is None and word and (status or "").startswith("5."):
        outcome = "failed"  # "Action: error", "bounced", ...: still a permanent failure
    if outcome is None:
        return "unparseable"
    if outcome == "delivered":
        return "delivered"
    if outcome == "delayed":
        return "delayed"  # still being retried: news, not an outcome
    if status and (status.startswith("4.") or status.endswith(".4.7")):
        return "expired"
    return failure_kind(status, diagnostic)


def report_kind(report: ParsedReport) -> Kind | None:
    """What a report with no recipient to speak of is (None: it has records).

    Auto-replies, read receipts and replies from people are not bounces; a report over a
    limit, or a delivery report in which no recipient could be read, is unparseable; mail
    with neither a delivery status nor a failure a detector knows is not a bounce.
    """
    if report.records:
        return None
    if report.category in ("auto_reply", "not_a_bounce"):
        return "not_a_bounce"
    if report.category == "unparseable" or report.is_dsn:
        return "unparseable"
    return "not_a_bounce"


def records_for_people(report: ParsedReport) -> tuple[BounceRecord, ...]:
    """The report's records, or one saying what it is when it has none, so every file
    read gets a line in `bounces parse` (nothing is passed over without a word)."""
    kind = report_kind(report)
    if kind is None:
        return report.records
    reason = report.problem or _NO_RECORD_REASON[kind]
    return (
        BounceRecord(
            file=report.source,
            action=None,
            status=None,
            recipient=None,
            kind=kind,
            original_message_id=report.original_message_id,
            envelope_id=report.envelope_id,
            verp_token=report.verp_token,
            diagnostic=reason,
        ),
    )


_NO_RECORD_REASON: dict[Kind, str] = {
    "not_a_bounce": "no delivery status and no failure found in it: not a bounce",
    "unparseable": "a delivery report in which no recipient could be read",
}


# --- parsing --------------------------------------------------------------------------

_FOLD = re.compile(r"\s*\r?\n[ \t]*")
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
# Headers whose presence alone marks an automatic reply (any value).
_AUTO_REPLY_MARKERS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress")
# Precedence values automatic mail carries (a person's reply carries none).
_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Subjects vacation responders write (Outlook, Exchange, Gmail, Japanese clients).
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[ -]?reply|auto:|out of (the )?office"
    r"|自動応答|自動返信|不在)",
    re.IGNORECASE,
)
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
    precedence = (_first_header(msg, "precedence") or "").strip().lower()
    if precedence in _AUTO_PRECEDENCE:
        return "auto_reply", f"an automatic reply (Precedence: {precedence}), not a bounce"
    subject = _decoded_subject(msg)
    if _AUTO_REPLY_SUBJECT.match(subject):
        return "auto_reply", f"an automatic reply (subject {subject[:60]!r}), not a bounce"
    if _is_read_receipt(msg, parts):
        return "not_a_bounce", "a read receipt (message disposition notification), not a bounce"
    if _is_reply_from_a_person(msg):
        return "not_a_bounce", "a reply from a person (In-Reply-To, not a mail system)"
    return None


def _decoded_subject(msg: Message) -> str:
    """The Subject as a person reads it (RFC 2047 words decoded), "" if none."""
    raw = _first_header(msg, "subject")
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return raw


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
    status_match = STATUS_PATTERN.search(fields.get("status", ""))
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
