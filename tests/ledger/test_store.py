"""The open ledger: read transactions, and snapshots with the sha256 of the file."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from conftest import fact

from notifier.ledger import Ledger
from notifier.ledger import store as store_module


def test_reading_sees_one_state_and_writes_nothing(ledger: Ledger) -> None:
    ledger.record([fact("first")])
    other = Ledger(ledger.path)
    try:
        with ledger.reading():
            assert ledger.in_transaction
            before = ledger.count("events")
            other.record([fact("meanwhile")])  # another process writes
            assert ledger.count("events") == before  # still the state the read began with
        assert not bool(ledger.in_transaction)  # bool(): mypy kept the narrowing above
        assert ledger.count("events") == before + 1
    finally:
        other.close()


def test_reading_joins_an_open_transaction(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.record([fact("written")])
        with ledger.reading():
            assert ledger.count("events") == 1
        assert ledger.in_transaction  # the reading did not end the write
    assert ledger.count("events") == 1


def test_snapshot_hashes_the_checkpointed_file(ledger: Ledger) -> None:
    ledger.record([fact("a"), fact("b")])
    with ledger.snapshot() as digest:
        assert ledger.count("events") == 2
    assert digest.complete and digest.note == ""
    assert digest.sha256 == hashlib.sha256(ledger.path.read_bytes()).hexdigest()
    assert not ledger.in_transaction


def test_snapshot_says_so_when_writes_are_still_in_the_wal(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_CHECKPOINT_BUSY_MS", 20)
    ledger.record([fact("a")])
    reader = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        # An open read (another `notifier status`, say) pins the file while a send writes.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        ledger.record([fact("b")])
        with ledger.snapshot() as digest:
            assert ledger.count("events") == 2  # the reads still see every write
        assert not digest.complete and "-wal" in digest.note
    finally:
        reader.close()
