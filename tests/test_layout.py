"""notifier.layout: tables that fit a width without losing a column, measured in display
cells; and notifier.terminal's guard, which wraps a real terminal's lines."""

from __future__ import annotations

import io

import pytest
from rich.cells import cell_len as rich_cell_len

from notifier.layout import Column, cell_len, table, wrap
from notifier.terminal import TerminalStream

ROWS = [
    ("HMR-0001", "Oliver Hall", "oliver.hall@example.org", "screened"),
    ("HMR-0009", "井上 太郎", "mia.montgomery-worthington-hargreaves@example.com", "published"),
]
COLUMNS = (Column("volunteer id", breaks=False), "display name", "email", "exposure")


@pytest.mark.parametrize("text", ["abc", "井上 太郎", "café", "e\u0301", "ｱｲｳ", "한국어"])
def test_cells_are_measured_as_a_terminal_shows_them(text: str) -> None:
    assert cell_len(text) == rich_cell_len(text)


def test_an_address_breaks_only_after_at_dot_or_hyphen() -> None:
    lines = wrap("mia.montgomery-worthington-hargreaves@example.com", 24)
    assert "".join(lines) == "mia.montgomery-worthington-hargreaves@example.com"
    assert all(line.endswith(("@", ".", "-")) for line in lines[:-1])
    assert all(cell_len(line) <= 24 for line in lines)


@pytest.mark.parametrize("width", [60, 70, 80, 100, 200])
def test_a_table_fits_and_keeps_every_column(width: int) -> None:
    lines = table(COLUMNS, ROWS, width)
    assert all(cell_len(line) <= width for line in lines)
    text = "\n".join(lines)
    for word in ("volunteer", "display", "email", "exposure", "HMR-0001", "HMR-0009", "井上"):
        assert word in text
    # A header breaks between words, never inside one.
    assert "volunte" not in text.replace("volunteer", "")


def test_a_table_that_cannot_fit_becomes_a_block_per_record() -> None:
    lines = table(COLUMNS, ROWS, 40)
    assert all(cell_len(line) <= 40 for line in lines)
    assert lines[0].startswith("volunteer id:") and "HMR-0001" in lines[0]
    assert "" in lines  # records apart
    assert sum(line.startswith("email:") for line in lines) == 2


def test_a_row_never_needs_more_lines_than_allowed() -> None:
    long = "word " * 40
    lines = table(("id", "text"), [("a", long)], 60, max_lines=3)
    assert lines[0].startswith("id:")  # 200 characters in 3 lines of 60 cannot be


def test_the_guard_wraps_a_terminals_long_lines_at_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "40")
    raw = Terminal()
    stream = TerminalStream(raw)
    stream.write("Warning: " + "a notice that goes on and on " * 4 + "\n")
    stream.write("  indented " + "words " * 12 + "\n")
    stream.write("このたび、当社はサイバー犯罪者による攻撃を受けました。\x1b[2J\n")
    lines = raw.getvalue().splitlines()
    assert all(rich_cell_len(line) <= 40 for line in lines)
    assert " ".join(raw.getvalue().split()).startswith("Warning: a notice that goes on and on a")
    assert any(line.startswith("  words") for line in lines)  # the indent kept
    assert "\\x1b[2J" in raw.getvalue() and "\x1b" not in raw.getvalue()
    assert not stream.isatty()  # no styles through the guard


def test_the_guard_leaves_a_pipes_lines_whole_and_guards_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    raw = io.StringIO()
    stream = TerminalStream(raw)
    stream.write("x" * 100 + "\r\n")
    stream.buffer.write("名前\u202e".encode()[:4])  # a character split between writes
    stream.buffer.write("名前\u202e".encode()[4:] + b"\r\n")
    stream.flush()
    assert raw.getvalue() == "x" * 100 + "\r\n" + "名前\\u202e\r\n"
