"""The hash chain: events are appended, never changed, and each one vouches for the last.

Each event stores the hash of the event before it, and its own hash covers that link plus
its canonical content (position, time, kind, the ids it names, its data), so an edit,
deletion, insertion or reordering is found by `verify()`. `meta.chain_head` records the
last event's position and hash, so events deleted at the end are found too.

There is one way to hash an event, `event_hash`, used both to append and to verify. It
writes out, in its sorted key order, the canonical JSON (`canonical_json`) of

    {"seq": seq, "at": at, "kind": kind, "campaign_id": campaign_id,
     "volunteer_id": volunteer_id, "message_id": message_id, "data": data}

without building that object: sending appends two events a message, so this is lean.
tests/ledger/test_chain.py holds it to the plain form above, and to hashes written before.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notifier.ledger.schema import read_meta, write_meta

GENESIS_HASH = "0" * 64
EVENT_COLUMNS = "seq, at, kind, campaign_id, volunteer_id, message_id, data, prev_hash, hash"


def utc_now() -> str:
    """Event time: timezone-aware UTC, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# One reusable encoder: json.dumps would build a new one per call, a cost on every event.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_encode_json_string: Callable[[str], str] = json.encoder.encode_basestring


def canonical_json(value: Any) -> str:
    """The one serialisation that event hashes are computed over."""
    return _CANONICAL_ENCODER.encode(value)


def _json_text(value: Any) -> str:
    """canonical_json() of a value, without the encoder's overhead for a string or None."""
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_json_string(value)
    return canonical_json(value)


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


@dataclass(frozen=True)
class Appended:
    """What one append wrote: `drafts` as the events first_seq, first_seq + 1, ..., all at `at`."""

    drafts: Sequence[EventDraft]
    at: str
    first_seq: int
    prev_hash: str  # what the first of them links to
    hashes: Sequence[str]  # each one's hash, in order

    def events(self) -> list[Event]:
        links = [self.prev_hash, *self.hashes]
        return [
            Event(
                self.first_seq + i,
                self.at,
                d.kind,
                d.campaign_id,
                d.volunteer_id,
                d.message_id,
                d.data,
                links[i],
                links[i + 1],
            )
            for i, d in enumerate(self.drafts)
        ]


def event_hash(
    prev_hash: str,
    seq: int,
    at: str,
    kind: str,
    campaign_id: str | None,
    volunteer_id: str | None,
    message_id: str | None,
    data_json: str,
) -> str:
    """The hash that links an event into the chain; covers position, time and content.

    `data_json` is canonical_json() of the event's data.
    """
    content = (
        f'{{"at":{_json_text(at)},"campaign_id":{_json_text(campaign_id)},"data":{data_json},'
        f'"kind":{_json_text(kind)},"message_id":{_json_text(message_id)},"seq":{seq},'
        f'"volunteer_id":{_json_text(volunteer_id)}}}'
    )
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def start(conn: sqlite3.Connection) -> None:
    """Record the empty chain's head in a new ledger."""
    write_meta(conn, "chain_head", f"0:{GENESIS_HASH}")


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The position and hash of the last event (0 and the genesis hash when there is none)."""
    seq, prev_hash = _head_text(conn).split(":", 1)
    return int(seq), prev_hash


def _head_text(conn: sqlite3.Connection) -> str:
    return read_meta(conn, "chain_head") or f"0:{GENESIS_HASH}"


def append(
    conn: sqlite3.Connection, drafts: Sequence[EventDraft], at: str | None = None
) -> Appended:
    """Link the drafts into the chain, in order, and insert them. Within a transaction.

    Events appended together carry one time: `at`, or now. Moving messages to a draft's
    `state` is the messages table's business (`notifier.ledger.messages.append_events`).
    """
    first_seq, prev_hash = head(conn)
    first_seq += 1
    when = at or utc_now()
    encode = _CANONICAL_ENCODER.encode
    link = prev_hash
    hashes: list[str] = []
    rows = []
    for seq, d in enumerate(drafts, start=first_seq):
        data_json = encode(d.data) if d.data else "{}"  # `queued` events carry no data
        digest = event_hash(
            link, seq, when, d.kind, d.campaign_id, d.volunteer_id, d.message_id, data_json
        )
        rows.append(
            (
                seq,
                when,
                d.kind,
                d.campaign_id,
                d.volunteer_id,
                d.message_id,
                data_json,
                link,
                digest,
            )
        )
        hashes.append(digest)
        link = digest
    conn.executemany(
        f"INSERT INTO events({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        rows,
    )
    write_meta(conn, "chain_head", f"{first_seq + len(hashes) - 1}:{link}")
    return Appended(drafts, when, first_seq, prev_hash, hashes)


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the chain and report the first event whose link or content does not hold."""
    prev_hash = GENESIS_HASH
    expected_seq = 0
    for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"):  # noqa: S608
        seq = row["seq"]
        expected_seq += 1
        if seq != expected_seq:
            return VerifyResult(
                False,
                expected_seq - 1,
                prev_hash,
                expected_seq,
                f"event {expected_seq} is missing (next is {seq}): deleted or reordered",
            )
        if row["prev_hash"] != prev_hash:
            return VerifyResult(
                False,
                seq - 1,
                prev_hash,
                seq,
                f"event {seq} does not link to event {seq - 1}: an event was deleted, "
                "inserted or reordered",
            )
        try:
            data_json = canonical_json(json.loads(row["data"]))
        except (TypeError, ValueError):
            return VerifyResult(False, seq - 1, prev_hash, seq, f"event {seq} has unreadable data")
        recomputed = event_hash(
            prev_hash,
            seq,
            row["at"],
            row["kind"],
            row["campaign_id"],
            row["volunteer_id"],
            row["message_id"],
            data_json,
        )
        if recomputed != row["hash"]:
            return VerifyResult(
                False,
                seq - 1,
                prev_hash,
                seq,
                f"event {seq} ({row['kind']}) was edited after it was written",
            )
        prev_hash = row["hash"]
    recorded = _head_text(conn)
    if recorded != f"{expected_seq}:{prev_hash}":
        return VerifyResult(
            False,
            expected_seq,
            prev_hash,
            expected_seq + 1,
            f"the chain ends at event {expected_seq} but the ledger recorded its head as "
            f"event {recorded.split(':', 1)[0]}: events at the end were deleted",
        )
    return VerifyResult(True, expected_seq, prev_hash)
