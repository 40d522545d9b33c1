"""What the campaign report keeps apart from the people it notified: the roster rows refused
at import (nobody was e-mailed from them) and the test messages sent to the sender; and the
exposures in words, as the states are."""

from __future__ import annotations

import json
import re

import pytest
from conftest import Notifier
from report_scenario import C1, EVIL_NAME, append, at, build

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, volunteer_to_row
from notifier.report import RejectedRow, TestSend, campaign_report
from notifier.report_formats import report_as_html, report_as_json
from notifier.volunteer import EXPOSURE_WORDS, EXPOSURES, Volunteer


@pytest.fixture
def built(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


def section(html: str, title: str) -> str:
    """The HTML from the heading `title` to the next heading."""
    start = html.index(f"<h2>{title}</h2>")
    end = html.find("<h2>", start + 1)
    return html[start : end if end != -1 else len(html)]


def test_rows_refused_at_import_are_in_the_report(built: Ledger) -> None:
    report = campaign_report(built, C1)
    assert report.verification.ok
    assert [(r.import_file, r.row, r.volunteer_id, r.email) for r in report.rejected_rows] == [
        ("old.csv", 3, "", "old@"),
        ("volunteers.csv", 7, "", "kato at example.jp"),
        ("volunteers.csv", 9, "", "ALICE@example.org"),
        ("volunteers.csv", 12, "v12", "lee@example.org"),
    ]
    kato = report.rejected_rows[1]
    # Every problem of the row, with the column as the file spells it.
    assert kato.reason == "メールアドレス: not a valid address; exposure: unknown exposure"
    assert kato.name == "加藤 学" and kato.imported_at == at("09:00")
    # Row 9 had no id, and its address is Alice's (v01), imported from another row: fixed.
    assert [r.on_roster_as for r in report.rejected_rows] == [None, None, "v01", None]
    assert [r.fixed for r in report.rejected_rows] == [False, False, True, False]

    # A later import brings v12 in: their row counts as fixed, under that id.
    lee = Volunteer(
        volunteer_id="v12",
        email="lee@example.org",
        email_ascii="lee@example.org",
        family_name="Lee",
        given_name="Kim",
        locale="en",
        exposure="screened",
    )
    built.db.table("volunteers").insert(volunteer_to_row(lee))
    later = campaign_report(built, C1).rejected_rows
    assert later[3] == RejectedRow(
        import_file="volunteers.csv",
        imported_at=at("09:00"),
        row=12,
        volunteer_id="v12",
        name="",
        email="lee@example.org",
        reason="family_name: empty",
        on_roster_as="v12",
    )


def test_rejected_rows_in_json_and_html(built: Ledger) -> None:
    report = campaign_report(built, C1)
    data = json.loads(report_as_json(report))
    assert data["rejected_rows"][2] == {
        "import_file": "volunteers.csv",
        "imported_at": at("09:00"),
        "row": 9,
        "volunteer_id": "",
        "name": "Alice Dane",
        "email": "ALICE@example.org",
        "reason": "email: duplicate of row 2",
        "on_roster_as": "v01",
        "fixed": True,
    }
    assert [r["fixed"] for r in data["rejected_rows"]] == [False, False, True, False]

    html = report_as_html(report, time_zone="Europe/London")
    assert "<tr><th>Roster rows refused at import</th><td>4: 3 of them not on the roster" in html
    rows = section(html, "Rows refused at import")
    body = rows[rows.index("</thead>") :]
    assert body.count("<tr>") == 4
    assert "yes: on the roster as v01" in body
    assert body.count("never e-mailed") == 3
    # Row number, reason and the time of the import in the report's zone, labelled.
    assert '<td class="n">7</td>' in body and "not a valid address" in body
    assert "2020-04-01 10:00:00 BST" in body


def test_no_rejected_rows_says_so(ledger: Ledger) -> None:
    build(ledger)
    ledger.conn.execute("DELETE FROM events WHERE kind = 'row_rejected'")  # none at all
    report = campaign_report(ledger, C1)
    assert report.rejected_rows == ()
    html = report_as_html(report)
    assert "No roster row was refused at any import." in html
    assert "<tr><th>Roster rows refused at import</th><td>none</td></tr>" in html


def test_test_sends_are_kept_apart_from_the_real_ones(built: Ledger) -> None:
    before = campaign_report(built, C1)
    append(
        built,
        [
            EventDraft(
                EventKind.TEST_SENT,
                campaign_id=C1,
                data={"to": "volunteers-ja@hmr.test", "as": "v02", "reply": "250 2.0.0 Ok"},
            ),
            EventDraft(
                EventKind.TEST_REFUSED,
                campaign_id=C1,
                data={"to": "dpo@hmr.test", "as": "v03", "reply": "550 5.7.1 no"},
            ),
        ],
        at("10:30"),
    )
    report = campaign_report(built, C1)
    assert report.verification.ok
    assert report.test_sends == (
        TestSend(at("10:30"), "volunteers-ja@hmr.test", "v02", True, "250 2.0.0 Ok"),
        TestSend(at("10:30"), "dpo@hmr.test", "v03", False, "550 5.7.1 no"),
    )
    # Nothing the campaign did changes: no count, timeline hour or send time has them.
    assert report.timeline == before.timeline
    assert (report.counts, report.recipients) == (before.counts, before.recipients)
    assert not any(k.startswith("test") for b in report.timeline.hours for k in b.counts)

    data = json.loads(report_as_json(report))
    assert data["test_sends"][0] == {
        "at": at("10:30"),
        "to": "volunteers-ja@hmr.test",
        "shown_as": "v02",
        "accepted": True,
        "reply": "250 2.0.0 Ok",
    }
    assert all("test" not in kind for h in data["timeline"]["hours"] for kind in h["counts"])

    html = report_as_html(report, time_zone="Europe/London")
    timeline = section(html, "Timeline (events per hour, Europe/London)")
    assert "test" not in timeline.replace("test messages are listed apart", "")
    tests = section(html, "Test messages")
    assert tests.count("<tr><td") == 2
    assert "2020-04-01 11:30:00 BST" in tests
    assert "accepted by the mail server: 250 2.0.0 Ok" in tests
    assert '<span class="bad">refused</span>: 550 5.7.1 no' in tests
    assert "<tr><th>Test messages (to the sender, not counted here)</th><td>2</td>" in html


def test_exposures_and_languages_are_in_words(built: Ledger) -> None:
    html = report_as_html(campaign_report(built, C1))
    shown = re.sub(r"<[^>]+>", " ", html)
    for exposure in EXPOSURES:
        assert EXPOSURE_WORDS[exposure] in shown
    assert "database_only" not in shown
    by_exposure = section(html, "By exposure")
    assert f"<th>{EXPOSURE_WORDS['database_only']}</th>" in by_exposure
    by_language = section(html, "By language")
    assert "<th>English</th>" in by_language and "<th>Japanese (日本語)</th>" in by_language
    recipients = section(html, "Recipients")
    assert "English, records published by the criminals" in recipients
    assert EVIL_NAME not in html  # still escaped


def test_the_terminal_report_names_what_it_leaves_out(notifier: Notifier) -> None:
    with Ledger(notifier.ledger_path) as led:
        build(led)
        append(
            led,
            [EventDraft(EventKind.TEST_SENT, campaign_id=C1, data={"to": "dpo@hmr.test"})],
            at("10:30"),
        )
    result = notifier("report", C1)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        "Roster rows refused at import: 4, 3 of them not on the roster since"
        " (never e-mailed: notifier export unreachable)"
    ) in lines
    assert "1 test message to the sender, not counted above (--format html lists it)" in lines
    assert "test_sent" not in result.stdout and "test sent" not in result.stdout
