"""Roster import: a CSV file saved from a spreadsheet -> volunteers, plus every row's problems.

A roster comes from whatever system the organisation (or a partner) keeps, usually via
Excel. So this module:

- works out the encoding (UTF-8, UTF-8 with BOM as Excel's "CSV UTF-8" writes it, or
  cp932 as Excel on Japanese Windows writes it) from the bytes themselves;
- maps the file's own headers and values onto the canonical fields with a small TOML
  mapping file (`load_mapping`);
- checks every row and reports each problem with its spreadsheet row number (header =
  row 1), the column as the file names it, the offending value and the reason, the way a
  person fixing the spreadsheet needs it.

A file that cannot be used at all raises RosterError; a bad row never does: it becomes
RowProblems and the good rows still count. This module knows nothing of the ledger.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import hashlib
import io
import logging
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from email_validator import EmailNotValidError, validate_email

from notifier.config import ROSTER_CHUNK_ROWS, ROSTER_MAX_BYTES
from notifier.errors import MappingError, RosterError
from notifier.locales import LEGACY_ENCODINGS
from notifier.spool import Spool
from notifier.volunteer import (
    BIDI_CONTROLS,
    DATA_HELD,
    EXPOSURES,
    FIELDS,
    LOCALES,
    REQUIRED_FIELDS,
    Volunteer,
    data_held_contradiction,
    derive_volunteer_id,
    spoofing_risks,
)

log = logging.getLogger(__name__)

ENCODING_CHOICES: tuple[str, ...] = ("auto", "utf-8", "utf-8-sig", *LEGACY_ENCODINGS)

# Fields whose values come from a fixed vocabulary, and so may be mapped in [values.*].
VOCABULARIES: Mapping[str, tuple[str, ...]] = {
    "locale": LOCALES,
    "exposure": EXPOSURES,
    "data_held": DATA_HELD,
}
NAME_FIELDS: tuple[str, ...] = ("family_name", "given_name")
# The cells that say who a row is about, kept with a rejected row (RowProblem.who).
IDENTITY_FIELDS: tuple[str, ...] = (
    "volunteer_id",
    "family_name",
    "given_name",
    "email",
    "postal_address",
    "locale",
)

_SAVE_HINT = (
    "in Excel use File > Save As > 'CSV UTF-8 (comma delimited)', "
    "or name the file's encoding with --encoding"
)


@dataclass(frozen=True)
class RosterMapping:
    """How one kind of roster file names the canonical fields and values."""

    columns: Mapping[str, str] = field(default_factory=dict)  # canonical field -> header
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # field -> {v: canon}
    source: Path | None = None
    sha256: str = ""  # of the mapping file's bytes, recorded with each import


@dataclass(frozen=True)
class RowProblem:
    row: int  # spreadsheet row: header = 1, first record = 2
    column: str  # the header as the file spells it
    value: str
    reason: str
    field: str = ""  # the canonical field (email, exposure, ...), whatever the header says
    # Who the row is about, as the file has it (canonical field -> cell): the id, names,
    # address and postal address, so a person whose row was refused can still be written
    # to. Not part of the problem's identity.
    who: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)


@dataclass(frozen=True)
class AcceptedRow:
    row: int
    volunteer: Volunteer
    # The row's volunteer_id cell was empty: the id was made from the address
    # (derive_volunteer_id), so it stands for whoever had that address when it was made.
    id_from_address: bool = False


@dataclass(frozen=True)
class RosterResult:
    file: Path
    sha256: str  # of the raw bytes, so the ledger can tell a re-import
    encoding: str  # as detected (or as given)
    rows_total: int  # data records, blank ones not counted
    accepted: tuple[AcceptedRow, ...]
    problems: tuple[RowProblem, ...]
    headers: Mapping[str, str] = field(default_factory=dict)  # canonical field -> file header

    @property
    def rejected_rows(self) -> tuple[int, ...]:
        """Distinct spreadsheet rows with at least one problem, in order."""
        return tuple(sorted({p.row for p in self.problems}))

    def chunks(self, rows: int = ROSTER_CHUNK_ROWS) -> Iterator[RosterChunk]:
        """The roster as a RosterSource gives it: the accepted rows `rows` at a time (the
        problems come with the first chunk)."""
        yield RosterChunk(self.accepted[:rows], self.problems)
        for start in range(rows, len(self.accepted), rows):
            yield RosterChunk(self.accepted[start : start + rows], ())


class RosterSource(Protocol):
    """A roster as an import reads it: a RosterResult, or a RosterStream read as it goes.
    `rows_total` and `sha256` are known once `chunks()` has run to the end."""

    @property
    def file(self) -> Path: ...
    @property
    def encoding(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def rows_total(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    def chunks(self, rows: int = ...) -> Iterator[RosterChunk]: ...


def _contradiction(row: int, volunteer: Volunteer, headers: Mapping[str, str]) -> RowProblem | None:
    """The warning for an accepted row whose data_held contradicts its exposure
    (screening records for someone never screened). The row is imported: only the
    organisation knows which of the two cells is wrong; `notifier check` refuses to pass
    a campaign until the roster is corrected."""
    items = data_held_contradiction(volunteer.exposure, volunteer.data_held)
    if not items:
        return None
    return RowProblem(
        row,
        headers.get("data_held", "data_held"),
        ";".join(items),
        f"exposure is {volunteer.exposure} (never attended a screening visit) but "
        "data_held lists screening records: imported; correct the exposure or "
        "the data held",
        "data_held",
    )


def _spoofing(row: int, volunteer: Volunteer, headers: Mapping[str, str]) -> list[RowProblem]:
    """Warnings for an accepted row with a part that could mislead (see
    notifier.volunteer.spoofing_risks): imported, and `notifier check` refuses to pass a
    campaign until the roster is corrected."""
    return [
        RowProblem(row, headers.get(field, field), value, f"{reason}: imported; check it", field)
        for field, value, reason in spoofing_risks(volunteer)
    ]


# --- mapping file ------------------------------------------------------------------------


def load_mapping(path: Path) -> RosterMapping:
    """Read a `--mapping` TOML file: [columns] field = "header", [values.field] "v" = "canon"."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(
            f"cannot read the mapping file ({exc.strerror})",
            file=path,
            hint="check the path given to --mapping",
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(
            f"not valid TOML: {exc}",
            file=path,
            hint='see the format in the README: [columns] email = "Header in the file"',
        ) from exc
    for key in data:
        if key not in ("columns", "values"):
            raise MappingError(
                f"unknown section {key!r}",
                file=path,
                field=key,
                hint="a mapping has only [columns] and [values.<field>] tables",
            )
    columns = _mapping_columns(data.get("columns", {}), path)
    values = _mapping_values(data.get("values", {}), path)
    return RosterMapping(
        columns=columns, values=values, source=path, sha256=hashlib.sha256(raw).hexdigest()
    )


