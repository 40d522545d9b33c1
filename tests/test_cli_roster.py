"""`notifier roster import | list | rejects`, run in-process against real files and ledgers."""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest
from conftest import Notifier, write_org_config
from test_roster import (
    ISSUE_MAPPING,
    PARTNER_HEADER,
    PARTNER_RECORDS,
    crlf,
    excel_cp932,
)

from notifier.cli.roster import MAX_TABLE_ROWS
from notifier.ledger import Ledger
from notifier.volunteer import FIELDS

HEADER = "email,family_name,given_name,locale,exposure,data_held,postal_address"
GOOD = [
    "ann@example.org,Smith,Ann,en,published,photo;id_documents,",
    'bob@example.org,O\'Brien,Bob,en,screened,,"10 Example Street\nLondon"',
    "taro@example.jp,鈴木,太郎,ja,database_only,,",
]
BAD = [
    "ann.example.org,Jones,Cy,en,published,,",  # row 5: no @
    "ANN@example.org,Smith,Annie,en,leaked,,",  # row 6: duplicate of row 2, unknown exposure
]


def write_roster(tmp_path: Path, rows: list[str], name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(crlf(HEADER, rows).encode("utf-8"))
    return path


def test_cli_roster_import_shows_rejects_and_exits_0(tmp_path: Path, notifier: Notifier) -> None:
    path = write_roster(tmp_path, GOOD + BAD)
    result = notifier("roster", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "5 rows, 3 valid, 2 rejected (3 problems)" in result.output
    assert "3 added, 0 updated, 0 unchanged" in result.output
    assert "Rejected rows" in result.output
    assert "leaked" in result.output and "ann.example.org" in result.output
    assert "duplicate of row 2" in result.output


def test_cli_roster_rejects_csv(tmp_path: Path, notifier: Notifier) -> None:
    path = write_roster(tmp_path, GOOD + BAD)
    out = tmp_path / "rejects.csv"
    assert notifier("roster", "import", str(path), "--rejects", str(out)).exit_code == 0
    raw = out.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)  # for Excel; our own readers skip it
    text = raw[len(codecs.BOM_UTF8) :].decode("utf-8")
    assert text.startswith("row,column,value,reason,warning\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [r[:3] + r[4:] for r in rows[1:]] == [
        ["5", "email", "ann.example.org", ""],
        ["6", "email", "ANN@example.org", ""],
        ["6", "exposure", "leaked", ""],
    ]
    assert "row 2" in rows[2][3]
    # The same report, read back from the ledger.
    again = notifier("roster", "rejects", "--format", "csv")
    assert again.output == text.replace("\r\n", "\n") or again.output == text


def test_cli_roster_import_warns_about_contradictions_and_imports_the_row(
    tmp_path: Path, notifier: Notifier
) -> None:
    # Row 3: never screened, yet screening records listed. Imported, with a warning.
    contradictory = [
        GOOD[0],
        "kate@example.org,Davies,Kate,en,database_only,id_documents;bank_details,",
        GOOD[2],
    ]
    path = write_roster(tmp_path, contradictory + BAD[:1])
    out = tmp_path / "rejects.csv"
    result = notifier("roster", "import", str(path), "--rejects", str(out))
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output
    assert "Imported with a warning" in result.output
    assert "1 warning on rows imported all the same (data held that contradicts" in result.output
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"), newline="")))
    assert rows[0] == ["row", "column", "value", "reason", "warning"]
    assert rows[1][:3] + rows[1][4:] == ["5", "email", "ann.example.org", ""]
    warning = rows[2]
    assert warning[:3] == ["3", "data_held", "id_documents;bank_details"]
    assert "database_only" in warning[3] and warning[4] == "yes"
    listed = json.loads(notifier("roster", "list", "--format", "json").stdout)
    assert "kate@example.org" in {r["email"] for r in listed}
    # ... and `check` refuses the roster until it is corrected.
    write_org_config(tmp_path)
    checked = notifier("check", "2020-03-breach")
    assert checked.exit_code == 1
    assert "database_only volunteers with screening records" in checked.stdout
    assert "[1 volunteer, e.g. " in checked.stdout


def test_cli_roster_strict_imports_nothing(tmp_path: Path, notifier: Notifier) -> None:
    path = write_roster(tmp_path, GOOD + BAD)
    result = notifier("roster", "import", str(path), "--strict")
    assert result.exit_code == 1
    assert "nothing imported" in result.output
    listed = notifier("roster", "list", "--format", "json")
    assert json.loads(listed.output) == []
    assert "leaked" in notifier("roster", "rejects").output
    # Without bad rows --strict imports as usual.
    good = write_roster(tmp_path, GOOD, "good.csv")
    assert notifier("roster", "import", str(good), "--strict").exit_code == 0
    assert len(json.loads(notifier("roster", "list", "--format", "json").output)) == 3


def test_cli_roster_reimport_says_nothing_changed(
    tmp_path: Path, notifier: Notifier, ledger_path: Path
) -> None:
    path = write_roster(tmp_path, GOOD + BAD)
    notifier("roster", "import", str(path))
    with Ledger(ledger_path) as led:
        events = led.count("events")
    result = notifier("roster", "import", str(path))
    assert result.exit_code == 0
    assert "Nothing changed" in result.output and "already imported" in result.output
    with Ledger(ledger_path) as led:
        assert led.count("events") == events


def test_cli_roster_edited_import_lists_changes(
    tmp_path: Path, notifier: Notifier, ledger_path: Path
) -> None:
    notifier("roster", "import", str(write_roster(tmp_path, GOOD)))
    edited = [GOOD[0].replace("published", "screened"), *GOOD[1:]]
    result = notifier("roster", "import", str(write_roster(tmp_path, edited, "edited.csv")))
    assert result.exit_code == 0
    assert "0 added, 1 updated, 2 unchanged" in result.output
    assert "exposure: 'published' -> 'screened'" in result.output
    with Ledger(ledger_path) as led:
        (event,) = led.events(kinds=["volunteer_updated"])
        assert event.data["changes"] == {"exposure": {"old": "published", "new": "screened"}}


def test_cli_roster_list_json_shape_and_filters(tmp_path: Path, notifier: Notifier) -> None:
    notifier("roster", "import", str(write_roster(tmp_path, GOOD)))
    result = notifier("roster", "list", "--format", "json")
    records = json.loads(result.output)
    assert isinstance(records, list) and len(records) == 3
    for record in records:
        assert list(record) == [*FIELDS, "display_name", "email_ascii"]
    bob = next(r for r in records if r["email"] == "bob@example.org")
    assert bob["display_name"] == "Bob O'Brien"
    assert bob["postal_address"] == "10 Example Street\nLondon"
    taro = next(r for r in records if r["locale"] == "ja")
    assert taro["display_name"] == "鈴木 太郎"

    ja = json.loads(notifier("roster", "list", "--format", "json", "--locale", "ja").output)
    assert [r["email"] for r in ja] == ["taro@example.jp"]
    screened = json.loads(
        notifier("roster", "list", "--format", "json", "--exposure", "screened").output
    )
    assert [r["email"] for r in screened] == ["bob@example.org"]

    as_csv = list(csv.DictReader(io.StringIO(notifier("roster", "list", "--format", "csv").output)))
    assert [r["email"] for r in as_csv] == [r["email"] for r in records]
    table = notifier("roster", "list").output
    assert "3 volunteers" in table and "鈴木 太郎" in table


def test_cli_roster_done_when_cp932_and_utf8_bom_agree(
    tmp_path: Path, notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same roster, two encodings, one mapping: identical volunteers and rejected rows."""
    text = crlf(PARTNER_HEADER, PARTNER_RECORDS)
    sjis = tmp_path / "partner-cp932.csv"
    sjis.write_bytes(excel_cp932(text))
    bom = tmp_path / "partner-utf8.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    mapping = tmp_path / "mapping.toml"
    mapping.write_bytes(ISSUE_MAPPING.encode("utf-8"))

    outputs = []
    for i, path in enumerate((sjis, bom)):
        run = Notifier(tmp_path / f"ledger{i}.db", tmp_path)
        imported = run("roster", "import", str(path), "--mapping", str(mapping))
        assert imported.exit_code == 0, imported.output
        outputs.append(
            (
                run("roster", "list", "--format", "json").output,
                run("roster", "rejects", "--format", "csv").output,
            )
        )
    assert outputs[0] == outputs[1]
    volunteers = json.loads(outputs[0][0])
    assert {v["display_name"] for v in volunteers} >= {"髙橋 一郎", "山﨑 花子", "ヤマモト タロウ"}
    assert "非会員" in outputs[0][1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (HEADER.encode() + b"\r\n", "no volunteers"),
        (
            b"email,family_name,exposure\r\na@example.org,Ta\xffylor,published\r\n",
            "byte 0xFF at byte offset 44 (row 2)",
        ),
    ],
)
def test_cli_roster_unusable_file_exits_2_with_one_line(
    tmp_path: Path, notifier: Notifier, data: bytes, message: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(data)
    result = notifier("roster", "import", str(path))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert "hint:" in result.output


def test_cli_roster_no_email_column_after_mapping_exits_2(
    tmp_path: Path, notifier: Notifier
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(excel_cp932(crlf("氏名(姓),メール,区分", ["髙橋,a@example.jp,会員"])))
    mapping = tmp_path / "m.toml"
    mapping.write_bytes(ISSUE_MAPPING.encode())
    result = notifier("roster", "import", str(path), "--mapping", str(mapping))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "メールアドレス" in result.output  # the column the mapping asked for

    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"name,mail,exposure\r\nAnn,a@example.org,published\r\n")
    result = notifier("roster", "import", str(plain))
    assert result.exit_code == 2
    assert "no email" in result.output


def test_cli_roster_bad_mapping_exits_2(tmp_path: Path, notifier: Notifier) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_bytes(b'[columns]\nsurname = "x"\n')
    result = notifier(
        "roster", "import", str(write_roster(tmp_path, GOOD)), "--mapping", str(mapping)
    )
    assert result.exit_code == 2
    assert "columns.surname" in result.output


def test_cli_roster_list_without_a_ledger_exits_2(notifier: Notifier) -> None:
    result = notifier("roster", "list")
    assert result.exit_code == 2
    assert "roster import" in result.output


def test_cli_roster_default_locale(tmp_path: Path, notifier: Notifier) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b"email,family_name,exposure\r\na@example.jp,Suzuki,published\r\n")
    assert notifier("roster", "import", str(path), "--default-locale", "ja").exit_code == 0
    (record,) = json.loads(notifier("roster", "list", "--format", "json").output)
    assert record["locale"] == "ja"


def test_cli_many_problems_and_warnings_are_all_written_but_not_all_shown(
    tmp_path: Path, notifier: Notifier
) -> None:
    """A terminal shows the first MAX_TABLE_ROWS problems and warnings and says how many
    more; --rejects and `roster rejects --format csv` have every one, in row order."""
    bad = [f"p{n}.example.org,Smith,Ann,en,published,," for n in range(MAX_TABLE_ROWS + 30)]
    warned = [
        f"w{n}@example.org,Jones,Cy,en,database_only,photo," for n in range(MAX_TABLE_ROWS + 20)
    ]
    path = write_roster(tmp_path, bad + warned)
    out = tmp_path / "rejects.csv"
    result = notifier("roster", "import", str(path), "--rejects", str(out))
    assert result.exit_code == 0, result.output
    assert "... and 30 more problems; see them all with" in result.output
    assert "... and 20 more warnings; see them all with --rejects FILE" in result.output
    assert f"Warning: {MAX_TABLE_ROWS + 20} warnings on rows imported all the same" in result.output
    assert "Rejected rows and warnings written to" in result.output
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"), newline="")))[1:]
    assert [int(r[0]) for r in rows if r[4] == ""] == list(range(2, MAX_TABLE_ROWS + 32))
    first_warned = MAX_TABLE_ROWS + 32
    assert [int(r[0]) for r in rows if r[4] == "yes"] == list(
        range(first_warned, first_warned + MAX_TABLE_ROWS + 20)
    )

    shown = notifier("roster", "rejects")
    assert shown.exit_code == 0, shown.output
    assert "... and 30 more problems; see them all with" in shown.output
    listed = notifier("roster", "rejects", "--format", "csv")
    assert len(list(csv.reader(io.StringIO(listed.output)))) == 1 + MAX_TABLE_ROWS + 30


def test_the_same_file_read_otherwise_records_what_it_found(
    tmp_path: Path, notifier: Notifier
) -> None:
    """Re-importing the file last imported is "already imported" only when it finds the
    same problems: read with another --encoding it finds others, and they are an import
    of their own, recorded and written to --rejects as shown."""
    path = tmp_path / "r.csv"
    path.write_bytes(
        "volunteer_id,email,family_name,exposure\r\n"
        "V1,a@example.com,Ōno,screened\r\nV2,b@example.com,Smith,screened\r\n".encode()
    )
    assert notifier("roster", "import", str(path)).exit_code == 0
    again = notifier("roster", "import", str(path))
    assert "already imported (import 1)" in again.output
    out = tmp_path / "rejects.csv"
    misread = notifier(
        "roster", "import", str(path), "--encoding", "latin-1", "--rejects", str(out)
    )
    assert misread.exit_code == 0, misread.output
    assert "already imported" not in misread.output
    assert "Import 2: 0 added, 0 updated, 1 unchanged." in misread.output
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"), newline="")))[1:]
    assert [(r[0], r[1]) for r in rows] == [("2", "family_name")]
    listed = notifier("roster", "rejects", "--format", "csv")
    assert [r[:2] for r in csv.reader(io.StringIO(listed.output))][1:] == [["2", "family_name"]]


def test_the_same_file_in_another_encoding_is_an_import_of_its_own(
    tmp_path: Path, notifier: Notifier
) -> None:
    """Read first as latin-1 (wrong), then as it is: the refused row's postal address is
    kept as the file really has it, not as first misread."""
    path = tmp_path / "e.csv"
    path.write_bytes(
        "volunteer_id,email,family_name,exposure,postal_address\r\n"
        "V1,a@example.org,Smith,screened,1 Road\r\n"
        "V2,b@example.org,Smith,member,Müllerstraße 5\r\n".encode()
    )
    assert notifier("roster", "import", str(path), "--encoding", "latin-1").exit_code == 0
    again = notifier("roster", "import", str(path))
    assert again.exit_code == 0, again.output
    assert "already imported" not in again.output and "Import 2:" in again.output
    with Ledger(notifier.ledger_path) as led:
        latest = led.latest_import()
        assert latest is not None and latest.encoding == "utf-8"
        (problem,) = [e for e in led.events() if e.kind == "row_rejected"][-1:]
        assert problem.data["who"]["postal_address"] == "Müllerstraße 5"
