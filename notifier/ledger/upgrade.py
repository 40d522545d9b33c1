"""`notifier ledger upgrade`: carrying a ledger written before keyed hashes forward.

An old ledger's chain was hashed with plain SHA-256, and its tables were not all vouched
for by events. Upgrading is one explicit, recorded step, in one transaction:

1. the old chain is checked as it stands (a damaged one is refused: restore a backup);
2. the key file is read (an old send made it, for VERP tokens) or, if there is none,
   made; its fingerprint goes into the ledger;
3. every event is re-hashed under the chain key (`chain.rekey`);
4. a `ledger_upgraded` event records the old head (`SEQ:HASH`), so an anchor written
   down before still ties to this ledger, followed by one `*_adopted` event for each row
   of volunteers, messages, suppressions and rejected_rows: from here on the chain
   vouches for them as they stood when upgraded.

VERP tokens made before were keyed with the raw key: `meta.verp_key = raw` keeps them
valid, so genuine bounces of old campaigns still match.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from notifier.ledger import chain, schema
from notifier.ledger.chain import EventDraft
from notifier.ledger.projections import UPGRADED, volunteer_row_sha256
from notifier.secret import Purpose, create_secret, read_secret
from notifier.volunteer import TEXT_FIELDS

RAW_VERP_KEY = "raw"


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
    key_created = not key_file.exists()
    secret = create_secret(key_file) if key_created else read_secret(key_file)
    schema.write_meta(conn, "key_fingerprint", secret.fingerprint)
    if not key_created:
        schema.write_meta(conn, "verp_key", RAW_VERP_KEY)
    mac = chain.mac_for_key(secret.derive(Purpose.CHAIN))
    old_head, count = chain.rekey(conn, mac)
    if isinstance(conn, chain.ChainConnection):
        conn._mac = mac
    drafts = [
        EventDraft(
            UPGRADED,
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


def adoptions(conn: sqlite3.Connection) -> list[EventDraft]:
    drafts = [
        EventDraft(
            "volunteer_adopted",
            volunteer_id=row["volunteer_id"],
            data={
                "row_sha256": volunteer_row_sha256(
                    row["volunteer_id"], [row[f] for f in TEXT_FIELDS]
                )
            },
        )
        for row in conn.execute(
            f"SELECT volunteer_id, {', '.join(TEXT_FIELDS)} FROM volunteers"  # noqa: S608
            " ORDER BY volunteer_id"
        )
    ]
    drafts += [
        EventDraft(
            "message_adopted",
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
            "suppression_adopted",
            data={"email": row["email"], "reason": row["reason"], "bounce_seq": row["event_seq"]},
        )
        for row in conn.execute("SELECT email, reason, event_seq FROM suppressions ORDER BY email")
    ]
    drafts += [
        EventDraft(
            "rejected_row_adopted",
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
    return drafts
