"""Reading back what notifier printed for a terminal: its lines' display widths, and its
tables (notifier.layout) as records, to check that nothing was lost on the way."""

from __future__ import annotations

import re

from rich.cells import cell_len

_RULE = re.compile(r"-+")


def widest(text: str) -> int:
    """The widest line of `text`, in display cells (a Japanese character takes two)."""
    return max((cell_len(line) for line in text.splitlines()), default=0)


def _slice_cells(line: str, start: int, end: int) -> str:
    """The characters of `line` from display cell `start` up to `end`."""
    out, at = [], 0
    for ch in line:
        if start <= at < end:
            out.append(ch)
        at += cell_len(ch)
    return "".join(out)


def read_table(lines: list[str]) -> list[dict[str, str]]:
    """A layout.table() (header, a rule of dashes, rows) back as records: each cell's lines
    joined with spaces (a word broken inside shows as two: compare without spaces)."""
    rule_at = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    spans = [(m.start(), m.end()) for m in _RULE.finditer(lines[rule_at])]
    header_lines = lines[:rule_at]
    # The header is the lines just above the rule up to the title (a line with text
    # outside the columns' spans is a title).
    headers = [
        " ".join(p for p in (_slice_cells(h, a, b + 2).strip() for h in header_lines[-3:]) if p)
        for a, b in spans
    ]
    records: list[dict[str, str]] = []
    for line in lines[rule_at + 1 :]:
        if not line.strip():
            break
        cells = [_slice_cells(line, a, b + 2).strip() for a, b in spans]
        if cells[0] or not records:
            records.append(dict(zip(headers, cells, strict=True)))
        else:
            for header, cell in zip(headers, cells, strict=True):
                if cell:
                    records[-1][header] = f"{records[-1][header]} {cell}".strip()
    return records


def read_blocks(lines: list[str]) -> list[dict[str, str]]:
    """layout.blocks() back as records: `label: value` lines, continuations indented."""
    records: list[dict[str, str]] = [{}]
    label = ""
    for line in lines:
        if not line.strip():
            if records[-1]:
                records.append({})
            continue
        match = re.match(r"^([^ ][^:]*):(?: +(.*))?$", line)
        if match and not line.startswith(" "):
            label = match.group(1)
            records[-1][label] = match.group(2) or ""
        elif label:
            records[-1][label] = f"{records[-1][label]} {line.strip()}".strip()
    return [r for r in records if r]


def squeezed(text: str) -> str:
    return "".join(text.split())
