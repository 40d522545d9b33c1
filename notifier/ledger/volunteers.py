"""Volunteers, and the roster imports that put them in the ledger (with their rejected rows).

A volunteer is stored as text (`Volunteer.texts()`); what an import changes is decided by
`notifier.roster_diff` and written here, with its events, in the caller's transaction.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.config import ROSTER_CHUNK_ROWS
from notifier.event import EventKind
from notifier.ledger.chain import (
    EventDraft,
    append,
    append_serialised,
    encode_json_string,
    utc_now,
)
from notifier.ledger.projections import volunteer_row_sha256
from notifier.roster import RosterSource, RowProblem
from notifier.roster_diff import ImportDiff, StoredTexts, merge_problems, owners
from notifier.spool import Spool
from notifier.volunteer import TEXT_FIELDS, Volunteer

_COLUMNS = ", ".join(("volunteer_id", *TEXT_FIELDS))
_EMAIL = TEXT_FIELDS.index("email")


def volunteer_to_row(v: Volunteer) -> dict[str, Any]:
    """The volunteers table's columns for one volunteer (as an import writes them)."""
    return {"volunteer_id": v.volunteer_id, **dict(zip(TEXT_FIELDS, v.texts(), strict=True))}


def volunteer_from_row(row: Mapping[str, Any] | sqlite3.Row) -> Volunteer:
    return Volunteer.from_texts(row["volunteer_id"], row)


@dataclass(frozen=True)
class VolunteerQuery:
    """Which volunteers. Empty tuples and None mean "no filter on this"."""

    exposures: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    # Only people with a message in this campaign, in one of `message_states` if any given.
    in_campaign: str | None = None
    message_states: tuple[str, ...] = ()
    volunteer_id: str | None = None
    # Part of an id, an address or a name (case-insensitive for ASCII letters): a search.
    text: str | None = None

    def where(self) -> tuple[str, list[str]]:
        """The SQL WHERE clause (or "") and its parameters. Only placeholders take values."""
        clauses: list[str] = []
        params: list[str] = []
        for column, values in (("exposure", self.exposures), ("locale", self.locales)):
            if values:
                clauses.append(f"{column} IN ({_marks(values)})")
                params.extend(values)
        if self.in_campaign is not None:
            subquery = "SELECT volunteer_id FROM messages WHERE campaign_id = ?"
            params.append(self.in_campaign)
            if self.message_states:
                subquery += f" AND state IN ({_marks(self.message_states)})"
                params.extend(self.message_states)
            clauses.append(f"volunteer_id IN ({subquery})")
        if self.volunteer_id is not None:
            clauses.append("volunteer_id = ?")
            params.append(self.volunteer_id)
        if self.text:
            # The words typed are text to find, never a pattern: % and _ are escaped.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", self.text) + "%"
            searched = ("volunteer_id", "email", "email_ascii", "family_name", "given_name")
            clauses.append(
                "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in searched) + ")"
            )
            params.extend(pattern for _ in searched)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def select(conn: sqlite3.Connection, query: VolunteerQuery) -> Iterator[Volunteer]:
    """The volunteers the query selects, in volunteer_id order."""
    where, params = query.where()
    sql = f"SELECT {_COLUMNS} FROM volunteers{where} ORDER BY volunteer_id"  # noqa: S608
    for row in conn.execute(sql, params):
        yield volunteer_from_row(row)


def select_page(
    conn: sqlite3.Connection, query: VolunteerQuery, after: str | None, size: int
) -> list[Volunteer]:
    """At most `size` of the volunteers the query selects, in volunteer_id order, those
    after `after` (None: from the first). Read whole, so no cursor stays open while the
    caller writes: a streamed send writes between its pages."""
    where, params = query.where()
    if after is not None:
        where += (" AND " if where else " WHERE ") + "volunteer_id > ?"
        params.append(after)
    sql = f"SELECT {_COLUMNS} FROM volunteers{where} ORDER BY volunteer_id LIMIT ?"  # noqa: S608
    return [volunteer_from_row(row) for row in conn.execute(sql, [*params, size])]


