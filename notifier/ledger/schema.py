"""The ledger's tables, and the migrations that build them: forward only, one at a time.

`meta` holds the schema version (the number of migrations applied) and the chain head.
A migration is never edited once released: a change to the schema is a new migration, so
every ledger ever written can be brought forward, and one written by a newer notifier is
refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from notifier.errors import LedgerError

# The columns of `imports` that an import's event (`roster_imported`) repeats, so the chain
# vouches for them (notifier.ledger.projections).
IMPORT_FACTS: tuple[str, ...] = (
    "sha256",
    "mapping_sha256",
    "encoding",
    "rows_total",
    "rows_valid",
    "rows_rejected",
    "added",
    "updated",
    "unchanged",
)


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


def _migration_3(db: sqlite_utils.Database) -> None:
    """From here on every kept delivery report is vouched for by events naming it (and a
    send's lease lives in `meta`): no table changes. Reports kept before without an event
    (a matched report whose statuses said nothing understood) are adopted by the ledger
    as it opens (`Ledger`), in the chain."""


# The kinds of event that build a volunteer's row (notifier.ledger.projections), as the
# partial index of migration 4 names them: a query finds them through it only when its
# own `kind IN (...)` is this very text.
VOLUNTEER_FACT_KINDS = "'volunteer_added', 'volunteer_adopted', 'volunteer_updated'"


def _migration_4(db: sqlite_utils.Database) -> None:
    """An index of the events that build a volunteer's row, by volunteer. A send checks
    each chunk's rows against their events, and `ledger verify` compares the whole table:
    through the index of every event by volunteer they read each person's every event
    (a notice adds three) to keep the one or two that say who they are, from pages all
    over a large ledger's file. This index holds those few."""
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_events_volunteer_facts ON events(volunteer_id)"
        f" WHERE kind IN ({VOLUNTEER_FACT_KINDS})"
    )


# Events naming a message but no volunteer, as the partial index of migration 5 names
# them: notifier names the message's volunteer in every event about a message, so these
# are none at all, or a few from long ago (a query finds them through that index only
# when its own WHERE holds this very text).
MESSAGE_ONLY = "volunteer_id IS NULL AND message_id IS NOT NULL"


def _migration_5(db: sqlite_utils.Database) -> None:
    """A message's events are found through its volunteer, not through an index of every
    event by Message-ID. Message-IDs are keyed hashes in no order, so each message a send
    records wrote that index at a random place three times (queued, sending, sent): on a
    large ledger most of a send's writes and checkpoints, and a fifth of its rate. By
    volunteer, a send's events go in near one another (it sends in volunteer order), and
    a person has a handful of events. The few events naming a message but no volunteer
    keep an index of their own."""
    db.execute("DROP INDEX IF EXISTS idx_events_message_id")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_events_message_only ON events(message_id)"
        f" WHERE {MESSAGE_ONLY}"
    )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
)
SCHEMA_VERSION = len(MIGRATIONS)
# The oldest schema this version reads as it is where it cannot migrate (a read-only
# copy kept for a regulator, a read-only mount): the migrations after it only add
# indexes, which change how fast a query is answered, never what it answers.
READABLE_FROM = 3


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations applied to this ledger (0 for an empty file)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return 0
    value = read_meta(conn, "schema_version")
    return int(value) if value else 0


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Apply the migrations this ledger lacks, in order; the version it was at before.

    Call within a write transaction, so that two processes never migrate at once.
    """
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger schema version {current} is newer than this notifier "
            f"understands ({SCHEMA_VERSION})",
            file=path,
            hint="upgrade notifier; never edit a ledger by hand",
        )
    db = sqlite_utils.Database(conn)
    for version in range(current, SCHEMA_VERSION):
        MIGRATIONS[version](db)
        write_meta(conn, "schema_version", str(version + 1))
    return current


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
