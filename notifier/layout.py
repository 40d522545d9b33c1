"""Tables and text laid out for a terminal of a given width, in display cells.

A table's cells wrap inside their column, at spaces first; a word longer than its column
breaks after `@`, `.`, `-`, `_`, `/`, `,` or `;` (an address, an identifier), and only a
word with none of those is cut. A header breaks between words, never inside one. No
column is ever narrower than its longest header word or its longest unbreakable piece, so
no column shrinks to nothing or vanishes: where the columns cannot all fit, or a row would
take more than `max_lines` lines, the table becomes one block per record (`field: value`
lines) instead.

Widths are display cells: a Japanese character takes two, a combining accent none. Every
cell goes through `outputs.visible` first, so what is measured is what is shown.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from notifier.outputs import visible

GAP = 2  # spaces between columns


def char_cells(ch: str) -> int:
    """The cells `ch` takes on a terminal: 2 for East Asian wide and full-width characters,
    0 for combining marks and zero-width formatting, 1 otherwise."""
    if ch < "\u0300":  # Latin, the common case
        return 1
    return _wide_cells(ch)


@lru_cache(maxsize=4096)
def _wide_cells(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_len(text: str) -> int:
    """The display width of `text` (no control characters: show them with visible())."""
    if text.isascii():
        return len(text)
    return sum(char_cells(ch) for ch in text)


# A word may break after one of these (kept at the end of the line), or between two wide
# characters (Japanese breaks between any two).
_SOFT_BREAK = re.compile(r"(?<=[@.\-_/,;])(?=.)|(?<=[\u1100-\uffff])(?=[\u1100-\uffff])")


def _pieces(word: str) -> list[str]:
    if not _SOFT_BREAK.search(word):
        return [word]
    return [p for p in _SOFT_BREAK.split(word) if p]


def _cut(piece: str, width: int) -> list[str]:
    """`piece` cut into chunks of at most `width` cells (a wide character is never split)."""
    chunks, current, used = [], "", 0
    for ch in piece:
        cells = char_cells(ch)
        if used + cells > width and current:
            chunks.append(current)
            current, used = "", 0
        current += ch
        used += cells
    if current:
        chunks.append(current)
    return chunks


def wrap(text: str, width: int, *, break_words: bool = True) -> list[str]:
    """`text` in lines of at most `width` cells: broken at spaces; a word too long for a
    line of its own at its soft breaks (see the module), and cut as a last resort. With
    `break_words=False` (a header) words are never broken: a line may then be wider."""
    width = max(width, 1)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, used = "", 0
        for token, size, spaced in _tokens(paragraph, width, break_words):
            sep = 1 if spaced and line else 0
            if line and used + sep + size <= width:
                line, used = line + " " * sep + token, used + sep + size
            else:
                if line:
                    lines.append(line)
                line, used = token, size
        lines.append(line)
    return lines


def _tokens(paragraph: str, width: int, break_words: bool) -> Iterator[tuple[str, int, bool]]:
    """(text, cells, whether a space goes before it) for each unit a line may end after."""
    for word in paragraph.split():
        size = cell_len(word)
        if size <= width or not break_words:
            yield word, size, True
            continue
        spaced = True
        for piece in _pieces(word):
            for chunk in _cut(piece, width) if cell_len(piece) > width else [piece]:
                yield chunk, cell_len(chunk), spaced
                spaced = False


def min_width(text: str, *, break_words: bool = True) -> int:
    """The narrowest column `text` wraps into without cutting a piece (or, for a header,
    without breaking a word)."""
    words = text.split()
    if not words:
        return 1
    if not break_words:
        return max(cell_len(w) for w in words)
    return max(cell_len(p) for w in words for p in _pieces(w))


@dataclass(frozen=True)
class Column:
    """A column: its header, which side its cells keep to (numbers: right), and whether
    its words may break (no: an identifier, a state name, a number)."""

    header: str
    justify: Literal["left", "right"] = "left"
    breaks: bool = True


# Beyond this many distinct values, widths are judged on the longest of them: wrapping
# every cell of a long roster for every candidate width would cost more than it shows.
_SAMPLE = 300


def table(
    columns: Sequence[Column | str],
    rows: Iterable[Sequence[object]],
    width: int,
    *,
    title: str | None = None,
    max_lines: int = 4,
) -> list[str]:
    """The lines of a table at most `width` cells wide, or of one block per record where
    the table cannot fit or a row would need more than `max_lines` lines."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[visible("" if v is None else str(v)) for v in row] for row in rows]
    headers = [visible(c.header) for c in cols]
    widths = _widths(headers, cells, [c.breaks for c in cols], width, max_lines)
    lines = wrap(visible(title), width) if title else []
    if widths is None:
        return lines + blocks(headers, cells, width)
    for header_line in _row_lines(headers, widths, cols, break_words=False):
        lines.append(header_line)
    lines.append((" " * GAP).join("-" * w for w in widths))
    for row in cells:
        lines.extend(_row_lines(row, widths, cols))
    return lines