def count_by_locale_and_exposure(
    conn: sqlite3.Connection, query: VolunteerQuery
) -> Counter[tuple[str, str]]:
    where, params = query.where()
    sql = (
        "SELECT locale, exposure, count(*) AS n FROM volunteers"  # noqa: S608
        f"{where} GROUP BY locale, exposure"
    )
    return Counter(
        {(row["locale"], row["exposure"]): int(row["n"]) for row in conn.execute(sql, params)}
    )


def find(conn: sqlite3.Connection, id_or_email: str) -> Volunteer | None:
    """One volunteer by id, or else by address (either form, ASCII case-insensitive)."""
    key = id_or_email.strip()
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM volunteers WHERE volunteer_id = ?",  # noqa: S608
        (key,),
    ).fetchone()
    if row is None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM volunteers"  # noqa: S608
            " WHERE lower(email) = lower(?) OR lower(email_ascii) = lower(?)"
            " ORDER BY volunteer_id LIMIT 1",
            (key, key),
        ).fetchone()
    return None if row is None else volunteer_from_row(row)


# --- roster imports ---------------------------------------------------------------------


# An import's summary keeps this many of its problems and changes to show; the rest are in
# the ledger (`rejected_rows`, the events), so memory stays flat however many there are.
SUMMARY_LIMIT = 1000


@dataclass(frozen=True)
class ImportSummary:
    """What record_import() did."""

    import_id: int  # the import just recorded, or the earlier one when already_imported
    added: int
    updated: int
    unchanged: int
    rejected: int  # rows with at least one problem
    # (volunteer_id, field, old, new): the first SUMMARY_LIMIT changes, in row order.
    changes: tuple[tuple[str, str, str, str], ...]
    already_imported: bool
    # The first SUMMARY_LIMIT problems, in row order: the roster's own, plus rows the
    # ledger refused (an address that already belongs to another volunteer_id). All of
    # them are in the ledger: rejected_rows(import_id).
    problems: tuple[RowProblem, ...] = ()
    refused: bool = False  # --strict and some row was bad: no volunteer was written
    problem_count: int = 0  # every problem, shown or not
    change_count: int = 0  # every change, shown or not


@dataclass(frozen=True)
class ImportRecord:
    """One roster import as the ledger recorded it."""

    import_id: int
    file_name: str
    sha256: str
    mapping_sha256: str
    encoding: str
    imported_at: str
    rows_total: int
    rows_valid: int
    rows_rejected: int
    added: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class _Outcome:
    """What an import will do, once its whole roster is read."""

    added: int
    updated: int
    unchanged: int
    rejected: int  # rows with at least one problem
    problem_count: int
    refused: bool


