"""`notifier bounces parse | ingest | unmatched`, run in-process against real files."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import Notifier
from test_bounces import (
    EXPECTED,
    FIXTURE_KEY,
    FIXTURES,
    HAND_WRITTEN,
    PEOPLE,
    mid,
    seed_ledger,
    token,
)

from notifier import verp
from notifier.bounces import RECORD_KEYS
from notifier.ledger import Ledger
from notifier.secret import key_path_for

# The kinds `bounces parse --format json` may give (a contract other tools read).
PARSE_KINDS = (
    "hard",
    "soft",
    "blocked",
    "expired",
    "delayed",
    "delivered",
    "not_a_bounce",
    "unparseable",
)


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NOTIFIER_SECRET_FILE", "NOTIFIER_IMAP_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def write_key(ledger_path: Path) -> None:
    """A ledger with FIXTURE_KEY as its key file, whose VERP tokens are made with that raw
    key: a ledger of before keyed chains, upgraded with the key file its sends had made
    (the fixtures' tokens were made so). Call before anything else opens the ledger."""
    Ledger(ledger_path).close()
    conn = sqlite3.connect(ledger_path)
    # An empty ledger of before keyed chains: no chain format, no key fingerprint.
    conn.execute("DELETE FROM meta WHERE key IN ('chain_format', 'key_fingerprint')")
    conn.commit()
    conn.close()
    key_path_for(ledger_path).write_text(FIXTURE_KEY.hex() + "\n", encoding="ascii")
    with Ledger(ledger_path) as led:
        upgraded = led.upgrade()
        assert upgraded is not None and not upgraded.key_created
        assert led.verp_key() == FIXTURE_KEY  # the chain says the raw key makes tokens


def maildir_of(tmp_path: Path, names: list[str]) -> Path:
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    for number, name in enumerate(names):
        shutil.copy(FIXTURES / name, box / "new" / f"1585563{number:03d}.M{number}P1.mx")
    return box


def test_parse_json_is_one_array_with_exact_keys(notifier: Notifier) -> None:
    names = sorted(EXPECTED)
    result = notifier("bounces", "parse", *(str(FIXTURES / n) for n in names), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert len(rows) == sum(len(v) for v in EXPECTED.values())
    for row in rows:
        assert list(row) == list(RECORD_KEYS)
        assert row["kind"] in PARSE_KINDS
    by_file: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_file.setdefault(Path(str(row["file"])).name, []).append(row)
    for name in names:
        got = [{k: v for k, v in r.items() if k != "file"} for r in by_file[name]]
        assert got == EXPECTED[name], name


def test_parse_gives_every_file_a_row_saying_what_it_is(notifier: Notifier, tmp_path: Path) -> None:
    """A vacation reply, a letter and an over-limit report are each one row, with a kind
    from the contract and the reason, never passed over in silence."""
    vacation = tmp_path / "vacation.eml"
    vacation.write_bytes(
        b"From: alice@example.org\nTo: bounces@notify.example.org\n"
        b"Subject: Out of Office: Important\nX-Auto-Response-Suppress: All\n\n"
        b"The following addresses had permanent fatal errors\n"
    )
    letter = tmp_path / "letter.eml"
    letter.write_bytes(b"From: bob@example.com\nSubject: hello\n\nJust a note.\n")
    broken = tmp_path / "broken.eml"
    broken.write_bytes(
        b"From: MAILER-DAEMON@mx.example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nundeliverable\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
        b"--b--\n"
    )
    paths = [vacation, letter, broken, FIXTURES / "postfix-expired-441.eml"]
    result = notifier("bounces", "parse", *map(str, paths), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {Path(str(r["file"])).name: r for r in json.loads(result.stdout)}
    assert {name: r["kind"] for name, r in rows.items()} == {
        "vacation.eml": "not_a_bounce",
        "letter.eml": "not_a_bounce",
        "broken.eml": "unparseable",
        "postfix-expired-441.eml": "expired",
    }
    assert "automatic reply" in str(rows["vacation.eml"]["diagnostic"])
    assert rows["vacation.eml"]["recipient"] is None
    assert "no recipient could be read" in str(rows["broken.eml"]["diagnostic"])


def test_parse_json_exact_object_with_nulls(notifier: Notifier) -> None:
    path = FIXTURES / "x400-recipient.eml"
    result = notifier("bounces", "parse", str(path), "--format", "json")
    assert json.loads(result.stdout) == [
        {
            "file": str(path),
            "action": "failed",
            "status": "5.1.1",
            "recipient": "tanaka@example.jp",
            "kind": "hard",
            "original_message_id": mid(13),
            "envelope_id": None,
            "verp_token": token(13),
            "diagnostic": None,
        }
    ]
    assert '"envelope_id": null' in result.stdout


def test_parse_never_touches_the_ledger(notifier: Notifier) -> None:
    result = notifier("bounces", "parse", str(FIXTURES / "qmail.eml"))
    assert result.exit_code == 0
    assert not notifier.ledger_path.exists()


def test_parse_table_shows_each_recipient(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # wide enough for a line each
    result = notifier("bounces", "parse", str(FIXTURES / "exchange-multi.eml"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["file", "recipient", "action", "status", "kind", "diagnostic"]
    assert [line.split()[1] for line in lines[2:]] == [
        "frank@example.com",
        "grace@example.com",
        "heidi@example.jp",
    ]
    assert [line.split()[4] for line in lines[2:]] == ["hard", "soft", "blocked"]


def test_parse_missing_file_is_one_clean_error(notifier: Notifier) -> None:
    result = notifier("bounces", "parse", "nowhere.eml")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: nowhere.eml: no such file or folder")
    assert "Traceback" not in result.output


def test_ingest_maildir_then_again_records_once(notifier: Notifier, tmp_path: Path) -> None:
    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led)
    box = maildir_of(tmp_path, HAND_WRITTEN)
    first = notifier("bounces", "ingest", str(box))
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("16 reports read (0 already recorded): 16 matched, 0 unmatched")
    assert (
        "11 hard, 0 soft, 2 delayed (still being tried), "
        "1 expired (the mail system gave up; not suppressed), 2 delivered"
    ) in first.stdout
    second = notifier("bounces", "ingest", str(box))
    assert second.stdout.startswith("16 reports read (16 already recorded): 0 matched")
    with Ledger(notifier.ledger_path) as led:
        assert led.count("bounce_reports") == 16
        assert led.count("suppressions") == 11
        assert led.verify().ok
    assert notifier("bounces", "unmatched").stdout.strip() == "no unmatched reports"


def test_unmatched_lists_what_ingest_could_not_tie(notifier: Notifier, tmp_path: Path) -> None:
    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led, [1, 2])
    forged = (
        (FIXTURES / "postfix-delayed.eml")
        .read_bytes()
        .replace(token(3).encode(), verp.make_token(b"x" * 32, mid(3)).encode())
    )
    (tmp_path / "forged.eml").write_bytes(forged)
    result = notifier(
        "bounces",
        "ingest",
        str(FIXTURES / "postfix-hard-511.eml"),
        str(FIXTURES / "gmail-folded.eml"),
        str(tmp_path / "forged.eml"),
    )
    assert result.exit_code == 0, result.output
    assert "1 matched, 1 unmatched, 1 refused as forged" in result.stdout
    assert "notifier bounces unmatched" in result.stdout

    listing = notifier("bounces", "unmatched")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == 2
    assert any("gmail-folded.eml" in ln and "erin@example.com" in ln for ln in lines)
    assert any("forged.eml" in ln and "forged" in ln and PEOPLE[3] in ln for ln in lines)

    as_json = json.loads(notifier("bounces", "unmatched", "--format", "json").stdout)
    assert sorted(Path(r["source"]).name for r in as_json) == ["forged.eml", "gmail-folded.eml"]
    assert all(len(r["sha256"]) == 64 for r in as_json)


def test_ingest_without_the_key_refuses(notifier: Notifier) -> None:
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led, [1])
    key_path_for(notifier.ledger_path).unlink()  # lost: never silently replaced
    result = notifier("bounces", "ingest", str(FIXTURES / "qmail.eml"))
    assert result.exit_code == 2
    assert "key file is missing" in result.stderr and "restore it from backup" in result.stderr
    assert not key_path_for(notifier.ledger_path).exists()  # not invented here


def test_ingest_needs_a_path_or_imap(notifier: Notifier) -> None:
    result = notifier("bounces", "ingest")
    assert result.exit_code == 2
    assert "give at least one PATH" in result.stderr


def test_ingest_imap_without_password_is_one_clean_error(notifier: Notifier) -> None:
    write_key(notifier.ledger_path)
    result = notifier("bounces", "ingest", "--imap", "imaps://bounces@mail.example.org/INBOX")
    assert result.exit_code == 2
    assert "NOTIFIER_IMAP_PASSWORD" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("url", ["imaps://u@[::1", "imaps://u@[not-an-address]/INBOX"])
def test_ingest_malformed_imap_url_is_one_clean_error(notifier: Notifier, url: str) -> None:
    write_key(notifier.ledger_path)  # makes the ledger with the fixtures' key
    result = notifier("bounces", "ingest", "--imap", url)
    assert result.exit_code == 2
    assert "expected an IMAP URL like imaps://" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
