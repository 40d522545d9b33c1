"""`export unreachable` keeps every person whose roster row was refused on the list, with
who they are as the file has it, until an import brings them in."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from conftest import REPO, Notifier


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
