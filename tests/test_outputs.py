"""Text that leaves the tool: CSV cells, terminal text, URLs in messages."""

from __future__ import annotations

import csv
import io
import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.outputs import (
    csv_cell,
    csv_lines,
    csv_text,
    json_array_lines,
    json_text,
    redact_urls,
    visible,
)


@pytest.mark.parametrize(
    "cell",
    [
        '=HYPERLINK("http://x.example","click")',
        "+cmd|' /C calc'!A0",
        "-1+1",
        "@SUM(A1:A9)",
        "\t=1",
        "\r=1",
    ],
)
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell
    (row,) = list(csv.reader(io.StringIO(csv_text(["a"], [[cell]]))))[1:]
    assert row == ["'" + cell]


@pytest.mark.parametrize("cell", ["Tanaka", "0123", "a=b", "", "日本語", "x-1"])
def test_ordinary_cells_are_kept(cell: str) -> None:
    assert csv_cell(cell) == cell


def test_csv_text_has_header_crlf_and_none_as_empty() -> None:
    text = csv_text(["id", "name"], [["1", None], ["2", 'O"Brien, Pat']])
    assert text == 'id,name\r\n1,\r\n2,"O""Brien, Pat"\r\n'


@given(st.lists(st.lists(st.text(), min_size=2, max_size=2), max_size=5))
def test_csv_round_trips_but_for_the_guard(rows: list[list[str]]) -> None:
    parsed = list(csv.reader(io.StringIO(csv_text(["a", "b"], rows), newline="")))
    assert parsed[0] == ["a", "b"]
    assert parsed[1:] == [[csv_cell(c) for c in row] for row in rows]


def test_visible_escapes_terminal_controls() -> None:
    assert visible("Ann\x1b[2J\x1b]0;pwned\x07") == "Ann\\x1b[2J\\x1b]0;pwned\\x07"
    assert visible("a\x00b") == "a\\x00b"
    assert visible("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert visible("two\nrows\r") == "two\\nrows\\r"
    assert visible("line one\nline two", keep_newlines=True) == "line one\nline two"
    assert visible("\x9b31m") == "\\x9b31m"  # a C1 control: CSI on some terminals


@pytest.mark.parametrize("text", ["田中 太郎", "Zoë O'Brien", "👩‍⚕️ nurse", "plain"])
def test_visible_keeps_ordinary_text(text: str) -> None:
    assert visible(text) == text


@given(st.text())
def test_visible_output_has_no_control_characters(text: str) -> None:
    shown = visible(text)
    assert not any(unicodedata.category(ch) == "Cc" for ch in shown)
    assert not any(unicodedata.bidirectional(ch) in {"RLO", "LRO", "RLE", "LRE"} for ch in shown)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "bad scheme in smtpx://bob:secret@mail.example.org:25",
            "bad scheme in smtpx://***@mail.example.org:25",
        ),
        ("imaps://user@imap.example.org/INBOX", "imaps://***@imap.example.org/INBOX"),
        ("smtp://[::1 is not a URL", "smtp://[::1 is not a URL"),
        ("mail bob@example.org", "mail bob@example.org"),
    ],
)
def test_redact_urls(text: str, shown: str) -> None:
    assert redact_urls(text) == shown
    assert "secret" not in redact_urls(text)


@given(
    rows=st.lists(
        st.lists(st.text(max_size=8) | st.integers() | st.none(), min_size=2, max_size=2),
        max_size=6,
    )
)
def test_csv_lines_are_csv_text_a_record_at_a_time(rows: list[list[object]]) -> None:
    lines = list(csv_lines(["a", "b"], rows))
    assert "".join(lines) == csv_text(["a", "b"], rows)
    assert len(lines) == len(rows) + 1  # a cell with a line break stays in its record
    parsed = list(csv.reader(io.StringIO("".join(lines), newline="")))
    assert parsed[1:] == [[csv_cell(v) for v in row] for row in rows]


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())


@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.text(), _SCALARS),
            st.dictionaries(st.text(), st.lists(_SCALARS, max_size=3)),
            _SCALARS,
        ),
        max_size=5,
    )
)
def test_json_array_lines_are_json_text_an_item_at_a_time(items: list[object]) -> None:
    # Records of plain values take a faster road (json's C encoder); nested values and
    # bare scalars the general one: either way the bytes are json_text's, hidden
    # characters (C1 controls, bidi overrides) escaped alike.
    assert "".join(json_array_lines(items)) == json_text(items)


def test_json_array_lines_escape_hidden_characters_in_records() -> None:
    record = {"name": "Mallory\u202egnp.exe", "note": "\x85", "n": 1}
    text = "".join(json_array_lines([record, record]))
    assert text == json_text([record, record])
    assert "\u202e" not in text and "\\u202e" in text
    assert json.loads(text) == [record, record]
