"""The hash chain: events are appended, never changed, and each one vouches for the last.

Each event stores the hash of the event before it, and its own hash covers that link plus
its canonical content (position, time, kind, the ids it names, its data), so an edit,
deletion, insertion or reordering is found by `verify()`. `meta.chain_head` records the
last event's position and hash, so events deleted at the end are found too.

The hash is keyed: HMAC-SHA256 under the ledger's chain key (`notifier.secret`,
Purpose.CHAIN), so someone who edits an event cannot recompute the hashes after it
without the key file. Ledgers written before keys (`meta.chain_format` absent) were
hashed with plain SHA-256; they are verified as such, say so, and take no new events
until `notifier ledger upgrade` re-keys them (`rekey`).

There is one way to write what an event's hash covers, `_content`, used by `event_hash`
(to verify) and by `append` (which reuses the JSON of what a batch of events shares). It
writes out, in its sorted key order, the canonical JSON (`canonical_json`) of

    {"seq": seq, "at": at, "kind": kind, "campaign_id": campaign_id,
     "volunteer_id": volunteer_id, "message_id": message_id, "data": data}

without building that object: sending appends two events a message, and an import one a
row, so this is lean. tests/ledger/test_chain.py holds both to the plain form above, and
to hashes written before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from notifier.errors import LedgerError, LedgerUnkeyed
from notifier.event import UNKEYED_ERA_KINDS, EventKind
from notifier.ledger.schema import read_meta, write_meta
from notifier.times import DEFAULT_ZONE, shown_time

GENESIS_HASH = "0" * 64
EVENT_COLUMNS = "seq, at, kind, campaign_id, volunteer_id, message_id, data, prev_hash, hash"
KEYED_FORMAT = "hmac-sha256"  # meta.chain_format of a keyed chain; absent: plain sha256
UPGRADE_HINT = "unkeyed (old format): run notifier ledger upgrade"


class ChainConnection(sqlite3.Connection):
    """The ledger's connection: it knows how to get the chain key when a hash needs it.

    `notifier.ledger.store.Ledger` sets `chain_key` to a loader, so a command that only
    reads never needs the key file; the keyed HMAC object is made once and copied per event.
    """

    chain_key: Callable[[], bytes] | None = None
    _mac: hmac.HMAC | None = None

    def chain_mac(self) -> hmac.HMAC:
        if self._mac is None:
            if self.chain_key is None:
                raise LedgerError("this connection has no chain key")
            self._mac = mac_for_key(self.chain_key())
        return self._mac


def mac_for_key(key: bytes) -> hmac.HMAC:
    """The chain's keyed hash for `key` (the chain key, `Purpose.CHAIN`)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _keyed(conn: sqlite3.Connection) -> bool:
    return read_meta(conn, "chain_format") == KEYED_FORMAT


def _mac_for(conn: sqlite3.Connection) -> hmac.HMAC:
    """The keyed hash to append with; an old unkeyed chain takes no new events."""
    if not _keyed(conn):
        raise LedgerUnkeyed(
            "the ledger's hash chain is unkeyed (old format)",
            hint="run notifier ledger upgrade (it re-keys the chain and records that it did)",
        )
    if not isinstance(conn, ChainConnection):
        raise LedgerError("the ledger was opened without its chain key")
    return conn.chain_mac()


def utc_now() -> str:
    """Event time: timezone-aware UTC, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# One reusable encoder: json.dumps would build a new one per call, a cost on every event.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# A string's canonical JSON (non-ASCII kept as it is, as the encoder writes it).
encode_json_string: Callable[[str], str] = json.encoder.encode_basestring


# The encoder's C core, made once: JSONEncoder.encode() builds it afresh on every call,
# which costs more than encoding an event's few fields. No circular-reference check
# (event data is plain data), so the one core can serve every thread. A property test
# holds it to the encoder's own text.
_make_core = getattr(json.encoder, "c_make_encoder", None)
_canonical_core: Callable[[Any, int], Sequence[str]] | None = (
    None
    if _make_core is None
    else _make_core(
        None, _CANONICAL_ENCODER.default, encode_json_string, None, ":", ",", True, False, True
    )
)


def canonical_json(value: Any) -> str:
    """The one serialisation that event hashes are computed over."""
    if _canonical_core is None:  # pragma: no cover - a Python without the C accelerator
        return _CANONICAL_ENCODER.encode(value)
    if type(value) is str:
        return encode_json_string(value)
    return "".join(_canonical_core(value, 0))


def _json_text(value: Any) -> str:
    """canonical_json() of a value, without the encoder's overhead for a string or None."""
    if value is None:
        return "null"
    if type(value) is str:
        return encode_json_string(value)
    return canonical_json(value)


