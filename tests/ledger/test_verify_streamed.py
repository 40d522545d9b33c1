"""`ledger verify` merge-joins the volunteers and messages tables with their events (flat
memory): its verdict on a tampered table is the one the in-memory replay gives."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from notifier.ledger import Ledger, chain, projections

Tamper = Callable[[sqlite3.Connection], object]

TAMPERINGS: dict[str, Tamper] = {
    "volunteer edited": lambda c: c.execute(
        "UPDATE volunteers SET email = 'x@evil.example' WHERE volunteer_id = 'HMR-00007'"
    ),
    "volunteer deleted": lambda c: c.execute(
        "DELETE FROM volunteers WHERE volunteer_id = 'HMR-00004'"
    ),
    "volunteer inserted": lambda c: c.execute(
        "INSERT INTO volunteers(volunteer_id, email, family_name, given_name, locale, exposure)"
        " SELECT 'HMR-00004a', 'new@example.org', family_name, given_name, locale, exposure"
        " FROM volunteers WHERE volunteer_id = 'HMR-00004'"
    ),
    "message state edited": lambda c: c.execute(
        "UPDATE messages SET state = 'pending' WHERE volunteer_id = 'HMR-00011'"
    ),
    "message deleted": lambda c: c.execute("DELETE FROM messages WHERE volunteer_id = 'HMR-00002'"),
    "message inserted": lambda c: c.execute(
        "INSERT INTO messages(message_id, campaign_id, volunteer_id, verp_token, state,"
        " attempts, updated_at) SELECT '<forged@example.org>', 'forged-campaign', volunteer_id,"
        " 'forgedtoken', 'pending', 0, updated_at FROM messages WHERE volunteer_id = 'HMR-00003'"
    ),
    "two tables": lambda c: c.executescript(
        "DELETE FROM messages WHERE volunteer_id = 'HMR-00001';"
        "UPDATE messages SET attempts = 7 WHERE volunteer_id = 'HMR-00015';"
    ),
    "suppression deleted": lambda c: c.execute("DELETE FROM suppressions"),
}


def in_memory_verdict(ledger: Ledger) -> str | None:
    """The verdict of the replay that keeps every row's expectation in memory."""
    with ledger.reading():
        replay = projections.Replay()
        result = chain.verify(ledger.conn, replay.visit)
        assert result.ok
        return replay.first_difference(ledger.conn)


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_streamed_verify_finds_what_the_in_memory_replay_finds(
    sent_ledger: Path, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "notifier.db"
    shutil.copy(sent_ledger, path)
    shutil.copy(sent_ledger.with_name(sent_ledger.name + ".key"), tmp_path)
    with sqlite3.connect(path) as conn:
        TAMPERINGS[name](conn)
    with Ledger(path, create=False) as ledger:
        result = ledger.verify()
        assert not result.ok
        assert result.reason == in_memory_verdict(ledger)


def test_streamed_verify_holds_on_an_untouched_ledger(sent_ledger: Path) -> None:
    with Ledger(sent_ledger, create=False) as ledger:
        assert ledger.verify().ok
        assert in_memory_verdict(ledger) is None
