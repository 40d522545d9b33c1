"""An import tells its progress as it reads (the console's import page shows it), and is
recorded under the name given for a file that only waits somewhere."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO, write_org_config

from notifier.config import ROSTER_CHUNK_ROWS, load_settings
from notifier.service import Workspace

HEADER = "volunteer_id,email,family_name,given_name,locale,exposure"


def test_an_import_tells_the_rows_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    rows = ROSTER_CHUNK_ROWS * 2 + 17
    roster = tmp_path / "waiting" / "upload-1234.csv"
    roster.parent.mkdir()
    roster.write_text(
        "\n".join(
            [HEADER]
            + [f"P{n:06d},p{n}@example.org,Family{n},Given,en,screened" for n in range(rows)]
        )
        + "\n",
        encoding="utf-8",
    )
    settings = load_settings(write_org_config(tmp_path), ledger=tmp_path / "notifier.db", env={})
    told: list[int] = []
    with (
        Workspace(settings) as ws,
        ws.import_roster(roster, recorded_as="volunteers.csv", progress=told.append) as done,
    ):
        assert done.summary.added == rows
        latest = ws.latest_import()
    assert told == [ROSTER_CHUNK_ROWS, ROSTER_CHUNK_ROWS * 2]  # each full chunk, as read
    assert latest is not None and latest.file_name == "volunteers.csv"


def test_a_preview_where_there_is_no_ledger_makes_none_and_says_what_the_import_does(
    tmp_path: Path,
) -> None:
    """Looking at a roster in a folder with no ledger yet creates no ledger and no key
    there; the plan (against nobody) is what the import then does."""
    roster = REPO / "examples" / "volunteers.csv"
    settings = load_settings(write_org_config(tmp_path), ledger=tmp_path / "notifier.db", env={})
    with Workspace(settings) as ws:
        planned = ws.plan_import(roster).plan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notifier.toml"]
    with Workspace(settings) as ws, ws.import_roster(roster) as done:
        summary = done.summary
    assert (planned.added, planned.updated, planned.unchanged) == (summary.added, 0, 0)
    assert planned.added == 194 and planned.rejected == 6
    # With the ledger there, the same file now changes nothing.
    with Workspace(settings) as ws:
        again = ws.plan_import(roster).plan
    assert (again.added, again.updated, again.unchanged) == (0, 0, 194)
