"""Bounces: read delivery reports, classify each recipient, tie them to the message sent.

- `dsn`: a report's bytes to per-recipient records (RFC 3464, SMTPUTF8, flufl.bounce for
  the rest), the limits, what is not a bounce, and the one `classify` rule;
- `sources`: where reports are read from (Maildir, mbox, `.eml` files and folders, IMAP);
- `ingest`: which message a report is about, and what the ledger records (events, the
  report itself, suppression of hard-bounced addresses).

Data flows `sources` -> `dsn` -> `ingest`; the names callers use are re-exported here.
"""

from notifier.bounces.dsn import (
    DEFAULT_LIMITS,
    DSN_TYPES,
    KEPT_BYTES,
    RECORD_KEYS,
    RETURNED_TYPES,
    VERP_HEADERS,
    BounceRecord,
    Category,
    Kind,
    ParsedReport,
    classify,
    kept_copy,
    parse_full_report,
    parse_header_blocks,
    parse_report,
    records_for_people,
)
from notifier.bounces.ingest import (
    EVENT_FOR_KIND,
    Correlation,
    IngestSummary,
    UnmatchedReport,
    correlate,
    ingest,
    report_digest,
    unmatched_reports,
)
from notifier.bounces.sources import MAX_IMAP_MESSAGES, read_imap, read_sources

__all__ = [
    "DEFAULT_LIMITS",
    "DSN_TYPES",
    "EVENT_FOR_KIND",
    "KEPT_BYTES",
    "MAX_IMAP_MESSAGES",
    "RECORD_KEYS",
    "RETURNED_TYPES",
    "VERP_HEADERS",
    "BounceRecord",
    "Category",
    "Correlation",
    "IngestSummary",
    "Kind",
    "ParsedReport",
    "UnmatchedReport",
    "classify",
    "correlate",
    "ingest",
    "kept_copy",
    "parse_full_report",
    "parse_header_blocks",
    "parse_report",
    "read_imap",
    "read_sources",
    "records_for_people",
    "report_digest",
    "unmatched_reports",
]
