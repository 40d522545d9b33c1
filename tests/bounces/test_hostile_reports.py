"""Hostile reports: too big, too deep, too many parts, forged and large. None stops ingest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Notifier
from test_bounces import (
    FIXTURE_KEY,
    FIXTURES,
    fixture,
    mid,
    seed_ledger,
    state_of,
    suppressed,
    token,
)
from test_cli_bounces import write_key

from notifier import verp
from notifier.bounces import KEPT_BYTES, ingest, parse_full_report
from notifier.config import ReportLimits
from notifier.ledger import Ledger


def nested_multiparts(depth: int, n: int = 1) -> bytes:
    """A report for volunteer n whose body is `depth` multiparts, each inside the last."""
    head = (
        f"From: MAILER-DAEMON@mx.example.org\nTo: bounces+{token(n)}@notify.example.org\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
    ).encode()
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    )
    closing = b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\n\nsee the part inside\n" + closing


def nested_messages(depth: int) -> bytes:
    """message/rfc822 inside message/rfc822: nesting no boundary shows."""
    inner = b"From: someone@example.org\nSubject: innermost\n\nhello\n"
    for _ in range(depth):
        inner = b"From: MAILER-DAEMON@mx.example.org\nContent-Type: message/rfc822\n\n" + inner
    return inner


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--p\nContent-Type: text/plain\n\npart %d\n" % i for i in range(count))
    return (
        b"From: MAILER-DAEMON@mx.example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="p"\n\n' + parts + b"--p--\n"
    )


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deeply_nested_report_is_unparseable_not_a_traceback(depth: int) -> None:
    report = parse_full_report(nested_multiparts(depth), source="deep.eml")
    assert report.category == "unparseable"
    assert report.records == ()
    assert report.problem is not None and "nested over 32 deep" in report.problem
    assert report.verp_token == token(1)  # its headers were still read


def test_nesting_without_boundaries_is_caught_by_the_parts_count() -> None:
    report = parse_full_report(nested_messages(40), source="x")
    assert (report.category, report.problem) == (
        "unparseable",
        f"MIME parts nested over 32 deep, the limit; {len(nested_messages(40))} bytes",
    )


def test_nesting_beyond_what_the_parser_can_follow_is_unparseable() -> None:
    """A depth limit set above the parser's own reach still ends in a clean record."""
    limits = ReportLimits(max_depth=100_000, max_parts=100_000)
    report = parse_full_report(nested_messages(3_000), source="x", limits=limits)
    assert report.category == "unparseable"
    assert report.problem is not None and "too deeply for the parser" in report.problem


def test_legitimate_nesting_is_read() -> None:
    assert parse_full_report(nested_multiparts(20), source="x").category == "report"


def test_too_many_parts_and_too_many_bytes_are_unparseable() -> None:
    limits = ReportLimits(max_bytes=50_000, max_parts=100)
    crowded = parse_full_report(many_parts(101), source="x", limits=limits)
    assert crowded.problem is not None and "more than 100 MIME parts" in crowded.problem
    big = fixture("postfix-hard-511.eml") + b"x" * 50_000
    oversize = parse_full_report(big, source="x", limits=limits)
    assert oversize.problem == f"{len(big)} bytes, over the limit of 50000"
    assert oversize.verp_token == token(1)


def test_too_many_recipient_blocks_is_unparseable() -> None:
    # message/delivery-status blocks count as MIME parts (the email package splits them);
    # a message/global-delivery-status part is one opaque body, so they are counted too.
    blocks = "".join(
        f"\nFinal-Recipient: utf-8; r{i}@example.jp\nAction: failed\nStatus: 5.1.1\n"
        for i in range(60)
    ).encode()
    data = fixture("smtputf8-global.eml").replace(
        b"\nFinal-Recipient:", blocks + b"\nFinal-Recipient:", 1
    )
    report = parse_full_report(data, source="x", limits=ReportLimits(max_parts=50))
    assert report.category == "unparseable"
    assert report.problem is not None and "62 delivery status blocks" in report.problem
    assert parse_full_report(data, source="x").category == "report"


def poison_maildir(tmp_path: Path) -> Path:
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    # Named to sort first, as a Maildir reader lists it.
    (box / "new" / "1000000000.M0P1.mx").write_bytes(nested_multiparts(5_000))
    for number, name in enumerate(["postfix-hard-511.eml", "postfix-delayed.eml"], start=1):
        shutil.copy(FIXTURES / name, box / "new" / f"158556300{number}.M{number}P1.mx")
    return box