def import_roster(
    conn: sqlite3.Connection,
    source: RosterSource,
    *,
    mapping_sha256: str,
    strict: bool,
    spool_dir: Path | None = None,
    chunk_rows: int = ROSTER_CHUNK_ROWS,
) -> ImportSummary:
    """Read, compare and record one roster import a chunk of rows at a time, within the
    caller's transaction: the import, its rejected rows, the volunteers' changes and the
    events, with what changes decided (notifier.roster_diff) against the volunteers as
    the transaction reads them.

    The file is read once; what it adds and updates, and its problems, wait in temporary
    files (in `spool_dir`, beside the ledger) until it has all been read (the import's
    counts head its events, and --strict refuses the whole file), so memory stays flat
    however long the roster is, and however many of its rows are bad or changed.

    Re-importing the file last imported, when that would change no volunteer, writes
    nothing and says so (already_imported).
    """
    has_volunteers = conn.execute("SELECT 1 FROM volunteers LIMIT 1").fetchone() is not None
    owner_rows = conn.execute("SELECT volunteer_id, email FROM volunteers")
    diff = ImportDiff(
        owners(owner_rows) if has_volunteers else {},
        source.headers,
    )
    rejected_rows = 0
    with Spool(spool_dir) as added, Spool(spool_dir) as updated, Spool(spool_dir) as problems:
        for chunk in source.chunks(chunk_rows):
            problems.add(chunk.problems)
            rejected_rows += len({p.row for p in chunk.problems})
            stored = (
                _stored_texts_of(conn, [a.volunteer.volunteer_id for a in chunk.accepted])
                if has_volunteers
                else {}
            )
            to_add, to_update = diff.compare(chunk.accepted, stored)
            added.add(
                [
                    (
                        p.accepted.row,
                        p.accepted.volunteer.volunteer_id,
                        p.accepted.volunteer.texts(),
                        p.holder,
                    )
                    for p in to_add
                ]
            )
            updated.add(
                [
                    (
                        p.update.row,
                        p.update.volunteer.volunteer_id,
                        p.update.volunteer.texts(),
                        p.update.changes,
                        p.holder,
                    )
                    for p in to_update
                ]
            )
        decided = diff.finish(roster_problems=problems.count > 0, strict=strict)
        outcome = _Outcome(
            added=decided.added,
            updated=decided.updated,
            unchanged=decided.unchanged,
            # A refused row was accepted by the roster: a row of its own.
            rejected=rejected_rows + len(decided.conflicts),
            problem_count=problems.count + len(decided.conflicts),
            refused=decided.refused,
        )

        def kept(spool: Spool) -> Iterator[list[Any]]:
            for batch in spool.batches():
                # (row, volunteer_id, ..., holder): the holder is not written.
                yield [r[:-1] for r in batch if diff.keeps(r[1], r[-1])]

        return _write_import(
            conn,
            source,
            outcome,
            lambda: kept(added),
            lambda: kept(updated),
            lambda: merge_problems(problems, decided.conflicts),
            mapping_sha256=mapping_sha256,
            strict=strict,
        )


@dataclass(frozen=True)
class PlannedUpdate:
    """A volunteer an import would change: which fields, from what to what."""

    row: int
    volunteer_id: str
    name: str
    changes: Mapping[str, tuple[str, str]]  # field -> (old, new), in TEXT_FIELDS order


@dataclass(frozen=True)
class ImportPlan:
    """What importing a roster would do, decided as an import decides it, written nowhere.

    Counts are of the whole file; the lists keep the first `limit` of each (in row order).
    """

    added: int
    updated: int
    unchanged: int
    rejected: int  # rows with at least one problem (the ledger's refusals included)
    problem_count: int
    problems: tuple[RowProblem, ...]
    added_first: tuple[tuple[int, str, str], ...]  # (row, volunteer_id, name)
    updates_first: tuple[PlannedUpdate, ...]
    refused: bool  # strict, and some row is bad: nothing would be imported


