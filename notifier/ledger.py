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
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from notifier.errors import LedgerError, VolunteerNotFound
from notifier.volunteer import Volunteer

DEFAULT_LEDGER = "notifier.db"
GENESIS_HASH = "0" * 64
EVENT_COLUMNS = "seq, at, kind, campaign_id, volunteer_id, message_id, data, prev_hash, hash"

# Message states. The lifecycle: pending -> sending -> sent | deferred -> ... ;
# the final ones tell whether the person was reached.
MESSAGE_STATES: tuple[str, ...] = (
    "pending",
    "sending",
    "sent",
    "deferred",
    "failed_temporary",
    "failed_permanent",
    "uncertain",
    "suppressed",
    "bounced_hard",
    "bounced_soft",
    "delayed",
    "delivered",
)


# Event kinds. For events about one message, the kind is also the state it moves the
# message to (EventDraft.state), so "what happened" and "where it stands" never disagree.
#   roster:    roster_imported, volunteer_added, volunteer_updated, row_rejected
#   campaign:  campaign_registered
#   message:   queued (-> pending), sending, sent, deferred, failed_temporary,
#              failed_permanent, uncertain, suppressed (skipped: address suppressed),
#              resend_requested
#   bounces:   bounced_hard, bounced_soft, delayed, delivered, bounce_forged,
#              bounce_unmatched, address_suppressed


def utc_now() -> str:
    """Event time: timezone-aware UTC, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migration_1,)
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
        """Append events in order, linking each into the chain; moves messages with a state."""
        appended: list[Event] = []
        with self.transaction():
            head = self.get_meta("chain_head") or f"0:{GENESIS_HASH}"
            seq_text, prev_hash = head.split(":", 1)
            seq = int(seq_text)
            rows = []
            state_updates = []
            for draft in drafts:
                seq += 1
                when = at or utc_now()
                hashed = _hashed_fields(
                    draft.kind, draft.campaign_id, draft.volunteer_id, draft.message_id, draft.data
                )
                digest = event_hash(prev_hash, seq, when, hashed)
                rows.append(
                    (
                        seq,
                        when,
                        draft.kind,
                        draft.campaign_id,
                        draft.volunteer_id,
                        draft.message_id,
                        canonical_json(draft.data),
                        prev_hash,
                        digest,
                    )
                )
                appended.append(
                    Event(
                        seq,
                        when,
                        draft.kind,
                        draft.campaign_id,
                        draft.volunteer_id,
                        draft.message_id,
                        draft.data,
                        prev_hash,
                        digest,
                    )
                )
                if draft.state is not None and draft.message_id is not None:
                    state_updates.append((draft.state, when, draft.message_id))
                prev_hash = digest
            self.conn.executemany(
                "INSERT INTO events(seq, at, kind, campaign_id, volunteer_id, message_id, data,"
                " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if state_updates:
                self.conn.executemany(
                    "UPDATE messages SET state = ?, updated_at = ? WHERE message_id = ?",
                    state_updates,
                )
            self._set_meta("chain_head", f"{seq}:{prev_hash}")
        return appended

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


def _create_private_file(path: Path) -> None:
    """Create the ledger readable by its owner only: it holds personal data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
