"""A ledger that is not one, cannot be written, or fills its disk: one clean line, exit 2,
and the ledger still verifies afterwards.

Read-only and full file systems are real: a small tmpfs mounted (and remounted read-only)
by the test, and `chattr +i`; both need root, so the tests skip with a reason otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Notifier, write_org_config
from smtp_helpers import add_volunteers, make_volunteers, recipients

from notifier.errors import LedgerError
from notifier.ledger import SCHEMA_VERSION, Ledger
from notifier.sink import ReceivedMessage, Sink, SinkHandler

CAMPAIGN = "2020-03-breach"
ROSTER = REPO / "examples" / "volunteers.csv"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a file system and chattr +i need root"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_applications_sqlite_file_is_refused_untouched(
    notifier: Notifier, ledger_path: Path
) -> None:
    with sqlite3.connect(ledger_path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes(body) VALUES ('mine')")
    conn.close()
    before = sha256(ledger_path)
    for args in (
        ("ledger", "verify"),
        ("status", "2020-03-breach"),
        ("roster", "import", str(ROSTER)),
    ):
        result = notifier(*args)
        assert result.exit_code == 2, args
        assert "not a notifier ledger: another application's SQLite database" in result.stderr
        assert "notes" in result.stderr and "Traceback" not in result.output
    assert sha256(ledger_path) == before
    assert not ledger_path.with_name(ledger_path.name + "-wal").exists()


def test_a_file_that_is_not_sqlite_is_one_clean_error(
    notifier: Notifier, ledger_path: Path
) -> None:
    ledger_path.write_bytes(b"volunteer_id,email\n" * 100)
    before = sha256(ledger_path)
    result = notifier("ledger", "verify")
    assert result.exit_code == 2
    assert "not a notifier ledger" in result.stderr
    assert sha256(ledger_path) == before


def test_a_ledger_of_a_newer_schema_is_left_alone(ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        led.conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="newer than this notifier"):
        Ledger(ledger_path)


# --- real file systems --------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def fill(mount: Path, leave: int) -> Path:
    """Fill the file system until `leave` bytes are free."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free - leave
    try:
        with filler.open("wb") as handle:
            handle.write(b"\0" * max(free, 0))
    except OSError as exc:  # the file system's own bookkeeping took the last blocks
        if exc.errno != errno.ENOSPC:
            raise
    return filler


def cli(tmp_path: Path, ledger: Path) -> Notifier:
    return Notifier(ledger, tmp_path)


