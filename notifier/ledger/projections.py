"""The tables, rebuilt from the chain and compared with the file.

Every row of the tables that decide what is sent, and what a report says, was written
with a chained event that says what it holds. `Replay` reads the events (one pass, in
chain order, inside `chain.verify`) and keeps what each row must be:

    volunteers     volunteer_added / volunteer_updated / volunteer_adopted carry the
                   sha256 of the row's canonical text (`volunteer_row_sha256`), and the
                   import and roster row it came from
    messages       queued (campaign, volunteer, VERP token), sending (attempt), and the
                   state every other event puts it in (notifier.event.state_after_event)
    suppressions   address_suppressed / suppression_adopted (address, reason, event)
    rejected_rows  row_rejected / rejected_row_adopted, in the order they were written
    imports        roster_imported (file, sha256s, encoding, counts; its time)
    campaigns      campaign_registered (title, follows, templates' and definition's
                   sha256; its time)
    bounce_reports every report's events name its sha256 (matched or not, its message,
                   where it was read): a row deleted would let the report be read again,
                   a row made up would have a genuine report skipped as recorded
    meta           only the keys notifier writes; none that the chain contradicts

`ledger_upgraded` starts the projections afresh: an old ledger's rows are adopted, each
by its own event, when it is re-keyed (`notifier ledger upgrade`).

`first_difference` then reads each table in primary-key order and names the first row
that is not what the chain says (edited, inserted or deleted). The two large tables are
never held whole: with `streamed` (what `ledger verify` does) the chain walk leaves the
volunteers' and messages' events alone, and each table is merge-joined, in key order,
against its events read in (key, seq) order through the events' indexes on volunteer_id
and message_id: one volunteer's or one message's events in memory at a time, whatever the
ledger's size. Without it (a send's check of one chunk, `rows_differ`) the few rows'
expectations are kept as the events are visited.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import PurePath
from typing import Any

from notifier.event import (
    REPORT_KINDS,
    STATE_OF_KIND,
    UNMATCHED_REPORT_KINDS,
    EventKind,
    state_after_event,
)
from notifier.ledger.chain import canonical_json
from notifier.ledger.schema import IMPORT_FACTS, MESSAGE_ONLY, VOLUNTEER_FACT_KINDS
from notifier.message import MessageState
from notifier.volunteer import TEXT_FIELDS

K = EventKind
_VOLUNTEER_KINDS = frozenset({K.VOLUNTEER_ADDED, K.VOLUNTEER_UPDATED, K.VOLUNTEER_ADOPTED})
_SUPPRESSION_KINDS = frozenset({K.ADDRESS_SUPPRESSED, K.SUPPRESSION_ADOPTED})
_REJECTED_KINDS = frozenset({K.ROW_REJECTED, K.REJECTED_ROW_ADOPTED})
# As the index of the events that build volunteers' rows has it: queries naming the kinds
# in this very text are answered through that index (notifier.ledger.schema).
_VOLUNTEER_KIND_LIST = VOLUNTEER_FACT_KINDS

# The meta keys notifier writes. `verp_key` and `running_sender` were written by earlier
# versions (the chain now decides the first; the lease replaced the second).
META_KEYS = frozenset(
    {
        "schema_version",
        "chain_head",
        "chain_format",
        "key_fingerprint",
        "lease",
        "verp_key",
        "running_sender",
    }
)


def volunteer_row_sha256(volunteer_id: str, texts: Sequence[str | None]) -> str:
    """What a volunteer's chained events vouch for: their id and every text field."""
    return hashlib.sha256(canonical_json([volunteer_id, *texts]).encode()).hexdigest()


# A message as the chain says it is: campaign, volunteer, VERP token, state, attempts.
_Message = list[Any]


