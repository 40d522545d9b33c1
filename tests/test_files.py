"""Files and folders written for the user (notifier.files): CSV files a spreadsheet opens
right, and one line, never a traceback, for any path that cannot be written, found before
the work starts."""

from __future__ import annotations

import codecs
import csv
import io
import json
import mailbox
import os
import smtplib
from pathlib import Path

import pytest
from click.testing import Result
from conftest import REPO, Notifier, write_org_config

from notifier.errors import OutputError
from notifier.files import prepare_maildir, write_csv
from notifier.ledger import Ledger
from notifier.sink import Sink

ROSTER = REPO / "examples" / "volunteers.csv"
BOM = codecs.BOM_UTF8
MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nHello.\r\n"


@pytest.fixture
def imported(notifier: Notifier, tmp_path: Path) -> None:
    write_org_config(tmp_path)
    result = notifier("roster", "import", str(ROSTER), "--rejects", "rejects.csv")
    assert result.exit_code == 0, result.output


@pytest.fixture
def sent(notifier: Notifier, imported: None) -> None:
    """The example roster, sent the first notice (into a sink), so it has a report."""
    assert notifier("approve", "2020-03-breach", "--by", "Test approver").exit_code == 0
    with Sink() as sink:
        result = notifier("send", "2020-03-breach", "--yes", "--smtp", sink.url)
    assert result.exit_code == 0, result.output


def one_line_error(result: Result, path: str) -> str:
    """The error a path that cannot be written gets: exit 2, `Error: PATH: cannot ...`
    and a hint, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {path}: cannot "), result.stderr
    assert "hint: " in result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


# --- CSV files for a spreadsheet ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("export", "unreachable", "--out", "out.csv"),
        ("report", "2020-03-breach", "--format", "csv", "--out", "out.csv"),
        ("roster", "import", str(ROSTER), "--rejects", "out.csv"),
    ],
    ids=["export-unreachable", "report-csv", "roster-import-rejects"],
)
def test_csv_files_start_with_a_bom_unless_told_not_to(
    notifier: Notifier, sent: None, tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = tmp_path / "out.csv"
    result = notifier(*args)
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert raw.startswith(BOM) and not raw.startswith(BOM * 2)
    header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert header[0] in ("volunteer_id", "row")  # the BOM is not part of the first name

    out.unlink()
    result = notifier(*args, "--no-bom")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == raw[len(BOM) :]  # the same file, without the mark


def test_the_rejects_file_holds_the_rows_excel_shows(
    notifier: Notifier, imported: None, tmp_path: Path
) -> None:
    """The example's rejected rows, read as Excel reads a file with a BOM (UTF-8)."""
    raw = (tmp_path / "rejects.csv").read_bytes()
    assert raw.startswith(BOM)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["row", "column", "value", "reason", "warning"]
    assert len(rows) > 1


@pytest.mark.parametrize(
    "args",
    [
        ("export", "unreachable"),
        ("report", "2020-03-breach", "--format", "csv"),
        ("roster", "rejects", "--format", "csv"),
        ("roster", "list", "--format", "csv"),
        ("cohort", "2020-03-breach", "--format", "csv"),
    ],
    ids=["export-unreachable", "report-csv", "roster-rejects", "roster-list", "cohort"],
)
def test_csv_on_standard_output_has_no_bom(
    notifier: Notifier, sent: None, args: tuple[str, ...]
) -> None:
    result = notifier(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes[:20].decode("utf-8").split(",")[0] in ("volunteer_id", "row")
    assert not result.stdout_bytes.startswith(BOM)


def test_files_that_are_not_csv_get_no_bom(notifier: Notifier, sent: None, tmp_path: Path) -> None:
    for fmt in ("json", "html", "table"):
        out = tmp_path / f"report.{fmt}"
        result = notifier("report", "2020-03-breach", "--format", fmt, "--out", str(out))
        assert result.exit_code == 0, result.output
        assert not out.read_bytes().startswith(BOM), fmt
    assert notifier("export", "unreachable", "--format", "json", "--out", "u.json").exit_code == 0
    assert json.loads((tmp_path / "u.json").read_bytes())  # plain JSON, no BOM to skip


def test_our_own_csv_files_read_back_with_their_bom(
    notifier: Notifier, sent: None, tmp_path: Path
) -> None:
    """A report written for Excel, given back as --ids, names the same people: the BOM
    is not read as part of its `volunteer_id` header."""
    assert notifier("report", "2020-03-breach", "--format", "csv", "--out", "r.csv").exit_code == 0
    raw = (tmp_path / "r.csv").read_bytes()
    assert raw.startswith(BOM)
    recipients = {r["volunteer_id"] for r in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))}
    some = sorted(recipients)[:3]
    ids = tmp_path / "ids.csv"
    write_csv(ids, "volunteer_id,note\r\n" + "".join(f"{v},x\r\n" for v in some))
    assert ids.read_bytes().startswith(BOM)
    for given in (tmp_path / "r.csv", ids):
        result = notifier("cohort", "2020-03-breach", "--ids", str(given), "--format", "json")
        assert result.exit_code == 0, result.output
        included = {m["volunteer_id"] for m in json.loads(result.stdout) if m["included"]}
        assert included == (recipients if given.name == "r.csv" else set(some))
        assert len(included) in (194, 3)

    # A roster saved with a BOM (Excel's "CSV UTF-8") imports as the same roster.
    again = tmp_path / "again.csv"
    again.write_bytes(BOM + ROSTER.read_bytes())
    result = notifier("roster", "import", str(again))
    assert result.exit_code == 0, result.output
    assert "0 added, 0 updated" in result.output


