"""One rule for every byte that reaches a terminal: escape sequences in roster cells and in
a bounce's Diagnostic-Code (clear the screen, retitle the window, a hyperlink, a C1 CSI,
NUL, a bidi override) come out visible in every format on standard output and error,
while the files written with --out keep the data as it is."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from conftest import REPO, Notifier
from terminal_helpers import run_in_terminal

from notifier.outputs import _is_hidden, counted, for_terminal, json_text, visible

CLEAR, TITLE = "\x1b[2J", "\x1b]0;owned\x07"
LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
HOSTILE = CLEAR + TITLE + LINK + "\x9b" + "\x00" + "\u202e"
RAW = ("\x1b", "\x9b", "\x00", "\u202e", "\x07")
# How each part shows on a terminal, whatever the format.
SHOWN = ("\\x1b[2J", "\\x1b]0;owned\\x07", "\\x1b]8;;http://evil.example/", "\\x9b", "\\u202e")
# How the same parts read in JSON on a terminal: the same data, escaped the JSON way.
SHOWN_JSON = ("\\u001b[2J", "\\u001b]0;owned\\u0007", "\\u009b", "\\u0000", "\\u202e")


def q(text: str) -> str:
    return text.replace('"', '""')


@pytest.fixture
def imported(notifier: Notifier, tmp_path: Path) -> Notifier:
    """A roster with the hostile text in an address (kept), an extra column (kept), a name
    (rejected: shown among the rejected rows) and a bidi override in a name (a warning)."""
    rows = [
        "volunteer_id,email,family_name,given_name,locale,exposure,data_held,postal_address,notes",
        f'HMR-1,ann@example.org,Smith,Ann,en,published,photo,"1 Road{q(HOSTILE)}",'
        f'"note{q(HOSTILE)}"',
        f'HMR-2,bob@example.org,"Jones{q(HOSTILE)}",Bob,en,published,photo,,',
        "HMR-3,carl@example.org,Brown,Carl\u202e,en,screened,,,",
    ]
    (tmp_path / "hostile.csv").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    result = notifier("roster", "import", "hostile.csv", "--rejects", "rejects.csv")
    assert result.exit_code == 0, result.output
    assert_visible(result)
    return notifier


def assert_visible(result: Result, shown: tuple[str, ...] = SHOWN) -> None:
    """Nothing raw on stdout or stderr; and the hostile text there, as escapes."""
    for text in (result.stdout, result.stderr):
        for raw in RAW:
            assert raw not in text, (raw, text[:500])
    everything = result.stdout + result.stderr
    assert any(s in everything for s in shown), everything[:800]


@pytest.mark.parametrize(
    "args",
    [
        ["roster", "list"],
        ["roster", "list", "--format", "csv"],
        ["roster", "show", "HMR-1"],
        ["roster", "rejects"],
        ["roster", "rejects", "--format", "csv"],
        ["cohort", "2020-03-breach"],
        ["cohort", "2020-03-breach", "--format", "csv"],
        ["export", "unreachable"],
    ],
    ids=" ".join,
)
def test_tables_and_csv_on_stdout_show_escapes(imported: Notifier, args: list[str]) -> None:
    result = imported(*args)
    assert result.exit_code in (0, 1), result.output
    assert_visible(result)


@pytest.mark.parametrize(
    "args",
    [
        ["roster", "list", "--format", "json"],
        ["roster", "show", "HMR-1", "--format", "json"],
        ["cohort", "2020-03-breach", "--format", "json"],
        ["export", "unreachable", "--format", "json"],
    ],
    ids=" ".join,
)
def test_json_on_stdout_is_valid_escaped_and_holds_the_data(
    imported: Notifier, args: list[str]
) -> None:
    result = imported(*args)
    assert result.exit_code == 0, result.output
    assert_visible(result, SHOWN_JSON)
    strings = list(_strings(json.loads(result.stdout)))
    assert any(HOSTILE in s for s in strings) or any("Carl\u202e" in s for s in strings)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_files_written_with_out_keep_the_data(imported: Notifier, tmp_path: Path) -> None:
    """--out and --rejects files hold the cells as they are (but for the CSV formula rule)."""
    rejects = (tmp_path / "rejects.csv").read_text(encoding="utf-8-sig")
    assert "Jones" + HOSTILE in rejects
    assert imported("export", "unreachable", "--out", "letters.csv").exit_code == 0
    letters = list(csv.DictReader(io.StringIO((tmp_path / "letters.csv").read_text("utf-8-sig"))))
    assert any(row["name"] == "Bob Jones" + HOSTILE for row in letters)
    assert imported("export", "unreachable", "--format", "json", "--out", "l.json").exit_code == 0
    people = json.loads((tmp_path / "l.json").read_text(encoding="utf-8"))
    assert any(p["name"] == "Bob Jones" + HOSTILE for p in people)


def hostile_bounce(tmp_path: Path) -> Path:
    data = (REPO / "tests" / "fixtures" / "bounces" / "gmail-folded.eml").read_bytes()
    data = data.replace(
        b"Diagnostic-Code: smtp; 550-",
        b"Diagnostic-Code: smtp; 550-" + HOSTILE.encode("utf-8"),
    )
    path = tmp_path / "hostile.eml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_bounce_diagnostic_is_shown_visibly(notifier: Notifier, tmp_path: Path, fmt: str) -> None:
    result = notifier("bounces", "parse", str(hostile_bounce(tmp_path)), "--format", fmt)
    assert result.exit_code == 0, result.output
    assert_visible(result, SHOWN_JSON if fmt == "json" else SHOWN)
    if fmt == "json":
        (record,) = json.loads(result.stdout)
        assert HOSTILE in record["diagnostic"]  # the same data, escaped the JSON way


def test_a_usage_error_shows_an_argument_visibly(notifier: Notifier) -> None:
    """click's own messages go through the same guard (here: a bad --format value)."""
    result = notifier("roster", "list", "--format", "csv" + HOSTILE)
    assert result.exit_code == 2
    assert_visible(result)


