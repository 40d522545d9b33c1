"""The ledger: one SQLite file that is the source of truth for who was told what, and when.

Events are append-only and hash-chained: each event stores the hash of the event before
it, and its own hash covers that link plus its canonical content, so an edit, deletion,
insertion or reordering is found by `verify()`. The current state of a message is a
cached column, updated in the same transaction as the event that moves it.

Writes go through `transaction()`, which takes SQLite's write lock up front
(BEGIN IMMEDIATE) so that the chain head read at the start cannot move underneath us
while another process (say, `notifier send` and `notifier bounces ingest`) writes too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from notifier.errors import LedgerError, VolunteerNotFound
from notifier.message import DeliveryOutcome, MessageRow, NewMessage
from notifier.roster import RosterResult, RowProblem
from notifier.volunteer import Volunteer

DEFAULT_LEDGER = "notifier.db"
GENESIS_HASH = "0" * 64
EVENT_COLUMNS = "seq, at, kind, campaign_id, volunteer_id, message_id, data, prev_hash, hash"


# Event kinds. For events about one message, the kind is also the state it moves the
# message to (EventDraft.state), so "what happened" and "where it stands" never disagree.
#   roster:    roster_imported, volunteer_added, volunteer_updated, row_rejected
#   campaign:  campaign_registered
#   message:   queued (-> pending), sending, sent, deferred, failed_temporary,
#              failed_permanent, uncertain, suppressed (skipped: address suppressed),
#              resend_requested
#   bounces:   bounced_hard, bounced_soft (a DSN saying "delayed"), delivered, bounce_forged,
#              bounce_unmatched, address_suppressed


def utc_now() -> str:
    """Event time: timezone-aware UTC, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# One reusable encoder: json.dumps would build a new one per call, a cost on every event.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one serialisation that event hashes are computed over."""
    return _CANONICAL_ENCODER.encode(value)


@dataclass(frozen=True)
class EventDraft:
    """An event about to be appended. `state`, with `message_id`, moves that message."""

    kind: str
    campaign_id: str | None = None
    volunteer_id: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    state: str | None = None


@dataclass(frozen=True)
class Event:
    seq: int
    at: str
    kind: str
    campaign_id: str | None
    volunteer_id: str | None
    message_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    head: str  # hash of the last good event: worth writing down outside the ledger
    first_bad_seq: int | None = None
    reason: str = ""


# -- roster imports: what record_import() returns and latest_import() reads back


@dataclass(frozen=True)
class ImportSummary:
    import_id: int  # the import just recorded, or the earlier one when already_imported
    added: int
    updated: int
    unchanged: int
    rejected: int  # rows with at least one problem
    changes: tuple[tuple[str, str, str, str], ...]  # (volunteer_id, field, old, new)
    already_imported: bool
    # Every problem recorded: the roster's own, plus rows the ledger refused (an address
    # that already belongs to another volunteer_id).
    problems: tuple[RowProblem, ...] = ()
    refused: bool = False  # --strict and some row was bad: no volunteer was written


@dataclass(frozen=True)
class ImportRecord:
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


def event_hash(prev_hash: str, seq: int, at: str, draft_fields: dict[str, Any]) -> str:
    """The hash that links an event into the chain; covers position, time and content."""
    content = canonical_json({"seq": seq, "at": at, **draft_fields})
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _hashed_fields(
    kind: str,
    campaign_id: str | None,
    volunteer_id: str | None,
    message_id: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": kind,
        "campaign_id": campaign_id,
        "volunteer_id": volunteer_id,
        "message_id": message_id,
        "data": data,
    }


# What Ledger._append_rows takes and writes (see append_events).
_EventItem = tuple[str, str | None, str | None, str | None, dict[str, Any]]
_EventRow = tuple[int, str, str, str | None, str | None, str | None, str, str, str]
_encode_json_string: Callable[[str], str] = json.encoder.encode_basestring


def _json_text(value: str | None) -> str:
    """canonical_json() of a string or None, without building an encoder for it."""
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_json_string(value)
    return canonical_json(value)