def plan_import(
    conn: sqlite3.Connection | None,
    source: RosterSource,
    *,
    strict: bool = False,
    limit: int = SUMMARY_LIMIT,
    chunk_rows: int = ROSTER_CHUNK_ROWS,
) -> ImportPlan:
    """What `import_roster` would decide for `source`, against the volunteers as this
    connection reads them, writing nothing: the file is read a chunk at a time, and only
    the counts and the first `limit` rows of each kind are kept. `conn` None: there is
    no ledger yet (nobody on the roster), and the plan makes none."""
    has_volunteers = (
        conn is not None and conn.execute("SELECT 1 FROM volunteers LIMIT 1").fetchone() is not None
    )
    diff = ImportDiff(
        owners(conn.execute("SELECT volunteer_id, email FROM volunteers"))
        if conn is not None and has_volunteers
        else {},
        source.headers,
    )
    problems: list[RowProblem] = []
    problem_count = 0
    rejected_rows = 0
    # Held with their address's holder: whether they go ahead is known at the end.
    added: list[tuple[int, str, str, str | None]] = []
    updates: list[tuple[PlannedUpdate, str | None]] = []
    for chunk in source.chunks(chunk_rows):
        problem_count += len(chunk.problems)
        rejected_rows += len({p.row for p in chunk.problems})
        problems.extend(chunk.problems[: max(0, limit - len(problems))])
        stored = (
            _stored_texts_of(conn, [a.volunteer.volunteer_id for a in chunk.accepted])
            if conn is not None and has_volunteers
            else {}
        )
        to_add, to_update = diff.compare(chunk.accepted, stored)
        for pending in to_add:
            if len(added) < 2 * limit:
                v = pending.accepted.volunteer
                added.append((pending.accepted.row, v.volunteer_id, v.display_name, pending.holder))
        for update in to_update:
            if len(updates) < 2 * limit:
                u = update.update
                planned = PlannedUpdate(
                    u.row, u.volunteer.volunteer_id, u.volunteer.display_name, u.changes
                )
                updates.append((planned, update.holder))
    decided = diff.finish(roster_problems=problem_count > 0, strict=strict)
    merged = tuple(itertools.islice(merge_problems(problems, decided.conflicts), limit))
    return ImportPlan(
        added=decided.added,
        updated=decided.updated,
        unchanged=decided.unchanged,
        rejected=rejected_rows + len(decided.conflicts),
        problem_count=problem_count + len(decided.conflicts),
        problems=merged,
        added_first=tuple(
            (row, vid, name) for row, vid, name, holder in added if diff.keeps(vid, holder)
        )[:limit],
        updates_first=tuple(u for u, holder in updates if diff.keeps(u.volunteer_id, holder))[
            :limit
        ],
        refused=decided.refused,
    )


def _stored_texts_of(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, StoredTexts]:
    """The TEXT_FIELDS of just these volunteers, as stored (those the ledger holds): what an
    import compares a chunk of rows against."""
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM volunteers"  # noqa: S608
        " WHERE volunteer_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    )
    cursor.row_factory = None  # plain tuples: the id, then the texts
    return {row[0]: row[1:] for row in cursor}


# Chunks of (row, volunteer_id, texts) to add, or (row, volunteer_id, texts, changes) to
# update, in row order.
_Chunks = Callable[[], Iterator[list[Any]]]
# Events are appended this many at a time.
_EVENT_BATCH = 5000


def _write_import(
    conn: sqlite3.Connection,
    source: RosterSource,
    outcome: _Outcome,
    added: _Chunks,
    updated: _Chunks,
    problems: Callable[[], Iterator[RowProblem]],
    *,
    mapping_sha256: str,
    strict: bool,
) -> ImportSummary:
    """Write an import whose outcome is known, its volunteers and problems coming a chunk
    at a time (`added()`, `updated()` and `problems()` give them, in row order, each time
    they are called)."""
    latest = latest_import(conn)
    if (
        latest is not None
        and latest.sha256 == source.sha256
        and latest.mapping_sha256 == mapping_sha256
        # The same file read otherwise (another --encoding) is an import of its own: what
        # it finds, down to a refused row's postal address, is recorded as found.
        and latest.encoding == source.encoding
        and not (outcome.added or outcome.updated)
        and _same_problems(rejected_rows(conn, latest.import_id), problems())
    ):
        return ImportSummary(
            import_id=latest.import_id,
            added=0,
            updated=0,
            unchanged=outcome.unchanged,
            rejected=outcome.rejected,
            changes=(),
            already_imported=True,
            problems=tuple(itertools.islice(problems(), SUMMARY_LIMIT)),
            refused=outcome.refused,
            problem_count=outcome.problem_count,
        )
    now = utc_now()
    recorded = {
        "rows_total": source.rows_total,
        "rows_valid": source.rows_total - outcome.rejected,
        "rows_rejected": outcome.rejected,
        "added": outcome.added,
        "updated": outcome.updated,
        "unchanged": outcome.unchanged,
    }
    cursor = conn.execute(
        "INSERT INTO imports(file_name, sha256, mapping_sha256, encoding, imported_at,"
        " rows_total, rows_valid, rows_rejected, added, updated, unchanged)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (str(source.file), source.sha256, mapping_sha256, source.encoding, now, *recorded.values()),
    )
    import_id = int(cursor.lastrowid or 0)
    imported = EventDraft(
        EventKind.ROSTER_IMPORTED,
        data={
            "import_id": import_id,
            "file": source.file.name,
            "file_name": str(source.file),
            "sha256": source.sha256,
            "mapping_sha256": mapping_sha256,
            "encoding": source.encoding,
            "strict": strict,
            "applied": not outcome.refused,
            **recorded,
        },
    )
    append(conn, [imported], now)
    changes = _Changes()
    if not outcome.refused:
        # Volunteers may swap addresses, or a new one take the address another is leaving,
        # in one import: park the changing addresses first so the unique index on email
        # never sees a transient clash.
        for chunk in updated():
            conn.executemany(
                "UPDATE volunteers SET email = ? WHERE volunteer_id = ?",
                [(f"\x00moving:{vid}", vid) for _, vid, _, changed in chunk if "email" in changed],
            )
        _write_added(conn, import_id, now, added)
        _write_updated(conn, import_id, now, updated, changes)
    shown = _write_rejected(conn, import_id, now, problems())
    return ImportSummary(
        import_id=import_id,
        added=outcome.added,
        updated=outcome.updated,
        unchanged=outcome.unchanged,
        rejected=outcome.rejected,
        changes=tuple(changes.shown),
        already_imported=False,
        problems=shown,
        refused=outcome.refused,
        problem_count=outcome.problem_count,
        change_count=changes.count,
    )