@dataclass(frozen=True)
class EventDraft:
    """An event about to be appended (an event that moves a message is written by the
    transition function, `notifier.ledger.messages.move`, from a Move)."""

    kind: EventKind
    campaign_id: str | None = None
    volunteer_id: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


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
    # Not tampering, but worth a reader's attention: events dated earlier than the event
    # before them (the clock was set back), in one line.
    warning: str = ""


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
    mac: hmac.HMAC | None = None,
) -> str:
    """The hash that links an event into the chain; covers position, time and content.

    `data_json` is canonical_json() of the event's data. `mac`: the chain key's HMAC
    object (copied here, never changed); None gives the plain SHA-256 of old ledgers.
    """
    content = _content(
        seq,
        _json_text(at),
        _json_text(kind),
        _json_text(campaign_id),
        _json_text(volunteer_id),
        _json_text(message_id),
        data_json,
    )
    payload = f"{prev_hash}\n{content}".encode()
    if mac is None:
        return hashlib.sha256(payload).hexdigest()
    keyed = _hmac_core(mac).copy()
    keyed.update(payload)
    return keyed.hexdigest()


def _content(
    seq: int,
    at_json: str,
    kind_json: str,
    campaign_json: str,
    volunteer_json: str,
    message_json: str,
    data_json: str,
) -> str:
    """The canonical JSON of a whole event, from its fields' own canonical JSON: the
    object's keys in sorted order, written out rather than built and encoded."""
    return (
        f'{{"at":{at_json},"campaign_id":{campaign_json},"data":{data_json},'
        f'"kind":{kind_json},"message_id":{message_json},"seq":{seq},'
        f'"volunteer_id":{volunteer_json}}}'
    )


class _Copyable(Protocol):
    def copy(self) -> _Copyable: ...
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _hmac_core(mac: hmac.HMAC) -> _Copyable:
    """What to copy per event: OpenSSL's HMAC object inside `mac` when there is one (the
    standard library keeps it as `_hmac`), whose copy() skips a Python wrapper's cost, a
    third of hashing an event; else `mac` itself. Both give the same digest."""
    core: _Copyable = getattr(mac, "_hmac", None) or mac
    return core


def start(conn: sqlite3.Connection) -> None:
    """Record the empty chain's head in a new ledger, and that its hashes are keyed."""
    write_meta(conn, "chain_head", f"0:{GENESIS_HASH}")
    write_meta(conn, "chain_format", KEYED_FORMAT)


def is_keyed(conn: sqlite3.Connection) -> bool:
    """False for a ledger written before keyed hashes (see `rekey`)."""
    return _keyed(conn)


