"""Campaigns as the ledger knows them: registered the first time one is sent.

The `campaign_registered` event carries everything the row holds (title, the campaign it
follows, the sha256 of its definition and of its templates; the event's time is the
registration's), so `ledger verify` finds a row edited after it was written.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from notifier.event import EventKind
from notifier.ledger.chain import EventDraft, append, canonical_json, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CampaignRecord:
    campaign_id: str
    title: str
    follows: str | None
    templates_sha256: str | None  # of the templates it was first sent with
    registered_at: str | None


def register(
    conn: sqlite3.Connection,
    campaign_id: str,
    *,
    title: str,
    follows: str | None,
    definition: dict[str, Any],
    templates_sha256: str,
) -> bool:
    """Record a campaign, with an event, unless it is known; True if it was new.

    Within a transaction. A known campaign whose templates changed since is only logged.
    """
    known = find(conn, campaign_id)
    if known is not None:
        if known.templates_sha256 != templates_sha256:
            log.warning(
                "campaign %s: templates changed since it was first sent (sha256 %s, now %s)",
                campaign_id,
                known.templates_sha256,
                templates_sha256,
            )
        return False
    now = utc_now()
    definition_json = canonical_json(definition)
    conn.execute(
        "INSERT INTO campaigns(campaign_id, title, follows, definition, templates_sha256,"
        " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        (campaign_id, title, follows, definition_json, templates_sha256, now),
    )
    append(
        conn,
        [
            EventDraft(
                EventKind.CAMPAIGN_REGISTERED,
                campaign_id=campaign_id,
                data={
                    "title": title,
                    "follows": follows,
                    "templates_sha256": templates_sha256,
                    "definition_sha256": definition_sha256(definition_json),
                },
            )
        ],
        now,
    )
    return True


def definition_sha256(definition_json: str) -> str:
    """What a registration's event says of the stored definition (its canonical JSON)."""
    return hashlib.sha256(definition_json.encode("utf-8")).hexdigest()


def ids(conn: sqlite3.Connection) -> list[str]:
    """The id of every campaign registered in the ledger, in id order."""
    return [
        row["campaign_id"]
        for row in conn.execute("SELECT campaign_id FROM campaigns ORDER BY campaign_id")
    ]


def find(conn: sqlite3.Connection, campaign_id: str) -> CampaignRecord | None:
    row = conn.execute(
        "SELECT campaign_id, title, follows, templates_sha256, registered_at"
        " FROM campaigns WHERE campaign_id = ?",
        (campaign_id,),
    ).fetchone()
    if row is None:
        return None
    return CampaignRecord(
        campaign_id=row["campaign_id"],
        title=row["title"] or "",
        follows=row["follows"],
        templates_sha256=row["templates_sha256"] or None,
        registered_at=row["registered_at"],
    )
