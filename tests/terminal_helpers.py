"""Reading back what notifier printed for a terminal: its lines' display widths, and its
tables (notifier.layout) as records, to check that nothing was lost on the way."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

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


# What a live display (rich's progress bars) writes to move the cursor and colour its
# bar: the only escape sequences notifier lets reach a terminal.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows for `raw` output: a carriage return or an erased line
    starts the line again, and the live displays' cursor and colour sequences take no
    room."""
    text = raw.replace("\r\n", "\n").replace("\x1b[2K", "\n").replace("\r", "\n")
    return [_CONTROL.sub("", line) for line in text.split("\n")]


def run_in_terminal(
    cwd: Path, args: list[str], columns: int, *, timeout: float = 180
) -> tuple[int, str]:
    """`python -m notifier ARGS` on a pseudo-terminal `columns` wide (COLUMNS and the
    window size both), from `cwd`: its exit code and everything it showed, stdout and
    stderr as the terminal interleaves them. Reads until the process ends, at most
    `timeout` seconds."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifier", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process ended and the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")
