"""`export unreachable` keeps every person whose roster row was refused on the list, with
who they are as the file has it, until an import brings them in."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from conftest import REPO, Notifier

from notifier.volunteer import derive_volunteer_id


def listed(notifier: Notifier) -> list[dict[str, str]]:
    result = notifier("export", "unreachable")
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_every_rejected_row_is_listed_until_imported(notifier: Notifier, tmp_path: Path) -> None:
    roster = tmp_path / "volunteers.csv"
    shutil.copy(REPO / "examples" / "volunteers.csv", roster)
    assert notifier("roster", "import", str(roster)).exit_code == 0
    rows = listed(notifier)
    assert len(rows) == 6  # the six rejected rows of the example roster
    assert all(r["reason"] == "rejected_at_import" and r["import_row"] for r in rows)
    assert all(r["volunteer_id"] and r["name"] for r in rows)
    hmr42 = next(r for r in rows if r["volunteer_id"] == "HMR-0042")
    assert (hmr42["name"], hmr42["email"], hmr42["import_file"]) == (
        "渡邉 陽菜",
        "AVA.WRIGHT@EXAMPLE.ORG",
        "volunteers.csv",
    )
    assert "duplicate of row" in hmr42["detail"]

    # Importing the same file again forgets nobody.
    assert notifier("roster", "import", str(roster)).exit_code == 0
    assert len(listed(notifier)) == 6

    # Fix one row (HMR-0042 gets their own address): they leave the list, the rest stay.
    text = roster.read_text(encoding="utf-8")
    roster.write_text(
        text.replace("HMR-0042,AVA.WRIGHT@EXAMPLE.ORG", "HMR-0042,hina.watanabe@example.jp"),
        encoding="utf-8",
    )
    assert notifier("roster", "import", str(roster)).exit_code == 0
    after = listed(notifier)
    assert len(after) == 5 and "HMR-0042" not in {r["volunteer_id"] for r in after}


def roster(tmp_path: Path, name: str, header: str, *rows: str) -> str:
    path = tmp_path / name
    path.write_text("\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")
    return str(path)


def test_a_refused_row_without_an_id_is_matched_by_its_address_not_a_made_id(
    notifier: Notifier, tmp_path: Path
) -> None:
    """A row without an id is nobody's by the id made from its address: refused because
    its address belongs to a volunteer, it is that volunteer's (not a letter to send);
    refused as a stranger at an address its made id's owner has left, it stays listed."""
    with_ids = "volunteer_id,email,family_name,exposure"
    no_ids = "email,family_name,exposure"
    imports = [
        roster(tmp_path, "a.csv", with_ids, "A1,alice@example.org,Smith,screened"),
        roster(tmp_path, "b.csv", no_ids, "alice@example.org,Smith,screened"),
        roster(tmp_path, "c.csv", no_ids, "henry@example.org,Hill,screened"),
    ]
    for path in imports:
        assert notifier("roster", "import", path).exit_code == 0
    assert listed(notifier) == []  # b.csv's refused row is A1's address: A1's, on the roster

    henry = derive_volunteer_id("henry@example.org")  # c.csv gave no id
    moved = roster(tmp_path, "d.csv", with_ids, f"{henry},henry@new.example,Hill,screened")
    harriet = roster(tmp_path, "e.csv", no_ids, "henry@example.org,Hill,screened")
    assert notifier("roster", "import", moved).exit_code == 0
    result = notifier("roster", "import", harriet)
    assert result.exit_code == 0 and "who now has another address" in result.output
    (row,) = listed(notifier)
    assert (row["email"], row["volunteer_id"], row["import_file"]) == (
        "henry@example.org",
        "",
        "e.csv",
    )
