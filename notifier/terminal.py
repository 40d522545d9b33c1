"""Standard output and standard error, guarded: the one place every byte for a terminal
passes, whatever wrote it (a table, CSV, JSON, an error, a library's message).

`guarded_streams()` puts a `TerminalStream` in front of both for a command's run. It
applies `outputs.for_terminal` to everything (control and bidi characters from a roster
cell or a bounce's Diagnostic-Code show as escapes instead of clearing the screen,
retitling the window or hiding text), and, on a real terminal, wraps each line that
would be wider than the terminal at a space, so that no line is ever wider than the
window. Machine-readable outputs (CSV, JSON, a message's bytes) are written inside
`as_data()`: escaped all the same, but never wrapped, so a line stays one record.

A guarded stream says it is not a terminal: colours and styles would be escape
sequences, and those it would only show as text. Live displays (progress bars) write to
the terminal itself, through `live_stream()`; they show nothing taken from the data.
"""

from __future__ import annotations

import codecs
import io
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from notifier.layout import cell_len, wrap
from notifier.outputs import for_terminal

# Where the width cannot be told (output to a file or a pipe, and no COLUMNS): wide
# enough for the tables, narrow enough to read.
DEFAULT_WIDTH = 100
_TOKENS = re.compile(r"[ \t]+|[^ \t]+")


def terminal_width() -> int:
    """The width to lay tables out for: $COLUMNS, else the terminal's, else 100."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns or DEFAULT_WIDTH


class TerminalStream(io.TextIOBase):
    """A text stream in front of `raw` that lets nothing through raw (see the module)."""

    def __init__(self, raw: TextIO) -> None:
        super().__init__()
        self.raw = raw
        self.data = False  # inside as_data(): never wrapped
        self._column = 0  # cells written on the current line
        self._indent = 0  # where a wrapped line's continuation starts
        self._wraps = _isatty(raw)
        self._bytes = _BinaryView(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.raw, "errors", None)

    @property
    def buffer(self) -> _BinaryView:
        """Bytes written here (click.echo of bytes) are guarded as text too."""
        return self._bytes

    def isatty(self) -> bool:
        return False  # see the module: no styles, no cursor movement through here

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        safe = for_terminal(text)
        if self._wraps and not self.data:
            safe = self._wrapped(safe)
        else:
            self._track(safe)
        self.raw.write(safe)
        return len(text)

    def flush(self) -> None:
        self._bytes.flush_text()
        self.raw.flush()

    def _track(self, text: str) -> None:
        tail = text.rsplit("\n", 1)
        self._column = cell_len(tail[-1]) if len(tail) > 1 else self._column + cell_len(tail[0])

    def _wrapped(self, text: str) -> str:
        width = terminal_width()
        out: list[str] = []
        for n, segment in enumerate(text.split("\n")):
            if n:
                out.append("\n")
                self._column = 0
            end = "\r" if segment.endswith("\r") else ""
            out.append(self._fit(segment.removesuffix("\r"), width) + end)
        return "".join(out)

    def _fit(self, segment: str, width: int) -> str:
        """`segment` (no line break) continuing the current line, broken at spaces where
        the line would be wider than `width`; continuations keep the line's indent."""
        if self._column == 0:
            indent = len(segment) - len(segment.lstrip(" "))
            self._indent = indent if indent <= width // 2 else 0
        if "\t" not in segment and self._column + cell_len(segment) <= width:
            self._column += cell_len(segment)
            return segment
        out: list[str] = []
        space = ""
        for token in _TOKENS.findall(segment):
            if token[0] in " \t":
                space = token
                continue
            size = cell_len(token)
            gap = _gap(space, self._column)
            if self._column + gap + size <= width or self._column <= self._indent:
                out.append(_spaces(space, gap))
                self._column += gap
            else:
                out.append("\n" + " " * self._indent)
                self._column = self._indent
            space = ""
            room = max(width - self._column, 1)
            if size <= room:
                out.append(token)
                self._column += size
                continue
            # A word wider than a line (only at a line's start): broken where a table
            # cell would break it, continuing under the line's indent.
            pieces = wrap(token, room)
            out.append(("\n" + " " * self._column).join(pieces))
            self._column += cell_len(pieces[-1])
        if space:
            out.append(space)
            self._column += _gap(space, self._column)
        return "".join(out)


def _gap(space: str, column: int) -> int:
    """The cells `space` (spaces and tabs) takes from `column` on."""
    at = column
    for ch in space:
        at = (at // 8 + 1) * 8 if ch == "\t" else at + 1
    return at - column


def _spaces(space: str, gap: int) -> str:
    return space if "\t" not in space else " " * gap


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _BinaryView:
    """The `buffer` of a TerminalStream: bytes decoded as UTF-8 (a split character waits
    for its other bytes; a byte that is no UTF-8 shows as an escape) and guarded as text."""

    def __init__(self, text: TerminalStream) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")

    def write(self, data: bytes | bytearray) -> int:
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def flush_text(self) -> None:
        rest = self._decoder.decode(b"", final=True)
        if rest:
            self._text.write(rest)


@contextmanager
def guarded_streams() -> Iterator[None]:
    """sys.stdout and sys.stderr guarded for the time of the block (see the module);
    where they already are, as they are."""
    saved = sys.stdout, sys.stderr
    if isinstance(saved[0], TerminalStream) or saved[0] is None or saved[1] is None:
        yield
        return
    guarded = TerminalStream(saved[0]), TerminalStream(saved[1])
    sys.stdout, sys.stderr = guarded
    try:
        yield
    finally:
        for stream in guarded:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed pipe: nothing more can be shown
        sys.stdout, sys.stderr = saved


@contextmanager
def as_data() -> Iterator[None]:
    """Standard output written inside the block is data (CSV, JSON, a message): guarded,
    but never wrapped."""
    stream = sys.stdout
    if not isinstance(stream, TerminalStream):
        yield
        return
    stream.flush()
    before, stream.data = stream.data, True
    try:
        yield
    finally:
        stream.flush()
        stream.data = before


def live_stream() -> TextIO:
    """The terminal under standard error, for live displays (progress bars, spinners),
    which move the cursor: they show only the tool's own words and counts."""
    stream = sys.stderr
    return stream.raw if isinstance(stream, TerminalStream) else stream


def is_terminal() -> bool:
    """Whether standard output is a terminal (under its guard)."""
    stream = sys.stdout
    return _isatty(stream.raw if isinstance(stream, TerminalStream) else stream)


__all__ = [
    "TerminalStream",
    "as_data",
    "guarded_streams",
    "is_terminal",
    "live_stream",
    "terminal_width",
]
