"""Text that leaves the tool to be opened elsewhere: a spreadsheet, a terminal, a log.

Roster cells come from whoever filled in the spreadsheet, and bounce text from anyone who
can send mail, so nothing from them is written out raw:
- every CSV the tool writes goes through `csv_text` (or `csv_lines`), which neutralises
  cells a spreadsheet would run as a formula (OWASP's rule: a leading `=`, `+`, `-`, `@`,
  tab or CR gets a `'`);
- every cell or message printed to a terminal goes through `visible`, which shows control
  characters (escape sequences, NUL, bidirectional overrides) as `\\x1b`-style escapes
  instead of letting them move the cursor, recolour the screen or hide text;
- every message that may hold a URL or credentials (every error) goes through
  `redact_urls`, so a password typed into `--smtp smtp://user:secret@host`, or mistyped
  (`smtp:/user:secret@host`, `user:secret@host`), is never echoed back;
- every byte written to standard output or standard error, whatever the format, goes
  through `for_terminal` (notifier.terminal installs it on both streams), and JSON for
  either is written by `json_text`, which escapes the same characters the JSON way;
- counts in sentences go through `counted`, so one is never "1 people".
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The one CSV writer: a header, then rows, every cell neutralised, CRLF line ends."""
    return "".join(csv_lines(header, rows))


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """csv_text() a line (a record: a quoted cell may hold line breaks) at a time, for
    outputs too long to hold whole."""
    return csv_records(itertools.chain([header], ([csv_cell(v) for v in row] for row in rows)))


def csv_records(records: Iterable[Sequence[Any]]) -> Iterator[str]:
    """Records (cells already made safe with csv_cell, or a header) as CSV lines, one
    at a time."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for cells in records:
        writer.writerow(cells)
        yield out.getvalue()
        out.seek(0)
        out.truncate()


def _is_hidden(ch: str) -> bool:
    # Cc: C0/C1 controls, DEL. Cf covers the bidi overrides and isolates (U+202A-E,
    # U+2066-9) that can make a name read differently from what it is; zero-width
    # joiners are Cf too but harmless in Japanese and emoji, so only bidi is escaped.
    category = unicodedata.category(ch)
    return category == "Cc" or (category == "Cf" and unicodedata.bidirectional(ch) in _BIDI)


_BIDI = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\x00`, `\\u202e`).

    With `keep_newlines`, line breaks stay (a multi-line message); in a table cell they
    are escaped too, so one cell cannot pose as several rows.
    """
    if text.isprintable():  # the common case, decided in C
        return text
    return "".join(
        _escape(ch) if _is_hidden(ch) and not (keep_newlines and ch == "\n") else ch for ch in text
    )


# A word of an error or a note: what runs between spaces and the quotes and brackets a
# repr() or a message puts around a value.
_WORD = re.compile(r"[^\s'\"<>]*@[^\s'\"<>]*")
# A scheme followed by at least one slash (`smtp://`, `smtp:/`) or by `//` alone
# (`smtp//`, a colon forgotten): what follows it up to the `@` is user-info.
_SLASHED_SCHEME = re.compile(r"(?i)[a-z][a-z0-9+.\-]*(?::/+|//)")
# Schemes kept in view before `***` when nothing but `:` follows them (`mailto:`).
_BARE_SCHEMES = re.compile(r"(?i)(?:mailto|smtps?|imaps?|submission):")


def redact_urls(text: str) -> str:
    """`text` with whatever could be a password before an `@` replaced by `***`.

    The one rule for any text that may hold a URL or credentials (every error, whatever
    it quotes, from the command line, the environment or a settings file). Mistyped URLs
    leak too, so the rule does not need a well-formed URL: in each word holding an `@`,
    everything before its last `@` is user-info when it follows a scheme with a slash
    (`smtp://bob:pw@`, `smtp:/bob:pw@`, `smtp//bob:pw@`, a password holding `/` or `@`),
    and is taken for a password whenever it holds a `:` (`bob:pw@host`,
    `mailto:bob:pw@host`). A plain address (`bob@example.org`) is left as it is.
    """
    if "@" not in text:
        return text
    return _WORD.sub(_redact_word, text)


def _redact_word(match: re.Match[str]) -> str:
    word = match.group()
    before, at, after = word.rpartition("@")
    scheme = _SLASHED_SCHEME.match(before)
    if scheme is not None:
        return f"{scheme.group()}***{at}{after}" if before[scheme.end() :] else word
    bare = _BARE_SCHEMES.match(before)
    user_info = before[bare.end() :] if bare is not None else before
    if ":" not in user_info:
        return word
    return f"{bare.group() if bare is not None else ''}***{at}{after}"


