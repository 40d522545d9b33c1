"""Someone who can edit the ledger file, but has not its key, cannot rewrite history
unseen: every edit that would change an outcome is named by `ledger verify`, and a keyed
ledger rewritten to look unkeyed is tampered, never "upgraded".

The edits are made with plain sqlite3, as an attacker (or a careless colleague) would.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounces.test_after_a_correction import hard_bounce
from conftest import Notifier, write_org_config
from smtp_helpers import add_volunteers, make_volunteers

from notifier.errors import LedgerError, LedgerTampered
from notifier.ledger import GENESIS_HASH, Ledger, event_hash
from notifier.ledger.projections import volunteer_row_sha256
from notifier.service import SendOptions, SendSpec, Workspace
from notifier.sink import Sink
from notifier.volunteer import TEXT_FIELDS

FIRST = "2020-03-breach"
PEOPLE = make_volunteers(4)


@pytest.fixture
def sent(tmp_path: Path) -> Path:
    """A ledger whose first notice went to four people, one of whom hard-bounced."""
    write_org_config(tmp_path)
    path = tmp_path / "notifier.db"
    with Ledger(path) as led:
        add_volunteers(led, PEOPLE)
    with Workspace.open(path, env={}) as ws, Sink() as sink:
        ws.approve(FIRST, "Jane Doe")
        ws.send(FIRST, SendSpec(options=SendOptions(timeout=5.0), smtp_url=sink.url))
        (bounced,) = [m for m in sink.messages if PEOPLE[0].email in m.rcpt_tos]
        report = tmp_path / "bounce.eml"
        report.write_bytes(hard_bounce(bounced.mail_from, PEOPLE[0].email))
        assert ws.ingest_bounces([report]).suppressed == 1
        assert ws.verify().ok
    return path


@pytest.fixture
def notifier_at(sent: Path, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    for var in ("NOTIFIER_LEDGER", "NOTIFIER_CONFIG", "NOTIFIER_SECRET_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(sent.parent)
    return Notifier(sent, sent.parent)


@pytest.fixture
def db(sent: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(sent, isolation_level=None)
    yield conn
    conn.close()


def verify(path: Path) -> str:
    with Ledger(path) as led:
        result = led.verify()
    assert not result.ok
    return result.reason


def rehash_unkeyed(conn: sqlite3.Connection) -> None:
    """Recompute every event's hash with plain SHA-256, as the old unkeyed format did,
    and say the chain is unkeyed: what someone without the key file can do."""
    link = GENESIS_HASH
    rows = conn.execute(
        "SELECT seq, at, kind, campaign_id, volunteer_id, message_id, data FROM events ORDER BY seq"
    ).fetchall()
    for seq, at, kind, campaign_id, volunteer_id, message_id, data in rows:
        digest = event_hash(link, seq, at, kind, campaign_id, volunteer_id, message_id, data)
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (link, digest, seq))
        link = digest
    conn.execute("UPDATE meta SET value = ? WHERE key = 'chain_head'", (f"{len(rows)}:{link}",))
    conn.execute("DELETE FROM meta WHERE key = 'chain_format'")


def move_address(conn: sqlite3.Connection, volunteer_id: str, address: str) -> None:
    """Change a volunteer's address in their row and in the event that vouches for it."""
    conn.execute(
        "UPDATE volunteers SET email = ?, email_ascii = ? WHERE volunteer_id = ?",
        (address, address, volunteer_id),
    )
    row = conn.execute(
        f"SELECT {', '.join(TEXT_FIELDS)} FROM volunteers WHERE volunteer_id = ?",  # noqa: S608
        (volunteer_id,),
    ).fetchone()
    seq, data = conn.execute(
        "SELECT seq, data FROM events WHERE kind = 'volunteer_added' AND volunteer_id = ?",
        (volunteer_id,),
    ).fetchone()
    changed = {**json.loads(data), "email": address}
    changed["row_sha256"] = volunteer_row_sha256(volunteer_id, list(row))
    text = json.dumps(changed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    conn.execute("UPDATE events SET data = ? WHERE seq = ?", (text, seq))


# --- a keyed ledger rewritten to look unkeyed ---------------------------------------------


def test_a_rewrite_made_without_the_key_is_tampered_never_upgraded(
    sent: Path, db: sqlite3.Connection, notifier_at: Notifier
) -> None:
    """The attack: change an address in its event and its row, recompute every hash
    with plain SHA-256, delete the chain's format. The ledger records a key fingerprint
    and holds events only a keyed notifier writes: it is tampered, and upgrade refuses."""
    move_address(db, PEOPLE[1].volunteer_id, "attacker@example.net")
    rehash_unkeyed(db)
    assert "the chain is unkeyed but the ledger records a key" in verify(sent)
    checked = notifier_at("ledger", "verify")
    assert checked.exit_code == 1 and "TAMPERED" in checked.stderr
    assert "run notifier ledger upgrade" not in checked.output
    refused = notifier_at("ledger", "upgrade")
    assert refused.exit_code != 0 and "cannot be upgraded" in refused.stderr
    with Workspace.open(sent, env={}) as ws, Sink() as sink:
        with pytest.raises(LedgerTampered):
            ws.send(FIRST, SendSpec(smtp_url=sink.url))
        assert sink.messages == []
    with Ledger(sent) as led:  # the refused upgrade re-keyed nothing
        assert list(led.events(kinds=["ledger_upgraded"])) == []
        assert "the chain is unkeyed but the ledger records a key" in led.verify().reason


def test_without_the_key_fingerprint_the_keyed_events_still_tell(
    sent: Path, db: sqlite3.Connection
) -> None:
    move_address(db, PEOPLE[1].volunteer_id, "attacker@example.net")
    rehash_unkeyed(db)
    db.execute("DELETE FROM meta WHERE key = 'key_fingerprint'")
    reason = verify(sent)
    assert "a keyed ledger was rewritten without its key" in reason
    assert "only keyed ledgers" in reason
    with Ledger(sent) as led, pytest.raises(LedgerError, match="cannot be upgraded"):
        led.upgrade()
    with Ledger(sent) as led:  # refused whole: still the rewritten, unkeyed chain
        assert "only keyed ledgers" in led.verify().reason


def test_erasing_a_hard_bounce_and_its_suppression_is_tampering(
    sent: Path, db: sqlite3.Connection
) -> None:
    """The same trick, to have a dead address mailed again: the bounce, the suppression
    and the kept report deleted, the message back to `sent`, the chain rehashed."""
    for kind in ("address_suppressed", "bounced_hard"):
        db.execute("DELETE FROM events WHERE kind = ?", (kind,))
    db.execute("DELETE FROM suppressions")
    db.execute("DELETE FROM bounce_reports")
    db.execute("UPDATE messages SET state = 'sent' WHERE state = 'bounced_hard'")
    # Renumber what is left, so the chain has no gap.
    for new, (old,) in enumerate(db.execute("SELECT seq FROM events ORDER BY seq").fetchall(), 1):
        db.execute("UPDATE events SET seq = ? WHERE seq = ?", (new, old))
    rehash_unkeyed(db)
    db.execute("DELETE FROM meta WHERE key = 'key_fingerprint'")
    assert "only keyed ledgers" in verify(sent)


def test_an_anchor_catches_even_a_complete_rewrite(sent: Path, db: sqlite3.Connection) -> None:
    """Someone who strips every sign of the keyed format makes a ledger that looks
    genuinely old: upgrading it re-keys it. The anchor a regulator wrote down from a
    report does not hold any more."""
    with Ledger(sent) as led:
        anchor = led.head()
    move_address(db, PEOPLE[1].volunteer_id, "attacker@example.net")
    rehash_unkeyed(db)
    db.execute("DELETE FROM meta WHERE key = 'key_fingerprint'")
    keyed_only = (
        "SELECT seq FROM events WHERE kind NOT IN ('roster_imported', 'volunteer_added',"
        " 'queued', 'sending', 'sent', 'bounced_hard', 'address_suppressed', 'row_rejected',"
        " 'campaign_registered')"
    )
    db.execute(f"DELETE FROM events WHERE seq IN ({keyed_only})")  # noqa: S608
    for column, kind in (("row_sha256", "volunteer_added"), ("verp_token", "queued")):
        db.execute(
            f"UPDATE events SET data = json_remove(data, '$.{column}') WHERE kind = ?",  # noqa: S608
            (kind,),
        )
    db.execute("UPDATE events SET data = json_remove(data, '$.sha256') WHERE kind = 'sending'")
    for new, (old,) in enumerate(db.execute("SELECT seq FROM events ORDER BY seq").fetchall(), 1):
        db.execute("UPDATE events SET seq = ? WHERE seq = ?", (new, old))
    rehash_unkeyed(db)
    with Ledger(sent) as led:
        assert led.upgrade() is not None  # it looked old: re-keyed, its rows adopted
        result = led.verify([anchor])
    assert not result.ok and "anchor" in result.reason


# --- settings and tables that decide outcomes -------------------------------------------


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        (
            "INSERT OR REPLACE INTO meta VALUES ('verp_key', 'raw')",
            "table meta, row key verp_key",
        ),
        ("INSERT INTO meta VALUES ('send_anyway', 'yes')", "table meta, row key send_anyway"),
        (
            "UPDATE campaigns SET title = 'Nothing to worry about'",
            "table campaigns, row campaign_id 2020-03-breach: differs from the chain in title",
        ),
        (
            "UPDATE campaigns SET templates_sha256 = '00'",
            "differs from the chain in templates_sha256",
        ),
        ("UPDATE campaigns SET follows = 'x'", "differs from the chain in follows"),
        ("UPDATE volunteers SET import_id = NULL", "table volunteers"),
        ("UPDATE volunteers SET source_row = 999", "table volunteers"),
        ("UPDATE imports SET rows_total = 999", "table imports, row id 1"),
        ("UPDATE imports SET file_name = 'other.csv'", "differs from the chain in file_name"),
        ("DELETE FROM imports", "table imports, row id 1: is missing"),
        ("DELETE FROM bounce_reports", "table bounce_reports"),
        ("UPDATE bounce_reports SET matched = 0", "differs from the chain in matched"),
        ("UPDATE bounce_reports SET message_id = NULL", "differs from the chain in message_id"),
        (
            # A report made up with a genuine one's sha256: it would be skipped as known.
            "INSERT INTO bounce_reports(sha256, source, received_at, matched, message_id, detail)"
            " VALUES ('172e7a186e4ad02ce4994cdd7da4ddfa849033fa77f053eb7fdd7180ab2f3b3d',"
            " 'x', 'now', 0, NULL, '{}')",
            "table bounce_reports, row sha256",
        ),
    ],
    ids=[
        "meta-verp-key",
        "meta-unknown",
        "campaign-title",
        "templates-sha256",
        "campaign-follows",
        "volunteer-import",
        "volunteer-row",
        "import-counts",
        "import-file",
        "import-deleted",
        "report-deleted",
        "report-unmatched",
        "report-message",
        "report-made-up",
    ],
)
def test_every_edit_that_decides_an_outcome_is_named(
    sent: Path, db: sqlite3.Connection, notifier_at: Notifier, sql: str, named: str
) -> None:
    db.execute(sql)
    reason = verify(sent)
    assert named in reason and "edited outside notifier" in reason
    result = notifier_at("ledger", "verify")
    assert result.exit_code == 1 and named in result.stderr