class Replay:
    """The projections as the events say they are; `visit` is chain.verify's visitor."""

    def __init__(self, *, streamed: bool = False) -> None:
        self.raw_verp_key: bool | None = None  # what `ledger_upgraded` said, if any
        # Leave the volunteers' and messages' events to `first_difference`'s merge-joins
        # (read from the events after `reset_seq`, the last `ledger_upgraded`).
        self.streamed = streamed
        self.reset_seq = 0
        self._start_afresh()

    def _start_afresh(self) -> None:
        """Forget every table: after an upgrade, each row is adopted by an event."""
        # import id -> (imported at, the roster_imported event's data)
        self.imports: dict[int, tuple[str, dict[str, Any]]] = {}
        # campaign id -> (registered at, the campaign_registered event's data)
        self.campaigns: dict[str, tuple[str, dict[str, Any]]] = {}
        # volunteer_id -> the sha256 of the row's text, and the import and roster row it
        # came from (None where an adoption by an older upgrade did not say)
        self.volunteers: dict[str, tuple[str, Any, Any]] = {}
        self.messages: dict[str, _Message] = {}
        self.suppressions: dict[str, tuple[str, str | None, int | None]] = {}
        self.rejected: list[tuple[Any, ...]] = []
        # report sha256 -> matched, its message, where it was read
        self.reports: dict[str, tuple[bool, str | None, str | None]] = {}

    def visit(
        self,
        seq: int,
        at: str,
        kind: str,
        campaign_id: str | None,
        volunteer_id: str | None,
        message_id: str | None,
        data_json: str,
    ) -> None:
        if self.streamed:
            # The messages and volunteers are merge-joined after the walk
            # (`first_difference`); an event about a message may still build a small
            # table's row (a hard bounce's suppression, a report).
            if kind == K.LEDGER_UPGRADED:
                self.reset_seq = seq
            if kind in _VOLUNTEER_KINDS:
                return
        elif message_id is not None:
            self._message_event(kind, campaign_id, volunteer_id, message_id, data_json)
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            handler(self, kind, at, campaign_id, volunteer_id, message_id, data_json)

    @staticmethod
    def streamed_visits(kind: str) -> bool:
        """Whether a streamed replay's visit does anything with an event of this kind (a
        walk in parts keeps only those events: notifier.ledger.parallel)."""
        return kind in Replay._HANDLERS and kind not in _VOLUNTEER_KINDS

    # -- one handler per kind of event that builds a table row

    def _volunteer(
        self,
        _kind: str,
        _at: str,
        _c: str | None,
        volunteer_id: str | None,
        _m: str | None,
        data_json: str,
    ) -> None:
        if volunteer_id is None:
            return
        d = json.loads(data_json)
        row_sha256 = d.get("row_sha256")
        if not isinstance(row_sha256, str):
            return
        if "import_id" in d:  # added or changed by an import, from this roster row
            self.volunteers[volunteer_id] = (row_sha256, d["import_id"], d.get("row"))
        else:  # adopted, with where the row came from (an older upgrade said nothing)
            self.volunteers[volunteer_id] = (
                row_sha256,
                d.get("source_import_id"),
                d.get("source_row"),
            )

    def _suppression(
        self, _kind: str, _at: str, _c: str | None, _v: str | None, _m: str | None, data_json: str
    ) -> None:
        data = json.loads(data_json)
        email = data.get("email")
        if isinstance(email, str):
            self.suppressions[email] = (email, data.get("reason"), data.get("bounce_seq"))

    def _rejected(
        self, _kind: str, _at: str, _c: str | None, _v: str | None, _m: str | None, data_json: str
    ) -> None:
        d = json.loads(data_json)
        fields = ("import_id", "row", "column", "value", "reason", "field")
        self.rejected.append(tuple(d.get(f) for f in fields))

    def _import(
        self, _kind: str, at: str, _c: str | None, _v: str | None, _m: str | None, data_json: str
    ) -> None:
        d = json.loads(data_json)
        if isinstance(d.get("import_id"), int):
            # An adoption says when the import was; a roster_imported event is when.
            self.imports[d["import_id"]] = (d.get("imported_at", at), d)

    def _campaign(
        self,
        _kind: str,
        at: str,
        campaign_id: str | None,
        _v: str | None,
        _m: str | None,
        data_json: str,
    ) -> None:
        if campaign_id is not None:
            d = json.loads(data_json)
            self.campaigns[campaign_id] = (d.get("registered_at", at), d)

    def _report(
        self,
        kind: str,
        _at: str,
        _c: str | None,
        _v: str | None,
        message_id: str | None,
        data_json: str,
    ) -> None:
        """A kept report's row, as its events say: matched (what it says about its
        message) or kept unmatched, and where it was read; or as an adoption said."""
        d = json.loads(data_json)
        if kind == K.BOUNCE_REPORT_ADOPTED:
            sha256, matched, message_id = d.get("sha256"), d.get("matched"), d.get("message_id")
        else:
            sha256, matched = d.get("report_sha256"), kind in REPORT_KINDS
        if isinstance(sha256, str):
            self.reports[sha256] = (bool(matched), message_id, d.get("source"))

    def _upgraded(
        self, _kind: str, at: str, c: str | None, v: str | None, m: str | None, data_json: str
    ) -> None:
        self._start_afresh()  # the adopted rows follow
        # Tokens made before keys were HMACs under the raw key: kept valid when the old key
        # file was kept (notifier.ledger.upgrade).
        self.raw_verp_key = not json.loads(data_json).get("key_created", True)

    _HANDLERS: dict[
        str, Callable[[Replay, str, str, str | None, str | None, str | None, str], None]
    ]

    def _message_event(
        self,
        kind: str,
        campaign_id: str | None,
        volunteer_id: str | None,
        message_id: str,
        data_json: str,
    ) -> None:
        # 600,000 events a 200,000-person campaign: the common kinds are told apart first.
        state = STATE_OF_KIND.get(kind)
        if state is MessageState.SENDING:
            message = self.messages.get(message_id)
            if message is not None:
                message[3] = state
                message[4] = json.loads(data_json).get("attempt")
                self._owned_by(message, campaign_id, volunteer_id)
        elif kind == K.QUEUED:
            token = json.loads(data_json).get("verp_token") if data_json != "{}" else None
            self.messages[message_id] = [campaign_id, volunteer_id, token, "pending", 0]
        elif kind == K.MESSAGE_ADOPTED:
            d = json.loads(data_json)
            self.messages[message_id] = [
                campaign_id,
                volunteer_id,
                d.get("verp_token"),
                d.get("state"),
                d.get("attempts"),
            ]
        else:
            state = state or state_after_event(kind, data_json)
            message = self.messages.get(message_id)
            if message is not None:
                if state is not None:
                    message[3] = state
                self._owned_by(message, campaign_id, volunteer_id)

    @staticmethod
    def _owned_by(message: list[Any], campaign_id: str | None, volunteer_id: str | None) -> None:
        """An event about a message names the message's own campaign and volunteer (a few
        old ones name neither). One naming another person or campaign would be missed by
        every query that finds a message's events through its volunteer (notifier.ledger
        .events): the row is held to what that event says, so it differs, and is named."""
        if volunteer_id is not None and volunteer_id != message[1]:
            message[1] = volunteer_id
        if campaign_id is not None and campaign_id != message[0]:
            message[0] = campaign_id

    # -- comparing with the tables

    def first_difference(self, conn: sqlite3.Connection) -> str | None:
        """The first table row that is not what the events say, in words; None if none."""
        if self.streamed:
            volunteers = _replayed_volunteers(conn, self.reset_seq)
            messages = _replayed_messages(conn, self.reset_seq)
        else:
            volunteers = iter(sorted(self.volunteers.items()))
            messages = iter(sorted(self.messages.items()))
        return (
            self._meta(conn)
            or _volunteers_differ(conn, volunteers)
            or _messages_differ(conn, messages)
            or self.small_tables_differ(conn)
        )

    def small_tables_differ(self, conn: sqlite3.Connection) -> str | None:
        """first_difference() of the tables after the two large ones (which
        notifier.ledger.parallel checks in parts), in the same order."""
        return (
            self._suppressions_differ(conn)
            or self._rejected_differ(conn)
            or self._imports_differ(conn)
            or self._campaigns_differ(conn)
            or self._reports_differ(conn)
        )

    def meta_differs(self, conn: sqlite3.Connection) -> str | None:
        return self._meta(conn)

    def _meta(self, conn: sqlite3.Connection) -> str | None:
        for row in conn.execute("SELECT key, value FROM meta ORDER BY key"):
            key, value = row["key"], row["value"]
            if key not in META_KEYS:
                return _row("meta", f"key {key}", "is not one notifier writes")
            if key == "verp_key" and (value != "raw" or not self.raw_verp_key):
                return _row(
                    "meta",
                    "key verp_key",
                    "says how bounces are authenticated, but the chain says otherwise",
                )
        return None

    def _suppressions_differ(self, conn: sqlite3.Connection) -> str | None:
        expected = self.suppressions
        for row in conn.execute("SELECT email, reason, event_seq FROM suppressions ORDER BY email"):
            want = expected.pop(row["email"], None)
            if want is None:
                return _row("suppressions", f"email {row['email']}", "is not in the chain")
            if (row["email"], row["reason"], row["event_seq"]) != want:
                return _row("suppressions", f"email {row['email']}", "differs from the chain")
        if expected:
            return _row("suppressions", f"email {min(expected)}", "is missing (deleted)")
        return None

    def _rejected_differ(self, conn: sqlite3.Connection) -> str | None:
        expected = iter(self.rejected)
        sql = (
            "SELECT id, import_id, [row], [column], value, reason, field FROM rejected_rows"
            " ORDER BY id"
        )
        for row in conn.execute(sql):
            want = next(expected, None)
            where = f"id {row['id']} (import {row['import_id']}, row {row['row']})"
            if want is None:
                return _row("rejected_rows", where, "is not in the chain")
            stored = (
                row["import_id"],
                row["row"],
                row["column"],
                row["value"],
                row["reason"],
                row["field"] if want[5] is not None else None,
            )
            if stored != want:
                return _row("rejected_rows", where, "differs from the chain")
        missing = next(expected, None)
        if missing is not None:
            return _row(
                "rejected_rows", f"import {missing[0]}, row {missing[1]}", "is missing (deleted)"
            )
        return None

    def _imports_differ(self, conn: sqlite3.Connection) -> str | None:
        expected = dict(self.imports)
        for row in conn.execute("SELECT * FROM imports ORDER BY id"):
            found = expected.pop(row["id"], None)
            where = f"id {row['id']}"
            if found is None:
                return _row("imports", where, "is not in the chain")
            at, d = found
            name = row["file_name"] or ""
            checks: list[tuple[str, Any, Any]] = [
                ("imported_at", row["imported_at"], at),
                ("file_name", name, d.get("file_name", name)),
                ("file_name", PurePath(name).name, d.get("file")),
            ]
            checks += [(column, row[column], d.get(column)) for column in IMPORT_FACTS]
            for column, stored, wanted in checks:
                if stored != wanted:
                    return _row("imports", where, f"differs from the chain in {column}")
        if expected:
            return _row("imports", f"id {min(expected)}", "is missing (deleted)")
        return None

    def _campaigns_differ(self, conn: sqlite3.Connection) -> str | None:
        expected = dict(self.campaigns)
        sql = (
            "SELECT campaign_id, title, follows, definition, templates_sha256, registered_at"
            " FROM campaigns ORDER BY campaign_id"
        )
        for row in conn.execute(sql):
            found = expected.pop(row["campaign_id"], None)
            where = f"campaign_id {row['campaign_id']}"
            if found is None:
                return _row("campaigns", where, "is not in the chain")
            at, d = found
            checks: list[tuple[str, Any, Any]] = [
                ("title", row["title"], d.get("title")),
                ("templates_sha256", row["templates_sha256"], d.get("templates_sha256")),
                ("registered_at", row["registered_at"], at),
            ]
            if "follows" in d:  # registered since registrations said everything
                checks.append(("follows", row["follows"], d["follows"]))
                definition = hashlib.sha256((row["definition"] or "").encode()).hexdigest()
                checks.append(("definition", definition, d.get("definition_sha256")))
            for column, stored, wanted in checks:
                if stored != wanted:
                    return _row("campaigns", where, f"differs from the chain in {column}")
        if expected:
            return _row("campaigns", f"campaign_id {min(expected)}", "is missing (deleted)")
        return None

    def _reports_differ(self, conn: sqlite3.Connection) -> str | None:
        expected = dict(self.reports)
        sql = "SELECT sha256, source, matched, message_id FROM bounce_reports ORDER BY sha256"
        for row in conn.execute(sql):
            found = expected.pop(row["sha256"], None)
            where = f"sha256 {row['sha256'][:16]}..."
            if found is None:
                return _row("bounce_reports", where, "is not in the chain")
            matched, message_id, source = found
            checks: list[tuple[str, Any, Any]] = [
                ("matched", bool(row["matched"]), matched),
                ("message_id", row["message_id"], message_id),
                ("source", row["source"], source if source is not None else row["source"]),
            ]
            for column, stored, wanted in checks:
                if stored != wanted:
                    return _row("bounce_reports", where, f"differs from the chain in {column}")
        if expected:
            return _row("bounce_reports", f"sha256 {min(expected)[:16]}...", "is missing (deleted)")
        return None


