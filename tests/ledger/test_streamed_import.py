"""Roster imports read, compared and written a chunk of rows at a time (open_roster +
Ledger.record_import): the same tables and events as a roster read whole, whatever the
chunk size, in one transaction, and --strict still all-or-nothing."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from roster_helpers import read_roster

from notifier.errors import RosterError
from notifier.ledger import Ledger, VolunteerQuery
from notifier.ledger.volunteers import SUMMARY_LIMIT
from notifier.roster import open_roster
from notifier.volunteer import derive_volunteer_id

HEADER = "volunteer_id,email,family_name,given_name,locale,exposure,data_held,notes"
FIRST = [
    "HMR-1,ann@example.org,Smith,Ann,en,published,photo,",
    "HMR-2,bob@example.org,O'Brien,Bob,en,screened,,call first",
    "HMR-3,taro@example.jp,鈴木,太郎,ja,database_only,id_documents;photo,",
    "HMR-4,cy@example.org,Jones,Cy,en,published,,",
]
# Rows 2-3 take the addresses of HMR-2 and HMR-1 before those volunteers' own rows (in
# later chunks) move them on; row 4 takes HMR-4's address, and HMR-4 is not in the file
# to move: refused. Row 7 is bad, row 8 unchanged, row 9 is new.
SECOND = [
    "HMR-5,bob@example.org,New,Five,en,published,,",
    "HMR-6,ANN@example.org,New,Six,en,published,,",
    "HMR-7,cy@example.org,New,Seven,en,published,,",
    "HMR-1,ann.smith@example.org,Smith,Ann,en,screened,photo,",
    "HMR-2,bob.obrien@example.org,O'Brien,Bob,en,screened,,call first",
    "HMR-8,not-an-address,Bad,Row,en,published,,",
    FIRST[2],
    "HMR-9,nine@example.org,New,Nine,en,published,,",
]


def write(tmp_path: Path, name: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\r\n".join([HEADER, *rows]) + "\r\n", encoding="utf-8")
    return path


def state(led: Ledger) -> tuple[Any, ...]:
    """Everything an import leaves behind, but the times."""
    events = [(e.seq, e.kind, e.volunteer_id, e.data) for e in led.events()]
    people = [v for v in led.volunteers(VolunteerQuery())]
    rejected = [(p.row, p.column, p.value, p.reason, p.field) for p in led.rejected_rows()]
    return events, people, rejected


def import_both(tmp_path: Path, files: list[Path], **kwargs: Any) -> tuple[Any, Any]:
    """The same imports into a ledger from rosters read whole and into one streamed a
    row at a time."""
    whole, streamed = Ledger(tmp_path / "whole.db"), Ledger(tmp_path / "streamed.db")
    with whole, streamed:
        for path in files:
            a = whole.record_import(read_roster(path), **kwargs)
            with open_roster(path) as stream:
                b = streamed.record_import(stream, chunk_rows=1, **kwargs)
            assert a == b
        assert whole.verify().ok and streamed.verify().ok
        return state(whole), state(streamed)


def test_streamed_import_writes_what_a_whole_one_does(tmp_path: Path) -> None:
    first, second = write(tmp_path, "a.csv", FIRST), write(tmp_path, "b.csv", SECOND)
    whole, streamed = import_both(tmp_path, [first, second, second])
    assert whole == streamed
    events, people, rejected = streamed
    assert [r[0] for r in rejected] == [4, 7]  # the address held by HMR-4; the bad one
    assert {v.volunteer_id: v.email for v in people} == {
        "HMR-1": "ann.smith@example.org",
        "HMR-2": "bob.obrien@example.org",
        "HMR-3": "taro@example.jp",
        "HMR-4": "cy@example.org",
        "HMR-5": "bob@example.org",
        "HMR-6": "ANN@example.org",
        "HMR-9": "nine@example.org",
    }
    second_import = [e for e in events if e[3].get("import_id") == 2]
    assert [e[1] for e in second_import] == [
        "roster_imported",
        *["volunteer_added"] * 3,
        *["volunteer_updated"] * 2,
        *["row_rejected"] * 2,
    ]
    imported = second_import[0][3]
    assert (imported["added"], imported["updated"], imported["unchanged"]) == (3, 2, 1)
    # The third import is the second file again: nothing written.
    assert not [e for e in events if e[3].get("import_id") == 3]


def test_streamed_strict_import_refuses_for_a_bad_row_in_the_last_chunk(tmp_path: Path) -> None:
    rows = [*FIRST, "HMR-8,not-an-address,Bad,Row,en,published,,"]
    whole, streamed = import_both(tmp_path, [write(tmp_path, "a.csv", rows)], strict=True)
    assert whole == streamed
    events, people, rejected = streamed
    assert people == [] and [r[0] for r in rejected] == [6]
    assert [e[1] for e in events] == ["roster_imported", "row_rejected"]
    assert events[0][3]["applied"] is False


def test_a_file_damaged_past_the_first_chunk_leaves_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", [*FIRST, 'HMR-9,"unclosed@example.org,X,Y,en,published,,'])
    with Ledger(tmp_path / "n.db") as led, open_roster(path) as stream:
        with pytest.raises(RosterError, match="row 6"):
            led.record_import(stream, chunk_rows=2)
        assert led.count("imports") == led.count("events") == led.count("volunteers") == 0


def test_encoding_is_told_from_the_whole_file_not_just_its_start(tmp_path: Path) -> None:
    # The first MB is plain ASCII; a cp932 name comes only after it.
    filler = [f"HMR-{n},p{n}@example.org,Smith,Ann,en,published,," for n in range(30_000)]
    rows = [*filler, "HMR-X,taka@example.jp,髙橋,一郎,ja,published,,"]
    sjis = tmp_path / "sjis.csv"
    sjis.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode("cp932"))
    assert sjis.stat().st_size > 1024 * 1024
    result = read_roster(sjis)
    assert result.encoding == "cp932"
    assert result.accepted[-1].volunteer.family_name == "髙橋"
    # A byte no encoding reads, past the first MB: refused, naming its row.
    broken = tmp_path / "broken.csv"
    broken.write_bytes(sjis.read_bytes().replace("髙".encode("cp932"), b"\xff\xff"))
    with pytest.raises(RosterError, match=f"row {len(rows) + 1}"):
        read_roster(broken)


@pytest.mark.parametrize("enabled", [True, False])
def test_an_import_leaves_the_cycle_collector_as_it_found_it(tmp_path: Path, enabled: bool) -> None:
    """An import pauses Python's cycle collector (see Ledger.record_import); after it, and
    after one that fails halfway, the collector is on again, or still off if it was."""
    good = write(tmp_path, "good.csv", FIRST)
    damaged = write(tmp_path, "bad.csv", [*FIRST, 'HMR-9,"unclosed@x.org,X,Y,en,published,,'])
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with Ledger(tmp_path / "n.db") as led:
            with open_roster(good) as stream:
                assert led.record_import(stream).added == 4
            assert gc.isenabled() is enabled
            with open_roster(damaged) as stream, pytest.raises(RosterError):
                led.record_import(stream, chunk_rows=2)
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_an_import_of_only_bad_rows_keeps_every_problem_in_the_ledger(tmp_path: Path) -> None:
    """Memory stays flat when every row is bad (a whole file with an unmapped exposure):
    the summary keeps the first SUMMARY_LIMIT problems to show, the ledger all of them,
    in row order, each with its event."""
    count = SUMMARY_LIMIT + 37
    rows = [f"HMR-{n},p{n}@example.org,Smith,Ann,en,member,," for n in range(count)]
    with Ledger(tmp_path / "n.db") as led, open_roster(write(tmp_path, "a.csv", rows)) as stream:
        summary = led.record_import(stream, chunk_rows=100)
        recorded = list(led.rejected_rows(summary.import_id))
        assert (summary.added, summary.rejected, summary.problem_count) == (0, count, count)
        assert [p.row for p in recorded] == list(range(2, count + 2))
        assert summary.problems == tuple(recorded[:SUMMARY_LIMIT])
        assert [e.kind for e in led.events()].count("row_rejected") == count
        assert led.verify().ok


def test_a_re_import_changing_everyone_counts_every_change(tmp_path: Path) -> None:
    count = SUMMARY_LIMIT + 5
    before = [f"HMR-{n},p{n}@example.org,Smith,Ann,en,published,," for n in range(count)]
    after = [row.replace(",Ann,", ",Anne,") for row in before]
    with Ledger(tmp_path / "n.db") as led:
        for rows, name in ((before, "a.csv"), (after, "b.csv")):
            with open_roster(write(tmp_path, name, rows)) as stream:
                summary = led.record_import(stream, chunk_rows=100)
        assert (summary.updated, summary.change_count) == (count, count)
        assert summary.changes[:2] == (
            ("HMR-0", "given_name", "Ann", "Anne"),
            ("HMR-1", "given_name", "Ann", "Anne"),
        )
        assert len(summary.changes) == SUMMARY_LIMIT
        assert led.verify().ok


def test_problems_and_refusals_come_in_row_order(tmp_path: Path) -> None:
    """The roster's own problems and the ledger's refusals (an address another volunteer
    keeps), found in different chunks, are recorded merged in row order."""
    with Ledger(tmp_path / "n.db") as led:
        with open_roster(write(tmp_path, "a.csv", FIRST)) as stream:
            led.record_import(stream)
        rows = [
            "HMR-10,bad-address,X,Y,en,published,,",  # row 2: the roster's
            "HMR-11,cy@example.org,X,Y,en,published,,",  # row 3: HMR-4 keeps it
            "HMR-12,also bad,X,Y,en,published,,",  # row 4: the roster's
            "HMR-13,ann@example.org,X,Y,en,published,,",  # row 5: HMR-1 keeps it
        ]
        with open_roster(write(tmp_path, "b.csv", rows)) as stream:
            summary = led.record_import(stream, chunk_rows=1)
        assert [p.row for p in led.rejected_rows()] == [2, 3, 4, 5]
        assert [p.row for p in summary.problems] == [2, 3, 4, 5]
        assert summary.rejected == summary.problem_count == 4


def test_a_chain_of_moves_ending_at_someone_who_stays_is_refused_whole(tmp_path: Path) -> None:
    """HMR-1 moves to HMR-2's address and HMR-2 to HMR-3's, but HMR-3 is not in the file
    and keeps it: HMR-2's move is refused, so HMR-2 keeps its address, so HMR-1's is
    refused too (it crashed on the unique index). A swap in the same file goes ahead."""
    first = [
        "HMR-1,a@example.org,A,A,en,published,,",
        "HMR-2,b@example.org,B,B,en,published,,",
        "HMR-3,c@example.org,C,C,en,published,,",
        "HMR-4,d@example.org,D,D,en,published,,",
        "HMR-5,e@example.org,E,E,en,published,,",
    ]
    second = [
        "HMR-1,b@example.org,A,A,en,published,,",  # row 2: waits on HMR-2
        "HMR-4,e@example.org,D,D,en,published,,",  # row 3: a swap with HMR-5
        "HMR-2,c@example.org,B,B,en,published,,",  # row 4: HMR-3 stays
        "HMR-5,d@example.org,E,E,en,published,,",  # row 5
    ]
    files = [write(tmp_path, "a.csv", first), write(tmp_path, "b.csv", second)]
    whole, streamed = import_both(tmp_path, files)
    assert whole == streamed
    _events, people, rejected = streamed
    assert {p.volunteer_id: p.email for p in people} == {
        "HMR-1": "a@example.org",
        "HMR-2": "b@example.org",
        "HMR-3": "c@example.org",
        "HMR-4": "e@example.org",
        "HMR-5": "d@example.org",
    }
    assert [(r[0], r[2]) for r in rejected] == [(2, "b@example.org"), (4, "c@example.org")]
    assert "volunteer HMR-2" in rejected[0][3] and "volunteer HMR-3" in rejected[1][3]


def made_id(address: str) -> str:
    return derive_volunteer_id(address)


@pytest.mark.parametrize("blank_first", [True, False])
def test_an_id_made_from_an_address_never_merges_two_rows(
    tmp_path: Path, blank_first: bool
) -> None:
    """A roster exported with its ids, one person's address changed and a new person
    added without an id at the old address: the id made from that address is the id
    another row gives. Rows are checked in order, so the later of the two is refused,
    with the reason; nobody is merged into anybody (it made two updates of one
    volunteer, and verify said TAMPERED)."""
    first = write(tmp_path, "a.csv", ["HMR-1,x@example.org,X,X,en,published,,"])
    smith = f"{made_id('a@example.org')},a2@example.org,Smith,S,en,published,,"
    jones = ",a@example.org,Jones,J,en,screened,,"
    rows = [jones, smith] if blank_first else [smith, jones]
    whole, streamed = import_both(tmp_path, [first, write(tmp_path, "b.csv", rows)])
    assert whole == streamed
    _events, people, rejected = streamed
    ((row, column, value, reason, field),) = rejected
    assert (row, column, field) == (3, "volunteer_id", "volunteer_id")
    if blank_first:
        assert sorted(p.family_name for p in people) == ["Jones", "X"]
        assert value == made_id("a@example.org")
        assert reason == "duplicate of row 2, whose id is made from its address"
    else:
        assert sorted(p.family_name for p in people) == ["Smith", "X"]
        assert value == "" and made_id("a@example.org") in reason
        assert "give this row an id of its own" in reason


def test_an_id_made_from_an_address_someone_has_left_is_not_theirs(tmp_path: Path) -> None:
    """Smith was imported without an id (one made from a@), then moved to a2@ in a roster
    with ids; a later row without an id at a@ is somebody else: refused, not written over
    Smith (who would have vanished from the worklists)."""
    smith_id = made_id("a@example.org")
    files = [
        write(tmp_path, "a.csv", [",a@example.org,Smith,S,en,published,,"]),
        write(tmp_path, "b.csv", [f"{smith_id},a2@example.org,Smith,S,en,published,,"]),
        write(tmp_path, "c.csv", [",a@example.org,Jones,J,en,screened,,"]),
    ]
    whole, streamed = import_both(tmp_path, files)
    assert whole == streamed
    _events, people, rejected = streamed
    assert [(p.volunteer_id, p.email, p.family_name) for p in people] == [
        (smith_id, "a2@example.org", "Smith")
    ]
    ((row, column, _value, reason, _field),) = rejected
    assert (row, column) == (2, "volunteer_id")
    assert f"volunteer {smith_id}'s, who now has another address" in reason
