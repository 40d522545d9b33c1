"""Reconciliation: settle messages left uncertain by a crash, from what the mail system saw.

A sender that dies between handing a message to the server and recording the server's
answer leaves that message `uncertain`: it may or may not have gone. Guessing either way
breaks the promise (tell nobody twice, drop nobody), so the operator brings evidence:

- the log of the MTA we submitted to: Postfix's `cleanup` logs `QUEUEID: message-id=<...>`
  once it has taken a whole message, and its delivery agents log `status=sent|bounced|...`
  for that queue id later;
- or a Maildir of what a server received (a test relay, a sink), matched by Message-ID.

Message-IDs are keyed per ledger, so a Message-ID found in the evidence is ours and names
one message. A message found there was received: it becomes `sent`, with the evidence
(file and line, queue id). One not found goes back to `pending`, so a plain resume sends
it. Both are events in the ledger.

This module reads evidence; `Ledger.settle_uncertain` records what it decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from notifier.errors import EvidenceError

# A log line longer than this is not Postfix's: read it in pieces, never all at once.
_MAX_LINE = 64 * 1024
# Headers of a received message are in its first bytes; the body is never needed.
_MAX_HEADER_BYTES = 256 * 1024

# `postfix/cleanup[123]: 4F2A81C0: message-id=<...>` and
# `postfix/smtp[456]: 4F2A81C0: to=<...>, ..., status=sent (250 ...)`. Queue ids are hex
# (short form) or base-52 (long form, `enable_long_queue_ids`).
_LOG_LINE = re.compile(
    r"postfix(?:-[\w.-]+)?/(?P<daemon>[\w/.-]+)\[\d+\]: (?P<qid>[0-9A-Za-z]{5,}): (?P<rest>.*)$"
)
_MESSAGE_ID = re.compile(r"^message-id=<(?P<mid>[^>]*)>")
_STATUS = re.compile(r"\bstatus=(?P<status>\w+)(?: \((?P<detail>.*)\))?")


@dataclass(frozen=True)
class Evidence:
    """That the mail system received one message, and where that is written."""

    message_id: str  # without angle brackets
    source: str  # `FILE:LINE` of a log, or the path of a Maildir file
    queue_id: str = ""
    fate: str = ""  # the MTA's last word on it: sent, bounced, deferred, expired ("" queued)
    detail: str = ""

    def event_data(self) -> dict[str, str]:
        data = {"evidence": self.source}
        for key in ("queue_id", "fate", "detail"):
            if value := getattr(self, key):
                data[key] = value
        return data


def bare_message_id(message_id: str) -> str:
    return message_id.strip().strip("<>")


def postfix_log_evidence(path: Path) -> dict[str, Evidence]:
    """Message-ID -> evidence, from a Postfix log (`maillog`, or syslog's `mail.log`)."""
    by_queue_id: dict[str, Evidence] = {}
    for number, line in _numbered_lines(path):
        match = _LOG_LINE.search(line)
        if match is None:
            continue
        qid, rest = match["qid"], match["rest"]
        if match["daemon"].endswith("cleanup"):
            found = _MESSAGE_ID.match(rest)
            if found:
                mid = bare_message_id(found["mid"])
                by_queue_id[qid] = Evidence(mid, f"{path}:{number}", queue_id=qid)
            continue
        status = _STATUS.search(rest)
        if status and qid in by_queue_id:
            by_queue_id[qid] = replace(
                by_queue_id[qid], fate=status["status"], detail=(status["detail"] or "")[:300]
            )
    return {e.message_id: e for e in by_queue_id.values()}


def maildir_evidence(path: Path) -> dict[str, Evidence]:
    """Message-ID -> evidence, from a Maildir (its `new/` and `cur/`) of received mail."""
    folders = [path / "new", path / "cur"]
    if not any(folder.is_dir() for folder in folders):
        raise EvidenceError(
            "not a Maildir (no new/ or cur/ folder)",
            file=path,
            hint="name the Maildir folder itself, the one that holds new/ and cur/",
        )
    parser = BytesHeaderParser(policy=default_policy)
    found: dict[str, Evidence] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for item in sorted(folder.iterdir()):
            try:
                with item.open("rb") as handle:
                    head = handle.read(_MAX_HEADER_BYTES)
            except OSError:
                continue  # a file removed while we read: not evidence either way
            header = parser.parsebytes(head).get("Message-ID")
            if header:
                mid = bare_message_id(str(header))
                found[mid] = Evidence(mid, str(item), fate="received")
    return found


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        handle = path.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise EvidenceError(
            f"cannot read the MTA log ({exc.strerror})",
            file=path,
            hint="name the Postfix log file (maillog_file, or /var/log/mail.log)",
        ) from exc
    with handle:
        number = 0
        while line := handle.readline(_MAX_LINE):
            number += 1
            yield number, line.rstrip("\n")
