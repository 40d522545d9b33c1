"""A full verification in parts, checked side by side in other processes.

`Ledger.verify` walks every event and replays the tables; on a ledger of eight million
events that is a minute on one core. Both halves split cleanly:

    the chain walk   each event's stored hash depends only on the stored hash of the event
                     before it and its own content, so a stretch of events (a segment) can
                     be checked on its own, starting from the stored hash (and time) of
                     the event before it. Walked in order, the first segment that fails
                     holds the first event that fails; a segment that holds ends at the
                     event the next one starts from, so their links are checked too.
    the tables       the volunteers' and messages' rows are merge-joined with their events
                     in key order (notifier.ledger.projections); a range of keys is
                     joined on its own, and the ranges' verdicts, in key order, are the
                     whole table's.

The small tables (suppressions, rejected rows, imports, campaigns, bounce reports, meta)
are replayed here from the few events the segments keep for them, in chain order.

The verdict is the one the walk in one process gives, word for word. Each part reads its
own snapshot of the ledger; its result counts only if that snapshot ends at the head of
the caller's (`head`); otherwise, or if the other processes could not run, `Pending.result`
says so (None) and the caller verifies in its own process, as before.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.event import EventKind
from notifier.ledger import chain, opening, projections
from notifier.ledger.chain import GENESIS_HASH, VerifyResult, Walked
from notifier.ledger.projections import WHOLE, KeyRange, RangeVerdict, Replay


@dataclass(frozen=True)
class Parts:
    """How a verification is split. `from_events`: smaller ledgers are verified in this
    process (another's start-up, about half a second, is not worth it); `workers`: the
    other processes (None: one per core, at most 4); `segment_events`: events a segment
    (None: enough segments to keep every worker busy); `table_parts`: key ranges of each
    large table."""

    from_events: int = 200_000
    workers: int | None = None
    segment_events: int | None = None
    table_parts: int = 4


SEGMENTS_PER_WORKER = 3

# A segment's result: the head of the snapshot it read, where its walk got to (None: the
# event before its first is not in the ledger) and the events the small tables are
# replayed from.
SegmentDone = tuple[str, Walked | None, list[tuple[Any, ...]]]
# A key range's: the head of its snapshot, and its verdict.
RangeDone = tuple[str, RangeVerdict]


def segments(head_seq: int, size: int) -> list[tuple[int, int | None]]:
    """Events 1..head_seq in stretches of `size` (first, last); the last one open-ended,
    so events after the recorded head are walked, as a single walk would."""
    size = max(1, size)
    starts = range(1, max(head_seq, 1) + 1, size)
    return [(first, first + size - 1) for first in starts[:-1]] + [(starts[-1], None)]


def key_ranges(conn: sqlite3.Connection, table: str, parts: int) -> list[KeyRange]:
    """`parts` stretches of the table's keys, about as many rows each, through its key's
    index; [WHOLE] for a table too small to split."""
    column = "volunteer_id" if table == "volunteers" else "message_id"
    rows = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    if parts <= 1 or rows < 2 * parts:
        return [WHOLE]
    sql = f"SELECT {column} FROM {table} ORDER BY {column} LIMIT 1 OFFSET ?"  # noqa: S608
    bounds = sorted(
        {str(conn.execute(sql, (rows * i // parts,)).fetchone()[0]) for i in range(1, parts)}
    )
    edges: list[str | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _upgraded_at(conn: sqlite3.Connection) -> int:
    """The last `ledger_upgraded` event (0: none), through the (campaign, kind) index:
    where the large tables' replay starts. Checked against the walk's own finding."""
    row = conn.execute(
        "SELECT max(seq) FROM events WHERE campaign_id IS NULL AND kind = ?",
        (EventKind.LEDGER_UPGRADED.value,),
    ).fetchone()
    return int(row[0] or 0)


@dataclass
class Pending:
    """A verification running in other processes: `result` waits for it."""

    head: str
    segments: list[tuple[int | None, Future[SegmentDone]]]  # each with its last event
    tables: dict[str, list[Future[RangeDone]]]
    reset_seq: int

    def result(self, conn: sqlite3.Connection) -> tuple[VerifyResult, str | None] | None:
        """The chain's verdict and the first table row that differs (None: none; only
        when the chain holds), as the caller's own walk would give them from its
        snapshot (`conn`, inside the read transaction the parts were started in); None
        when a part did not verify that snapshot or could not run."""
        try:
            return self._gathered(conn)
        except Exception:  # whatever went wrong over there, the caller verifies here
            return None

    def _gathered(self, conn: sqlite3.Connection) -> tuple[VerifyResult, str | None] | None:
        replay = Replay(streamed=True)
        walked: Walked | None = None
        for last, future in self.segments:
            head, done, kept = future.result()
            if head != self.head or done is None:
                return None
            if walked is not None:
                done.backwards += walked.backwards
                done.first_backwards = walked.first_backwards or done.first_backwards
            walked = done
            for event in kept:
                replay.visit(*event)
            if done.failure is not None or (last is not None and done.seq != last):
                break  # failed, or the events ran out: the later segments walked nothing
        if walked is None:
            return None
        verdict = chain.verdict(conn, walked)
        if not verdict.ok:
            return verdict, None
        verdicts: dict[str, list[RangeVerdict]] = {}
        for table, futures in self.tables.items():
            verdicts[table] = []
            for range_future in futures:
                head, found = range_future.result()
                if head != self.head:
                    return None
                verdicts[table].append(found)
        if replay.reset_seq != self.reset_seq:  # not what the index said: replay here
            return verdict, replay.first_difference(conn)
        return verdict, (
            replay.meta_differs(conn)
            or projections.range_verdicts_differ("volunteers", verdicts["volunteers"])
            or projections.range_verdicts_differ("messages", verdicts["messages"])
            or replay.small_tables_differ(conn)
        )


def start(
    path: Path, key: bytes, conn: sqlite3.Connection, *, zone: str, parts: Parts
) -> Pending | None:
    """A full verification of the ledger at `path` (keyed; `key`: its chain key) started
    in other processes, or None when it is too small for that or they cannot start.
    Call it inside the read transaction whose snapshot the verdict is to be of."""
    head = chain.head_text(conn)
    head_seq = chain.head(conn)[0]
    if head_seq < parts.from_events or not chain.is_keyed(conn):
        return None
    workers = parts.workers or max(1, min(os.cpu_count() or 1, 4))
    size = parts.segment_events or -(-head_seq // (workers * SEGMENTS_PER_WORKER))
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
    except (OSError, ValueError, NotImplementedError):
        return None
    where = str(path)
    try:
        # The largest parts first: the messages' ranges, then the chain, then the rest.
        tables: dict[str, list[Future[RangeDone]]] = {}
        reset_seq = _upgraded_at(conn)
        for table in ("messages", "volunteers"):
            tables[table] = [
                pool.submit(_range_part, where, table, reset_seq, keys)
                for keys in key_ranges(conn, table, parts.table_parts)
            ]
        walks = [
            (last, pool.submit(_segment_part, where, key, first, last, zone))
            for first, last in segments(head_seq, size)
        ]
    except Exception:
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    pool.shutdown(wait=False)  # the workers end once the parts are done
    return Pending(head, walks, tables, reset_seq)


# -- what the other processes run


@contextlib.contextmanager
def _reading(path: str) -> Iterator[sqlite3.Connection]:
    conn, _read_only = opening.connect(Path(path))
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


def _segment_part(path: str, key: bytes, first: int, last: int | None, zone: str) -> SegmentDone:
    """Events first..last (to the end: None) walked from the stored hash and time of the
    event before them; the events the small tables' replay needs kept."""
    with _reading(path) as conn:
        head = chain.head_text(conn)
        if first == 1:
            begin = Walked(0, GENESIS_HASH)
        else:
            row = conn.execute("SELECT hash, at FROM events WHERE seq = ?", (first - 1,)).fetchone()
            if row is None:
                return head, None, []
            begin = Walked(first - 1, str(row[0]), str(row[1]))
        kept: list[tuple[Any, ...]] = []

        def keep(*event: Any) -> None:
            if Replay.streamed_visits(event[2]):
                kept.append(event)

        cursor = conn.cursor()
        cursor.row_factory = None  # millions of rows: plain tuples
        sql = f"SELECT {chain.EVENT_COLUMNS} FROM events WHERE seq >= ? ORDER BY seq"  # noqa: S608
        walked = chain.walk(
            cursor.execute(sql, (first,)),
            begin,
            chain.mac_for_key(key),
            visit=keep,
            until=last,
            zone=zone,
        )
        return head, walked, kept


def _range_part(path: str, table: str, reset_seq: int, keys: KeyRange) -> RangeDone:
    with _reading(path) as conn:
        return chain.head_text(conn), projections.large_table_differs(conn, table, reset_seq, keys)