Replay._HANDLERS = {
    **dict.fromkeys(_VOLUNTEER_KINDS, Replay._volunteer),
    **dict.fromkeys(_SUPPRESSION_KINDS, Replay._suppression),
    **dict.fromkeys(_REJECTED_KINDS, Replay._rejected),
    **dict.fromkeys((*REPORT_KINDS, *UNMATCHED_REPORT_KINDS), Replay._report),
    K.BOUNCE_REPORT_ADOPTED: Replay._report,
    K.ROSTER_IMPORTED: Replay._import,
    K.IMPORT_ADOPTED: Replay._import,
    K.CAMPAIGN_REGISTERED: Replay._campaign,
    K.CAMPAIGN_ADOPTED: Replay._campaign,
    K.LEDGER_UPGRADED: Replay._upgraded,
}


# Events read for a chunk of people: their own (volunteer) events, and their messages' of
# one campaign: through the index by volunteer (an event naming a message names its
# volunteer), and the index of the few naming a message only. The ids go in as one JSON
# parameter, so a chunk of any size is one query.
_CHUNK_IDS = "SELECT value FROM json_each(?)"
_CHUNK_MESSAGES = (
    "message_id IN (SELECT message_id FROM messages WHERE campaign_id = ?"  # noqa: S608
    f" AND volunteer_id IN ({_CHUNK_IDS}))"
)
_CHUNK_EVENTS = (
    "SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events"  # noqa: S608
    f" WHERE volunteer_id IN ({_CHUNK_IDS}) AND kind IN ({_VOLUNTEER_KIND_LIST})"
    " UNION ALL"
    " SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events"
    f" WHERE volunteer_id IN ({_CHUNK_IDS}) AND {_CHUNK_MESSAGES}"
    " UNION ALL"
    " SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events"
    f" WHERE {MESSAGE_ONLY} AND {_CHUNK_MESSAGES}"
    " ORDER BY seq"
)


