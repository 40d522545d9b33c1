"""Terminal views of the roster for people: addresses are never cut in a table at 100
columns or more, and `roster show` shows every field, the file's unmapped columns too."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import REPO, Notifier
from terminal_helpers import read_blocks, read_table, squeezed, widest

ROSTER = REPO / "examples" / "volunteers.csv"


@pytest.fixture
def imported(notifier: Notifier) -> Notifier:
    assert notifier("roster", "import", str(ROSTER)).exit_code == 0
    return notifier


@pytest.mark.parametrize("columns", [80, 100, 120, 200])
def test_no_address_is_cut(
    imported: Notifier, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    """Wide enough, each address is whole on its line; narrower, it breaks only after an
    @, a dot or a hyphen, and its pieces, read in order, are the address."""
    monkeypatch.setenv("COLUMNS", str(columns))
    out = imported("roster", "list").stdout
    assert "…" not in out
    lines = out.splitlines()
    assert widest(out) <= columns
    with ROSTER.open(encoding="utf-8") as handle:
        addresses = [r["email"] for r in csv.DictReader(handle)]
    listed = json.loads(imported("roster", "list", "--format", "json").stdout)
    assert {r["email"] for r in listed} <= set(addresses)
    if columns >= 200:
        shown = {cell for line in lines for cell in line.split()}
        assert all(r["email"] in shown for r in listed)  # each whole, on one line
        return
    body = lines[: lines.index(f"{len(listed)} volunteers")]
    records = read_table(body) if columns >= 100 else read_blocks(body)
    # Each address, read back from its rows in order, is the address.
    assert [squeezed(r["email"]) for r in records] == [r["email"] for r in listed]
    assert [r["id"] for r in records] == [r["volunteer_id"] for r in listed]


def test_roster_show_has_every_field_and_the_kept_columns(imported: Notifier) -> None:
    result = imported("roster", "show", "kenta.goto@example.jp")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "HMR-0012",
        "後藤",
        "健太",
        "published",
        "test_results",
        "notes (kept from the file)",
    ):
        assert text in out
    assert "prefers letters\\nto email" in out  # the line break shown, not obeyed
    data = json.loads(imported("roster", "show", "HMR-0012", "--format", "json").stdout)
    assert data["extra"] == {"family_name_latin": "Goto", "notes": "prefers letters\nto email"}


def test_roster_show_unknown_volunteer_exits_2(imported: Notifier) -> None:
    assert imported("roster", "show", "HMR-9999").exit_code == 2