def test_the_verp_key_is_what_the_chain_says(sent: Path, db: sqlite3.Connection) -> None:
    """Setting `verp_key = raw` would have every genuine bounce refused as forged: the
    chain decides how tokens are made, whatever the setting says."""
    with Ledger(sent) as led:
        before = led.verp_key()
    db.execute("INSERT OR REPLACE INTO meta VALUES ('verp_key', 'raw')")
    with Ledger(sent) as led:
        assert led.verp_key() == before


# --- the clock set back -----------------------------------------------------------------


def test_an_event_dated_before_the_one_before_it_is_a_warning_not_tampering(
    sent: Path, notifier_at: Notifier
) -> None:
    from conftest import fact

    with Ledger(sent) as led:
        led.record([fact("the clock was wrong")], at="2020-01-01T00:00:00.000000+00:00")
        result = led.verify()
    assert result.ok
    assert "is dated 2020-01-01 00:00:00 UTC, earlier than event" in result.warning
    checked = notifier_at("ledger", "verify")
    assert checked.exit_code == 0
    warnings = [line for line in checked.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "the clock" in warnings[0]
    report = " ".join(notifier_at("report", FIRST).stdout.split())
    assert "ledger warning: event" in report and "set back" in report


def test_the_clock_warning_shows_its_times_in_the_display_zone(sent: Path) -> None:
    from conftest import fact

    with Ledger(sent, time_zone="Asia/Tokyo") as led:
        led.record([fact("the clock was wrong")], at="2020-01-01T00:00:00.000000+00:00")
        warning = led.verify().warning
    assert "is dated 2020-01-01 09:00:00 JST, earlier than event" in warning
    assert "UTC" not in warning