# --- schema -------------------------------------------------------------------------


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("imports").create(
        {
            "id": int,
            "file_name": str,
            "sha256": str,
            "mapping_sha256": str,
            "encoding": str,
            "imported_at": str,
            "rows_total": int,
            "rows_valid": int,
            "rows_rejected": int,
            "added": int,
            "updated": int,
            "unchanged": int,
        },
        pk="id",
    )
    db.table("rejected_rows").create(
        {"id": int, "import_id": int, "row": int, "column": str, "value": str, "reason": str},
        pk="id",
        foreign_keys=[("import_id", "imports", "id")],
    )
    db.table("volunteers").create(
        {
            "volunteer_id": str,
            "email": str,
            "email_ascii": str,
            "family_name": str,
            "given_name": str,
            "locale": str,
            "exposure": str,
            "data_held": str,
            "postal_address": str,
            "extra": str,
            "import_id": int,
            "source_row": int,
            "created_at": str,
            "updated_at": str,
        },
        pk="volunteer_id",
        not_null={"email", "family_name", "locale", "exposure"},
        foreign_keys=[("import_id", "imports", "id")],
    )
    db.table("volunteers").create_index(["email"], unique=True)
    db.table("campaigns").create(
        {
            "campaign_id": str,
            "title": str,
            "follows": str,
            "definition": str,
            "templates_sha256": str,
            "registered_at": str,
        },
        pk="campaign_id",
    )
    db.table("messages").create(
        {
            "message_id": str,  # the RFC 5322 Message-ID, stable per (campaign, volunteer)
            "campaign_id": str,
            "volunteer_id": str,
            "verp_token": str,
            "state": str,
            "attempts": int,
            "smtp_reply": str,
            "queue_id": str,
            "updated_at": str,
        },
        pk="message_id",
        not_null={"campaign_id", "volunteer_id", "state"},
        defaults={"state": "pending", "attempts": 0},
        foreign_keys=[
            ("campaign_id", "campaigns", "campaign_id"),
            ("volunteer_id", "volunteers", "volunteer_id"),
        ],
    )
    db.table("messages").create_index(["campaign_id", "volunteer_id"], unique=True)
    db.table("messages").create_index(["campaign_id", "state"])
    db.table("messages").create_index(["verp_token"], unique=True)
    db.table("events").create(
        {
            "seq": int,
            "at": str,
            "kind": str,
            "campaign_id": str,
            "volunteer_id": str,
            "message_id": str,
            "data": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="seq",
        not_null={"at", "kind", "data", "prev_hash", "hash"},
    )
    db.table("events").create_index(["volunteer_id"])
    db.table("events").create_index(["campaign_id", "kind"])
    db.table("events").create_index(["message_id"])
    db.table("suppressions").create(
        {"email": str, "reason": str, "at": str, "event_seq": int}, pk="email"
    )
    db.table("bounce_reports").create(
        {
            "sha256": str,
            "source": str,
            "received_at": str,
            "matched": int,
            "message_id": str,
            "detail": str,
        },
        pk="sha256",
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Rejected rows also name the canonical field, so a problem with the address is found
    whatever the roster's header called it (メールアドレス, E-mail, ...)."""
    db.table("rejected_rows").add_column("field", str)
    # Rows recorded before: the header was the canonical name unless a mapping renamed it.
    db.execute(
        "UPDATE rejected_rows SET field = lower([column]) WHERE lower([column]) IN "
        "('volunteer_id', 'email', 'family_name', 'given_name', 'locale', 'exposure', "
        "'data_held', 'postal_address')"
    )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migration_1, _migration_2)
SCHEMA_VERSION = len(MIGRATIONS)


# --- the ledger -----------------------------------------------------------------------


class Ledger:
    """An open ledger file. Use as a context manager, or call close()."""

    def __init__(self, path: str | Path = DEFAULT_LEDGER, *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise LedgerError(
                    "no ledger here",
                    file=self.path,
                    hint="import a roster first (notifier roster import FILE), "
                    "or point --ledger / NOTIFIER_LEDGER at an existing ledger",
                )
            _create_private_file(self.path)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, nothing implicit.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"not a notifier ledger ({exc})",
                file=self.path,
                hint="check the path; a ledger is the SQLite file notifier created",
            ) from exc
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._migrate()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- schema

    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self.transaction():
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger schema version {current} is newer than this notifier "
                    f"understands ({SCHEMA_VERSION})",
                    file=self.path,
                    hint="upgrade notifier; never edit a ledger by hand",
                )
            for version in range(current, SCHEMA_VERSION):
                MIGRATIONS[version](self.db)
                self._set_meta("schema_version", str(version + 1))
            if current == 0:
                self._set_meta("chain_head", f"0:{GENESIS_HASH}")

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, holding the write lock from the start. Nested calls join."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- events

    def append_events(self, drafts: Iterable[EventDraft], at: str | None = None) -> list[Event]:
        """Append events in order, linking each into the chain; moves messages with a state.

        Events appended together are committed together, and carry one time: `at`, or now.
        """
        drafts = list(drafts)
        with self.transaction():
            rows = self._append_rows(
                [(d.kind, d.campaign_id, d.volunteer_id, d.message_id, d.data) for d in drafts], at
            )
            state_updates = [
                (d.state, row[1], d.message_id)
                for d, row in zip(drafts, rows, strict=True)
                if d.state is not None and d.message_id is not None
            ]
            if state_updates:
                self.conn.executemany(
                    "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
                    state_updates,
                )
        return [
            Event(seq, when, d.kind, d.campaign_id, d.volunteer_id, d.message_id, d.data, prev, h)
            for d, (seq, when, _k, _c, _v, _m, _j, prev, h) in zip(drafts, rows, strict=True)
        ]

    def _append_rows(self, items: Sequence[_EventItem], at: str | None) -> list[_EventRow]:
        """Link (kind, campaign_id, volunteer_id, message_id, data) items into the chain and
        insert them; the rows written. Within a transaction.

        Sending appends two events a message, so this is lean: no dataclasses, one time for
        the batch, and the data encoded once for both the row and the hash. The hashed text
        is event_hash()'s canonical JSON written out in its sorted key order;
        tests/test_ledger_append.py holds the two to the same result.
        """
        head = self.get_meta("chain_head") or f"0:{GENESIS_HASH}"
        seq_text, prev_hash = head.split(":", 1)
        seq = int(seq_text)
        when = at or utc_now()
        at_json = _json_text(when)
        encode = _CANONICAL_ENCODER.encode
        sha256 = hashlib.sha256
        rows: list[_EventRow] = []
        for kind, campaign_id, volunteer_id, message_id, data in items:
            seq += 1
            data_json = encode(data) if data else "{}"  # `queued` events carry no data
            content = (
                f'{{"at":{at_json},"campaign_id":{_json_text(campaign_id)},"data":{data_json},'
                f'"kind":{_json_text(kind)},"message_id":{_json_text(message_id)},"seq":{seq},'
                f'"volunteer_id":{_json_text(volunteer_id)}}}'
            )
            digest = sha256(f"{prev_hash}\n{content}".encode()).hexdigest()
            row = (seq, when, kind, campaign_id, volunteer_id, message_id, data_json)
            rows.append((*row, prev_hash, digest))
            prev_hash = digest
        self.conn.executemany(
            "INSERT INTO events(seq, at, kind, campaign_id, volunteer_id, message_id, data,"
            " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._set_meta("chain_head", f"{seq}:{prev_hash}")
        return rows

    def append_event(self, draft: EventDraft) -> Event:
        return self.append_events([draft])[0]

    def events(
        self,
        *,
        volunteer_id: str | None = None,
        campaign_id: str | None = None,
        message_id: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """Events in chain order, filtered by any of the given attributes."""
        clauses, params = [], []
        for column, value in (
            ("volunteer_id", volunteer_id),
            ("campaign_id", campaign_id),
            ("message_id", message_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            params.extend(kinds)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # Only fixed column names are joined into the SQL; values go in as parameters.
        sql = f"SELECT {EVENT_COLUMNS} FROM events {where} ORDER BY seq"  # noqa: S608
        cursor = self.conn.execute(sql, params)
        for row in cursor:
            yield Event(
                row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7], row[8]
            )

    def verify(self) -> VerifyResult:
        """Walk the chain and report the first event whose link or content does not hold."""
        prev_hash = GENESIS_HASH
        expected_seq = 0
        cursor = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"  # noqa: S608
        )
        for row in cursor:
            seq, at, kind, campaign_id, volunteer_id, message_id, data_text, stored_prev, stored = (
                row
            )
            expected_seq += 1
            if seq != expected_seq:
                return VerifyResult(
                    False,
                    expected_seq - 1,
                    prev_hash,
                    expected_seq,
                    f"event {expected_seq} is missing (next is {seq}): deleted or reordered",
                )
            if stored_prev != prev_hash:
                return VerifyResult(
                    False,
                    seq - 1,
                    prev_hash,
                    seq,
                    f"event {seq} does not link to event {seq - 1}: an event was deleted, "
                    "inserted or reordered",
                )
            try:
                data = json.loads(data_text)
            except (TypeError, ValueError):
                return VerifyResult(
                    False, seq - 1, prev_hash, seq, f"event {seq} has unreadable data"
                )
            recomputed = event_hash(
                prev_hash,
                seq,
                at,
                _hashed_fields(kind, campaign_id, volunteer_id, message_id, data),
            )
            if recomputed != stored:
                return VerifyResult(
                    False,
                    seq - 1,
                    prev_hash,
                    seq,
                    f"event {seq} ({kind}) was edited after it was written",
                )
            prev_hash = stored
        head = self.get_meta("chain_head") or f"0:{GENESIS_HASH}"
        if head != f"{expected_seq}:{prev_hash}":
            return VerifyResult(
                False,
                expected_seq,
                prev_hash,
                expected_seq + 1,
                f"the chain ends at event {expected_seq} but the ledger recorded its head as "
                f"event {head.split(':', 1)[0]}: events at the end were deleted",
            )
        return VerifyResult(True, expected_seq, prev_hash)

    # -- volunteers

    def volunteers(
        self, *, exposure: str | None = None, locale: str | None = None
    ) -> Iterator[Volunteer]:
        """Volunteers in roster order (by id), optionally filtered."""
        where: dict[str, str] = {}
        if exposure:
            where["exposure"] = exposure
        if locale:
            where["locale"] = locale
        clause = " AND ".join(f"{k} = :{k}" for k in where) or None
        for row in self.db.table("volunteers").rows_where(clause, where, order_by="volunteer_id"):
            yield volunteer_from_row(row)

    def get_volunteer(self, id_or_email: str) -> Volunteer:
        """Find one volunteer by id, or by address (case-insensitive)."""
        key = id_or_email.strip()
        rows = list(self.db.table("volunteers").rows_where("volunteer_id = ?", [key]))
        if not rows:
            rows = list(
                self.db.table("volunteers").rows_where(
                    "lower(email) = lower(?) OR lower(email_ascii) = lower(?)", [key, key]
                )
            )
        if not rows:
            raise VolunteerNotFound(
                f"no volunteer with id or address {key!r}",
                file=self.path,
                hint="list them with: notifier roster list",
            )
        return volunteer_from_row(rows[0])

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0])  # noqa: S608

    # -- roster imports

    def record_import(
        self, result: RosterResult, *, mapping_sha256: str = "", strict: bool = False
    ) -> ImportSummary:
        """Record one roster import: the import, its rejected rows, volunteer changes, events.

        All in one transaction. An import adds and updates volunteers; it never deletes one
        (a person missing from a later roster was still told, or still needs telling).
        Re-importing the file last imported, when that would change no volunteer, writes
        nothing and says so (already_imported).
        """
        with self.transaction():
            existing = self._volunteer_rows()
            accepted, conflicts = _ledger_conflicts(result, existing)
            problems = tuple(sorted((*result.problems, *conflicts), key=lambda p: p.row))
            rejected = len({p.row for p in problems})
            refused = strict and bool(problems)
            added: list[_Added] = []
            updated: list[_Updated] = []
            unchanged = 0
            for row, volunteer in accepted:
                old = existing.get(volunteer.volunteer_id)
                if old is None:
                    added.append((row, volunteer))
                    continue
                values = volunteer_to_row(volunteer)
                diff = _volunteer_diff(old, values)
                if diff:
                    updated.append((row, volunteer, values, diff))
                else:
                    unchanged += 1
            if refused:
                added, updated, unchanged = [], [], 0

            latest = self.latest_import()
            if (
                latest is not None
                and latest.sha256 == result.sha256
                and latest.mapping_sha256 == mapping_sha256
                and not added
                and not updated
            ):
                return ImportSummary(
                    import_id=latest.import_id,
                    added=0,
                    updated=0,
                    unchanged=unchanged,
                    rejected=rejected,
                    changes=(),
                    already_imported=True,
                    problems=problems,
                    refused=refused,
                )

            now = utc_now()
            counts = {
                "rows_total": result.rows_total,
                "rows_valid": result.rows_total - rejected,
                "rows_rejected": rejected,
                "added": len(added),
                "updated": len(updated),
                "unchanged": unchanged,
            }
            cursor = self.conn.execute(
                "INSERT INTO imports(file_name, sha256, mapping_sha256, encoding, imported_at,"
                " rows_total, rows_valid, rows_rejected, added, updated, unchanged)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(result.file),
                    result.sha256,
                    mapping_sha256,
                    result.encoding,
                    now,
                    *counts.values(),
                ),
            )
            import_id = int(cursor.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO rejected_rows(import_id, [row], [column], value, reason, field)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(import_id, p.row, p.column, p.value, p.reason, p.field) for p in problems],
            )
            self._write_volunteers(import_id, now, added, updated)

            drafts = [
                EventDraft(
                    "roster_imported",
                    data={
                        "import_id": import_id,
                        "file": result.file.name,
                        "sha256": result.sha256,
                        "mapping_sha256": mapping_sha256,
                        "encoding": result.encoding,
                        "strict": strict,
                        "applied": not refused,
                        **counts,
                    },
                )
            ]
            drafts.extend(
                EventDraft(
                    "volunteer_added",
                    volunteer_id=v.volunteer_id,
                    # The address as imported, under the chain's protection; the rest of
                    # the person's record is in the volunteers table.
                    data={"import_id": import_id, "row": row, "email": v.email},
                )
                for row, v in added
            )
            drafts.extend(
                EventDraft(
                    "volunteer_updated",
                    volunteer_id=v.volunteer_id,
                    data={
                        "import_id": import_id,
                        "row": row,
                        "changes": {f: {"old": o, "new": n} for f, (o, n) in diff.items()},
                    },
                )
                for row, v, _, diff in updated
            )
            drafts.extend(
                EventDraft(
                    "row_rejected",
                    data={
                        "import_id": import_id,
                        "row": p.row,
                        "column": p.column,
                        "value": p.value,
                        "reason": p.reason,
                    },
                )
                for p in problems
            )
            self.append_events(drafts, at=now)
        changes = tuple(
            (v.volunteer_id, f, o, n) for _, v, _, diff in updated for f, (o, n) in diff.items()
        )
        return ImportSummary(
            import_id=import_id,
            added=len(added),
            updated=len(updated),
            unchanged=unchanged,
            rejected=rejected,
            changes=changes,
            already_imported=False,
            problems=problems,
            refused=refused,
        )

    def _volunteer_rows(self) -> dict[str, tuple[Any, ...]]:
        """volunteer_id -> the _COMPARED_FIELDS values, for every volunteer in the ledger."""
        cursor = self.conn.execute(
            f"SELECT volunteer_id, {', '.join(_COMPARED_FIELDS)} FROM volunteers"  # noqa: S608
        )
        return {row[0]: row[1:] for row in cursor}

    def _write_volunteers(
        self, import_id: int, now: str, added: Sequence[_Added], updated: Sequence[_Updated]
    ) -> None:
        # Only fixed column names are joined into the SQL; values go in as parameters.
        columns = ("volunteer_id", *_COMPARED_FIELDS, "import_id", "source_row")
        placeholders = ", ".join("?" for _ in columns)
        self.conn.executemany(
            f"INSERT INTO volunteers({', '.join(columns)}, created_at, updated_at)"  # noqa: S608
            f" VALUES ({placeholders}, ?, ?)",
            # A generator: rows are made as SQLite takes them, never all held at once.
            (_insert_params(v, import_id, row, now) for row, v in added),
        )
        # Two volunteers may swap addresses in one import; park the changing addresses
        # first so the unique index on email never sees a transient clash.
        self.conn.executemany(
            "UPDATE volunteers SET email = ? WHERE volunteer_id = ?",
            [
                (f"\x00moving:{v.volunteer_id}", v.volunteer_id)
                for _, v, _, diff in updated
                if "email" in diff
            ],
        )
        # Set only the changed columns (grouped by which changed): rewriting an unchanged
        # indexed column would still cost an index update.
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row, v, values, diff in updated:
            changed = tuple(c for c in _COMPARED_FIELDS if c in diff)
            groups.setdefault(changed, []).append(
                (*(values[c] for c in changed), import_id, row, now, v.volunteer_id)
            )
        for changed, params in groups.items():
            assignments = ", ".join(f"{c} = ?" for c in changed)
            self.conn.executemany(
                f"UPDATE volunteers SET {assignments}, import_id = ?, source_row = ?,"  # noqa: S608
                " updated_at = ? WHERE volunteer_id = ?",
                params,
            )

    def latest_import(self) -> ImportRecord | None:
        """The most recent roster import recorded, if any."""
        row = self.conn.execute(
            "SELECT id, file_name, sha256, mapping_sha256, encoding, imported_at, rows_total,"
            " rows_valid, rows_rejected, added, updated, unchanged"
            " FROM imports ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else ImportRecord(*row)

    def rejected_rows(self, import_id: int | None = None) -> list[RowProblem]:
        """The problems recorded for one import (default: the latest), in row order."""
        if import_id is None:
            latest = self.latest_import()
            if latest is None:
                return []
            import_id = latest.import_id
        cursor = self.conn.execute(
            "SELECT [row], [column], value, reason, field FROM rejected_rows"
            " WHERE import_id = ? ORDER BY [row], id",
            (import_id,),
        )
        return [RowProblem(*row) for row in cursor]

    # -- end of roster imports

    # -- messages and delivery
    #
    # Write-ahead intent: a message is committed as `sending` (claim_for_sending) before
    # its bytes go to the server, and as sent/deferred/failed (record_outcomes) after. A
    # message found in `sending` by a later run was in flight when a run died: nobody
    # knows whether the server took it, so mark_uncertain() says so instead of guessing.

    def register_campaign(
        self,
        campaign_id: str,
        *,
        title: str,
        follows: str | None,
        definition: dict[str, Any],
        templates_sha256: str,
    ) -> bool:
        """Record a campaign the first time it is sent; True if it was new."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT templates_sha256 FROM campaigns WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()
            if row is not None:
                if row[0] != templates_sha256:
                    logging.getLogger(__name__).warning(
                        "campaign %s: templates changed since it was first sent "
                        "(sha256 %s, now %s)",
                        campaign_id,
                        row[0],
                        templates_sha256,
                    )
                return False
            now = utc_now()
            self.conn.execute(
                "INSERT INTO campaigns(campaign_id, title, follows, definition, templates_sha256,"
                " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (campaign_id, title, follows, canonical_json(definition), templates_sha256, now),
            )
            self.append_events(
                [
                    EventDraft(
                        "campaign_registered",
                        campaign_id=campaign_id,
                        data={"title": title, "templates_sha256": templates_sha256},
                    )
                ],
                at=now,
            )
        return True

    def ensure_messages(self, campaign_id: str, messages: Iterable[NewMessage]) -> int:
        """Register each message as pending (a `queued` event) unless it exists; count new."""
        with self.transaction():
            known = {
                row[0]
                for row in self.conn.execute(
                    "SELECT message_id FROM messages WHERE campaign_id = ?", (campaign_id,)
                )
            }
            new = [m for m in messages if m.message_id not in known]
            if not new:
                return 0
            now = utc_now()
            self.conn.executemany(
                "INSERT INTO messages(message_id, campaign_id, volunteer_id, verp_token, state,"
                " attempts, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?)",
                [(m.message_id, campaign_id, m.volunteer_id, m.verp_token, now) for m in new],
            )
            # Inserted as pending above: the events need not move them.
            self._append_rows(
                [("queued", campaign_id, m.volunteer_id, m.message_id, {}) for m in new], now
            )
        return len(new)

    def claim_for_sending(self, message_ids: Sequence[str]) -> dict[str, int]:
        """Mark messages `sending` in one committed transaction; returns each one's attempt.

        Call it before the bytes go out: a crash after this leaves the messages `sending`,
        which the next run reports as uncertain rather than sending them twice.
        """
        if not message_ids:
            return {}
        attempts: dict[str, int] = {}
        items: list[_EventItem] = []
        with self.transaction():
            # SQLite limits the number of parameters in one statement.
            for start in range(0, len(message_ids), 500):
                chunk = list(message_ids[start : start + 500])
                marks = ", ".join("?" for _ in chunk)
                rows = self.conn.execute(
                    "SELECT message_id, campaign_id, volunteer_id, attempts FROM messages"  # noqa: S608
                    f" WHERE message_id IN ({marks})",
                    chunk,
                ).fetchall()
                for message_id, campaign_id, volunteer_id, done in rows:
                    attempt = int(done or 0) + 1
                    attempts[message_id] = attempt
                    items.append(
                        ("sending", campaign_id, volunteer_id, message_id, {"attempt": attempt})
                    )
            missing = set(message_ids) - attempts.keys()
            if missing:
                raise LedgerError(f"no such message in the ledger: {sorted(missing)[0]}")
            when = self._append_rows(items, None)[0][1]
            # The state, the attempt and the time in one statement a message.
            self.conn.executemany(
                "UPDATE messages SET state = 'sending', attempts = ?, updated_at = ?"
                " WHERE message_id = ?",
                [(attempt, when, message_id) for message_id, attempt in attempts.items()],
            )
        return attempts

    def record_outcomes(self, outcomes: Iterable[DeliveryOutcome]) -> int:
        """Append one event per outcome (kind = new state) and keep the server's reply."""
        outcomes = list(outcomes)
        if not outcomes:
            return 0
        with self.transaction():
            rows = self._append_rows(
                [
                    (o.state, o.campaign_id, o.volunteer_id, o.message_id, o.event_data())
                    for o in outcomes
                ],
                None,
            )
            when = rows[0][1]
            # One statement a message: the state, and the reply when there is one (a
            # message's earlier reply stays when this outcome has none).
            self.conn.executemany(
                "UPDATE messages SET state = ?, updated_at = ?, smtp_reply = ?, queue_id = ?"
                " WHERE message_id = ?",
                [
                    (o.state, when, o.reply or o.reason, o.queue_id, o.message_id)
                    for o in outcomes
                    if o.reply or o.reason
                ],
            )
            self.conn.executemany(
                "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
                [(o.state, when, o.message_id) for o in outcomes if not (o.reply or o.reason)],
            )
        return len(outcomes)

    def mark_uncertain(self, campaign_id: str) -> list[MessageRow]:
        """Messages left `sending` by a run that died: move them to `uncertain`, with an event."""
        with self.transaction():
            stuck = self.campaign_messages(campaign_id, states=("sending",))
            if stuck:
                self.append_events(
                    EventDraft(
                        "uncertain",
                        campaign_id=campaign_id,
                        volunteer_id=m.volunteer_id,
                        message_id=m.message_id,
                        data={
                            "attempt": m.attempts,
                            "reason": "a send stopped while this message was in flight: "
                            "the server may or may not have it",
                        },
                        state="uncertain",
                    )
                    for m in stuck
                )
        return stuck

    def campaign_messages(
        self, campaign_id: str, *, states: Sequence[str] | None = None
    ) -> list[MessageRow]:
        """A campaign's messages with their recipients, in volunteer order."""
        sql = (
            "SELECT m.message_id, m.campaign_id, m.volunteer_id, m.verp_token, m.state,"
            " m.attempts, v.email, m.smtp_reply, m.queue_id"
            " FROM messages m JOIN volunteers v ON v.volunteer_id = m.volunteer_id"
            " WHERE m.campaign_id = ?"
        )
        params: list[Any] = [campaign_id]
        if states is not None:
            # Only placeholders are joined into the SQL; the states go in as parameters.
            sql += f" AND m.state IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        sql += " ORDER BY m.volunteer_id"
        return [
            MessageRow(
                message_id=row[0],
                campaign_id=row[1],
                volunteer_id=row[2],
                verp_token=row[3] or "",
                state=row[4],
                attempts=int(row[5] or 0),
                email=row[6],
                smtp_reply=row[7] or "",
                queue_id=row[8] or "",
            )
            for row in self.conn.execute(sql, params)
        ]

    def message_states(self, campaign_id: str) -> dict[str, str]:
        """volunteer_id -> state of the campaign's messages (volunteers without one left out)."""
        return {
            str(volunteer_id): str(state)
            for volunteer_id, state in self.conn.execute(
                "SELECT volunteer_id, state FROM messages WHERE campaign_id = ?", (campaign_id,)
            )
        }

    def uncertain_messages(self, campaign_id: str) -> list[MessageRow]:
        """Messages whose outcome is unknown after a crash (still to be decided on)."""
        return self.campaign_messages(campaign_id, states=("uncertain", "sending"))

    def state_counts(self, campaign_id: str) -> dict[str, int]:
        """Number of the campaign's messages in each state (states with none are left out)."""
        return {
            state: int(n)
            for state, n in self.conn.execute(
                "SELECT state, count(*) FROM messages WHERE campaign_id = ? GROUP BY state"
                " ORDER BY state",
                (campaign_id,),
            )
        }

    def campaign_is_registered(self, campaign_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM campaigns WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()
        return row is not None

    def suppressed(self, email: str) -> bool:
        """True when the address is on the suppression list (hard bounce), any case."""
        row = self.conn.execute(
            "SELECT 1 FROM suppressions WHERE lower(email) = lower(?)", (email,)
        ).fetchone()
        return row is not None

    def suppressed_addresses(self) -> set[str]:
        """The whole suppression list, lowercased, for checking many addresses at once."""
        return {str(row[0]).lower() for row in self.conn.execute("SELECT email FROM suppressions")}

    # -- end of messages and delivery


def volunteer_from_row(row: dict[str, Any]) -> Volunteer:
    return Volunteer(
        volunteer_id=row["volunteer_id"],
        email=row["email"],
        email_ascii=row["email_ascii"] or row["email"],
        family_name=row["family_name"],
        given_name=row["given_name"] or "",
        locale=row["locale"],
        exposure=row["exposure"],
        data_held=tuple(x for x in (row["data_held"] or "").split(";") if x),
        postal_address=row["postal_address"] or "",
        extra=json.loads(row["extra"] or "{}"),
    )


def volunteer_to_row(v: Volunteer) -> dict[str, Any]:
    return {
        "volunteer_id": v.volunteer_id,
        "email": v.email,
        "email_ascii": v.email_ascii,
        "family_name": v.family_name,
        "given_name": v.given_name,
        "locale": v.locale,
        "exposure": v.exposure,
        "data_held": ";".join(v.data_held),
        "postal_address": v.postal_address,
        "extra": canonical_json(dict(v.extra)),
    }


# -- roster imports: comparing and checking against what the ledger holds

# The volunteer columns an import writes and compares, in volunteer_to_row() order.
_COMPARED_FIELDS: tuple[str, ...] = (
    "email",
    "email_ascii",
    "family_name",
    "given_name",
    "locale",
    "exposure",
    "data_held",
    "postal_address",
    "extra",
)


# (spreadsheet row, volunteer); an update adds its volunteer_to_row() values and the diff.
_Added = tuple[int, Volunteer]
_Updated = tuple[int, Volunteer, dict[str, Any], dict[str, tuple[str, str]]]


def _insert_params(v: Volunteer, import_id: int, row: int, now: str) -> tuple[Any, ...]:
    values = volunteer_to_row(v)
    return (v.volunteer_id, *(values[c] for c in _COMPARED_FIELDS), import_id, row, now, now)


def _volunteer_diff(old: tuple[Any, ...], new: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """field -> (old, new) for each field that differs; NULL reads as empty."""
    diff: dict[str, tuple[str, str]] = {}
    for name, stored in zip(_COMPARED_FIELDS, old, strict=True):
        before = stored or ("{}" if name == "extra" else "")
        if before != new[name]:
            diff[name] = (str(before), str(new[name]))
    return diff


def _ledger_conflicts(
    result: RosterResult, existing: dict[str, tuple[Any, ...]]
) -> tuple[list[tuple[int, Volunteer]], list[RowProblem]]:
    """Accepted rows the ledger can take, and problems for those whose address belongs to
    another volunteer_id already in the ledger (e.g. a roster that now carries its own ids)."""
    # The email is the first of the _COMPARED_FIELDS values.
    owner = {str(row[0]).casefold(): vid for vid, row in existing.items() if row[0]}
    if not owner:  # a first import: the roster already refused duplicates within the file
        return [(a.row, a.volunteer) for a in result.accepted], []
    # Addresses of volunteers updated by this import are about to move, so free them first.
    for accepted in result.accepted:
        old = existing.get(accepted.volunteer.volunteer_id)
        if old is not None and old[0]:
            owner.pop(str(old[0]).casefold(), None)
    ok: list[tuple[int, Volunteer]] = []
    problems: list[RowProblem] = []
    for accepted in result.accepted:
        v = accepted.volunteer
        key = v.email.casefold()
        holder = owner.setdefault(key, v.volunteer_id)
        if holder != v.volunteer_id:
            problems.append(
                RowProblem(
                    accepted.row,
                    result.headers.get("email", "email"),
                    v.email,
                    f"already in the ledger as volunteer {holder}: one address, one volunteer",
                    "email",
                )
            )
        else:
            ok.append((accepted.row, v))
    return ok, problems


def _create_private_file(path: Path) -> None:
    """Create the ledger readable by its owner only: it holds personal data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
