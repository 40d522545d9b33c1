"""Done when: the main commands, run as a person runs them (a real process on a real
pseudo-terminal, 100 and then 80 columns wide) on the example roster, print no line wider
than the terminal, and lose no column: every header and every volunteer id is there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, write_org_config
from terminal_helpers import (
    read_blocks,
    read_table,
    run_in_terminal,
    screen_lines,
    squeezed,
    widest,
)

ROSTER = REPO / "examples" / "volunteers.csv"
FIRST, UPDATE = "2020-03-breach", "2020-04-29-update"
BOUNCE = REPO / "tests" / "fixtures" / "bounces" / "exchange-multi.eml"

# Each command a person runs in the README's walk-through (the demo runs import, check,
# preview, approve, send into its sink, status and ledger verify itself).
COMMANDS: list[list[str]] = [
    ["roster", "import", str(ROSTER)],
    ["roster", "list"],
    ["roster", "show", "HMR-0012"],
    ["roster", "rejects"],
    ["campaign", "list"],
    ["campaign", "show", FIRST],
    ["check", UPDATE],
    ["preview", FIRST, "--volunteer", "HMR-0001"],
    ["preview", FIRST, "--volunteer", "HMR-0009"],
    ["send", UPDATE],
    ["status", FIRST],
    ["cohort", UPDATE, "--excluded"],
    ["report", FIRST],
    ["history", "HMR-0001"],
    ["bounces", "parse", str(BOUNCE)],
    ["ledger", "verify"],
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder where the demo ran (on a terminal 100 wide): the example roster imported,
    the first notice sent into the sink; and what the demo showed."""
    folder = tmp_path_factory.mktemp("terminal")
    code, shown = run_in_terminal(folder, ["demo"], 100)
    assert code == 0, shown
    write_org_config(folder)  # the other commands as the organisation runs them
    return folder, shown


def assert_fits(shown: str, columns: int, what: str) -> None:
    lines = screen_lines(shown)
    too_wide = [line for line in lines if widest(line) > columns]
    assert not too_wide, f"{what}: {len(too_wide)} lines over {columns}: {too_wide[:3]}"
    assert "\x1b]" not in shown  # no window title or hyperlink from anywhere


def test_the_demo_fits_100_columns(workspace: tuple[Path, str]) -> None:
    _, shown = workspace
    assert_fits(shown, 100, "demo")
    assert "sent 194" in shown or "194" in shown


def test_the_demo_again_fits_80_columns(workspace: tuple[Path, str]) -> None:
    folder, _ = workspace
    scratch = folder.parent / "demo80"
    scratch.mkdir(exist_ok=True)
    code, shown = run_in_terminal(scratch, ["demo"], 80)
    assert code == 0, shown
    assert_fits(shown, 80, "demo at 80")
    shutil.rmtree(scratch)


@pytest.mark.parametrize("columns", [100, 80])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_main_command_fits(
    workspace: tuple[Path, str], args: list[str], columns: int
) -> None:
    folder, _ = workspace
    code, shown = run_in_terminal(folder, args, columns)
    assert code in (0, 1), shown  # 1: a check or a dry run naming a problem
    assert "Traceback" not in shown
    assert_fits(shown, columns, " ".join(args))


def _listed_ids(folder: Path) -> list[str]:
    code, shown = run_in_terminal(folder, ["roster", "list", "--format", "json"], 100)
    assert code == 0
    return [r["volunteer_id"] for r in json.loads(shown.replace("\r\n", "\n"))]


@pytest.mark.parametrize("columns", [100, 80])
def test_roster_list_loses_no_column_and_nobody(workspace: tuple[Path, str], columns: int) -> None:
    """At 100 columns a table of at most three lines a person; at 80 one block a person;
    either way every field of every volunteer, the long addresses whole once read back."""
    folder, _ = workspace
    ids = _listed_ids(folder)
    assert len(ids) == 194
    code, shown = run_in_terminal(folder, ["roster", "list"], columns)
    assert code == 0
    lines = [line.rstrip() for line in screen_lines(shown)]
    body = lines[: lines.index("194 volunteers")]
    headers = ["id", "name", "email", "locale", "exposure", "data held"]
    if columns == 100:
        records = read_table(body)
        assert body[0].split() == ["id", "name", "email", "locale", "exposure", "data", "held"]
        rows_start = [i for i, line in enumerate(body[2:]) if line[:8].strip()]
        heights = [b - a for a, b in zip(rows_start, [*rows_start[1:], len(body) - 2], strict=True)]
        assert max(heights) <= 3  # the contract: at most three lines a person
    else:
        records = read_blocks(body)
    assert [r["id"] for r in records] == ids
    assert all(list(r) == headers for r in records)
    addresses = {squeezed(r["email"]) for r in records}
    assert "mia.montgomery-worthington-hargreaves@example.com" in addresses
    names = {r["name"] for r in records}
    assert "井上 太郎" in names  # wide characters measured as two cells, not cut
