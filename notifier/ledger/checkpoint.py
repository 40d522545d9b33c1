"""Checkpoints: how far the chain was verified, written into the chain itself.

A send must not mail from a ledger edited behind the chain's back, but walking a chain of
four million events takes half a minute before the first message. So a send verifies
only what is new: after it (or an earlier send) verified the chain up to event T, it
appends a `ledger_verified` event saying `{"through": T, "hash": <event T's hash>}`. The
next send finds the latest such event (one index lookup: it names no campaign), checks
that event T still has that hash, and walks the chain from T + 1 to the head, which
includes the checkpoint event itself.

Why a checkpoint cannot be forged or moved: it is an ordinary chained event, so its
hash is the keyed MAC (HMAC-SHA256 under the ledger's chain key) of its content and of
the event before it. Someone who edits its `through` or `hash`, or appends one of their
own, cannot make that MAC without the key file, and the walk from T + 1 finds it. Deleting
the latest checkpoint makes the previous one (or none: the whole chain) the starting
point, and that walk finds the hole it left.

The trade-off, and why it is safe enough: events *before* the checkpoint are not walked
again by a send. An edit to one of them (which breaks its MAC, as no key is at hand) is
found by `notifier ledger verify`, and by `report`, which verifies the whole chain; it
is not found by a send. What a send reads to decide whom to mail and how is checked as it
is read instead: the small tables it reads whole (the suppression list, the campaigns,
the meta keys) at the start (projections.small_tables_differ), and each chunk's
volunteer rows (their addresses) and message rows (the states it claims from) in the
transaction that queues the chunk's messages, before any of them is claimed
(projections.rows_differ; a message that very transaction registered, its row and its
`queued` event written together under the ledger's lock, is not read back, and is
registered only if the chain holds no event of the campaign's message to that person:
a row deleted to have someone mailed again is found there, messages.ensure). A tampered
row of those tables is caught either way; a tampered old event, and rows the send does
not read (another campaign's messages, the rejected rows, the imports, the kept
reports), only by a full verification.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace

from notifier.event import EventKind
from notifier.ledger import chain, projections
from notifier.ledger.chain import EventDraft, VerifyResult


@dataclass(frozen=True)
class Checkpoint:
    seq: int  # the `ledger_verified` event's own position
    through: int  # the chain was verified up to this event
    hash: str  # ... whose hash was this


def latest(conn: sqlite3.Connection) -> Checkpoint | None:
    """The latest checkpoint, or None (never verified, or it was deleted). Its content is
    not trusted until `verify_since` has walked it."""
    row = conn.execute(
        "SELECT seq, data FROM events WHERE campaign_id IS NULL AND kind = ?"
        " ORDER BY seq DESC LIMIT 1",
        (EventKind.LEDGER_VERIFIED.value,),
    ).fetchone()
    if row is None:
        return None
    try:
        data = json.loads(row[1])
    except (TypeError, ValueError):
        data = {}
    through, hash_ = data.get("through"), data.get("hash")
    if not isinstance(through, int) or not isinstance(hash_, str):
        return Checkpoint(int(row[0]), -1, "")  # unusable: verify_since says so
    return Checkpoint(int(row[0]), through, hash_)


def verify_since(conn: sqlite3.Connection, point: Checkpoint) -> VerifyResult:
    """The chain verified from the checkpoint on (see the module docstring). A checkpoint
    that does not hold is a failure, never a reason to trust less: it was edited."""
    stored = chain.event_hash_at(conn, point.through) if 0 < point.through < point.seq else None
    if stored is None or stored != point.hash:
        return VerifyResult(
            False,
            point.seq - 1,
            "",
            point.seq,
            f"event {point.seq} ({EventKind.LEDGER_VERIFIED}) does not match the chain: "
            "it was edited, or an event it vouches for was",
        )
    result = chain.verify(conn, after=(point.through, point.hash))
    if not result.ok:
        return result
    difference = projections.small_tables_differ(conn)
    return replace(result, ok=False, reason=difference) if difference else result


def record(conn: sqlite3.Connection, verified: VerifyResult) -> None:
    """Append a checkpoint for a verification that passed (within a transaction), unless
    nothing but the last checkpoint was appended since the one before."""
    if not verified.ok or verified.events == 0:
        return
    last = latest(conn)
    if last is not None and last.seq >= verified.events and last.through >= verified.events - 1:
        return
    chain.append(
        conn,
        [
            EventDraft(
                EventKind.LEDGER_VERIFIED,
                data={"through": verified.events, "hash": verified.head},
            )
        ],
    )