def _widths(
    headers: list[str], cells: list[list[str]], breaks: list[bool], width: int, max_lines: int
) -> list[int] | None:
    """Each column's width, or None where the table cannot fit in `width` (a record each)."""
    n = len(headers)
    if n == 0:
        return []
    values = [
        sorted({row[i] for row in cells}, key=cell_len, reverse=True)[:_SAMPLE] for i in range(n)
    ]
    natural = [
        max([cell_len(h) for h in headers[i].split("\n")] + [_longest_line(v) for v in values[i]])
        for i in range(n)
    ]
    floor = [
        max(
            [min_width(headers[i], break_words=False)]
            + [min_width(v, break_words=breaks[i]) for v in values[i]]
        )
        for i in range(n)
    ]
    room = width - GAP * (n - 1)
    if sum(floor) > room:
        return None
    if sum(natural) <= room:
        return natural
    # For each number of lines a row may take, each column as narrow as that allows and
    # the room left shared out; of those that fit, the one that reads best.
    candidates = []
    for lines in range(1, max_lines + 1):
        needed = [_narrowest(values[i], floor[i], natural[i], lines) for i in range(n)]
        if sum(needed) <= room:
            candidates.append(_spread(needed, natural, room))
    if not candidates:
        return None
    sample = cells[:_SAMPLE]
    return min(candidates, key=lambda widths: _cost(sample, widths))


def _cost(rows: list[list[str]], widths: list[int]) -> int:
    """How hard a layout is to read: its lines, and twice the cells with a word broken
    (an address over three lines reads worse than a row a line taller)."""
    cost = 0
    for row in rows:
        cost += max(len(wrap(cell, w)) for cell, w in zip(row, widths, strict=True))
        cost += 2 * sum(
            1
            for cell, w in zip(row, widths, strict=True)
            if any(cell_len(word) > w for word in cell.split())
        )
    return cost


def _longest_line(text: str) -> int:
    return max(cell_len(line) for line in text.split("\n"))


def _narrowest(values: list[str], low: int, high: int, lines: int) -> int:
    """The narrowest width in [low, high] at which every value wraps into `lines` lines."""

    def fits(w: int) -> bool:
        return all(len(wrap(v, w)) <= lines for v in values)

    if not fits(high):
        return high
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _spread(widths: list[int], natural: list[int], room: int) -> list[int]:
    """The room left given to the columns narrower than their content: first whole to
    those that need the least to show every cell on one line, the rest shared out."""
    widths = list(widths)
    spare = room - sum(widths)
    for i in sorted(range(len(widths)), key=lambda i: natural[i] - widths[i]):
        wanted = natural[i] - widths[i]
        if 0 < wanted <= spare:
            widths[i] += wanted
            spare -= wanted
    while spare > 0:
        wanting = [i for i in range(len(widths)) if widths[i] < natural[i]]
        if not wanting:
            break
        for i in wanting[:spare]:
            widths[i] += 1
        spare -= len(wanting[:spare])
    return widths


def _row_lines(
    row: Sequence[str], widths: list[int], cols: list[Column], *, break_words: bool = True
) -> list[str]:
    wrapped = [
        wrap(cell, w, break_words=break_words and col.breaks)
        for cell, w, col in zip(row, widths, cols, strict=True)
    ]
    height = max(len(w) for w in wrapped)
    out = []
    for k in range(height):
        parts = []
        for lines, w, col in zip(wrapped, widths, cols, strict=True):
            text = lines[k] if k < len(lines) else ""
            pad = " " * max(w - cell_len(text), 0)
            parts.append(pad + text if col.justify == "right" else text + pad)
        out.append((" " * GAP).join(parts).rstrip())
    return out


def blocks(headers: Sequence[str], cells: Iterable[Sequence[str]], width: int) -> list[str]:
    """One block per record, a `field: value` line per column (values wrap under
    themselves), a blank line between records."""
    labels = [f"{h}:" for h in headers]
    label_width = max((cell_len(label) for label in labels), default=0) + 1
    if label_width > width // 2:  # labels too long to stand beside the values
        label_width = 2
    lines: list[str] = []
    for n, row in enumerate(cells):
        if n:
            lines.append("")
        for label, value in zip(labels, row, strict=True):
            if label_width == 2:
                lines.append(label)
                lines.extend("  " + line for line in wrap(value, width - 2))
                continue
            wrapped = wrap(value, width - label_width)
            lines.append(label + " " * (label_width - cell_len(label)) + wrapped[0])
            lines.extend(" " * label_width + line for line in wrapped[1:])
    return [line.rstrip() for line in lines]


def key_values(pairs: Iterable[tuple[str, str]], width: int) -> list[str]:
    """`key  value` lines, the values wrapping under themselves (a record on its own)."""
    items = [(visible(k), visible(v)) for k, v in pairs]
    return blocks([k for k, _ in items], [[v for _, v in items]], width) if items else []