def head_text(conn: sqlite3.Connection) -> str:
    """`SEQ:HASH` of the last event, as `notifier ledger head` prints it."""
    return _head_text(conn)


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

    Events appended together carry one time: `at`, or now. Only this package appends:
    each kind with the table row it vouches for (see notifier.event).
    """
    encode = canonical_json
    when, first_seq, prev_hash, hashes = _link(
        conn,
        (
            # `queued` events carry no data
            (
                d.kind,
                d.campaign_id,
                d.volunteer_id,
                d.message_id,
                encode(d.data) if d.data else "{}",
            )
            for d in drafts
        ),
        at,
    )
    return Appended(drafts, when, first_seq, prev_hash, hashes)


# An event ready to be linked: kind, campaign_id, volunteer_id, message_id, and the
# canonical_json() of its data.
SerialisedEvent = tuple[str, str | None, str | None, str | None, str]


def append_serialised(conn: sqlite3.Connection, events: Iterable[SerialisedEvent], at: str) -> int:
    """append() for events whose data is already canonical JSON (a roster import writes
    one event a row, and builds their data as text). The number of events appended."""
    return len(_link(conn, events, at)[3])


def _link(
    conn: sqlite3.Connection, events: Iterable[SerialisedEvent], at: str | None
) -> tuple[str, int, str, list[str]]:
    """Chain and insert events: (their time, the first one's seq, the hash it links to,
    each one's hash)."""
    core = _hmac_core(_mac_for(conn))
    first_seq, prev_hash = head(conn)
    first_seq += 1
    when = at or utc_now()
    at_json = _json_text(when)
    # Kinds and campaigns repeat within a batch: their JSON is made once.
    seen: dict[str | None, str] = {None: "null"}
    link = prev_hash
    hashes: list[str] = []
    rows = []
    for seq, (kind, campaign_id, volunteer_id, message_id, data_json) in enumerate(
        events, start=first_seq
    ):
        kind_json = seen.get(kind) or seen.setdefault(kind, _json_text(kind))
        campaign_json = seen.get(campaign_id) or seen.setdefault(
            campaign_id, _json_text(campaign_id)
        )
        content = _content(
            seq,
            at_json,
            kind_json,
            campaign_json,
            _json_text(volunteer_id),
            _json_text(message_id),
            data_json,
        )
        keyed = core.copy()
        keyed.update(f"{link}\n{content}".encode())
        digest = keyed.hexdigest()
        rows.append(
            (seq, when, kind, campaign_id, volunteer_id, message_id, data_json, link, digest)
        )
        hashes.append(digest)
        link = digest
    conn.executemany(
        f"INSERT INTO events({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        rows,
    )
    write_meta(conn, "chain_head", f"{first_seq + len(hashes) - 1}:{link}")
    return when, first_seq, prev_hash, hashes


EventVisitor = Callable[[int, str, str, str | None, str | None, str | None, str], None]


@dataclass
class Walked:
    """Where a walk of the chain (or of a stretch of it: notifier.ledger.parallel) got to.

    `failure`: the first event that does not hold, as verify() reports it; else the
    last event checked (`seq`, `hash`, `at`), how many events were dated earlier than
    the one before them, and the first of those in words. `sign`: on an unkeyed chain,
    the first sign that it was written keyed (keyed_sign).
    """

    seq: int
    hash: str
    at: str = ""
    failure: VerifyResult | None = None
    backwards: int = 0
    first_backwards: str = ""
    sign: tuple[int, str] | None = None


def walk(
    rows: Iterable[tuple[Any, ...]],
    start: Walked,
    mac: hmac.HMAC | None,
    *,
    visit: EventVisitor | None = None,
    until: int | None = None,
    signs: bool = False,
    zone: str = DEFAULT_ZONE,
) -> Walked:
    """Walk events (EVENT_COLUMNS tuples in seq order, the first of them meant to follow
    `start`'s event) and check each one's position, link and hash; stop at the first that
    does not hold, or after event `until`. `signs`: look for keyed_sign (unkeyed chains)."""
    expected_seq, prev_hash, prev_at = start.seq, start.hash, start.at
    backwards, first_backwards, sign = start.backwards, start.first_backwards, start.sign
    for seq, at, kind, campaign_id, volunteer_id, message_id, data, link, stored in rows:
        expected_seq += 1
        if seq != expected_seq:
            return Walked(
                expected_seq - 1,
                prev_hash,
                failure=VerifyResult(
                    False,
                    expected_seq - 1,
                    prev_hash,
                    expected_seq,
                    f"event {expected_seq} is missing (next is {seq}): deleted or reordered",
                ),
            )
        if link != prev_hash:
            return Walked(
                seq - 1,
                prev_hash,
                failure=VerifyResult(
                    False,
                    seq - 1,
                    prev_hash,
                    seq,
                    f"event {seq} does not link to event {seq - 1}: an event was deleted, "
                    "inserted or reordered",
                ),
            )
        # Stored data is canonical JSON as appended: hash it as it is, and only if that
        # fails see whether a re-serialisation of the same value holds (a rare case).
        args = (prev_hash, seq, at, kind, campaign_id, volunteer_id, message_id)
        if event_hash(*args, data, mac) != stored:
            try:
                data = canonical_json(json.loads(data))
            except (TypeError, ValueError):
                return Walked(
                    seq - 1,
                    prev_hash,
                    failure=VerifyResult(
                        False, seq - 1, prev_hash, seq, f"event {seq} has unreadable data"
                    ),
                )
            if event_hash(*args, data, mac) != stored:
                return Walked(
                    seq - 1,
                    prev_hash,
                    failure=VerifyResult(
                        False,
                        seq - 1,
                        prev_hash,
                        seq,
                        f"event {seq} ({kind}) was edited after it was written",
                    ),
                )
        if signs and sign is None:
            sign = keyed_sign(seq, kind, data)
        if at < prev_at and _earlier(at, prev_at):
            backwards += 1
            first_backwards = first_backwards or (
                f"event {seq} is dated {shown_time(at, zone)}, earlier than event {seq - 1}"
                f" ({shown_time(prev_at, zone)})"
            )
        prev_at = at
        if visit is not None:
            visit(seq, at, kind, campaign_id, volunteer_id, message_id, data)
        prev_hash = stored
        if seq == until:
            break
    return Walked(expected_seq, prev_hash, prev_at, None, backwards, first_backwards, sign)


def verify(
    conn: sqlite3.Connection,
    visit: EventVisitor | None = None,
    *,
    legacy: bool = False,
    after: tuple[int, str] | None = None,
    zone: str = DEFAULT_ZONE,
) -> VerifyResult:
    """Walk the chain and report the first event whose link or content does not hold.

    `after` = (seq, hash): walk only the events after event `seq`, the first of them
    linking to `hash` (a checkpoint's: notifier.ledger.checkpoint); a keyed chain only.

    `visit(seq, at, kind, campaign_id, volunteer_id, message_id, data_json)` sees each
    event that holds, in order (the projections are rebuilt from them in the same pass).
    `legacy`: check an unkeyed chain's plain hashes (for `rekey`); otherwise an unkeyed
    chain is checked the same way but reported as needing the upgrade, or as tampered
    when the ledger shows it was written keyed (`keyed_sign`): a keyed history rewritten
    with plain hashes by someone without the key.
    """
    keyed = _keyed(conn)
    mac = _mac_for(conn) if keyed else None
    if after is not None and not keyed:
        raise LedgerError("an unkeyed chain is verified from its start")
    expected_seq, prev_hash = after or (0, GENESIS_HASH)
    sign = None if keyed or read_meta(conn, "key_fingerprint") is None else _FINGERPRINT_SIGN
    walked = walk(
        _rows(conn, expected_seq),
        Walked(expected_seq, prev_hash, sign=sign),
        mac,
        visit=visit,
        signs=not keyed,
        zone=zone,
    )
    return verdict(conn, walked, keyed=keyed, legacy=legacy)


def verdict(
    conn: sqlite3.Connection, walked: Walked, *, keyed: bool = True, legacy: bool = False
) -> VerifyResult:
    """verify()'s result once the whole chain was walked: its first failure, else whether
    it ends at the head the ledger recorded, with any warning."""
    if walked.failure is not None:
        return walked.failure
    expected_seq, prev_hash, sign = walked.seq, walked.hash, walked.sign
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
    warning = ""
    if walked.backwards:
        more = f" ({walked.backwards} such events in all)" if walked.backwards > 1 else ""
        warning = (
            f"{walked.first_backwards}{more}: the clock of the machine that wrote it was set"
            " back; times in reports may be out of order"
        )
    if not keyed and sign is not None:
        return VerifyResult(
            False,
            expected_seq,
            prev_hash,
            sign[0] or None,
            f"the chain is unkeyed but {sign[1]}: a keyed ledger was rewritten without its"
            " key; restore it from a backup",
            warning,
        )
    if not keyed and not legacy:
        return VerifyResult(False, expected_seq, prev_hash, None, UPGRADE_HINT, warning)
    return VerifyResult(True, expected_seq, prev_hash, warning=warning)


_FINGERPRINT_SIGN = (0, "the ledger records a key (meta key_fingerprint)")


def keyed_sign(seq: int, kind: str, data_json: str) -> tuple[int, str] | None:
    """Why event `seq` can only have been written by a notifier with keyed hashes, or None.

    Such a notifier writes kinds an unkeyed one never did, and fields it never wrote (a
    volunteer's row sha256, a message's VERP token in `queued`, the sha256 of the bytes
    in `sending`). A ledger holding either can never honestly be unkeyed.
    """
    if kind not in UNKEYED_ERA_KINDS:
        return seq, f"event {seq} ({kind}) is of a kind only keyed ledgers hold"
    if kind in _KEYED_FIELDS and f'"{_KEYED_FIELDS[kind]}"' in data_json:
        return seq, f"event {seq} ({kind}) has a field only keyed ledgers write"
    return None


_KEYED_FIELDS: dict[str, str] = {
    EventKind.VOLUNTEER_ADDED: "row_sha256",
    EventKind.VOLUNTEER_UPDATED: "row_sha256",
    EventKind.QUEUED: "verp_token",
    EventKind.SENDING: "sha256",
}


def _earlier(at: str, before: str) -> bool:
    """Whether time `at` is earlier than `before` (ISO 8601; compared as times when
    their texts are not of one form)."""
    if len(at) == len(before) and at[19:] == before[19:]:
        return True  # one form, one zone: the text order is the time order
    try:
        return datetime.fromisoformat(at) < datetime.fromisoformat(before)
    except (TypeError, ValueError):
        return False


def _rows(conn: sqlite3.Connection, after: int = 0) -> Iterator[tuple[Any, ...]]:
    """Every event (after position `after`) as a plain tuple in EVENT_COLUMNS order: a
    verify reads millions, and tuples are read much faster than name-indexed rows. Read
    from one cursor as they are used: memory does not grow with the chain."""
    cursor = conn.cursor()
    cursor.row_factory = None
    sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq"  # noqa: S608
    return iter(cursor.execute(sql, (after,)))


def event_hash_at(conn: sqlite3.Connection, seq: int) -> str | None:
    """The stored hash of event `seq`, or None if the ledger holds no such event."""
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else str(row["hash"])


def rekey(conn: sqlite3.Connection, mac: hmac.HMAC) -> tuple[str, int]:
    """Re-hash an unkeyed chain under the chain key, in place; its old head (`SEQ:HASH`)
    and the number of events. Within a transaction; refuses a chain that does not hold.

    The caller records the step as an event (`ledger_upgraded`) holding the old head, so
    anyone who wrote the old head down can still tie it to this ledger.
    """
    checked = verify(conn, legacy=True)
    if not checked.ok:
        raise LedgerError(
            f"the unkeyed chain does not hold: {checked.reason}",
            hint="restore the ledger from a backup taken before the damage, then upgrade",
        )
    old_head = _head_text(conn)
    link = GENESIS_HASH
    updates: list[tuple[str, str, int]] = []
    for seq, at, kind, campaign_id, volunteer_id, message_id, data, _link, _hash in list(
        _rows(conn)
    ):
        digest = event_hash(link, seq, at, kind, campaign_id, volunteer_id, message_id, data, mac)
        updates.append((link, digest, seq))
        link = digest
    conn.executemany("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", updates)
    write_meta(conn, "chain_head", f"{len(updates)}:{link}")
    write_meta(conn, "chain_format", KEYED_FORMAT)
    return old_head, len(updates)
