"""A large ledger is verified in parts by other processes (notifier.ledger.parallel): the
chain in segments, the large tables in key ranges. With segments of a few events, an
event tampered with in any segment (the first, a middle one, the last, either side of a
boundary) or a table row edited is found, in the very words the walk in one process
gives; and a verification of another snapshot than the caller's is never its verdict."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, parallel
from notifier.ledger.chain import VerifyResult

SEGMENT = 7
IN_PARTS = parallel.Parts(from_events=0, workers=2, segment_events=SEGMENT, table_parts=3)
HERE_ONLY = parallel.Parts(from_events=10**9)


@pytest.fixture
def copy(sent_ledger: Path, tmp_path: Path) -> Path:
    path = tmp_path / "notifier.db"
    shutil.copy(sent_ledger, path)
    shutil.copy(sent_ledger.with_name(sent_ledger.name + ".key"), tmp_path)
    return path


def verdicts(path: Path, anchors: tuple[str, ...] = ()) -> tuple[VerifyResult, VerifyResult]:
    """The verdict in parts, and the one of the walk in this process."""
    with Ledger(path, create=False) as ledger:
        ledger.verify_parts = IN_PARTS
        in_parts = ledger.verify(anchors)
        ledger.verify_parts = HERE_ONLY
        return in_parts, ledger.verify(anchors)


def event_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT max(seq) FROM events").fetchone()[0])


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


def test_the_parts_really_run_apart_and_hold(sent_ledger: Path) -> None:
    count = event_count(sent_ledger)
    assert count > 6 * SEGMENT  # many segments, not one
    with Ledger(sent_ledger, create=False) as ledger, ledger.reading():
        ledger.secret()
        key = ledger._chain_key()
        pending = parallel.start(ledger.path, key, ledger.conn, zone="UTC", parts=IN_PARTS)
        assert pending is not None
        assert len(pending.segments) == -(-count // SEGMENT)
        assert len(pending.tables["messages"]) == 3
        found = pending.result(ledger.conn)
    assert found is not None  # verified over there, not here
    result, difference = found
    assert result.ok and result.events == count and difference is None
    in_parts, here = verdicts(sent_ledger)
    assert in_parts == here and in_parts.ok


def _positions(count: int) -> dict[str, int]:
    boundary = 3 * SEGMENT  # the last event of the third segment
    return {
        "first": 1,
        "first segment": 4,
        "middle": count // 2,
        "last of a segment": boundary,
        "first of the next": boundary + 1,
        "last": count,
    }


@pytest.mark.parametrize(
    "where", ["first", "first segment", "middle", "last of a segment", "first of the next", "last"]
)
@pytest.mark.parametrize("how", ["edited", "data edited", "deleted", "relinked"])
def test_a_tampered_event_is_found_in_any_segment(copy: Path, where: str, how: str) -> None:
    seq = _positions(event_count(copy))[where]
    if how == "edited":
        tamper(copy, "UPDATE events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = ?", (seq,))
    elif how == "data edited":
        tamper(copy, "UPDATE events SET data = '{\"x\":1}' WHERE seq = ?", (seq,))
    elif how == "deleted":
        tamper(copy, "DELETE FROM events WHERE seq = ?", (seq,))
    else:  # its link points elsewhere
        tamper(copy, "UPDATE events SET prev_hash = ? WHERE seq = ?", ("1" * 64, seq))
    in_parts, here = verdicts(copy)
    assert in_parts == here
    assert not in_parts.ok
    if how == "deleted" and where == "last":
        assert "events at the end were deleted" in in_parts.reason
    else:
        assert in_parts.first_bad_seq == seq


def test_events_deleted_at_a_boundary_and_at_the_end(copy: Path) -> None:
    count = event_count(copy)
    tamper(copy, "DELETE FROM events WHERE seq > ?", (2 * SEGMENT,))  # the head is left as it was
    in_parts, here = verdicts(copy)
    assert in_parts == here
    assert not in_parts.ok and in_parts.events == 2 * SEGMENT
    assert f"recorded its head as event {count}" in in_parts.reason


def test_the_clock_set_back_is_warned_of_across_segments(copy: Path) -> None:
    with Ledger(copy, create=False) as ledger:
        for when in ("2030-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00") * SEGMENT:
            ledger.record([EventDraft(EventKind.TEST_SENT, data={"to": "x@example.org"})], when)
    in_parts, here = verdicts(copy)
    assert in_parts == here
    assert in_parts.ok and f"({SEGMENT} such events in all)" in in_parts.warning


TABLES: dict[str, Callable[[sqlite3.Connection], object]] = {
    "volunteer edited": lambda c: c.execute(
        "UPDATE volunteers SET email = 'x@evil.example' WHERE volunteer_id = 'HMR-00017'"
    ),
    "volunteer deleted": lambda c: c.execute(
        "DELETE FROM volunteers WHERE volunteer_id = 'HMR-00004'"
    ),
    "message state edited": lambda c: c.execute(
        "UPDATE messages SET state = 'pending' WHERE volunteer_id = 'HMR-00011'"
    ),
    "message deleted": lambda c: c.execute("DELETE FROM messages WHERE volunteer_id = 'HMR-00002'"),
    "messages deleted in two ranges": lambda c: c.execute(
        "DELETE FROM messages WHERE volunteer_id IN ('HMR-00001', 'HMR-00019')"
    ),
    "a message deleted, another edited": lambda c: c.executescript(
        "DELETE FROM messages WHERE volunteer_id = 'HMR-00001';"
        "UPDATE messages SET attempts = 7 WHERE volunteer_id = 'HMR-00015';"
    ),
    "suppression deleted": lambda c: c.execute("DELETE FROM suppressions"),
    "meta key added": lambda c: c.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')"),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_a_tampered_table_is_found_in_parts(copy: Path, name: str) -> None:
    with sqlite3.connect(copy) as conn:
        TABLES[name](conn)
    in_parts, here = verdicts(copy)
    assert in_parts == here
    assert not in_parts.ok and "table " in in_parts.reason


def test_anchors_are_checked_in_parts(copy: Path) -> None:
    with Ledger(copy, create=False) as ledger:
        good = ledger.head()
    bad = good.split(":")[0] + ":" + "f" * 64
    in_parts, here = verdicts(copy, (good,))
    assert in_parts == here and in_parts.ok
    in_parts, here = verdicts(copy, (bad,))
    assert in_parts == here and not in_parts.ok and "anchor" in in_parts.reason


@pytest.fixture
def reading(copy: Path) -> Iterator[Ledger]:
    with Ledger(copy, create=False) as ledger:
        ledger.verify_parts = IN_PARTS
        ledger.secret()
        with ledger.reading():
            ledger.head()  # the snapshot starts with its first read
            yield ledger


def test_another_snapshot_verified_over_there_is_never_the_verdict(
    copy: Path, reading: Ledger
) -> None:
    head = reading.head()
    # Appended after this snapshot began, before the other processes read: they see a
    # later head, whose verification is not this snapshot's.
    with Ledger(copy, create=False) as writer:
        writer.record([EventDraft(EventKind.TEST_SENT, data={"to": "x@example.org"})])
        assert writer.head() != head
    pending = parallel.start(
        reading.path, reading._chain_key(), reading.conn, zone="UTC", parts=IN_PARTS
    )
    assert pending is not None and pending.head == head
    assert pending.result(reading.conn) is None  # not this snapshot's: not used
    result = reading.verify_started()()  # so it is verified here, this snapshot
    assert result.ok and f"{result.events}:{result.head}" == head
