"""Hostile text from a roster or a report never runs in a spreadsheet or on a terminal.

Every CSV the tool writes neutralises formula cells (OWASP: a leading =, +, -, @, tab or
CR gets a '); every table or per-row message shows control characters as escapes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import Result
from conftest import Notifier
from test_bounces import FIXTURES, seed_ledger
from test_cli_bounces import write_key

FORMULAS = ('=HYPERLINK("http://evil.example/","click")', "+cmd", "-1+1", "@SUM(A1:A9)")
ESCAPE = "\x1b[2J\x1b]0;owned\x07"  # clear the screen, retitle the terminal


def q(cell: str) -> str:
    return cell.replace('"', '""')


def hostile_roster(path: Path) -> Path:
    rows = [
        "email,family_name,given_name,locale,exposure",
        # Accepted: formula-looking names are names, and templates escape them.
        *(f'p{i}@example.org,"{q(f)}","{q(f)}",en,published' for i, f in enumerate(FORMULAS)),
        # Rejected: a formula for an address, a name with escapes and a NUL byte.
        "\"=cmd|' /C calc'!A0\",Smith,Ann,en,published",
        f'ok@example.org,"{ESCAPE[:4]}Ev\x00il",Eve,en,published',
    ]
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return path


def assert_no_formula_cells(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    return rows


def assert_no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text


@pytest.fixture
def imported(notifier: Notifier, tmp_path: Path) -> Result:
    result = notifier(
        "roster", "import", str(hostile_roster(tmp_path / "r.csv")), "--rejects", "rejects.csv"
    )
    assert result.exit_code == 0, result.output
    return result


def test_roster_list_csv_neutralises_formulas(notifier: Notifier, imported: Result) -> None:
    out = notifier("roster", "list", "--format", "csv").stdout
    rows = assert_no_formula_cells(out)
    names = {r[2] for r in rows[1:]}  # family_name
    assert {"'" + f for f in FORMULAS} <= names


def test_rejects_file_and_rejects_csv_neutralise_formulas(
    notifier: Notifier, imported: Result, tmp_path: Path
) -> None:
    for text in (
        (tmp_path / "rejects.csv").read_text(encoding="utf-8-sig"),
        notifier("roster", "rejects", "--format", "csv").stdout,
    ):
        rows = assert_no_formula_cells(text)
        assert rows[0] == ["row", "column", "value", "reason", "warning"]
        assert any(r[2].startswith("'=cmd") for r in rows)


def test_rejects_tables_show_control_characters_as_escapes(
    notifier: Notifier, imported: Result
) -> None:
    for text in (imported.output, notifier("roster", "rejects").output):
        assert_no_controls(text)
        assert "\\x1b" in text and "\\x00" in text


def test_roster_list_table_and_history_escape_control_characters(
    notifier: Notifier, tmp_path: Path
) -> None:
    # A postal address may hold line breaks; an extra column anything.
    roster = tmp_path / "r.csv"
    roster.write_text(
        f'email,family_name,locale,exposure,notes\r\nx@example.org,Doe,en,published,"{ESCAPE}"\r\n',
        encoding="utf-8",
    )
    assert notifier("roster", "import", str(roster)).exit_code == 0
    assert_no_controls(notifier("roster", "list").output)
    history = notifier("history", "x@example.org")
    assert history.exit_code == 0
    assert_no_controls(history.output)
    assert_no_controls(notifier("history", f"x@example.org{ESCAPE}").output)


def test_cohort_csv_neutralises_formulas(notifier: Notifier, imported: Result) -> None:
    result = notifier("cohort", "2020-03-breach", "--format", "csv", "--excluded")
    assert result.exit_code == 0, result.output
    rows = assert_no_formula_cells(result.stdout)
    assert any(cell.startswith("'=HYPERLINK") for row in rows for cell in row)


def hostile_report(tmp_path: Path) -> Path:
    data = (FIXTURES / "gmail-folded.eml").read_bytes()
    data = data.replace(b"Diagnostic-Code: smtp; 550-", b"Diagnostic-Code: smtp; 550-\x1b[2J\x00")
    path = tmp_path / "evil\x1b[31m.eml"
    path.write_bytes(data)
    return path


def test_bounces_parse_escapes_control_characters(notifier: Notifier, tmp_path: Path) -> None:
    result = notifier("bounces", "parse", str(hostile_report(tmp_path)))
    assert result.exit_code == 0, result.output
    assert_no_controls(result.output)
    assert "\\x1b[31m" in result.output


def test_bounces_unmatched_escapes_control_characters(notifier: Notifier, tmp_path: Path) -> None:
    from notifier.ledger import Ledger

    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led, [1])
    report = hostile_report(tmp_path)
    assert notifier("bounces", "ingest", str(report)).exit_code == 0
    listing = notifier("bounces", "unmatched")
    assert listing.exit_code == 0
    assert_no_controls(listing.output)
    assert "\\x1b[31m" in listing.output


@pytest.mark.parametrize(
    "url", ["smtp://[::1", "smtp://bob:s3cret@[::1", "smtp://host:port", "smtpx://bob:s3cret@h"]
)
def test_a_malformed_smtp_url_is_one_clean_line_without_secrets(
    notifier: Notifier, imported: Result, url: str
) -> None:
    result = notifier("send", "2020-03-breach", "--smtp", url)
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "s3cret" not in result.output
    assert result.stderr.startswith("Error: ") and "--smtp" in result.stderr