def _same_problems(recorded: Iterator[RowProblem], found: Iterator[RowProblem]) -> bool:
    """Whether two streams of problems are the same, in the same order (`who` aside)."""
    missing = object()
    return all(a == b for a, b in itertools.zip_longest(recorded, found, fillvalue=missing))


def _write_rejected(
    conn: sqlite3.Connection, import_id: int, now: str, problems: Iterator[RowProblem]
) -> tuple[RowProblem, ...]:
    """Record the problems (the rejected_rows table and row_rejected events), a batch at a
    time; the first SUMMARY_LIMIT of them."""
    shown: list[RowProblem] = []
    while batch := list(itertools.islice(problems, _EVENT_BATCH)):
        if len(shown) < SUMMARY_LIMIT:
            shown.extend(batch[: SUMMARY_LIMIT - len(shown)])
        conn.executemany(
            "INSERT INTO rejected_rows(import_id, [row], [column], value, reason, field)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(import_id, p.row, p.column, p.value, p.reason, p.field) for p in batch],
        )
        rejected = [
            EventDraft(
                EventKind.ROW_REJECTED,
                data={
                    "import_id": import_id,
                    "row": p.row,
                    "column": p.column,
                    "value": p.value,
                    "reason": p.reason,
                    "field": p.field,
                    # Who the row is about, as the file has it: the person stays on the
                    # postal worklist until a later import brings them in.
                    "who": dict(p.who),
                },
            )
            for p in batch
        ]
        append(conn, rejected, now)
    return tuple(shown)