def _mapping_columns(table: Any, path: Path) -> dict[str, str]:
    if not isinstance(table, dict):
        raise MappingError("[columns] must be a table", file=path, field="columns")
    columns: dict[str, str] = {}
    seen: dict[str, str] = {}
    for canonical, header in table.items():
        where = f"columns.{canonical}"
        if canonical not in FIELDS:
            raise MappingError(
                f"unknown canonical field {canonical!r}",
                file=path,
                field=where,
                hint=f"canonical fields are: {', '.join(FIELDS)}",
            )
        if not isinstance(header, str) or not header.strip():
            raise MappingError(
                "expected the file's column header as a non-empty string",
                file=path,
                field=where,
            )
        key = header_key(header)
        if key in seen:
            raise MappingError(
                f"header {header!r} is mapped to both {seen[key]} and {canonical}",
                file=path,
                field=where,
            )
        seen[key] = canonical
        columns[canonical] = header
    return columns


def _mapping_values(table: Any, path: Path) -> dict[str, dict[str, str]]:
    if not isinstance(table, dict):
        raise MappingError("[values] must hold tables", file=path, field="values")
    values: dict[str, dict[str, str]] = {}
    for canonical, pairs in table.items():
        where = f"values.{canonical}"
        if canonical not in VOCABULARIES:
            raise MappingError(
                f"values can be mapped only for {', '.join(VOCABULARIES)}, not {canonical!r}",
                file=path,
                field=where,
            )
        if not isinstance(pairs, dict):
            raise MappingError(
                f'expected a table [{where}] of "value in the file" = "canonical value"',
                file=path,
                field=where,
            )
        vocabulary = VOCABULARIES[canonical]
        for file_value, target in pairs.items():
            if not isinstance(target, str) or target not in vocabulary:
                raise MappingError(
                    f"{file_value!r} maps to {target!r}, which is not a {canonical} value",
                    file=path,
                    field=f"{where}.{file_value}",
                    hint=f"{canonical} values are: {', '.join(vocabulary)}",
                )
        values[canonical] = dict(pairs)
    return values


# --- text normalisation -------------------------------------------------------------------


def header_key(header: str) -> str:
    """How headers are compared: 氏名（姓） in the file matches 氏名(姓) in a mapping."""
    return unicodedata.normalize("NFKC", header).strip().casefold()


