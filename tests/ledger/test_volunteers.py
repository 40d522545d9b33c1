"""Volunteers in the ledger: finding and selecting them, and the roster imports that write
them (Ledger.record_import: one transaction, on a real SQLite file)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from roster_helpers import read_roster

from notifier.errors import VolunteerNotFound
from notifier.ledger import (
    Ledger,
    VolunteerQuery,
    canonical_json,
    volunteer_from_row,
    volunteer_to_row,
)
from notifier.ledger.volunteers import volunteer_added_data
from notifier.message import NewMessage
from notifier.volunteer import Volunteer

HEADER = "volunteer_id,email,family_name,given_name,locale,exposure,data_held,notes"
ROWS = [
    "HMR-1,ann@example.org,Smith,Ann,en,published,photo,",
    "HMR-2,bob@example.org,O'Brien,Bob,en,screened,,call first",
    "HMR-3,taro@example.jp,鈴木,太郎,ja,database_only,id_documents;photo,",
    "HMR-4,bad-address,Jones,Cy,en,published,,",
]


def roster(tmp_path: Path, rows: list[str], name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_bytes("".join(f"{r}\r\n" for r in [HEADER, *rows]).encode("utf-8"))
    return path


def kinds(led: Ledger) -> list[str]:
    return [e.kind for e in led.events()]


def test_ledger_import_records_everything_in_one_go(tmp_path: Path, ledger: Ledger) -> None:
    summary = ledger.record_import(read_roster(roster(tmp_path, ROWS)), mapping_sha256="m" * 64)

    assert (summary.added, summary.updated, summary.unchanged, summary.rejected) == (3, 0, 0, 1)
    assert not summary.already_imported and not summary.refused
    assert kinds(ledger) == [
        "roster_imported",
        "volunteer_added",
        "volunteer_added",
        "volunteer_added",
        "row_rejected",
    ]
    imported = next(ledger.events(kinds=["roster_imported"])).data
    assert imported["file"] == "roster.csv"
    assert (imported["added"], imported["rows_rejected"], imported["rows_total"]) == (3, 1, 4)
    rejected = next(ledger.events(kinds=["row_rejected"])).data
    assert (rejected["row"], rejected["column"], rejected["value"]) == (5, "email", "bad-address")

    record = ledger.latest_import()
    assert record is not None
    assert (record.import_id, record.file_name, record.mapping_sha256) == (
        summary.import_id,
        str(tmp_path / "roster.csv"),
        "m" * 64,
    )
    assert [(p.row, p.column) for p in ledger.rejected_rows()] == [(5, "email")]
    bob = ledger.get_volunteer("HMR-2")
    assert bob.extra == {"notes": "call first"}
    assert ledger.get_volunteer("taro@example.jp").data_held == ("id_documents", "photo")
    assert ledger.verify().ok


def test_ledger_reimport_of_the_same_file_writes_nothing(tmp_path: Path, ledger: Ledger) -> None:
    path = roster(tmp_path, ROWS)
    first = ledger.record_import(read_roster(path))
    events = ledger.count("events")

    again = ledger.record_import(read_roster(path))

    assert again.already_imported
    assert (again.import_id, again.added, again.updated, again.unchanged) == (
        first.import_id,
        0,
        0,
        3,
    )
    assert ledger.count("events") == events
    assert ledger.count("imports") == 1


def test_ledger_edited_roster_updates_and_records_changes(tmp_path: Path, ledger: Ledger) -> None:
    ledger.record_import(read_roster(roster(tmp_path, ROWS)))
    edited = [
        "HMR-1,ann.smith@example.org,Smith,Ann,en,screened,photo,",  # address and exposure
        ROWS[1],
        ROWS[2],
        "HMR-5,new@example.org,New,Person,en,published,,",
    ]
    summary = ledger.record_import(read_roster(roster(tmp_path, edited, "edited.csv")))

    assert (summary.added, summary.updated, summary.unchanged, summary.rejected) == (1, 1, 2, 0)
    assert set(summary.changes) == {
        ("HMR-1", "email", "ann@example.org", "ann.smith@example.org"),
        ("HMR-1", "email_ascii", "ann@example.org", "ann.smith@example.org"),
        ("HMR-1", "exposure", "published", "screened"),
    }
    ann = ledger.get_volunteer("HMR-1")
    assert (ann.email, ann.exposure) == ("ann.smith@example.org", "screened")
    (update,) = ledger.events(kinds=["volunteer_updated"])
    assert update.volunteer_id == "HMR-1"
    assert update.data["changes"]["exposure"] == {"old": "published", "new": "screened"}
    # The latest import had no problems, so there are no rejected rows to show now.
    assert list(ledger.rejected_rows()) == []
    assert ledger.verify().ok


def test_ledger_two_volunteers_may_swap_addresses(tmp_path: Path, ledger: Ledger) -> None:
    ledger.record_import(read_roster(roster(tmp_path, ROWS[:2])))
    swapped = [
        "HMR-1,bob@example.org,Smith,Ann,en,published,photo,",
        "HMR-2,ann@example.org,O'Brien,Bob,en,screened,,call first",
    ]
    summary = ledger.record_import(read_roster(roster(tmp_path, swapped, "s.csv")))
    assert summary.updated == 2
    assert ledger.get_volunteer("HMR-1").email == "bob@example.org"


def test_ledger_address_of_another_volunteer_is_rejected(tmp_path: Path, ledger: Ledger) -> None:
    ledger.record_import(read_roster(roster(tmp_path, ROWS[:1])))
    clash = ["HMR-9,ANN@example.org,Other,Person,en,published,,"]
    summary = ledger.record_import(read_roster(roster(tmp_path, clash, "c.csv")))
    assert (summary.added, summary.rejected) == (0, 1)
    (problem,) = summary.problems
    assert "HMR-1" in problem.reason
    assert [p.reason for p in ledger.rejected_rows()] == [problem.reason]


def test_ledger_strict_import_writes_no_volunteer(tmp_path: Path, ledger: Ledger) -> None:
    summary = ledger.record_import(read_roster(roster(tmp_path, ROWS)), strict=True)
    assert summary.refused
    assert (summary.added, summary.rejected) == (0, 1)
    assert ledger.count("volunteers") == 0
    # The report is kept all the same, so it is never lost.
    assert [p.row for p in ledger.rejected_rows()] == [5]
    imported = next(ledger.events(kinds=["roster_imported"])).data
    assert imported["strict"] is True and imported["applied"] is False


def test_ledger_import_is_one_transaction(tmp_path: Path, ledger_path: Path) -> None:
    path = roster(tmp_path, ROWS)
    result = read_roster(path)
    with Ledger(ledger_path) as led:
        # Make the volunteers insert fail half way: nothing at all may remain. (A fault no
        # API can cause, so it is planted with plain SQL.)
        led.conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON volunteers WHEN NEW.volunteer_id = 'HMR-3' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with pytest.raises(sqlite3.IntegrityError):
            led.record_import(result)
        assert led.count("imports") == led.count("events") == led.count("volunteers") == 0
        assert led.latest_import() is None


# --- finding and selecting volunteers ---------------------------------------------------


def person(n: int, locale: str = "en", exposure: str = "screened") -> Volunteer:
    email = f"person{n}@example.org"
    return Volunteer(f"v{n:03d}", email, email, "Family", "Given", locale, exposure)


def test_volunteer_row_round_trip_keeps_every_field() -> None:
    volunteer = Volunteer(
        "v-1",
        "鈴木@例え.jp",
        "鈴木@xn--r8jz45g.jp",
        "鈴木",
        "一郎",
        "ja",
        "published",
        ("photo", "bank_details"),
        "東京都千代田区1-1",
        {"note": "x", "ア": "イ"},
    )
    row = volunteer_to_row(volunteer)
    assert row["data_held"] == "photo;bank_details"
    assert row["extra"] == '{"note":"x","ア":"イ"}'
    assert volunteer_from_row(row) == volunteer
    empty = {**row, "email_ascii": None, "given_name": None, "data_held": None, "extra": None}
    assert volunteer_from_row(empty) == Volunteer(
        "v-1",
        "鈴木@例え.jp",
        "鈴木@例え.jp",
        "鈴木",
        "",
        "ja",
        "published",
        (),
        "東京都千代田区1-1",
    )


def test_get_volunteer_by_id_or_address(ledger: Ledger) -> None:
    volunteer = Volunteer(
        "v-1",
        "Jo.Doe@example.org",
        "Jo.Doe@example.org",
        "Doe",
        "Jo",
        "en",
        "published",
        ("photo", "bank_details"),
        "1 Example Road",
        {"note": "x"},
    )
    ledger.db.table("volunteers").insert(volunteer_to_row(volunteer))
    assert ledger.get_volunteer("v-1") == volunteer
    assert ledger.get_volunteer(" jo.doe@EXAMPLE.org ") == volunteer
    with pytest.raises(VolunteerNotFound, match="roster list"):
        ledger.get_volunteer("nobody@example.org")


def test_volunteer_query_filters_and_counts(ledger: Ledger) -> None:
    people = [
        person(1, "en", "published"),
        person(2, "ja", "screened"),
        person(3, "en", "screened"),
        person(4, "ja", "database_only"),
    ]
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    ledger.register_campaign("c", title="t", follows=None, definition={}, templates_sha256="")
    ledger.ensure_messages("c", [NewMessage(f"<m{n}@x>", f"v{n:03d}", f"t{n}") for n in (2, 3)])
    ledger.claim_for_sending(["<m3@x>"])

    def ids(query: VolunteerQuery) -> list[str]:
        return [v.volunteer_id for v in ledger.volunteers(query)]

    assert ids(VolunteerQuery()) == ["v001", "v002", "v003", "v004"]
    assert ids(VolunteerQuery(exposures=("screened", "published"), locales=("en",))) == [
        "v001",
        "v003",
    ]
    assert ids(VolunteerQuery(in_campaign="c")) == ["v002", "v003"]
    assert ids(VolunteerQuery(in_campaign="c", message_states=("sending",))) == ["v003"]
    assert ids(VolunteerQuery(in_campaign="nothing-sent")) == []
    assert ids(VolunteerQuery(volunteer_id="v004", locales=("en",))) == []
    assert ledger.count_volunteers() == {
        ("en", "published"): 1,
        ("ja", "screened"): 1,
        ("en", "screened"): 1,
        ("ja", "database_only"): 1,
    }
    assert ledger.count_volunteers(VolunteerQuery(locales=("ja",))) == {
        ("ja", "screened"): 1,
        ("ja", "database_only"): 1,
    }


@given(
    import_id=st.integers(min_value=1, max_value=10**9),
    row=st.integers(min_value=2, max_value=10**7),
    email=st.text(max_size=40),
    row_sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_volunteer_added_data_is_the_canonical_json_of_its_dict(
    import_id: int, row: int, email: str, row_sha256: str
) -> None:
    """An import writes this event's data as text; it must be exactly what canonical_json
    makes of the dict, or verify would fail on the next re-serialisation (any address:
    quotes, backslashes, control characters, line separators, non-BMP)."""
    data = {"import_id": import_id, "row": row, "email": email, "row_sha256": row_sha256}
    assert volunteer_added_data(import_id, row, email, row_sha256) == canonical_json(data)
