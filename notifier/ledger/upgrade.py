"""`notifier ledger upgrade`: carrying a ledger written before keyed hashes forward.

An old ledger's chain was hashed with plain SHA-256, and its tables were not all vouched
for by events. Upgrading is one explicit, recorded step, in one transaction:

1. the old chain is checked as it stands (a damaged one is refused: restore a backup),
   and so is that it really is old: a ledger that records a key fingerprint, or holds
   any event only a keyed notifier writes (chain.keyed_sign), is a keyed ledger whose
   hashes someone recomputed without the key. It is refused, never re-keyed: re-keying
   would launder the rewrite (`ledger verify` reports it as tampered);
2. the key file is read (an old send made it, for VERP tokens) or, if there is none,
   made; its fingerprint goes into the ledger;
3. every event is re-hashed under the chain key (`chain.rekey`);
4. a `ledger_upgraded` event records the old head (`SEQ:HASH`), so an anchor written
   down before still ties to this ledger, followed by one `*_adopted` event for each row
   of volunteers, messages, suppressions, rejected rows, imports, campaigns and kept
   delivery reports: from here on the chain vouches for them as they stood.

VERP tokens made before were keyed with the raw key: the `ledger_upgraded` event says
whether the old key file was kept (`key_created` false), and then the raw key still
authenticates them (`tokens_use_raw_key`), so genuine bounces of old campaigns match.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

from notifier.errors import LedgerError
from notifier.event import EventKind
from notifier.ledger import chain, schema
from notifier.ledger.campaigns import definition_sha256
from notifier.ledger.chain import EventDraft
from notifier.ledger.projections import volunteer_row_sha256
from notifier.secret import Purpose, create_secret, read_secret
from notifier.volunteer import TEXT_FIELDS

K = EventKind


@dataclass(frozen=True)
class Upgraded:
    old_head: str
    events: int  # re-hashed
    adopted: int  # table rows now vouched for by an event
    key_created: bool
    new_head: str


def upgrade(conn: sqlite3.Connection, key_file: Path) -> Upgraded | None:
    """Re-key an unkeyed ledger (see the module docstring). Within a transaction."""
    if chain.is_keyed(conn):
        return None
    checked = chain.verify(conn, legacy=True)
    if not checked.ok:
        raise LedgerError(
            f"this ledger cannot be upgraded: {checked.reason}",
            hint="restore the ledger from a backup taken before the damage; nothing was changed",
        )
    key_created = not key_file.exists()
    secret = create_secret(key_file) if key_created else read_secret(key_file)
    mac = chain.mac_for_key(secret.derive(Purpose.CHAIN))
    old_head, count = chain.rekey(conn, mac)
    schema.write_meta(conn, "key_fingerprint", secret.fingerprint)
    if isinstance(conn, chain.ChainConnection):
        conn._mac = mac
    drafts = [
        EventDraft(
            K.LEDGER_UPGRADED,
            data={
                "old_head": old_head,
                "old_format": "sha256",
                "key_fingerprint": secret.fingerprint,
                "key_created": key_created,
                "events_rehashed": count,
            },
        ),
        *adoptions(conn),
    ]
    chain.append(conn, drafts)
    return Upgraded(old_head, count, len(drafts) - 1, key_created, chain.head_text(conn))


def tokens_use_raw_key(conn: sqlite3.Connection) -> bool:
    """Whether this ledger's VERP tokens are keyed with the raw key (an upgraded ledger
    that kept its old key file): the latest `ledger_upgraded` event says so."""
    row = conn.execute(
        "SELECT data FROM events WHERE campaign_id IS NULL AND kind = ? ORDER BY seq DESC LIMIT 1",
        (K.LEDGER_UPGRADED,),
    ).fetchone()
    return row is not None and json.loads(row["data"]).get("key_created") is False


def adoptions(conn: sqlite3.Connection) -> list[EventDraft]:
    """One event for each row of every table, vouching for it as it stands."""
    drafts = [
        EventDraft(
            K.VOLUNTEER_ADOPTED,
            volunteer_id=row["volunteer_id"],
            data={
                "row_sha256": volunteer_row_sha256(
                    row["volunteer_id"], [row[f] for f in TEXT_FIELDS]
                ),
                "source_import_id": row["import_id"],
                "source_row": row["source_row"],
            },
        )
        for row in conn.execute(
            f"SELECT volunteer_id, import_id, source_row, {', '.join(TEXT_FIELDS)}"  # noqa: S608
            " FROM volunteers ORDER BY volunteer_id"
        )
    ]
    drafts += [
        EventDraft(
            K.MESSAGE_ADOPTED,
            row["campaign_id"],
            row["volunteer_id"],
            row["message_id"],
            {"verp_token": row["verp_token"], "state": row["state"], "attempts": row["attempts"]},
        )
        for row in conn.execute(
            "SELECT message_id, campaign_id, volunteer_id, verp_token, state, attempts"
            " FROM messages ORDER BY message_id"
        )
    ]
    drafts += [
        EventDraft(
            K.SUPPRESSION_ADOPTED,
            data={"email": row["email"], "reason": row["reason"], "bounce_seq": row["event_seq"]},
        )
        for row in conn.execute("SELECT email, reason, event_seq FROM suppressions ORDER BY email")
    ]
    drafts += [
        EventDraft(
            K.REJECTED_ROW_ADOPTED,
            data={
                "import_id": row["import_id"],
                "row": row["row"],
                "column": row["column"],
                "value": row["value"],
                "reason": row["reason"],
                "field": row["field"],
            },
        )
        for row in conn.execute(
            "SELECT import_id, [row], [column], value, reason, field FROM rejected_rows ORDER BY id"
        )
    ]
    drafts += [
        EventDraft(
            K.IMPORT_ADOPTED,
            data={
                "import_id": row["id"],
                "file_name": row["file_name"] or "",
                "file": PurePath(row["file_name"] or "").name,
                "imported_at": row["imported_at"],
                **{column: row[column] for column in schema.IMPORT_FACTS},
            },
        )
        for row in conn.execute("SELECT * FROM imports ORDER BY id")
    ]
    drafts += [
        EventDraft(
            K.CAMPAIGN_ADOPTED,
            campaign_id=row["campaign_id"],
            data={
                "title": row["title"],
                "follows": row["follows"],
                "templates_sha256": row["templates_sha256"],
                "definition_sha256": definition_sha256(row["definition"] or ""),
                "registered_at": row["registered_at"],
            },
        )
        for row in conn.execute("SELECT * FROM campaigns ORDER BY campaign_id")
    ]
    drafts += report_adoptions(conn, conn.execute("SELECT * FROM bounce_reports ORDER BY sha256"))
    return drafts


def report_adoptions(conn: sqlite3.Connection, rows: Iterable[sqlite3.Row]) -> list[EventDraft]:
    """One event for each kept delivery report row given, vouching for it."""
    return [
        EventDraft(
            K.BOUNCE_REPORT_ADOPTED,
            data={
                "sha256": row["sha256"],
                "source": row["source"],
                "matched": bool(row["matched"]),
                "message_id": row["message_id"],
            },
        )
        for row in rows
    ]
