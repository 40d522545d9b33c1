"""The ledger: file creation, migrations, the hash chain, and tamper detection."""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from notifier.errors import LedgerError, VolunteerNotFound
from notifier.ledger import SCHEMA_VERSION, EventDraft, Ledger, volunteer_to_row
from notifier.volunteer import Volunteer


def write_events(path: Path, count: int = 5) -> None:
    with Ledger(path) as led:
        led.append_events(
            EventDraft("test", volunteer_id=f"v{i}", data={"i": i, "name": "鈴木 一郎"})
            for i in range(1, count + 1)
        )


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file behind notifier's back, as someone with sqlite3 would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_new_ledger_is_private_wal_and_versioned(ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert stat.S_IMODE(os.stat(ledger_path).st_mode) == 0o600


def test_reopening_does_not_migrate_again(ledger_path: Path) -> None:
    write_events(ledger_path, 2)
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION
        assert led.count("events") == 2


def test_newer_schema_is_refused(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    tamper(ledger_path, "UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="newer"):
        Ledger(ledger_path)


def test_missing_ledger_is_not_created_when_reading(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger here"):
        Ledger(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "roster.csv"
    bogus.write_text("email,family_name\n" * 100)
    with pytest.raises(LedgerError, match="not a notifier ledger"):
        Ledger(bogus)


def test_events_chain_and_read_back_in_order(ledger_path: Path) -> None:
    write_events(ledger_path, 4)
    with Ledger(ledger_path) as led:
        events = list(led.events())
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert [e.data["i"] for e in events] == [1, 2, 3, 4]
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert [e.seq for e in led.events(volunteer_id="v3")] == [3]
        result = led.verify()
    assert result.ok and result.events == 4 and result.head == events[-1].hash


def test_event_with_state_moves_its_message(ledger: Ledger) -> None:
    volunteer = Volunteer("v1", "a@example.org", "a@example.org", "Doe", "Jo", "en", "screened")
    ledger.db.table("volunteers").insert(volunteer_to_row(volunteer))
    ledger.db.table("campaigns").insert({"campaign_id": "c1", "title": "t"})
    ledger.db.table("messages").insert(
        {"message_id": "<m1@example.org>", "campaign_id": "c1", "volunteer_id": "v1"}
    )
    ledger.append_event(
        EventDraft(
            "sent", campaign_id="c1", volunteer_id="v1", message_id="<m1@example.org>", state="sent"
        )
    )
    row = ledger.db.table("messages").get("<m1@example.org>")
    assert row["state"] == "sent"


def test_failed_transaction_appends_nothing(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.append_event(EventDraft("test"))
        raise RuntimeError("crash in the middle")
    assert ledger.count("events") == 0
    assert ledger.verify().ok


@pytest.mark.parametrize(
    ("sql", "params", "bad_seq", "words"),
    [
        ("UPDATE events SET data = ? WHERE seq = 3", ('{"i":99}',), 3, "edited"),
        ("UPDATE events SET kind = 'sent' WHERE seq = 2", (), 2, "edited"),
        ("UPDATE events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 4", (), 4, "edited"),
        ("DELETE FROM events WHERE seq = 2", (), 2, "missing"),
        ("DELETE FROM events WHERE seq = 5", (), 5, "deleted"),
        (
            "INSERT INTO events(seq, at, kind, data, prev_hash, hash)"
            " VALUES (6, '2026-01-01T00:00:00+00:00', 'sent', '{}', 'x', 'y')",
            (),
            6,
            "link",
        ),
    ],
    ids=["edit-data", "edit-kind", "edit-time", "delete-middle", "delete-last", "insert"],
)
def test_verify_names_the_first_bad_event(
    ledger_path: Path, sql: str, params: tuple[object, ...], bad_seq: int, words: str
) -> None:
    write_events(ledger_path, 5)
    tamper(ledger_path, sql, params)
    with Ledger(ledger_path) as led:
        result = led.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.reason


def test_verify_catches_swapped_events(ledger_path: Path) -> None:
    write_events(ledger_path, 3)
    conn = sqlite3.connect(ledger_path)
    conn.execute("UPDATE events SET seq = 100 WHERE seq = 1")
    conn.execute("UPDATE events SET seq = 1 WHERE seq = 2")
    conn.execute("UPDATE events SET seq = 2 WHERE seq = 100")
    conn.commit()
    conn.close()
    with Ledger(ledger_path) as led:
        result = led.verify()
    assert not result.ok and result.first_bad_seq == 1


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
    assert ledger.get_volunteer("jo.doe@EXAMPLE.org") == volunteer
    with pytest.raises(VolunteerNotFound, match="roster list"):
        ledger.get_volunteer("nobody@example.org")


def test_cli_verify_reports_intact_and_tampered(notifier, ledger_path: Path) -> None:
    write_events(ledger_path, 3)
    ok = notifier("ledger", "verify")
    assert ok.exit_code == 0
    assert "3 events, chain intact" in ok.stdout
    tamper(ledger_path, "UPDATE events SET data = '{}' WHERE seq = 2")
    bad = notifier("ledger", "verify")
    assert bad.exit_code == 1
    assert "event 2" in bad.stderr and "edited" in bad.stderr


def test_cli_verify_without_ledger_is_one_clean_line(notifier) -> None:
    result = notifier("ledger", "verify")
    assert result.exit_code == 2
    assert "no ledger here" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_1_ledger_migrates_forward_and_keeps_its_rows(ledger_path: Path) -> None:
    """A ledger written before rejected rows named their canonical field gains the column,
    filled in where the header was the canonical name, and its events still verify."""
    from notifier.ledger import MIGRATIONS

    conn = sqlite3.connect(ledger_path, isolation_level=None)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    MIGRATIONS[0](db)
    conn.execute(
        "INSERT INTO meta VALUES ('schema_version', '1'), ('chain_head', ?)", (f"0:{'0' * 64}",)
    )
    conn.execute("INSERT INTO imports(id, file_name) VALUES (1, 'old.csv')")
    conn.executemany(
        "INSERT INTO rejected_rows(import_id, [row], [column], value, reason) VALUES (1,?,?,?,?)",
        [
            (2, "Email", "x@", "bad"),
            (3, "メールアドレス", "y@", "bad"),
            (4, "exposure", "?", "bad"),
        ],
    )
    conn.close()
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION >= 2
        fields = [r[0] for r in led.conn.execute("SELECT field FROM rejected_rows ORDER BY row")]
        assert fields == ["email", None, "exposure"]
        led.append_event(EventDraft("test"))
        assert led.verify().ok
