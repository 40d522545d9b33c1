"""Proof of notification, the renderers: CSV, JSON and HTML of the facts."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from report_scenario import (
    C1,
    C2,
    HARD_DIAG,
    PEOPLE,
    PERM_REPLY,
    TEMP_REPLY,
    TEMPLATES_SHA,
    at,
    build,
    mid,
    tamper,
)

from notifier.ledger import Ledger
from notifier.report import campaign_report, unreachable
from notifier.report_formats import (
    REPORT_CSV_COLUMNS,
    UNREACHABLE_CSV_COLUMNS,
    report_as_csv,
    report_as_dict,
    report_as_html,
    report_as_json,
    shown_time,
    unreachable_as_csv,
    unreachable_as_json,
)


@pytest.fixture
def built(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


def test_failed_verification_and_mismatches_are_shown(built: Ledger) -> None:
    seq = next(e.seq for e in built.events(kinds=["failed_permanent"]))
    tamper(built.path, "UPDATE events SET data = ? WHERE seq = ?", ('{"reply":"250 ok"}', seq))
    tamper(
        built.path,
        "UPDATE messages SET state = 'delivered' WHERE message_id = ?",
        (mid(C1, "v09"),),
    )
    r = campaign_report(built, C1)
    html = report_as_html(r)
    assert "FAILED" in html and "PASSED" not in html
    assert "1 message</span>\nhas a stored state that differs" in html
    assert "&lt;2020-03-breach.v09@example.org&gt;" in html
    assert report_as_dict(r)["verification"]["ok"] is False
    assert report_as_dict(r)["state_mismatches"] == [mid(C1, "v09")]


def test_csv_has_the_contract_header_and_one_row_per_recipient(built: Ledger) -> None:
    text = report_as_csv(campaign_report(built, C1))
    assert text.splitlines()[0] == (
        "volunteer_id,email,locale,exposure,state,first_attempt_at,final_at,attempts,"
        "smtp_reply,queue_id,diagnostic,ledger_head"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == (*REPORT_CSV_COLUMNS, "ledger_head")
    assert [r["volunteer_id"] for r in rows] == [p.vid for p in PEOPLE]
    assert rows[5] == {
        "volunteer_id": "v06",
        "email": "carol@example.org",
        "locale": "en",
        "exposure": "published",
        "state": "failed_temporary",
        "first_attempt_at": at("10:05"),
        "final_at": at("11:30"),
        "attempts": "3",
        "smtp_reply": TEMP_REPLY,
        "queue_id": "",
        "diagnostic": "",
        "ledger_head": built.head(),
    }
    assert rows[2]["diagnostic"] == HARD_DIAG


def test_json_is_one_object_with_the_documented_keys(built: Ledger) -> None:
    data = json.loads(report_as_json(campaign_report(built, C1)))
    assert set(data) == {
        "campaign",
        "title",
        "follows",
        "registered_at",
        "generated_at",
        "ledger",
        "ledger_head",
        "verification",
        "templates_sha256",
        "total",
        "counts",
        "counts_by_locale",
        "counts_by_exposure",
        "timeline",
        "recipients",
        "state_mismatches",
        "audience",
        "sent",
        "owed",
        "owed_reasons",
        "owed_people",
        "running",
        "test_sends",
        "rejected_rows",
    }
    assert data["campaign"] == C1 and data["total"] == 10 and data["counts"]["sent"] == 3
    # Without the campaign as sent now, its messages are its audience.
    reached = data["counts"]["sent"] + data["counts"].get("delivered", 0)
    assert (data["audience"], data["sent"], data["owed"]) == (10, reached, 10 - reached)
    assert sum(data["owed_reasons"].values()) == data["owed"] == len(data["owed_people"])
    assert data["running"] is None
    assert set(data["ledger"]) == {"file", "sha256", "complete", "note"}
    assert data["verification"]["ok"] is True
    assert data["counts_by_locale"]["ja"]["sent"] == 3
    assert data["timeline"]["hours"][0] == {"hour": "2020-04-01T09:00Z", "counts": {"queued": 10}}
    v02 = next(r for r in data["recipients"] if r["volunteer_id"] == "v02")
    assert v02["name"] == "鈴木 一郎" and v02["state"] == "sent" and v02["queue_id"] == "AAA2"


def test_html_is_self_contained_escaped_and_carries_the_proof(built: Ledger) -> None:
    r = campaign_report(built, C1)
    html = report_as_html(r)
    lowered = html.lower()
    for forbidden in ("<script", "http", "src=", "<a ", "<link", "@import", "url("):
        assert forbidden not in lowered, forbidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "PASSED" in html and r.verification.head in html
    assert hashlib.sha256(built.path.read_bytes()).hexdigest() in html
    assert TEMPLATES_SHA in html
    assert "鈴木 一郎" in html and HARD_DIAG.replace("<", "&lt;").replace(">", "&gt;") in html
    # Times to the second, labelled with their zone (UTC unless the settings name one).
    assert shown_time(r.generated_at) in html and shown_time(r.generated_at).endswith(" UTC")
    recipients = html[html.index("<h2>Recipients</h2>") :]
    recipients = recipients[: recipients.index("</table>")]
    assert recipients.count("<tr><td>v") == 10  # one recipients row each
    assert "not recorded" in report_as_html(campaign_report(built, C2))


def test_unreachable_renderings(built: Ledger) -> None:
    people = unreachable(built)
    text = unreachable_as_csv(people)
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == UNREACHABLE_CSV_COLUMNS
    assert "postal_address" in rows[0] and len(rows) == 1 + len(people)
    v05 = next(r for r in rows if r[0] == "v05")
    assert dict(zip(rows[0], v05, strict=True)) == {
        "volunteer_id": "v05",
        "name": "田中 花子",
        "email": "tanaka@example.jp",
        "locale": "ja",
        "exposure": "database_only",
        "postal_address": "大阪府大阪市2-2",
        "reason": "failed_permanent",
        "detail": PERM_REPLY,
        "campaign": C1,
        "at": at("10:04"),
        "import_file": "",
        "import_row": "",
    }
    data = json.loads(unreachable_as_json(people))
    assert isinstance(data, list) and len(data) == len(people)
    assert set(data[0]) == set(UNREACHABLE_CSV_COLUMNS)


def test_csv_cells_cannot_run_as_spreadsheet_formulas(built: Ledger) -> None:
    built.db.table("volunteers").update("v05", {"postal_address": "=HYPERLINK(1)"})
    text = unreachable_as_csv(unreachable(built))
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text