def test_poison_first_in_a_maildir_does_not_stop_ingest(notifier: Notifier, tmp_path: Path) -> None:
    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led, [1, 3])
    box = poison_maildir(tmp_path)
    first = notifier("bounces", "ingest", str(box))
    assert first.exit_code == 0, first.output
    assert "Traceback" not in first.output
    assert first.stdout.startswith("3 reports read (0 already recorded): 2 matched")
    assert "1 skipped as unparseable" in first.stdout
    with Ledger(notifier.ledger_path) as led:
        assert (state_of(led, 1), state_of(led, 3)) == ("bounced_hard", "sent")
        (event,) = led.events(kinds=["bounce_unparseable"])
        assert event.data["source"] == str(box / "new" / "1000000000.M0P1.mx")
        assert "nested over 32 deep" in str(event.data["reason"])
        events = led.count("events")
    again = notifier("bounces", "ingest", str(box))
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("3 reports read (3 already recorded): 0 matched")
    with Ledger(notifier.ledger_path) as led:
        assert led.count("events") == events
        assert led.count("bounce_reports") == 3
        assert led.verify().ok
    listing = notifier("bounces", "unmatched").stdout
    assert "1000000000.M0P1.mx" in listing and "nested over 32 deep" in listing


def test_limits_come_from_the_settings(notifier: Notifier, tmp_path: Path) -> None:
    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led, [1])
    (tmp_path / "notifier.toml").write_text("[bounces]\nmax_bytes = 1000\n", encoding="utf-8")
    result = notifier("bounces", "ingest", str(FIXTURES / "postfix-hard-511.eml"))
    assert result.exit_code == 0, result.output
    assert "0 matched" in result.stdout and "1 skipped as unparseable" in result.stdout
    with Ledger(notifier.ledger_path) as led:
        assert state_of(led, 1) == "sent"


def forged_report(size: int) -> bytes:
    """A hard bounce for volunteer 1 under a token made with someone else's key, padded."""
    forged = verp.make_token(b"someone-elses-key-0123456789abcd", mid(1))
    data = fixture("postfix-hard-511.eml").replace(token(1).encode(), forged.encode())
    padding = b"".join(b"%078d\n" % i for i in range((size - len(data)) // 79 + 1))
    body_end = data.rindex(b"\n--4B7C21A0F2E")
    return data[:body_end] + b"\n" + padding + data[body_end:]


def test_ledger_stays_small_after_a_10_mb_forged_report(ledger: Ledger, ledger_path: Path) -> None:
    seed_ledger(ledger, [1])
    ledger.conn.execute("VACUUM")
    before = ledger_path.stat().st_size
    data = forged_report(10_000_000)
    assert len(data) >= 10_000_000
    summary = ingest(ledger, [("forged.eml", data)], key=FIXTURE_KEY)
    assert (summary.forged, summary.hard, summary.suppressed) == (1, 0, 0)
    assert suppressed(ledger) == set()
    ledger.conn.execute("VACUUM")
    assert ledger_path.stat().st_size - before < 4 * KEPT_BYTES
    detail = json.loads(ledger.conn.execute("SELECT detail FROM bounce_reports").fetchone()[0])
    assert (detail["size"], detail["truncated"]) == (len(data), True)
    assert len(detail["raw"].encode("utf-8")) <= KEPT_BYTES * 3  # U+FFFD is 3 bytes
    assert detail["raw"].startswith("Return-Path: <>")
    assert ["Auto-Submitted", "auto-replied"] in detail["headers"]
    assert detail["records"][0]["recipient"] == "alice@example.org"
    assert ledger.verify().ok


def test_small_unmatched_report_is_kept_whole(ledger: Ledger) -> None:
    seed_ledger(ledger, [2])
    data = fixture("postfix-hard-511.eml")
    ingest(ledger, [("x.eml", data)], key=FIXTURE_KEY)
    detail = json.loads(ledger.conn.execute("SELECT detail FROM bounce_reports").fetchone()[0])
    assert detail["raw"] == data.decode("utf-8")
    assert (detail["size"], detail["truncated"]) == (len(data), False)