def url_without_credentials(url: str) -> str:
    """A URL known to hold credentials, as it may be shown: its scheme (when it has
    `://`), `***`, then what follows the last `@`. Nothing before that `@` is kept, so no
    password shows, however the URL is mistyped."""
    scheme = re.match(r"(?i)[a-z][a-z0-9+.\-]*://", url)
    return f"{scheme.group() if scheme else ''}***@{url.rpartition('@')[2]}"


def _terminal_escape(match: re.Match[str]) -> str:
    return "".join(_escape(ch) for ch in match.group())


def for_terminal(text: str) -> str:
    """`text` as it may reach a terminal: line breaks (LF, CRLF) and tabs stay, every other
    control or bidi character is shown as an escape, whatever the output's format.

    A lone CR would let a line overwrite what was printed before it, so it is escaped too.
    """
    if text.isprintable():
        return text
    return _HIDDEN_RUN.sub(_terminal_escape, text)


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """JSON for people and programs alike: UTF-8 text as it is, but every control and bidi
    character as a `\\u` escape (json.dumps leaves C1 controls, DEL and bidi overrides raw),
    so it is valid JSON, holds the same data, and nothing in it can reach a terminal raw."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if text.isprintable():
        return text
    # Outside strings json.dumps writes only printable ASCII and the indent's line breaks;
    # inside them it already escapes C0 controls, so what is left is in strings.
    return _JSON_HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def in_blocks(pieces: Iterable[str], size: int = 1 << 16) -> Iterator[str]:
    """Small pieces of a streamed output (a CSV line, a JSON item) joined into blocks of
    about `size` characters: a million lines written in a few thousand writes."""
    block: list[str] = []
    length = 0
    for piece in pieces:
        block.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(block)
            block, length = [], 0
    if block:
        yield "".join(block)


def json_record_text(record: Any, *, depth: int = 0) -> str:
    """json_text(record), indented `depth` levels more (as an item of a list that deep),
    for writing a million of them: a flat record (strings, numbers, booleans, None under
    string keys) goes through json's C encoder, whose separators give the layout
    json.dumps(indent=2) writes in Python; anything else goes to json_text."""
    pad = "  " * depth
    if not _is_flat_record(record):
        return json_text(record).replace("\n", "\n" + pad)
    text = _flat_encoder(depth).encode(record)
    text = f"{{\n{pad}  {text[1:-1]}\n{pad}}}"
    return text if _only_line_breaks(text) else _escaped_json(text)


@functools.cache
def _flat_encoder(depth: int) -> json.JSONEncoder:
    """The encoder json_record_text writes a flat record `depth` levels deep with: made
    once, not for each of a million records (json.dumps would make one per call)."""
    pad = "  " * depth
    return json.JSONEncoder(ensure_ascii=False, separators=(f",\n{pad}  ", ": "))


def _is_flat_record(item: Any) -> bool:
    # The types are looked up once each (a million records have a handful of them), at
    # C speed through map: the per-record check costs little beside the encoding.
    return (
        isinstance(item, Mapping)
        and bool(item)
        and all(map(_is_text_type, map(type, item)))
        and all(map(_is_flat_type, map(type, item.values())))
    )


@functools.cache
def _is_text_type(kind: type) -> bool:
    return issubclass(kind, str)


@functools.cache
def _is_flat_type(kind: type) -> bool:
    """A value type the C encoder writes as one JSON scalar (an enum of str or int too)."""
    return kind is type(None) or issubclass(kind, str | int | float)


def _only_line_breaks(text: str) -> bool:
    return text.replace("\n", "").isprintable()


def _escaped_json(text: str) -> str:
    return _JSON_HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_array_lines(items: Iterable[Any]) -> Iterator[str]:
    """json_text() of a list, an item at a time, for a list too long to hold whole: the
    pieces joined are exactly json_text(list(items))."""
    first = True
    for item in items:
        yield ("[\n  " if first else ",\n  ") + json_record_text(item, depth=1)
        first = False
    yield "[]" if first else "\n]"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 volunteer`, `2 volunteers`; `plural` where adding an s is wrong (`person`)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# Every character _is_hidden() is true for (C0, DEL, C1, the bidi embeddings, overrides
# and isolates), as one class: a test holds the two to each other.
_HIDDEN = "[\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]"
# \t and \n stay; \r only as part of a CRLF line end.
_HIDDEN_RUN = re.compile(rf"(?:(?![\t\n])(?!\r\n){_HIDDEN})+")
_JSON_HIDDEN = re.compile(rf"(?!\n){_HIDDEN}")
