"""A send verifies the chain from its latest checkpoint (notifier.ledger.checkpoint): each
attack on the checkpoint, or on what a send reads, and who catches it.

The edits are made with plain sqlite3, as someone with write access (but not the key
file) would.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import write_org_config
from smtp_helpers import add_volunteers, make_volunteers, suppress

from notifier.errors import LedgerTampered
from notifier.ledger import Ledger
from notifier.ledger.checkpoint import latest
from notifier.pipeline import SendScope
from notifier.service import SendOptions, SendSpec, Workspace
from notifier.sink import Sink

FIRST = "2020-03-breach"
PEOPLE = make_volunteers(6)


def spec(url: str, limit: int | None = None) -> SendSpec:
    return SendSpec(options=SendOptions(timeout=5.0), smtp_url=url, scope=SendScope(limit=limit))


@pytest.fixture
def half_sent(tmp_path: Path) -> Path:
    """Six people; the first notice sent to three of them (a run with --limit 3)."""
    write_org_config(tmp_path)
    path = tmp_path / "notifier.db"
    with Ledger(path) as led:
        add_volunteers(led, PEOPLE)
    with Workspace.open(path, env={}) as ws, Sink() as sink:
        ws.approve(FIRST, "Jane Doe")
        ws.send(FIRST, spec(sink.url, limit=3))
        assert len(sink.messages) == 3
    return path


def edit(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute(sql, params).rowcount >= 1
    finally:
        conn.close()


def checkpoint_seq(path: Path) -> int:
    with Ledger(path) as led:
        point = latest(led.conn)
        assert point is not None
        return point.seq


def send_rest(path: Path) -> tuple[list[str], Exception | None]:
    """Send the rest of the first notice; the addresses the sink got, and the refusal."""
    with Workspace.open(path, env={}) as ws, Sink() as sink:
        try:
            ws.send(FIRST, spec(sink.url))
        except LedgerTampered as exc:
            return [t for m in sink.messages for t in m.rcpt_tos], exc
        return [t for m in sink.messages for t in m.rcpt_tos], None


def test_a_send_records_how_far_it_verified_and_the_next_starts_there(half_sent: Path) -> None:
    with Ledger(half_sent) as led:
        point = latest(led.conn)
        assert point is not None
        head_seq = int(led.head().split(":")[0])
        # Recorded after the run's own events: it vouches for the whole chain before it.
        assert point.seq == head_seq
        assert point.through == head_seq - 1
        assert led.verify().ok  # a checkpoint is a sound event: a full verify agrees
    sent, refused = send_rest(half_sent)
    assert refused is None
    assert sorted(sent) == sorted(p.email for p in PEOPLE[3:])
    assert checkpoint_seq(half_sent) > point.seq
    with Ledger(half_sent) as led:
        assert led.verify().ok
        assert led.state_counts(FIRST) == {"sent": 6}


def test_a_forged_checkpoint_is_refused(half_sent: Path) -> None:
    """Someone without the key moves the checkpoint on, to have tampering before it
    skipped: the checkpoint's own keyed hash no longer holds."""
    seq = checkpoint_seq(half_sent)
    edit(half_sent, "UPDATE events SET data = ? WHERE seq = ?", json.dumps({"x": 1}), seq)
    with Ledger(half_sent) as led:
        result = led.verify_since_checkpoint()
        assert not result.ok
        assert f"event {seq}" in result.reason
    sent, refused = send_rest(half_sent)
    assert sent == []
    assert refused is not None


def test_a_checkpoint_naming_another_hash_is_refused(half_sent: Path) -> None:
    seq = checkpoint_seq(half_sent)
    data = json.dumps({"hash": "f" * 64, "through": seq - 1}, separators=(",", ":"))
    edit(half_sent, "UPDATE events SET data = ? WHERE seq = ?", data, seq)
    with Ledger(half_sent) as led:
        result = led.verify_since_checkpoint()
    assert not result.ok
    assert "ledger_verified" in result.reason


def test_a_deleted_checkpoint_falls_back_to_a_full_verification(half_sent: Path) -> None:
    seq = checkpoint_seq(half_sent)
    edit(half_sent, "DELETE FROM events WHERE seq = ?", seq)
    with Ledger(half_sent) as led:
        point = latest(led.conn)
        assert point is None or point.seq < seq  # the one before it, or none
        result = led.verify_since_checkpoint()
    assert not result.ok
    assert f"event {seq}" in result.reason  # the walk from further back finds the hole
    sent, refused = send_rest(half_sent)
    assert sent == []
    assert refused is not None