def rows_differ(
    conn: sqlite3.Connection,
    volunteer_ids: Collection[str],
    campaign_id: str,
    *,
    queued_now: Collection[str] = (),
) -> str | None:
    """`first_difference` for a few rows: these volunteers', and their messages of one
    campaign, replayed from their own events only (an index lookup each). What a send
    checks of each chunk it is about to claim (notifier.ledger.checkpoint); within a read
    transaction, so the events and the rows are of one moment. The messages of the
    `queued_now` volunteers are not read: this transaction wrote each one's row and its
    `queued` event together (a first notice or a follow-up: every message of the send)."""
    if not volunteer_ids:
        return None
    ids = json.dumps(sorted(volunteer_ids))
    skipped = set(queued_now)
    owners = json.dumps(sorted(v for v in volunteer_ids if v not in skipped)) if skipped else ids
    replay = Replay()
    cursor = conn.cursor()
    cursor.row_factory = None
    for seq, at, kind, cid, vid, mid, data in cursor.execute(
        _CHUNK_EVENTS, (ids, owners, campaign_id, owners, campaign_id, owners)
    ):
        if kind != K.LEDGER_UPGRADED:  # a whole-ledger reset: the adoptions after it decide
            replay.visit(seq, at, kind, cid, vid, mid, data)
    chunk = f"WHERE volunteer_id IN ({_CHUNK_IDS})"
    return _volunteers_differ(
        conn, iter(sorted(replay.volunteers.items())), chunk, (ids,)
    ) or _messages_differ(
        conn,
        iter(sorted(replay.messages.items())),
        f"{chunk} AND campaign_id = ?",
        (owners, campaign_id),
    )


