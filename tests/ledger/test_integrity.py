"""A ledger that proves itself: each attack from the integrity issue, and that it is caught.

The attacks edit the file with plain sqlite3, as someone with write access would.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from smtp_helpers import add_volunteers, make_volunteers, suppress

from notifier.errors import KeyFileError, LedgerTampered
from notifier.ledger import GENESIS_HASH, Ledger, canonical_json, event_hash
from notifier.message import DeliveryOutcome, MessageState, NewMessage
from notifier.roster import RosterResult, RowProblem


def tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


@pytest.fixture
def sent(ledger_path: Path) -> Path:
    """Three volunteers (one rejected row), one campaign: two sent, one suppressed."""
    with Ledger(ledger_path) as led:
        add_volunteers(led, make_volunteers(3))
        led.record_import(
            RosterResult(
                file=Path("more.csv"),
                sha256="1" * 64,
                encoding="utf-8",
                rows_total=1,
                accepted=(),
                problems=(
                    RowProblem(row=2, column="email", value="x@", reason="bad", field="email"),
                ),
            )
        )
        led.register_campaign("c", title="t", follows=None, definition={}, templates_sha256="0")
        ids = [f"<m{i}@example.org>" for i in range(3)]
        led.ensure_messages("c", [NewMessage(ids[i], f"HMR-{i:05d}", f"t{i}") for i in range(3)])
        led.claim_for_sending(ids[:2], {ids[0]: ("person0@example.jp", "a" * 64)})
        led.record_outcomes(
            [
                DeliveryOutcome(m, "c", f"HMR-{i:05d}", MessageState.SENT, 1)
                for i, m in enumerate(ids[:2])
            ]
        )
        suppress(led, "person2@example.com", "bounced_hard 5.1.1", event_seq=None)
        assert led.verify().ok
    return ledger_path


def verify(path: Path, anchors: tuple[str, ...] = ()) -> tuple[bool, str]:
    with Ledger(path, create=False) as led:
        result = led.verify(anchors)
    return result.ok, result.reason


# --- the chain has a key -----------------------------------------------------------------


def test_recomputing_every_hash_with_the_public_algorithm_fails(sent: Path) -> None:
    """Edit an event, then rewrite every later hash (and the head) as the old plain
    sha256 chain allowed: without the key the hashes do not hold."""
    conn = sqlite3.connect(sent)
    conn.row_factory = sqlite3.Row
    conn.execute(
        "UPDATE events SET data = ? WHERE kind = 'volunteer_added' AND seq = 2",
        (json.dumps({"email": "attacker@evil.example"}),),
    )
    prev = GENESIS_HASH
    for row in conn.execute("SELECT * FROM events ORDER BY seq").fetchall():
        data = canonical_json(json.loads(row["data"]))
        digest = event_hash(
            prev,
            row["seq"],
            row["at"],
            row["kind"],
            row["campaign_id"],
            row["volunteer_id"],
            row["message_id"],
            data,
        )
        conn.execute(
            "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, row["seq"])
        )
        prev, last = digest, row["seq"]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'chain_head'", (f"{last}:{prev}",))
    conn.commit()
    conn.close()
    ok, reason = verify(sent)
    assert not ok and "event 1" in reason and "edited" in reason


def test_verify_with_another_key_never_passes(sent: Path, tmp_path: Path) -> None:
    key_file = sent.with_name(sent.name + ".key")
    other = tmp_path / "other.db"
    Ledger(other).close()  # another ledger, another key
    shutil.copy(other.with_name("other.db.key"), key_file)
    with pytest.raises(KeyFileError, match="does not belong to this ledger") as caught:
        verify(sent)
    assert caught.value.exit_code == 2


def test_a_missing_key_is_not_replaced_and_nothing_is_appended(sent: Path) -> None:
    sent.with_name(sent.name + ".key").unlink()
    with pytest.raises(KeyFileError, match="missing") as caught:
        verify(sent)
    assert caught.value.exit_code == 2
    assert not sent.with_name(sent.name + ".key").exists()


# --- the tables that decide sending are the chain's -------------------------------------


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        (
            "UPDATE volunteers SET email = 'x@evil.example' WHERE volunteer_id = 'HMR-00001'",
            "table volunteers, row volunteer_id HMR-00001: differs",
        ),
        (
            "DELETE FROM volunteers WHERE volunteer_id = 'HMR-00002'",
            "table volunteers, row volunteer_id HMR-00002: is missing",
        ),
        (
            "UPDATE messages SET state = 'delivered' WHERE message_id = '<m2@example.org>'",
            "table messages, row message_id <m2@example.org>: differs from the chain in state",
        ),
        (
            "UPDATE messages SET verp_token = 'zz' WHERE message_id = '<m0@example.org>'",
            "in verp_token",
        ),
        ("UPDATE messages SET attempts = 0 WHERE message_id = '<m1@example.org>'", "in attempts"),
        (
            "DELETE FROM suppressions",
            "table suppressions, row email person2@example.com: is missing",
        ),
        (
            "INSERT INTO suppressions(email, reason) VALUES ('person1@example.com', 'x')",
            "table suppressions, row email person1@example.com: is not in the chain",
        ),
        ("DELETE FROM rejected_rows", "table rejected_rows, row import 2, row 2: is missing"),
        ("UPDATE rejected_rows SET value = 'ok@example.org'", "table rejected_rows, row id 1"),
    ],
    ids=[
        "volunteer-email",
        "volunteer-deleted",
        "message-state",
        "message-token",
        "message-attempts",
        "suppression-deleted",
        "suppression-added",
        "rejected-deleted",
        "rejected-edited",
    ],
)
def test_an_edited_projection_row_is_named(sent: Path, sql: str, words: str) -> None:
    tamper(sent, (sql, ()))
    ok, reason = verify(sent)
    assert not ok and words in reason


def test_send_refuses_a_ledger_that_fails_verification(sent: Path) -> None:
    tamper(
        sent,
        (
            "UPDATE volunteers SET email = 'x@evil.example' WHERE volunteer_id = 'HMR-00000'",
            (),
        ),
    )
    with (
        Ledger(sent) as led,
        pytest.raises(LedgerTampered, match="run notifier ledger verify") as caught,
    ):
        led.require_intact()
    assert caught.value.exit_code == 1


def test_sending_and_sent_events_record_recipient_and_bytes(sent: Path) -> None:
    with Ledger(sent) as led:
        (sending,) = [
            e for e in led.events(kinds=["sending"]) if e.message_id == "<m0@example.org>"
        ]
    assert sending.data["recipient"] == "person0@example.jp"
    assert sending.data["sha256"] == "a" * 64


# --- anchors ------------------------------------------------------------------------------


def test_an_anchor_catches_a_restored_older_copy(sent: Path, tmp_path: Path) -> None:
    older = tmp_path / "older.db"
    with Ledger(sent) as led:
        shutil.copy(sent, older)  # a backup, taken now (WAL checkpointed on close below)
        suppress(led, "late@example.org", "bounced_hard", event_seq=None)
        anchor = led.head()
    with Ledger(sent) as led:
        assert led.verify([anchor]).ok
    shutil.copy(sent.with_name(sent.name + ".key"), older.with_name("older.db.key"))
    ok, reason = verify(older, (anchor,))
    assert not ok and "holds no event" in reason
    assert verify(older)[0]  # on its own the older copy is a perfectly good ledger


def test_an_anchor_catches_a_rewrite_by_someone_with_the_key(sent: Path) -> None:
    with Ledger(sent) as led:
        anchor = led.head()
        seq = int(anchor.split(":")[0])
    tamper(sent, ("UPDATE events SET hash = ? WHERE seq = ?", ("f" * 64, seq)))
    ok, reason = verify(sent, (anchor,))
    assert not ok and str(seq) in reason