def value_key(value: str) -> str:
    """How vocabulary values are compared: ＥＮ, En and en are the same locale."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def normalise_name(value: str) -> str:
    """NFKC (half-width ﾔﾏﾓﾄ -> ヤマモト, full-width Ａ -> A), then trimmed (U+3000 too)."""
    return unicodedata.normalize("NFKC", value).strip()


# Cc (CR, LF, TAB, NUL, ...) and the Unicode line and paragraph separators (Zl, Zp).
_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same, plus whitespace of any kind (U+3000 and NO-BREAK SPACE included).
_SPACE_OR_BREAK = re.compile("[\\s\x00-\x1f\x7f-\x9f\u2028\u2029]")


# A Latin letter run together with kana or kanji: what UTF-8 or cp1252 text read as cp932
# looks like (Müller -> Mﾃｼller, Seán -> Se瘢), and no real name does.
_LATIN = "A-Za-z\u00c0-\u024f"
_JAPANESE = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f"
_GARBLED = re.compile(f"[{_LATIN}][{_JAPANESE}]|[{_JAPANESE}][{_LATIN}]")


# --- decoding ---------------------------------------------------------------------------


def decode_roster(raw: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was read with.

    `auto`: a UTF-8 BOM means utf-8-sig; otherwise UTF-8, then each locale's legacy
    encoding (notifier.locales: cp932, as Excel on Japanese Windows writes). UTF-8 first:
    a cp932 file with any Japanese in it is almost never valid UTF-8, while nearly any
    bytes decode as cp932. cp932, not shift_jis: Excel writes IBM-extension kanji (髙 =
    FB FC, 﨑 = FA B1) that a shift_jis decoder rejects.
    """
    if encoding.lower() != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise RosterError(
                f"unknown encoding {encoding!r}",
                file=path,
                hint=f"use one of {', '.join(ENCODING_CHOICES)} (or any Python codec name)",
            ) from exc
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise _undecodable(raw, [(encoding, exc.start)], path) from exc
        # Told "utf-8" for an Excel "CSV UTF-8" file: the BOM is not part of the first header.
        return text.removeprefix("\ufeff"), encoding
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise RosterError(
            "this is a UTF-16 file (Excel's 'Unicode Text'), not a CSV file",
            file=path,
            hint=_SAVE_HINT,
        )
    if raw.startswith(codecs.BOM_UTF8):
        # The BOM says UTF-8: a decoding failure is a damaged file, not a cp932 one.
        try:
            return raw.decode("utf-8-sig"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise _undecodable(raw, [("utf-8-sig", exc.start)], path) from exc
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_failure = exc.start
    # Nearly any bytes decode as cp932, so a damaged UTF-8 file or a cp1252 one (English
    # Excel's plain "CSV") may come out as cp932 mojibake: names catch that row by row
    # (_GARBLED), since no real name runs Latin and Japanese letters together.
    failures = [("utf-8", utf8_failure)]
    for legacy in LEGACY_ENCODINGS:
        failure = _legacy_failure(raw, legacy)
        if failure is None:
            return raw.decode(legacy), legacy
        failures.append((legacy, failure))
    raise _undecodable(raw, failures, path)


# What a legacy decoder gives for bytes no spreadsheet writes for real text: C1 controls
# and private-use characters (cp932 maps 0x80, 0xA0, 0xFD-0xFF and its user-defined area
# F040-F9FC there).
_NOT_TEXT = re.compile("[\x80-\x9f\ue000-\uf8ff]")


def _legacy_failure(raw: bytes, encoding: str) -> int | None:
    """Byte offset at which `raw` stops being plausible text in `encoding`, or None."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.start
    bad = _NOT_TEXT.search(text)
    if bad is None:
        return None
    return len(text[: bad.start()].encode(encoding))


def _undecodable(raw: bytes, failures: Sequence[tuple[str, int]], path: Path) -> RosterError:
    # The encoding that read furthest is most likely the one the file was meant to be in,
    # so its failure is the one worth showing.
    encoding, offset = max(failures, key=lambda f: f[1])
    row = _row_at_offset(raw, offset, encoding)
    tried = " or ".join(name for name, _ in failures)
    hint = _SAVE_HINT
    if encoding.startswith("utf-8") and len(failures) == 1:
        hint += " (for a file from Excel on Japanese Windows: --encoding cp932)"
    return RosterError(
        f"cannot be read as {tried}: byte 0x{raw[offset]:02X} at byte offset {offset} "
        f"(row {row}) is not valid {encoding}",
        file=path,
        row=row,
        hint=hint,
    )


def _row_at_offset(raw: bytes, offset: int, encoding: str) -> int:
    """The spreadsheet row holding the byte at `offset`: records, not lines, are counted."""
    prefix = raw[:offset].decode(encoding, errors="replace").removeprefix("\ufeff")
    # A sentinel stands in for the bad byte, so the last record counted is the one holding it.
    return sum(1 for _ in csv.reader(io.StringIO(prefix + "x", newline="")))


# --- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Where each canonical field is in this file, and how its values are mapped."""

    index: Mapping[str, int]  # canonical field -> cell index
    header: Mapping[str, str]  # canonical field -> header as in the file
    extras: tuple[tuple[int, str], ...]  # unmapped columns: (cell index, header)
    lookups: Mapping[str, Mapping[str, str]]  # field -> {value_key(file value): canonical}
    width: int
    default_locale: str


@dataclass(frozen=True)
class RosterChunk:
    """Some consecutive rows of a roster, checked: the good ones and the bad ones' problems."""

    accepted: tuple[AcceptedRow, ...]
    problems: tuple[RowProblem, ...]


# A RosterStream keeps this many of its warnings in memory, to show.
WARNINGS_KEPT = 1000

# The most a roster cell may hold. A name, an address or a list of data held is a few
# dozen characters; a cell far larger is a mistake (a pasted document, a broken export):
# its row is refused with that reason, and the rest of the file imports. Python's csv
# module stops at 128 KB a cell and would abort the whole file, so its own limit is
# lifted to the largest roster read: the row-by-row rule above is the one that counts.
CELL_MAX_CHARS = 64 * 1024
csv.field_size_limit(max(csv.field_size_limit(), ROSTER_MAX_BYTES))


class RosterStream:
    """A roster file being read a chunk of rows at a time (`open_roster`).

    Its encoding and header are known from the start; `rows_total`, `sha256` and the
    contradiction warnings once `chunks()` has run to the end. Only the current chunk (its
    rows and their problems), the first WARNINGS_KEPT warnings (the rest wait in a
    temporary file) and the addresses and ids seen (to find duplicates) are held, so
    memory does not grow with the rows' size.
    """

    def __init__(
        self,
        path: Path,
        text: io.TextIOWrapper,
        reader: _HashingReader,
        encoding: str,
        plan_for: Callable[[Sequence[str]], _Plan],
        spool_dir: Path | None = None,
    ) -> None:
        self.file = path
        self.encoding = encoding
        self._text = text
        self._reader = reader
        self._records = enumerate(csv.reader(text, strict=True), start=1)
        self._done = False
        self.rows_total = 0
        # Told the rows read so far after each chunk (a progress display: the console).
        self.on_chunk: Callable[[int], None] | None = None
        self.accepted_total = 0
        self.rejected_total = 0
        # Warnings (contradictions, see _contradiction): the first WARNINGS_KEPT
        # here, every one in a temporary file (all_warnings), however many rows have one.
        self.warnings: list[RowProblem] = []
        try:
            _, header = next(self._records)
        except StopIteration:  # pragma: no cover - an all-blank file was refused before
            header = []
        except csv.Error as exc:
            raise _damaged(path, 1, exc) from exc
        except UnicodeDecodeError as exc:
            raise _changed(path) from exc
        if header:
            header[0] = header[0].removeprefix("\ufeff")
        self._plan = plan_for(header)
        self.headers: Mapping[str, str] = dict(self._plan.header)
        self._all_warnings = Spool(spool_dir)

    @property
    def sha256(self) -> str:
        """Of the file's raw bytes, once they have all been read."""
        if not self._done:
            raise RuntimeError("the roster has not been read to its end")
        return self._reader.hexdigest()

    def chunks(self, rows: int = ROSTER_CHUNK_ROWS) -> Iterator[RosterChunk]:
        """The rows, checked, `rows` records at a time (blank records not counted)."""
        if self._done:
            raise RuntimeError("the roster has already been read")
        checker = _RowChecker(self._plan)
        row = 1
        pending = 0
        try:
            for row, cells in self._records:
                if not "".join(cells).strip():
                    continue  # blank rows (Excel leaves ",,,,," lines) still count in numbering
                self.rows_total += 1
                checker.check(row, cells)
                pending += 1
                if pending >= rows:
                    yield self._take(checker)
                    pending = 0
                    if self.on_chunk is not None:
                        self.on_chunk(self.rows_total)
        except csv.Error as exc:
            raise _damaged(self.file, row + 1, exc) from exc
        except UnicodeDecodeError as exc:
            raise _changed(self.file) from exc
        self._done = True
        if self.rows_total == 0:
            raise RosterError(
                "the file has a header row but no volunteers",
                file=self.file,
                hint="check that you exported the right sheet",
            )
        last = self._take(checker)
        log.info(
            "%s (%s): %d rows, %d accepted, %d rows rejected",
            self.file,
            self.encoding,
            self.rows_total,
            self.accepted_total,
            self.rejected_total,
        )
        if last.accepted or last.problems:
            yield last

    def _take(self, checker: _RowChecker) -> RosterChunk:
        chunk = RosterChunk(tuple(checker.accepted), tuple(checker.problems))
        self._all_warnings.add(checker.warnings)
        self.warnings.extend(checker.warnings[: WARNINGS_KEPT - len(self.warnings)])
        checker.accepted.clear()
        checker.problems.clear()
        checker.warnings.clear()
        self.accepted_total += len(chunk.accepted)
        self.rejected_total += len({p.row for p in chunk.problems})
        return chunk

    @property
    def warning_count(self) -> int:
        """How many rows were imported with a warning (`warnings` keeps the first few)."""
        return self._all_warnings.count

    def all_warnings(self) -> Iterator[RowProblem]:
        """Every warning, in row order, once chunks() has run to the end."""
        return iter(self._all_warnings)

    def close(self) -> None:
        self._text.close()
        self._all_warnings.close()

    def __enter__(self) -> RosterStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_roster(
    path: Path,
    *,
    mapping: RosterMapping | None = None,
    encoding: str = "auto",
    default_locale: str = "en",
    max_bytes: int = ROSTER_MAX_BYTES,
    spool_dir: Path | None = None,
) -> RosterStream:
    """Open a roster to read in chunks: the file is refused now (RosterError) if it cannot
    be used at all (size, encoding, header); its rows are read by `chunks()`. Warnings
    beyond the first few wait in a temporary file in `spool_dir` (beside the ledger).

    The bytes are read twice: once to tell the encoding (without holding them), once to
    read the rows (hashing them on the way).
    """
    mapping = mapping or RosterMapping()
    if default_locale not in LOCALES:
        raise RosterError(
            f"unknown default locale {default_locale!r}",
            hint=f"use one of {', '.join(LOCALES)}",
        )
    detected = _scan(path, max_bytes, encoding)
    try:
        binary = path.open("rb")
    except OSError as exc:
        raise RosterError(
            f"cannot read the roster ({exc.strerror})", file=path, hint="check the path"
        ) from exc
    reader = _HashingReader(binary, path, max_bytes)
    text = io.TextIOWrapper(
        io.BufferedReader(reader, buffer_size=_READ_BYTES), encoding=detected, newline=""
    )
    try:
        return RosterStream(
            path,
            text,
            reader,
            detected,
            lambda header: _plan(header, mapping, default_locale, path),
            spool_dir,
        )
    except BaseException:
        text.close()
        raise


_READ_BYTES = 1024 * 1024


class _HashingReader(io.RawIOBase):
    """The file's bytes, hashed as they are read, and refused past the size limit."""

    def __init__(self, handle: io.BufferedReader, path: Path, max_bytes: int) -> None:
        self._handle = handle
        self._path = path
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)
        if n:
            self._count += n
            if self._count > self._max_bytes:
                raise _too_big(self._path, self._max_bytes)
            self._hash.update(memoryview(buffer)[:n])
        return n or 0

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._handle.close()
        super().close()