# --- paths that cannot be written ----------------------------------------------------------

# Unwritable even for root (the tests run as root in CI): a file where a folder should be,
# and a folder that does not exist.
UNWRITABLE = {"under-a-file": "a-file/x", "missing-folder": "no/such/folder/x"}


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("where", UNWRITABLE.values(), ids=UNWRITABLE.keys())
@pytest.mark.parametrize(
    "args",
    [
        ("export", "unreachable", "--out", "{}.csv"),
        ("report", "2020-03-breach", "--format", "csv", "--out", "{}.csv"),
        ("report", "2020-03-breach", "--format", "html", "--out", "{}.html"),
        ("check", "2020-03-breach", "--proof", "{}.html"),
        ("preview", "2020-03-breach", "--volunteer", "HMR-0001", "--out", "{}.txt"),
    ],
    ids=["export", "report-csv", "report-html", "check-proof", "preview"],
)
def test_an_output_that_cannot_be_written_is_one_line(
    notifier: Notifier, sent: None, a_file: Path, where: str, args: tuple[str, ...]
) -> None:
    args = tuple(a.format(where) for a in args)
    target = next(a for a in args if a.startswith(where))
    result = notifier(*args)
    one_line_error(result, target)
    # Found before the work: nothing of it was printed.
    assert "rendered" not in result.stdout and "wrote" not in result.output


def test_preview_all_makes_its_folder_or_says_in_one_line_why_not(
    notifier: Notifier, imported: None, a_file: Path, tmp_path: Path
) -> None:
    result = notifier("preview", "2020-03-breach", "--all", "--out", "a-file/previews")
    one_line_error(result, "a-file/previews")
    assert "wrote" not in result.output
    result = notifier("preview", "2020-03-breach", "--all", "--out", "new/previews")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "new" / "previews").glob("*.eml"))) == 194


@pytest.mark.parametrize("where", UNWRITABLE.values(), ids=UNWRITABLE.keys())
def test_an_unwritable_rejects_file_stops_the_import_before_it_starts(
    notifier: Notifier, a_file: Path, where: str
) -> None:
    result = notifier("roster", "import", str(ROSTER), "--rejects", f"{where}.csv")
    one_line_error(result, f"{where}.csv")
    assert "Import " not in result.stdout
    assert not notifier.ledger_path.exists()  # nothing imported, no ledger made


def test_a_ledger_that_cannot_be_created_is_one_line(notifier: Notifier, a_file: Path) -> None:
    notifier.ledger_path = a_file / "notifier.db"
    result = notifier("roster", "import", str(ROSTER))
    line = one_line_error(result, str(a_file / "notifier.db"))
    assert "cannot create the ledger" in line


def test_the_demo_in_a_folder_it_cannot_write_is_one_line(notifier: Notifier, a_file: Path) -> None:
    result = notifier("demo", "--maildir", "a-file/sink")
    one_line_error(result, "a-file/sink")
    assert "$ notifier" not in result.stdout  # stopped before its first step
    assert not notifier.ledger_path.exists()

    notifier.ledger_path = a_file / "notifier.db"  # the ledger's folder is a file
    result = notifier("demo", "--maildir", "sink")
    one_line_error(result, str(a_file / "notifier.db"))


def test_the_sink_command_with_an_unusable_maildir_is_one_line(
    notifier: Notifier, a_file: Path
) -> None:
    # (A missing folder is made, with its parents: see test_sink.py.)
    result = notifier("sink", "--port", "0", "--maildir", "a-file/sink")
    one_line_error(result, "a-file/sink")
    assert "listening" not in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permission bits say")
def test_a_read_only_folder_is_one_line(notifier: Notifier, imported: None, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for args in (
            ("export", "unreachable", "--out", "ro/x.csv"),
            ("preview", "2020-03-breach", "--all", "--out", "ro/previews"),
            ("roster", "import", str(ROSTER), "--rejects", "ro/x.csv"),
        ):
            one_line_error(notifier(*args), next(a for a in args if a.startswith("ro/")))
    finally:
        folder.chmod(0o700)


# --- the sink's Maildir ------------------------------------------------------------------------


def test_an_existing_empty_folder_becomes_the_sinks_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "sink"
    folder.mkdir()
    with Sink(maildir=folder) as sink, smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)  # 250, not 500
        assert sink.handler.wait_for(1, timeout=5)
    stored = list(mailbox.Maildir(folder, create=False))
    assert [m["Subject"] for m in stored] == ["hello"]


def test_a_folder_holding_something_else_is_not_made_a_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "letter.txt").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(OutputError, match="not empty"):
        prepare_maildir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["letter.txt"]
    assert prepare_maildir(tmp_path / "new" / "mail").is_dir()  # made, with its parents


def test_a_maildir_that_fails_under_the_sink_is_a_temporary_refusal(tmp_path: Path) -> None:
    """A Maildir removed under a running sink: 451 (the sender retries), not a 500."""
    folder = tmp_path / "sink"
    with Sink(maildir=folder) as sink, smtplib.SMTP("127.0.0.1", sink.port) as client:
        for part in ("tmp", "new", "cur"):
            (folder / part).rmdir()
        folder.rmdir()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        assert refused.value.smtp_code == 451
        assert sink.handler.count == 0


def test_a_ledger_key_is_created_owner_only(tmp_path: Path) -> None:
    with Ledger(tmp_path / "notifier.db") as ledger:
        ledger.secret()
    for name in ("notifier.db", "notifier.db.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
