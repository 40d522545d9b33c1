"""A large report's ledger is verified in parts by other processes while this one writes
the recipients' part of the report into a temporary file (Ledger.verify_started,
Recipients.write_ahead): the report is the very same as when both are done here one
after the other, whatever the ledger holds (intact, a table row edited, an event edited
or deleted); and the head it names is the head its verdict is of."""

from __future__ import annotations

import errno
import io
import itertools
import json
import re
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from report_scenario import C1, C2, append, at, build, tamper

from notifier import report
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, parallel
from notifier.report import Recipients, RecipientsWriter, open_campaign_report
from notifier.report_formats import (
    recipients_csv_lines,
    recipients_json_pieces,
    report_csv_lines,
    report_json_pieces,
)

IN_PARTS = parallel.Parts(from_events=0, workers=2, segment_events=5, table_parts=2)
HERE_ONLY = parallel.Parts(from_events=10**9)


def _report(
    ledger: Ledger, campaign: str, parts: parallel.Parts, writer: RecipientsWriter
) -> tuple[str, str, bool]:
    """The JSON and CSV reports of one read of the ledger, the recipients written ahead
    by `writer` (when the ledger is verified in parts)."""
    ledger.verify_parts = parts
    with open_campaign_report(ledger, campaign, read_ahead=writer) as r:
        assert isinstance(r.recipients, Recipients)
        assert r.recipients.written_ahead is (parts is IN_PARTS)
        json_text = "".join(report_json_pieces(r))
        csv_text = "".join(report_csv_lines(r))
        # read twice, and two at once: the spool serves each reader from its own place
        ahead = r.recipients.written_as(writer, r.ledger_head)
        again = r.recipients.written_as(writer, r.ledger_head)
        first: list[str] = []
        second: list[str] = []
        for a, b in itertools.zip_longest(ahead, again):
            first.extend([a] if a is not None else [])
            second.extend([b] if b is not None else [])
        written_now = "".join(writer(r.recipients, r.ledger_head))
        assert "".join(first) == "".join(second) == written_now
        pairs = list(zip(r.recipients, r.recipients, strict=True))
        assert all(a == b for a, b in pairs) and len(pairs) == len(r.recipients)
    # each report is made at its own second
    json_text = re.sub(r'"generated_at": "[^"]*"', '"generated_at": ""', json_text, count=1)
    return json_text, csv_text, bool(pairs)


def _edit_event(ledger: Ledger) -> None:
    tamper(ledger.path, "UPDATE events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 11")


def _delete_last_events(ledger: Ledger) -> None:
    last = ledger.conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    tamper(ledger.path, "DELETE FROM events WHERE seq >= ?", (last - 1,))


def _edit_row(ledger: Ledger) -> None:
    tamper(ledger.path, "UPDATE messages SET state = 'delivered' WHERE state != 'delivered'")


def _intact(ledger: Ledger) -> None:
    """Nothing changed."""


@pytest.mark.parametrize("writer", [recipients_json_pieces, recipients_csv_lines])
@pytest.mark.parametrize(
    "damage", [_intact, _edit_event, _delete_last_events, _edit_row], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("campaign", [C1, C2])
def test_the_report_is_the_same_verified_in_parts(
    ledger: Ledger,
    campaign: str,
    damage: Callable[[Ledger], None],
    writer: RecipientsWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The written-ahead text read back a few bytes at a time: a Japanese name's
    # characters are split between reads, and must come back whole.
    monkeypatch.setattr(report, "_SPOOL_BLOCK", 5)
    build(ledger)
    damage(ledger)
    in_parts = _report(ledger, campaign, IN_PARTS, writer)
    here = _report(ledger, campaign, HERE_ONLY, writer)
    assert in_parts == here
    assert in_parts[2]  # the campaign has recipients: the spool was written and read
    document = json.loads(in_parts[0])
    verification = document["verification"]
    assert verification["ok"] is (damage is _intact), verification
    if damage is _intact:
        assert document["ledger_head"] == f"{verification['events']}:{verification['head']}"


def test_a_later_snapshot_verified_over_there_is_not_what_the_report_says(
    ledger: Ledger,
) -> None:
    build(ledger)
    ledger.verify_parts = IN_PARTS
    with ledger.reading():
        head = ledger.head()
        # Appended before the other processes read: they see the later chain, and the
        # verdict must still be this snapshot's.
        with Ledger(ledger.path) as writer:
            append(
                writer,
                [EventDraft(EventKind.TEST_SENT, campaign_id=C1, data={"to": "dpo@hmr.test"})],
                at("11:00"),
            )
        started = ledger.verify_started()
        assert started.apart
        result = started()
        assert result == ledger._verify_here(())
    assert result.ok
    assert f"{result.events}:{result.head}" == head
    assert ledger.head() != head  # the append did happen


class _FullDisk(io.BytesIO):
    """A temporary file on a disk that fills after a few bytes."""

    def write(self, data: Any, /) -> int:
        room = 100 - self.tell()
        if len(data) > room:
            super().write(bytes(data[:room]))  # what fits is written, as on a real disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_while_writing_ahead_writes_the_recipients_after_the_verdict(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(ledger)
    expected = _report(ledger, C1, HERE_ONLY, recipients_json_pieces)
    spools: list[_FullDisk] = []

    def full_disk(**_: Any) -> _FullDisk:
        spools.append(_FullDisk())
        return spools[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", full_disk)
    ledger.verify_parts = IN_PARTS
    with open_campaign_report(ledger, C1, read_ahead=recipients_json_pieces) as r:
        assert isinstance(r.recipients, Recipients) and not r.recipients.written_ahead
        assert spools and spools[0].getbuffer().nbytes == 0  # what it held was given back
        text = "".join(report_json_pieces(r))
    assert re.sub(r'"generated_at": "[^"]*"', '"generated_at": ""', text, count=1) == expected[0]