def _changed(path: Path) -> RosterError:
    return RosterError(
        "the file changed while it was being read",
        file=path,
        hint="import it again once nothing is writing to it",
    )


def _checked_head(handle: BinaryIO, path: Path, max_bytes: int, encoding: str) -> bytes:
    """The file's first MB, after refusing at once a file that is too big, has no line
    break there (a device, a binary), is a workbook, or whose start is text in no
    encoding we read: a wrong path never fills memory or takes minutes."""
    size = os.fstat(handle.fileno()).st_size
    if size > max_bytes:
        raise _too_big(path, max_bytes)
    head = handle.read(_PROBE_BYTES)
    if len(head) == _PROBE_BYTES and b"\n" not in head and b"\r" not in head:
        raise RosterError(
            "no line break in the first MB: this is not a CSV file",
            file=path,
            hint="check the path; a roster is a CSV file saved from a spreadsheet",
        )
    _refuse_workbook(head, path)
    if encoding.lower() == "auto":
        _probe_encoding(head, path)
    return head


def _scan(path: Path, max_bytes: int, encoding: str) -> str:
    """The encoding to read the file with, found without holding the file.

    Refuses the file (RosterError) as `_read_limited` and `decode_roster` would; for a
    file they refuse, they are run on the whole file to say exactly why.
    """
    try:
        with path.open("rb") as handle:
            head = _checked_head(handle, path, max_bytes, encoding)
            blank = not head.removeprefix(codecs.BOM_UTF8).strip()
            for name in _candidate_encodings(head, encoding):
                handle.seek(len(head))
                decoder = codecs.getincrementaldecoder(name)()
                block, total = head, len(head)
                while ok := _decodes(name, decoder, block, final=not block):
                    if not block:
                        break
                    block = handle.read(_READ_BYTES)
                    total += len(block)
                    blank = blank and not block.strip()
                    if total > max_bytes:
                        raise _too_big(path, max_bytes)
                if ok:  # read to the end as `name`
                    if blank:
                        break
                    return name
    except OSError as exc:
        raise RosterError(
            f"cannot read the roster ({exc.strerror})", file=path, hint="check the path"
        ) from exc
    # Refused: the whole-file reading says why, exactly as it always has.
    raw = _read_limited(path, max_bytes, encoding)
    if not raw.removeprefix(codecs.BOM_UTF8).strip():
        raise RosterError(
            "the file is empty",
            file=path,
            hint="export the roster again: it needs a header row and one row per volunteer",
        )
    _refuse_workbook(raw, path)
    decode_roster(raw, encoding, path)
    raise _changed(path)  # pragma: no cover - read as fine the second time