# The small tables, and the events they are built from: found through the index on
# (campaign_id, kind), for no campaign and for each campaign registered.
_SMALL_KINDS = ", ".join(
    repr(str(k))
    for k in sorted(
        {*_SUPPRESSION_KINDS, K.CAMPAIGN_REGISTERED, K.CAMPAIGN_ADOPTED, K.LEDGER_UPGRADED}
    )
)
_SMALL_TABLE_EVENTS = (
    "SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events"  # noqa: S608
    f" WHERE campaign_id IS NULL AND kind IN ({_SMALL_KINDS})"
    " UNION ALL"
    " SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events"
    f" WHERE campaign_id IN (SELECT campaign_id FROM campaigns) AND kind IN ({_SMALL_KINDS})"
    " ORDER BY seq"
)


def small_tables_differ(conn: sqlite3.Connection) -> str | None:
    """`first_difference` for the tables a send reads whole and that stay small: the
    meta keys, the suppression list (a hard-bounced address deleted from it would be
    mailed again) and the campaigns. Within a read transaction."""
    replay = Replay()
    cursor = conn.cursor()
    cursor.row_factory = None
    for row in cursor.execute(_SMALL_TABLE_EVENTS):
        replay.visit(*row)
    return replay._meta(conn) or replay._suppressions_differ(conn) or replay._campaigns_differ(conn)


