"""The ledger file: creation, its settings, and the forward-only migrations."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils
from conftest import fact

from notifier.errors import LedgerError, LedgerUnkeyed
from notifier.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file behind notifier's back, as someone with sqlite3 would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_new_ledger_is_private_wal_and_versioned(ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION
        # The connection's own settings: nothing in the API shows them.
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert led.verify().ok and led.verify().events == 0
    assert stat.S_IMODE(os.stat(ledger_path).st_mode) == 0o600


def test_reopening_does_not_migrate_again(ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        led.record([fact("test"), fact("test")])
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION
        assert led.count("events") == 2
        assert led.verify().ok


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


def test_version_1_ledger_migrates_forward_and_keeps_its_rows(ledger_path: Path) -> None:
    """A ledger written before rejected rows named their canonical field gains the column,
    filled in where the header was the canonical name, and its events still verify."""
    conn = sqlite3.connect(ledger_path, isolation_level=None)
    MIGRATIONS[0](sqlite_utils.Database(conn))
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
        assert [p.field for p in led.rejected_rows(1)] == ["email", "", "exposure"]
        assert led.verify().reason == "unkeyed (old format): run notifier ledger upgrade"
        with pytest.raises(LedgerUnkeyed):  # no new event until it is upgraded
            led.record([fact("test")])
        assert led.upgrade() is not None  # re-keyed, its rows adopted by events
        led.record([fact("test")])
        assert led.verify().ok


def test_reports_kept_without_an_event_are_adopted_as_the_ledger_moves_forward(
    ledger_path: Path,
) -> None:
    """Before every kept report had an event, a matched report saying nothing understood
    was kept with none: moving such a ledger forward adopts it, so it verifies and is
    vouched for from then on (a row made up later is not)."""
    Ledger(ledger_path).close()
    tamper(
        ledger_path,
        "INSERT INTO bounce_reports(sha256, source, received_at, matched, message_id, detail)"
        " VALUES ('ab12', 'new/1.eml', '2020-04-01T10:00:00+00:00', 1, '<m@x>', '{}')",
    )
    tamper(ledger_path, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION
        (adopted,) = led.events(kinds=["bounce_report_adopted"])
        assert adopted.data == {
            "sha256": "ab12",
            "source": "new/1.eml",
            "matched": True,
            "message_id": "<m@x>",
        }
        assert led.verify().ok
    tamper(
        ledger_path,
        "INSERT INTO bounce_reports(sha256, source, received_at, matched, message_id, detail)"
        " VALUES ('cd34', 'x', 'now', 0, NULL, '{}')",
    )
    with Ledger(ledger_path) as led:  # at the current schema: nothing is adopted again
        assert "table bounce_reports, row sha256 cd34" in led.verify().reason


def test_the_events_that_build_volunteers_rows_are_found_through_their_own_index(
    ledger_path: Path,
) -> None:
    """A send's check of each chunk and `ledger verify` find the events that build a
    volunteer's row through a partial index of them, not by reading every event of each
    person: the queries name the kinds as the index does, and the kinds are all of them."""
    from notifier.ledger import projections

    assert projections._VOLUNTEER_KIND_LIST == ", ".join(
        repr(str(k)) for k in sorted(projections._VOLUNTEER_KINDS)
    )
    with Ledger(ledger_path) as led:
        ids = '["v1", "v2"]'
        chunk_plan = led.conn.execute(
            f"EXPLAIN QUERY PLAN {projections._CHUNK_EVENTS}", (ids, ids, "c", ids, "c", ids)
        ).fetchall()
        assert any("idx_events_volunteer_facts" in row["detail"] for row in chunk_plan)
        assert not any(row["detail"].startswith("SCAN events") for row in chunk_plan)
        whole = (
            "SELECT volunteer_id, kind, data FROM events WHERE volunteer_id IS NOT NULL"  # noqa: S608
            f" AND seq > ? AND kind IN ({projections._VOLUNTEER_KIND_LIST})"
            " ORDER BY volunteer_id, seq"
        )
        (plan,) = led.conn.execute(f"EXPLAIN QUERY PLAN {whole}", (0,)).fetchall()
        assert "idx_events_volunteer_facts" in plan["detail"]  # and no sort after it


def test_a_version_3_ledger_gains_the_index_and_still_verifies(ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        led.record([fact("test")])
    tamper(ledger_path, "DROP INDEX idx_events_volunteer_facts")
    tamper(ledger_path, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION == 5
        names = {r[0] for r in led.conn.execute("SELECT name FROM sqlite_master")}
        assert "idx_events_volunteer_facts" in names
        assert led.verify().ok


def test_a_version_4_ledger_loses_the_index_by_message_id_and_still_verifies(
    ledger_path: Path,
) -> None:
    with Ledger(ledger_path) as led:
        led.record([fact("test")])
    tamper(ledger_path, "DROP INDEX idx_events_message_only")
    tamper(ledger_path, "CREATE INDEX idx_events_message_id ON events(message_id)")
    tamper(ledger_path, "UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with Ledger(ledger_path) as led:
        assert led.schema_version() == SCHEMA_VERSION == 5
        names = {r[0] for r in led.conn.execute("SELECT name FROM sqlite_master")}
        assert "idx_events_message_id" not in names
        assert "idx_events_message_only" in names
        assert led.verify().ok