def _candidate_encodings(head: bytes, encoding: str) -> list[str]:
    """The encodings `decode_roster` would try, in order; empty when it would refuse the
    file whatever the rest of it holds."""
    if encoding.lower() != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            return []
        return [encoding]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return []
    if head.startswith(codecs.BOM_UTF8):
        return ["utf-8-sig"]
    return ["utf-8", *LEGACY_ENCODINGS]


def _decodes(name: str, decoder: codecs.IncrementalDecoder, block: bytes, *, final: bool) -> bool:
    """Whether `block` (the next bytes) decodes, and as a legacy encoding plausibly (see
    _NOT_TEXT)."""
    try:
        text = decoder.decode(block, final=final)
    except UnicodeDecodeError:
        return False
    return name not in LEGACY_ENCODINGS or _NOT_TEXT.search(text) is None


# What is read first, to refuse in moments a file that is no CSV (/dev/zero, a binary).
_PROBE_BYTES = 1024 * 1024


def _read_limited(path: Path, max_bytes: int, encoding: str) -> bytes:
    """The file's bytes, refused early when it is too big or plainly not a CSV file.

    Checked on the first MB before the rest is read: a file (or device) with no line
    break there, or whose start is text in no encoding we read, is refused at once, so a
    wrong path never fills memory or takes minutes.
    """
    try:
        with path.open("rb") as handle:
            head = _checked_head(handle, path, max_bytes, encoding)
            rest = handle.read(max_bytes + 1 - len(head))
    except OSError as exc:
        raise RosterError(
            f"cannot read the roster ({exc.strerror})", file=path, hint="check the path"
        ) from exc
    if len(head) + len(rest) > max_bytes:
        raise _too_big(path, max_bytes)
    return head + rest


def _too_big(path: Path, max_bytes: int) -> RosterError:
    return RosterError(
        f"the file is over the size limit for a roster ({max_bytes:,} bytes)",
        file=path,
        hint="check the path; for a roster this big, raise [roster] max_bytes in "
        "notifier.toml (or NOTIFIER_ROSTER_MAX_BYTES)",
    )