# -- the large tables against what their events say, in key order

_Expected = Iterator[tuple[str, Any]]


def _replayed(
    rows: Iterable[tuple[Any, ...]], apply: Callable[[Replay, tuple[Any, ...]], None]
) -> Iterator[tuple[str, Any]]:
    """Events in (key, seq) order (the key first in each row) -> (key, what the row must
    be), in key order: each key's events replayed on their own, then forgotten."""
    replay = Replay()
    current: str | None = None
    for row in rows:
        key = row[0]
        if key != current:
            if current is not None:
                yield from _taken(replay, current)
            current = key
        apply(replay, row)
    if current is not None:
        yield from _taken(replay, current)


def _taken(replay: Replay, key: str) -> Iterator[tuple[str, Any]]:
    for table in (replay.volunteers, replay.messages):
        want = table.pop(key, None)
        if want is not None:
            yield key, want


# A stretch of a large table's keys, [low, high) (None: unbounded), for verifying it in
# parts side by side (notifier.ledger.parallel); the whole table is (None, None).
KeyRange = tuple[str | None, str | None]
WHOLE: KeyRange = (None, None)


def _in_range(column: str, keys: KeyRange) -> tuple[str, list[str]]:
    """SQL conditions (each starting with " AND") and parameters for `column` in `keys`."""
    sql, params = "", []
    if keys[0] is not None:
        sql += f" AND {column} >= ?"
        params.append(keys[0])
    if keys[1] is not None:
        sql += f" AND {column} < ?"
        params.append(keys[1])
    return sql, params


def _replayed_volunteers(conn: sqlite3.Connection, after: int, keys: KeyRange = WHOLE) -> _Expected:
    cursor = conn.cursor()
    cursor.row_factory = None
    within, params = _in_range("volunteer_id", keys)
    sql = (
        "SELECT volunteer_id, kind, data FROM events"  # noqa: S608
        f" WHERE volunteer_id IS NOT NULL AND seq > ? AND kind IN ({_VOLUNTEER_KIND_LIST})"
        f"{within} ORDER BY volunteer_id, seq"
    )
    rows = cursor.execute(sql, (after, *params))
    return _replayed(rows, lambda r, e: r._volunteer(e[1], "", None, e[0], None, e[2]))


def _replayed_messages(conn: sqlite3.Connection, after: int, keys: KeyRange = WHOLE) -> _Expected:
    cursor = conn.cursor()
    cursor.row_factory = None
    within, params = _in_range("message_id", keys)
    sql = (
        "SELECT message_id, kind, campaign_id, volunteer_id, data FROM events"  # noqa: S608
        f" WHERE message_id IS NOT NULL AND seq > ?{within} ORDER BY message_id, seq"
    )
    rows = cursor.execute(sql, (after, *params))
    return _replayed(rows, lambda r, e: r._message_event(e[1], e[2], e[3], e[0], e[4]))


# A large table's rows against the events, in one key range: the first row that is not
# what the events say (in words), and the first key the events have and the table does
# not (a row deleted: said only when no row differs, as `_row` words it).
RangeVerdict = tuple[str | None, str | None]


def large_table_differs(
    conn: sqlite3.Connection, table: str, after: int, keys: KeyRange = WHOLE
) -> RangeVerdict:
    """The volunteers' or messages' rows in `keys` against their events after event
    `after` (the last `ledger_upgraded`): what `first_difference` checks of that table,
    for one stretch of it. Within a read transaction."""
    if table == "volunteers":
        where, params = _in_range("volunteer_id", keys)
        return _volunteer_rows(
            conn, _replayed_volunteers(conn, after, keys), f"WHERE 1{where}", params
        )
    where, params = _in_range("message_id", keys)
    return _message_rows(conn, _replayed_messages(conn, after, keys), f"WHERE 1{where}", params)