def test_tampering_before_the_checkpoint_is_found_by_a_full_verify(half_sent: Path) -> None:
    """The trade-off: an edited old event (which touches no row a send reads) is not
    walked again by a send; `ledger verify` still finds it."""
    edit(
        half_sent,
        "UPDATE events SET at = '2020-01-01T00:00:00.000000+00:00'"
        " WHERE seq = (SELECT min(seq) FROM events WHERE kind = 'send_started')",
    )
    with Ledger(half_sent) as led:
        assert led.verify_since_checkpoint().ok
        full = led.verify()
    assert not full.ok
    assert "edited" in full.reason


def test_an_address_edited_in_the_table_after_the_checkpoint_is_never_mailed(
    half_sent: Path,
) -> None:
    target = PEOPLE[4]
    edit(
        half_sent,
        "UPDATE volunteers SET email = 'attacker@evil.test', email_ascii = 'attacker@evil.test'"
        " WHERE volunteer_id = ?",
        target.volunteer_id,
    )
    sent, refused = send_rest(half_sent)
    assert refused is not None
    assert "volunteers" in str(refused)
    assert "attacker@evil.test" not in sent


def test_a_message_state_edited_after_the_checkpoint_is_refused(half_sent: Path) -> None:
    """A message put back to pending (to mail someone twice) is caught before its claim."""
    with Ledger(half_sent) as led:
        done = led.message_states(FIRST)
    (again,) = [vid for vid, state in done.items() if state == "sent"][:1]
    edit(half_sent, "UPDATE messages SET state = 'pending' WHERE volunteer_id = ?", again)
    sent, refused = send_rest(half_sent)
    assert refused is not None
    assert "messages" in str(refused)
    assert next(p.email for p in PEOPLE if p.volunteer_id == again) not in sent


def test_a_suppression_deleted_after_the_checkpoint_is_refused_at_the_start(
    half_sent: Path,
) -> None:
    with Ledger(half_sent) as led:
        suppress(led, PEOPLE[5].email, "bounced_hard 5.1.1", event_seq=None)
    edit(half_sent, "DELETE FROM suppressions")
    sent, refused = send_rest(half_sent)
    assert sent == []
    assert refused is not None
    assert "suppressions" in str(refused)


def test_a_sent_message_deleted_from_the_table_is_not_sent_again(half_sent: Path) -> None:
    """A sent message's row deleted (so the send would queue it as new, and mail that person
    a second time, under the same Message-ID): its events still say it was sent."""
    with Ledger(half_sent) as led:
        newest = led.conn.execute(
            "SELECT volunteer_id FROM messages WHERE state = 'sent'"
            " ORDER BY verp_token DESC LIMIT 1"
        ).fetchone()["volunteer_id"]
    edit(half_sent, "DELETE FROM messages WHERE volunteer_id = ?", newest)
    address = next(p.email for p in PEOPLE if p.volunteer_id == newest)
    for _again in range(2):  # the refused chunk wrote nothing that would hide the edit
        sent, refused = send_rest(half_sent)
        assert refused is not None
        assert "table messages" in str(refused) and "missing (deleted)" in str(refused)
        assert address not in sent
    with Ledger(half_sent) as led:
        queued = [e for e in led.events(kinds=["queued"]) if e.volunteer_id == newest]
        assert len(queued) == 1
        assert not led.verify().ok


def test_a_pending_message_deleted_from_the_table_keeps_its_token_number(
    half_sent: Path,
) -> None:
    """The newest token's row deleted: its number is not issued again (a bounce for that
    message must never find another person's), as its message is not registered again."""
    with Ledger(half_sent) as led:
        newest, token = led.conn.execute(
            "SELECT volunteer_id, verp_token FROM messages ORDER BY verp_token DESC LIMIT 1"
        ).fetchone()
    edit(half_sent, "DELETE FROM messages WHERE volunteer_id = ?", newest)
    sent, refused = send_rest(half_sent)
    assert refused is not None and "missing (deleted)" in str(refused)
    with Ledger(half_sent) as led:
        assert led.message_by_verp_token(token) is None
    assert next(p.email for p in PEOPLE if p.volunteer_id == newest) not in sent
