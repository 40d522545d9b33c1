"""`notifier history`, `notifier report` and `notifier export unreachable`, run in-process."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
from pathlib import Path

from conftest import Notifier
from report_scenario import C1, EVIL_NAME, TEMPLATES_SHA, build

from notifier.ledger import Ledger


def built_ledger(path: Path) -> None:
    with Ledger(path) as led:
        build(led)


def test_history_json_is_every_event_in_order(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("history", "suzuki@example.jp", "--format", "json")
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert [e["kind"] for e in events] == [
        "queued",
        "sending",
        "sent",
        "queued",
        "sending",
        "sent",
        "bounced_hard",
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert set(events[0]) == {
        "seq",
        "at",
        "kind",
        "campaign_id",
        "volunteer_id",
        "message_id",
        "data",
        "prev_hash",
        "hash",
    }


def test_history_table_shows_data_as_text(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("history", "v05")
    assert result.exit_code == 0, result.output
    assert "failed_permanent" in result.stdout and "2020-04-01 10:04:00" in result.stdout
    assert "code=550" in result.stdout and "Relaying" in result.stdout


def test_history_of_unknown_person_is_one_line(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("history", "nobody@example.org")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
    assert "notifier roster list" in result.stderr


def test_report_csv_to_stdout(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("report", C1, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 10
    assert {r["volunteer_id"]: r["state"] for r in rows}["v05"] == "failed_permanent"
    assert {r["volunteer_id"]: r["queue_id"] for r in rows}["v02"] == "AAA2"


def test_report_json(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("report", C1, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["campaign"] == C1 and data["counts"]["delivered"] == 1
    assert data["verification"]["ok"] is True


def test_report_html_to_a_file(notifier: Notifier, tmp_path: Path) -> None:
    built_ledger(notifier.ledger_path)
    out = tmp_path / "report.html"
    result = notifier("report", C1, "--format", "html", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "http" not in html and "src=" not in html
    assert EVIL_NAME not in html and "&lt;script&gt;" in html
    assert hashlib.sha256(notifier.ledger_path.read_bytes()).hexdigest() in html
    assert TEMPLATES_SHA in html and "PASSED" in html


def test_report_table_is_the_default(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("report", C1)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"Campaign {C1}" in text and "ledger verification: passed" in text
    assert hashlib.sha256(notifier.ledger_path.read_bytes()).hexdigest() in text
    assert "failed_permanent" in text and "2020-04-01 10:00 UTC" in text and "sending 9" in text
    # For people: states in words beside their names, times to the second, zone named.
    assert "not sent: the mail server refused it" in text
    first = next(line for line in text.splitlines() if line.startswith("first send attempt"))
    assert re.search(r"first send attempt \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, last ", first)


def test_report_of_unknown_campaign(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("report", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "notifier campaign list" in result.stderr


def test_report_on_a_tampered_ledger_still_writes_and_exits_1(
    notifier: Notifier, tmp_path: Path
) -> None:
    built_ledger(notifier.ledger_path)
    conn = sqlite3.connect(notifier.ledger_path)
    conn.execute("UPDATE events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 3")
    conn.commit()
    conn.close()
    out = tmp_path / "r.html"
    result = notifier("report", C1, "--format", "html", "--out", str(out))
    assert result.exit_code == 1
    assert "fails verification" in result.stderr and "event 3" in result.stderr
    assert "FAILED" in out.read_text(encoding="utf-8")


def test_export_unreachable_csv_is_the_default(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("export", "unreachable")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and "postal_address" in rows[0]
    assert {r["email"] for r in rows} == {
        "suzuki@example.jp",
        "mallory@example.com",
        "tanaka@example.jp",
        "yamamoto@example.jp",
        "kato at example.jp",
        "bob@example.org",
        "old@",
        "lee@example.org",
    }
    assert {r["email"]: r["postal_address"] for r in rows}["tanaka@example.jp"] == "大阪府大阪市2-2"


def test_export_unreachable_json(notifier: Notifier) -> None:
    built_ledger(notifier.ledger_path)
    result = notifier("export", "unreachable", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {p["reason"] for p in data} == {
        "hard_bounce",
        "suppressed",
        "failed_permanent",
        "rejected_at_import",
        "bounced_soft",
    }


def test_commands_need_an_existing_ledger(notifier: Notifier) -> None:
    result = notifier("export", "unreachable")
    assert result.exit_code == 2 and "no ledger here" in result.stderr
    assert not notifier.ledger_path.exists()


def test_export_unreachable_finds_bad_addresses_under_a_mapped_header(
    notifier: Notifier, tmp_path: Path
) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        '[columns]\nemail = "メールアドレス"\nfamily_name = "氏名(姓)"\nexposure = "区分"\n',
        encoding="utf-8",
    )
    roster = tmp_path / "partner.csv"
    roster.write_text(
        "氏名(姓),メールアドレス,区分\n鈴木,suzuki@example.jp,published\n"
        "佐藤,sato at example.jp,screened\n",
        encoding="utf-8",
    )
    assert notifier("roster", "import", str(roster), "--mapping", str(mapping)).exit_code == 0
    result = notifier("export", "unreachable", "--format", "json")
    assert result.exit_code == 0, result.output
    people = json.loads(result.stdout)
    assert [p["email"] for p in people] == ["sato at example.jp"]
    assert people[0]["reason"] == "rejected_at_import"