def range_verdicts_differ(table: str, verdicts: Iterable[RangeVerdict]) -> str | None:
    """One table's verdict from its key ranges' (in key order): the first row that
    differs, else the first one missing, as the whole table's merge-join says it."""
    verdicts = list(verdicts)
    for problem, _missing in verdicts:
        if problem is not None:
            return problem
    key = _id_column(table)
    for _problem, missing in verdicts:
        if missing is not None:
            return _row(table, f"{key} {missing}", "is missing (deleted)")
    return None


def _id_column(table: str) -> str:
    return "volunteer_id" if table == "volunteers" else "message_id"


def _volunteers_differ(
    conn: sqlite3.Connection, expected: _Expected, where: str = "", params: Sequence[Any] = ()
) -> str | None:
    return range_verdicts_differ("volunteers", [_volunteer_rows(conn, expected, where, params)])


def _volunteer_rows(
    conn: sqlite3.Connection, expected: _Expected, where: str, params: Sequence[Any]
) -> RangeVerdict:
    cursor = conn.cursor()
    cursor.row_factory = None  # 200,000 rows: plain tuples, in the order selected
    fields = ", ".join(TEXT_FIELDS)
    sql = (
        f"SELECT volunteer_id, import_id, source_row, {fields}"  # noqa: S608
        f" FROM volunteers {where} ORDER BY volunteer_id"
    )
    missing = _Missing(expected)
    for volunteer_id, import_id, source_row, *texts in cursor.execute(sql, params):
        want = missing.up_to(volunteer_id)
        at = f"volunteer_id {volunteer_id}"
        if want is None:
            return _row("volunteers", at, "is not in the chain"), None
        if volunteer_row_sha256(volunteer_id, texts) != want[0]:
            return _row("volunteers", at, "differs from the chain"), None
        for column, stored, wanted in (
            ("import_id", import_id, want[1]),
            ("source_row", source_row, want[2]),
        ):
            if wanted is not None and stored != wanted:
                return _row("volunteers", at, f"differs from the chain in {column}"), None
    return None, missing.first()


def _messages_differ(
    conn: sqlite3.Connection, expected: _Expected, where: str = "", params: Sequence[Any] = ()
) -> str | None:
    return range_verdicts_differ("messages", [_message_rows(conn, expected, where, params)])


def _message_rows(
    conn: sqlite3.Connection, expected: _Expected, where: str, params: Sequence[Any]
) -> RangeVerdict:
    cursor = conn.cursor()
    cursor.row_factory = None
    sql = (
        "SELECT message_id, campaign_id, volunteer_id, verp_token, state, attempts"  # noqa: S608
        f" FROM messages {where} ORDER BY message_id"
    )
    missing = _Missing(expected)
    for message_id, *stored in cursor.execute(sql, params):
        want = missing.up_to(message_id)
        if want is None:
            return _row("messages", f"message_id {message_id}", "is not in the chain"), None
        if want[2] is None:  # an old `queued` event without its token (adopted since)
            want[2] = stored[2]
        if stored != want:
            columns = ("campaign_id", "volunteer_id", "verp_token", "state", "attempts")
            column = next(c for c, a, b in zip(columns, stored, want, strict=True) if a != b)
            return _row(
                "messages",
                f"message_id {message_id}",
                f"differs from the chain in {column} ({stored[columns.index(column)]!r},"
                f" the events say {want[columns.index(column)]!r})",
            ), None
    return None, missing.first()


class _Missing:
    """The expected rows, walked beside a table read in the same key order: each row's
    expectation, and the first key the events have and the table does not (a row
    deleted; reported only once the whole table holds, as before)."""

    def __init__(self, expected: _Expected) -> None:
        self._expected = expected
        self._next = next(expected, None)
        self._first: str | None = None

    def up_to(self, key: str) -> Any:
        """What the row `key` must be (None: the events have no such row)."""
        while self._next is not None and self._next[0] < key:  # bounded: keys ascend
            self._first = self._first if self._first is not None else self._next[0]
            self._next = next(self._expected, None)
        if self._next is None or self._next[0] != key:
            return None
        want = self._next[1]
        self._next = next(self._expected, None)
        return want

    def first(self) -> str | None:
        if self._next is not None and self._first is None:
            self._first = self._next[0]
        return self._first


def _row(table: str, row: str, what: str) -> str:
    return f"table {table}, row {row}: {what}; it was edited outside notifier"