def test_a_read_only_mount_can_be_verified_and_reported_on(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = small_fs / "notifier.db"
    run = cli(tmp_path, ledger)
    assert run("roster", "import", str(ROSTER)).exit_code == 0
    remount(small_fs, "ro")
    verified = run("ledger", "verify")
    assert verified.exit_code == 0, verified.output
    listed = run("roster", "list", "--format", "csv")
    assert listed.exit_code == 0 and "HMR-0001" in listed.stdout
    assert run("status", "2020-03-breach").exit_code == 0
    assert run("history", "HMR-0001").exit_code == 0
    refused = run("roster", "import", str(ROSTER))
    assert refused.exit_code == 2
    assert "the ledger is read-only" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 2  # the error and its hint
    remount(small_fs, "rw")
    assert run("ledger", "verify").exit_code == 0


def test_a_read_only_ledger_of_the_schema_before_is_read_as_it_is(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger last written by an earlier version (schema 3: with the index of events by
    Message-ID that schema 5 drops, without the indexes schemas 4 and 5 add), kept where
    it cannot be written: it is verified and reported on as it is, and brought up to
    date the next time it can be written."""
    monkeypatch.chdir(tmp_path)
    ledger = small_fs / "notifier.db"
    run = cli(tmp_path, ledger)
    assert run("roster", "import", str(ROSTER)).exit_code == 0
    with sqlite3.connect(ledger) as conn:
        conn.execute("DROP INDEX idx_events_volunteer_facts")
        conn.execute("DROP INDEX idx_events_message_only")
        conn.execute("CREATE INDEX idx_events_message_id ON events(message_id)")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()
    remount(small_fs, "ro")
    verified = run("ledger", "verify")
    assert verified.exit_code == 0, verified.output
    assert "chain intact, tables match" in verified.stdout
    assert run("history", "HMR-0001").exit_code == 0
    remount(small_fs, "rw")
    assert run("ledger", "verify").exit_code == 0
    with sqlite3.connect(ledger) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        indexes = {row[0] for row in conn.execute("SELECT name FROM pragma_index_list('events')")}
    conn.close()
    assert version == str(SCHEMA_VERSION) == "5"
    assert {"idx_events_volunteer_facts", "idx_events_message_only"} <= indexes
    assert "idx_events_message_id" not in indexes


@needs_root
def test_an_immutable_ledger_can_be_verified_and_is_never_written(
    notifier: Notifier, ledger_path: Path
) -> None:
    assert notifier("roster", "import", str(ROSTER)).exit_code == 0
    if subprocess.run(["chattr", "+i", str(ledger_path)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        before = sha256(ledger_path)
        assert notifier("ledger", "verify").exit_code == 0
        assert notifier("roster", "rejects").exit_code == 0
        refused = notifier("roster", "import", str(ROSTER))
        assert refused.exit_code == 2
        assert "read-only" in refused.stderr and "Traceback" not in refused.output
        assert sha256(ledger_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(ledger_path)], check=True)
    assert notifier("ledger", "verify").exit_code == 0


def big_roster(path: Path, rows: int) -> Path:
    lines = ["email,family_name,given_name,locale,exposure,notes"]
    lines += [f"p{n}@example.org,Doe,Jane,en,published,{'x' * 200}" for n in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_disk_full_during_an_import_is_one_line_and_the_ledger_still_verifies(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = small_fs / "notifier.db"
    run = cli(tmp_path, ledger)
    assert run("roster", "import", str(ROSTER)).exit_code == 0
    filler = fill(small_fs, leave=256 * 1024)
    result = run("roster", "import", str(big_roster(tmp_path / "big.csv", 5_000)))
    assert result.exit_code == 2, result.output
    assert "the disk holding the ledger is full" in result.stderr
    assert "Traceback" not in result.output
    assert run("ledger", "verify").exit_code == 0  # even with the disk still full
    filler.unlink()
    verified = run("ledger", "verify")
    assert verified.exit_code == 0, verified.output
    with Ledger(ledger) as led:
        assert led.count("imports") == 1  # the failed import left nothing behind


def test_disk_full_during_a_send_is_one_line_and_a_resume_finishes(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_org_config(small_fs)  # settings belong beside the ledger
    ledger = small_fs / "notifier.db"
    with Ledger(ledger) as led:
        add_volunteers(led, make_volunteers(30))
    run = cli(tmp_path, ledger)
    assert run("approve", CAMPAIGN, "--by", "Test approver").exit_code == 0
    fillers: list[Path] = []

    def fill_once(message: ReceivedMessage) -> None:
        if not fillers:  # the disk fills up while the send is under way
            fillers.append(fill(small_fs, leave=0))

    handler = SinkHandler(listener=fill_once)
    with Sink(handler=handler) as sink:
        result = run("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--rate", "0")
        assert result.exit_code == 2, result.output
        assert "the disk holding the ledger is full" in result.stderr
        assert "Traceback" not in result.output
        assert run("ledger", "verify").exit_code == 0
        fillers[0].unlink()
        assert run("ledger", "verify").exit_code == 0
        # What went out unrecorded is uncertain, never silently re-sent; the rest goes.
        resumed = run("send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert resumed.exit_code == 0, resumed.output
        got = recipients(sink.messages)
    with Ledger(ledger) as led:
        uncertain = {m.email for m in led.claimed_messages(CAMPAIGN)}
        assert led.verify().ok
    assert max(got.values()) == 1
    assert {v.email for v in make_volunteers(30)} - set(got) <= uncertain