def test_on_a_real_terminal_too(imported: Notifier, tmp_path: Path) -> None:
    """The real process on a pseudo-terminal: tables, CSV and JSON, all visible."""
    for args in (
        ["roster", "list"],
        ["roster", "list", "--format", "csv"],
        ["export", "unreachable"],
    ):
        code, shown = run_in_terminal(tmp_path, ["--ledger", str(imported.ledger_path), *args], 100)
        assert code == 0, shown
        for raw in ("\x9b", "\x00", "\u202e", "\x1b]", "\x1b[2J"):
            assert raw not in shown, (args, raw)
        assert "\\x1b[2J" in shown or "\\u202e" in shown


# --- the rule itself --------------------------------------------------------------------


def test_the_terminal_rule_escapes_exactly_what_visible_escapes_but_line_ends_and_tabs() -> None:
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        ch = chr(code)
        kept = ch in "\n\t"
        assert (for_terminal(ch) == ch) == (kept or not _is_hidden(ch)), hex(code)
    assert for_terminal("a\r\nb\rc") == "a\r\nb\\rc"  # a CSV line end stays; a lone CR not
    assert for_terminal(HOSTILE) == visible(HOSTILE)


def test_json_text_is_valid_json_with_nothing_raw() -> None:
    value = {"name": HOSTILE + "\x7f\u2066", "日本": ["太郎"]}
    text = json_text(value)
    assert json.loads(text) == value
    assert all(not _is_hidden(ch) for ch in text.replace("\n", ""))
    assert "太郎" in text  # UTF-8 as it is, not \\u escapes


def test_counted_gets_one_right() -> None:
    assert counted(1, "volunteer") == "1 volunteer"
    assert counted(0, "volunteer") == "0 volunteers"
    assert counted(1, "person", "people") == "1 person"
    assert counted(2, "person", "people") == "2 people"