class _Changes:
    """The fields an import changes: how many, and the first SUMMARY_LIMIT of them."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str, str]] = []
        self.count = 0

    def extend(self, changes: Iterable[tuple[str, str, str, str]]) -> None:
        for change in changes:
            self.count += 1
            if len(self.shown) < SUMMARY_LIMIT:
                self.shown.append(change)


def _write_added(conn: sqlite3.Connection, import_id: int, now: str, added: _Chunks) -> None:
    placeholders = ", ".join("?" for _ in ("volunteer_id", *TEXT_FIELDS))
    insert = (
        f"INSERT INTO volunteers({_COLUMNS}, import_id, source_row, created_at, updated_at)"  # noqa: S608
        f" VALUES ({placeholders}, ?, ?, ?, ?)"
    )
    for chunk in added():
        conn.executemany(
            insert, [(vid, *texts, import_id, row, now, now) for row, vid, texts in chunk]
        )
        # The address as imported, and the sha256 of the whole row as written: the chain
        # vouches for the volunteers table (notifier.ledger.projections).
        append_serialised(
            conn,
            [
                (
                    EventKind.VOLUNTEER_ADDED,
                    None,
                    vid,
                    None,
                    volunteer_added_data(
                        import_id, row, texts[_EMAIL], volunteer_row_sha256(vid, texts)
                    ),
                )
                for row, vid, texts in chunk
            ],
            now,
        )


def volunteer_added_data(import_id: int, row: int, email: str, row_sha256: str) -> str:
    """canonical_json() of a volunteer_added event's data, written out: an import makes
    one a row, and encoding a dict costs seven times as much (a test holds the two equal)."""
    return (
        f'{{"email":{encode_json_string(email)},"import_id":{int(import_id)},'
        f'"row":{int(row)},"row_sha256":{encode_json_string(row_sha256)}}}'
    )


def _write_updated(
    conn: sqlite3.Connection,
    import_id: int,
    now: str,
    updated: _Chunks,
    changes: _Changes,
) -> None:
    for chunk in updated():
        # Set only the changed columns (grouped by which changed): rewriting an unchanged
        # indexed column would still cost an index update.
        groups: dict[tuple[str, ...], list[Any]] = {}
        for update in chunk:
            groups.setdefault(tuple(update[3]), []).append(update)
        for changed, updates in groups.items():
            # Only fixed column names are joined into the SQL; values go in as parameters.
            assignments = ", ".join(f"{c} = ?" for c in changed)
            conn.executemany(
                f"UPDATE volunteers SET {assignments}, import_id = ?, source_row = ?,"  # noqa: S608
                " updated_at = ? WHERE volunteer_id = ?",
                [
                    (*(fields[c][1] for c in changed), import_id, row, now, vid)
                    for row, vid, _, fields in updates
                ],
            )
        append(
            conn,
            [
                EventDraft(
                    EventKind.VOLUNTEER_UPDATED,
                    volunteer_id=vid,
                    data={
                        "import_id": import_id,
                        "row": row,
                        "changes": {f: {"old": o, "new": n} for f, (o, n) in fields.items()},
                        "row_sha256": volunteer_row_sha256(vid, texts),
                    },
                )
                for row, vid, texts, fields in chunk
            ],
            now,
        )
        changes.extend(
            (vid, name, old, new)
            for _, vid, _, fields in chunk
            for name, (old, new) in fields.items()
        )


def latest_import(conn: sqlite3.Connection) -> ImportRecord | None:
    """The most recent roster import recorded, if any."""
    row = conn.execute("SELECT * FROM imports ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return ImportRecord(
        import_id=row["id"],
        file_name=row["file_name"] or "",
        sha256=row["sha256"] or "",
        mapping_sha256=row["mapping_sha256"] or "",
        encoding=row["encoding"] or "",
        imported_at=row["imported_at"] or "",
        rows_total=int(row["rows_total"] or 0),
        rows_valid=int(row["rows_valid"] or 0),
        rows_rejected=int(row["rows_rejected"] or 0),
        added=int(row["added"] or 0),
        updated=int(row["updated"] or 0),
        unchanged=int(row["unchanged"] or 0),
    )


def rejected_rows(conn: sqlite3.Connection, import_id: int | None = None) -> Iterator[RowProblem]:
    """The problems recorded for one import (default: the latest), in row order, read as
    they are used (an import may have hundreds of thousands)."""
    if import_id is None:
        latest = latest_import(conn)
        if latest is None:
            return
        import_id = latest.import_id
    cursor = conn.execute(
        "SELECT [row], [column], value, reason, field FROM rejected_rows"
        " WHERE import_id = ? ORDER BY [row], id",
        (import_id,),
    )
    for row in cursor:
        yield RowProblem(
            row=row["row"],
            column=row["column"],
            value=row["value"],
            reason=row["reason"],
            field=row["field"] or "",
        )