def _probe_encoding(head: bytes, path: Path) -> None:
    """Raise now if the file's start is neither UTF-8 nor plausible text in a legacy
    encoding (cp932)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return  # decode_roster names it
    failures: list[tuple[str, int]] = []
    for name in ("utf-8", *LEGACY_ENCODINGS):
        try:
            text = codecs.getincrementaldecoder(name)().decode(head, final=False)
        except UnicodeDecodeError as exc:
            failures.append((name, exc.start))
            continue
        bad = _NOT_TEXT.search(text) if name in LEGACY_ENCODINGS else None
        if bad is None:
            return
        failures.append((name, len(text[: bad.start()].encode(name))))
        if head.startswith(codecs.BOM_UTF8):
            break
    raise _undecodable(head, failures, path)


# A workbook saved instead of exported is the commonest wrong file: say so, not "bad byte".
_WORKBOOK_SIGNATURES = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip file"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel workbook (.xls)"),
)


def _refuse_workbook(raw: bytes, path: Path) -> None:
    for signature, what in _WORKBOOK_SIGNATURES:
        if raw.startswith(signature):
            raise RosterError(
                f"this is {what}, not a CSV file",
                file=path,
                hint="in Excel use File > Save As > 'CSV UTF-8 (comma delimited)' and import that",
            )


def _damaged(path: Path, row: int, exc: csv.Error) -> RosterError:
    return RosterError(
        f"the CSV structure is damaged near row {row} ({exc}): a quoted cell is not "
        "closed, or has text after its closing quote",
        file=path,
        row=row,
        hint="open the file in a spreadsheet, check that row, and save it as CSV again",
    )


def _plan(header: Sequence[str], mapping: RosterMapping, default_locale: str, path: Path) -> _Plan:
    headers = [h.removeprefix("\ufeff").strip() for h in header]
    if not any(headers):
        raise RosterError(
            "the first row is blank: expected column headers",
            file=path,
            row=1,
            hint="the first row must name the columns, e.g. email,family_name,exposure",
        )
    positions: dict[str, int] = {}
    repeated: set[str] = set()
    for i, h in enumerate(headers):
        key = header_key(h)
        if key in positions:
            repeated.add(key)
        elif key:
            positions[key] = i
    index: dict[str, int] = {}
    for canonical in FIELDS:
        wanted = mapping.columns.get(canonical, canonical)
        at = positions.get(header_key(wanted))
        if at is not None and header_key(wanted) in repeated:
            raise RosterError(
                f'column "{headers[at]}" appears twice in the header',
                file=path,
                row=1,
                hint="rename one of them so every column has its own header",
            )
        if at is not None:
            index[canonical] = at
        elif canonical in mapping.columns:
            raise RosterError(
                f'the mapping names column "{wanted}" for {canonical}, '
                "but the file has no such column",
                file=path,
                row=1,
                hint=f"the file's columns are: {', '.join(h for h in headers if h)}",
            )
    missing = [f for f in REQUIRED_FIELDS if f not in index]
    if missing:
        raise RosterError(
            f"no {' / '.join(missing)} column",
            file=path,
            row=1,
            hint=_missing_hint(headers, missing),
        )
    used = set(index.values())
    # Unmapped columns are kept with the volunteer under their own header; a header that
    # is blank or repeated gets its column number so no cell overwrites another.
    extras = tuple(
        (i, h if h and positions.get(header_key(h)) == i else f"{h or 'column'} ({i + 1})")
        for i, h in enumerate(headers)
        if i not in used
    )
    lookups = {
        f: {value_key(v): canonical for v, canonical in mapping.values.get(f, {}).items()}
        for f in VOCABULARIES
    }
    return _Plan(
        index=index,
        header={f: headers[i] for f, i in index.items()},
        extras=extras,
        lookups=lookups,
        width=len(headers),
        default_locale=default_locale,
    )


def _missing_hint(headers: Sequence[str], missing: Iterable[str]) -> str:
    found = [h for h in headers if h]
    if len(found) == 1 and (";" in found[0] or "\t" in found[0]):
        return "the file seems to use ';' or tabs between cells: save it as comma-separated CSV"
    pairs = ", ".join(f'{f} = "..."' for f in missing)
    return (
        f"the file's columns are: {', '.join(found)}; "
        f"name the right ones in a mapping file ([columns] {pairs}) and pass --mapping"
    )


# --- checking rows ----------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def name_verdict(raw: str) -> tuple[str, str]:
    """(the name as stored, why the cell is refused or "").

    Cached: family and given names repeat through a roster (Smith, 佐藤, John).
    """
    name = normalise_name(raw)
    if _BREAKS.search(name):
        # A line break (Alt+Enter) or control character inside a name is always a
        # spreadsheet accident: no one's name contains one, and sent as-is it would
        # break the salutation. (HTML-like text is allowed: templates escape it.)
        return name, "contains a line break or control character"
    if _GARBLED.search(name):
        return name, (
            "looks garbled (Latin and Japanese letters run together): "
            "is the file's encoding right? name it with --encoding"
        )
    return name, ""


class _RowChecker:
    """Checks rows one by one, remembering addresses and ids to find duplicates.

    Written for speed (100,000 rows in about a second): every field is read by a fixed
    cell position, problems are gathered only when there are some, and verdicts on cells
    that repeat (vocabulary values, names) are cached by the cell's exact text.
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.accepted: list[AcceptedRow] = []
        self.problems: list[RowProblem] = []
        self.warnings: list[RowProblem] = []
        self.first_row_of_email: dict[str, int] = {}
        # volunteer_id -> (the first row with it, whether that row's id was made from
        # its address).
        self.first_row_of_id: dict[str, tuple[int, bool]] = {}
        self.has_id_column = "volunteer_id" in plan.index
        width = plan.width
        # Cells are padded to width + 1: a field the file has no column for reads the
        # last, always-empty cell.
        self.at = {f: plan.index.get(f, width) for f in FIELDS}
        self.padding = [[""] * (width + 1 - n) for n in range(width + 1)]
        self.vocabulary_verdicts: dict[tuple[str, str], tuple[str, str]] = {}
        self.data_held_verdicts: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def check(self, row: int, cells: list[str]) -> None:
        if any(len(cell) > CELL_MAX_CHARS for cell in cells):
            self._refuse_oversized(row, cells)
            return
        plan, at, width = self.plan, self.at, self.plan.width
        count = len(cells)
        # (canonical field, value, reason) of each problem found in this row.
        bad: list[tuple[str, str, str]] = []
        overflow: RowProblem | None = None
        if count <= width:
            cells.extend(self.padding[count])
        else:
            if any(c.strip() for c in cells[width:]):
                overflow = RowProblem(
                    row,
                    f"(cells after column {width})",
                    ",".join(cells[width:]),
                    f"the row has {count} cells but the header only {width}: "
                    "a comma inside an unquoted cell?",
                )
            cells = [*cells[:width], ""]

        email, email_ascii = "", ""
        raw_email = cells[at["email"]]
        if not raw_email.strip():
            bad.append(("email", raw_email, "required, but empty"))
        else:
            checked = check_email(raw_email)
            if isinstance(checked, str):
                bad.append(("email", raw_email, checked))
            else:
                email, email_ascii = checked
                earlier = self.first_row_of_email.setdefault(email.casefold(), row)
                if earlier != row:
                    bad.append(
                        (
                            "email",
                            raw_email,
                            f"duplicate of row {earlier} (the same address, ignoring case)",
                        )
                    )

        raw = cells[at["family_name"]]
        family_name, reason = name_verdict(raw)
        if reason or not family_name:
            bad.append(("family_name", raw, reason or "required, but empty"))
        raw = cells[at["given_name"]]
        given_name, reason = name_verdict(raw)
        if reason:
            bad.append(("given_name", raw, reason))
        exposure = self._vocabulary("exposure", cells[at["exposure"]], bad)
        if at["locale"] < width:
            locale = self._vocabulary("locale", cells[at["locale"]], bad)
        else:
            locale = plan.default_locale
        data_held = self._data_held(cells[at["data_held"]], bad)

        raw_id = cells[at["volunteer_id"]]
        volunteer_id = normalise_name(raw_id) if raw_id else ""
        id_from_address = not volunteer_id
        if volunteer_id:
            earlier, made = self.first_row_of_id.setdefault(volunteer_id, (row, False))
            if earlier != row:
                whose = ", whose id is made from its address" if made else ""
                bad.append(("volunteer_id", raw_id, f"duplicate of row {earlier}{whose}"))
        elif email:
            volunteer_id = derive_volunteer_id(email)
            # Without an id column every id is made from an address, and two alike are
            # the duplicate address already reported; with one, a made id may be the id
            # another row gives (a roster exported with its ids, a person added below).
            if self.has_id_column:
                earlier, made = self.first_row_of_id.setdefault(volunteer_id, (row, True))
                if earlier != row and not made:
                    bad.append(
                        (
                            "volunteer_id",
                            raw_id,
                            f"empty, and the id made from the address ({volunteer_id}) is "
                            f"the id row {earlier} gives: give this row an id of its own",
                        )
                    )

        if bad or overflow:
            self._reject(row, cells, overflow, bad)
            return
        volunteer = Volunteer(
            volunteer_id=volunteer_id,
            email=email,
            email_ascii=email_ascii,
            family_name=family_name,
            given_name=given_name,
            locale=locale,
            exposure=exposure,
            data_held=data_held,
            postal_address=cells[at["postal_address"]].strip().replace("\r\n", "\n"),
            extra={h: v for i, h in plan.extras if (v := cells[i].strip())},
        )
        self.accepted.append(AcceptedRow(row, volunteer, id_from_address))
        if data_held and exposure == "database_only":
            warning = _contradiction(row, volunteer, plan.header)
            if warning is not None:
                self.warnings.append(warning)
        if not email.isascii() or BIDI_CONTROLS.search(family_name + given_name):
            self.warnings.extend(_spoofing(row, volunteer, plan.header))

    def _refuse_oversized(self, row: int, cells: list[str]) -> None:
        """A row with a cell over CELL_MAX_CHARS: refused, what it shows cut short."""
        plan = self.plan
        for index, cell in enumerate(cells):
            if len(cell) <= CELL_MAX_CHARS:
                continue
            field = next((f for f, i in plan.index.items() if i == index), "")
            header = plan.header.get(field) or dict(plan.extras).get(index)
            reason = (
                f"the cell holds {len(cell) // 1024} KB of text; a roster cell holds at most"
                f" {CELL_MAX_CHARS // 1024} KB: check this row in the spreadsheet"
            )
            shown = cell[:60].replace("\n", " ") + "…"
            column = header or f"(column {index + 1})"
            self.problems.append(RowProblem(row, column, shown, reason, field))
            return

    def _reject(
        self,
        row: int,
        cells: Sequence[str],
        overflow: RowProblem | None,
        bad: Sequence[tuple[str, str, str]],
    ) -> None:
        at, header = self.at, self.plan.header
        who = tuple((f, cells[at[f]]) for f in IDENTITY_FIELDS if cells[at[f]].strip())
        if overflow is not None:
            self.problems.append(dataclasses.replace(overflow, who=who))
        self.problems.extend(
            RowProblem(row, header.get(fld, fld), value, reason, fld, who)
            for fld, value, reason in bad
        )

    def _vocabulary(self, fld: str, raw: str, bad: list[tuple[str, str, str]]) -> str:
        """The canonical value, or "" after noting why the cell is refused."""
        verdict = self.vocabulary_verdicts.get((fld, raw))
        if verdict is None:
            verdict = self.vocabulary_verdicts[fld, raw] = self._vocabulary_verdict(fld, raw)
        value, reason = verdict
        if reason:
            bad.append((fld, raw, reason))
        return value

    def _vocabulary_verdict(self, fld: str, raw: str) -> tuple[str, str]:
        key = value_key(raw)
        vocabulary = VOCABULARIES[fld]
        value = self.plan.lookups[fld].get(key, key)
        if value in vocabulary:
            return value, ""
        expected = ", ".join(vocabulary)
        if key:
            return "", f"unknown {fld}; expected one of {expected} (or map it in [values.{fld}])"
        if fld == "locale":
            return "", (
                f"empty; expected one of {expected} "
                "(or leave out the column to use --default-locale)"
            )
        return "", "required, but empty"

    def _data_held(self, raw: str, bad: list[tuple[str, str, str]]) -> tuple[str, ...]:
        verdict = self.data_held_verdicts.get(raw)
        if verdict is None:
            verdict = self.data_held_verdicts[raw] = self._data_held_verdict(raw)
        held, unknown = verdict
        for item in unknown:
            bad.append(
                (
                    "data_held",
                    item,
                    "unknown data_held item; expected ';'-separated items from "
                    + ", ".join(DATA_HELD),
                )
            )
        return held

    def _data_held_verdict(self, raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        held: set[str] = set()
        unknown: list[str] = []
        lookup = self.plan.lookups["data_held"]
        for item in unicodedata.normalize("NFKC", raw).split(";"):
            key = item.strip().casefold()
            value = lookup.get(key, key)
            if value in DATA_HELD:
                held.add(value)
            elif key:
                unknown.append(item.strip())
        # Vocabulary order, so a re-exported roster listing the same items differently is
        # the same volunteer, not a change.
        return tuple(d for d in DATA_HELD if d in held), tuple(unknown)


def check_email(value: str) -> tuple[str, str] | str:
    """(normalised address, A-label form), or the reason it is refused.

    Whitespace anywhere is refused, never trimmed: a stray space or tab usually means the
    cell holds something else too (two addresses, a note), and guessing would mail the
    wrong person.
    """
    plain = _check_plain_address(value)
    if plain is not None:
        return plain
    space = _SPACE_OR_BREAK.search(value)
    if space:
        at, char = space.start(), space.group()
        where = (
            "at the start or end"
            if at == 0 or _SPACE_OR_BREAK.search(value[-1])
            else f"inside it (position {at + 1})"
        )
        return (
            f"contains whitespace {where} (U+{ord(char):04X} "
            f"{unicodedata.name(char, 'control character')}); never trimmed, fix the cell"
        )
    return _check_email_fully(value)


def _check_email_fully(value: str) -> tuple[str, str] | str:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"not a valid address: {exc}"
    ascii_form = checked.ascii_email or f"{checked.local_part}@{checked.ascii_domain}"
    return checked.normalized, ascii_form


# The dot-atom local part of RFC 5322 (as email-validator checks it), lower case only:
# email-validator lower-cases some role mailboxes (Postmaster, ...), which the full check
# is left to do. Then one @ and a domain without whitespace or control characters (what
# the domain may be is email-validator's to say).
_ATOM = r"[a-z0-9_!#$%&'*+\-/=?^`{|}~]+"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@([^@\s\x00-\x1f\x7f-\x9f\u2028\u2029]+)\Z")


def _check_plain_address(value: str) -> tuple[str, str] | None:
    """The common case (lower-case ASCII before a single @) without re-checking its domain.

    email-validator spends most of its time on the domain, and a roster has few distinct
    domains, so each domain is checked once. None means "not plain: do the full check",
    which also gives the exact reason for a bad address. A property test holds this to
    the same answers as the full check.
    """
    plain = _PLAIN_ADDRESS.match(value)
    if plain is None or len(value) > 200:
        return None
    local = plain[1]
    checked = _check_domain(plain[2])
    if checked is None:
        return None
    unicode_domain, ascii_domain = checked
    if len(local) + len(ascii_domain) > 200:
        return None
    return f"{local}@{unicode_domain}", f"{local}@{ascii_domain}"


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str, str] | None:
    """(normalised domain, A-label domain) if `domain` is a valid one, else None."""
    checked = _check_email_fully(f"x@{domain}")
    if isinstance(checked, str):
        return None
    return checked[0].partition("@")[2], checked[1].partition("@")[2]
