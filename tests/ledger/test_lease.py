"""One sender at a time, held by the ledger itself: the lease is exclusive, names its
holder, dies with its process, and is the same whatever name reaches the ledger."""

from __future__ import annotations

import asyncio
import json
import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Notifier
from smtp_helpers import add_volunteers, make_volunteers, send

from notifier import journal as journal_module
from notifier.campaign import load_campaign
from notifier.errors import ExitCode, LedgerError, SendInProgress
from notifier.ledger import Ledger
from notifier.ledger.lease import LEASE_TTL
from notifier.pipeline import SendScope
from notifier.sink import Sink

FIRST = "2020-03-breach"

HOLD = """
import sys, time
from notifier.ledger import Ledger
from notifier.ledger.lease import LEASE_TTL
with Ledger(sys.argv[1]) as led, led.lease("send", "2020-03-breach"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_subprocess(ledger_path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ledger_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"  # bounded: the child prints or dies
    return proc


def test_a_second_holder_is_refused_at_once_and_named(ledger: Ledger) -> None:
    with ledger.lease("send", FIRST):
        started = time.monotonic()
        with pytest.raises(SendInProgress) as refused, ledger.lease("resend", FIRST):
            pass
        assert time.monotonic() - started < 2
    assert refused.value.exit_code == ExitCode.UNUSABLE
    text = str(refused.value)
    assert f"process {os.getpid()}" in text
    assert f"send of {FIRST}" in text and "since" in text
    assert "nothing was sent by this run" in text


def test_the_lease_is_released_and_can_be_taken_again(ledger: Ledger) -> None:
    assert ledger.running() is None
    with ledger.lease("send", "c") as holder:
        running = ledger.running()
        assert running is not None and running.pid == os.getpid() and running.subject == "c"
        assert running.token == holder.token
    assert ledger.running() is None
    with ledger.lease("send", "c"):
        pass
    assert ledger.verify().ok  # the lease decides nothing about any message: not chained


def test_a_lease_held_elsewhere_lasts_until_that_process_dies(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    proc = hold_in_subprocess(ledger_path)
    try:
        with Ledger(ledger_path) as led:
            holder = led.running()
            assert holder is not None and holder.pid == proc.pid
            with pytest.raises(SendInProgress, match=f"process {proc.pid}"), led.lease("send", "c"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # The holder is gone: its lease is not believed, and there is nothing to clear by hand.
    with Ledger(ledger_path) as led:
        assert led.running() is None
        with led.lease("send", "c"):
            assert led.running() is not None


def test_a_holder_that_ended_but_was_not_collected_holds_nothing(ledger_path: Path) -> None:
    # A driver that starts `notifier send` and never waits for it leaves a zombie: its
    # pid still answers kill(0), with the same start time, but it holds nothing.
    Ledger(ledger_path).close()
    proc = hold_in_subprocess(ledger_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "Z":  # bounded: a killed child turns zombie at once
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.01)
        with Ledger(ledger_path) as led:
            assert led.running() is None
            with led.lease("send", "c"):
                assert led.running() is not None
    finally:
        proc.wait(timeout=10)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_one_lease_whatever_name_reaches_the_ledger(tmp_path: Path) -> None:
    """A symlink, another relative path, a moved working folder: one ledger, one lease.
    (A second hard link is refused outright: see tests/ledger/test_opening.py.)"""
    data = tmp_path / "data"
    data.mkdir()
    ledger = data / "notifier.db"
    Ledger(ledger).close()
    link = tmp_path / "link.db"
    link.symlink_to(ledger)
    with Ledger(ledger) as led, led.lease("send", "c"):
        with Ledger(link) as other:
            assert other.path == led.path  # the real file, whatever the name
            with pytest.raises(SendInProgress), other.lease("send", "c"):
                pass
        relative = Path(os.path.relpath(ledger, Path.cwd()))
        with Ledger(relative) as third, pytest.raises(SendInProgress), third.lease("send", "c"):
            pass


def test_a_lock_file_beside_the_ledger_means_nothing_now(ledger: Ledger) -> None:
    """Earlier versions kept a lock in LEDGER.lock: deleting, replacing or never having
    it changes nothing, because the lease is in the ledger."""
    lock = ledger.path.with_name(ledger.path.name + ".lock")
    with ledger.lease("send", "c"):
        lock.write_text("garbage")
        lock.unlink()
        with Ledger(ledger.path) as other, pytest.raises(SendInProgress), other.lease("send", "c"):
            pass


def test_a_lease_that_cannot_be_released_does_not_block_this_process(ledger: Ledger) -> None:
    """A holding given up is over for its process even when the ledger could not be told
    (a full disk): the next send of the same process (a console) is not refused."""
    with ledger.lease("send", "c") as holder:
        pass
    # As if the release had not reached the file: the row is back, naming this process.
    with ledger.transaction():
        ledger.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('lease', ?)",
            (json.dumps({**holder.__dict__}),),
        )
    assert ledger.running() is None
    with ledger.lease("send", "c"):
        pass


def test_a_hard_linked_ledger_is_refused(ledger_path: Path, tmp_path: Path) -> None:
    Ledger(ledger_path).close()
    other = tmp_path / "other.db"
    os.link(ledger_path, other)
    for name in (ledger_path, other):
        with pytest.raises(LedgerError, match="2 names \\(hard links\\)") as refused:
            Ledger(name)
        assert refused.value.exit_code == ExitCode.UNUSABLE
    other.unlink()
    Ledger(ledger_path).close()  # one name again: fine


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def test_status_calls_claims_in_flight_only_for_the_running_campaign(
    notifier: Notifier, ledger: Ledger, sink: Sink
) -> None:
    # A crash left one message of the first notice claimed; now a send is running.
    people = make_volunteers(3)
    add_volunteers(ledger, people)
    send(ledger, load_campaign(FIRST), people, sink.url, scope=SendScope(limit=0))
    (claimed, *_) = ledger.campaign_messages(FIRST)
    ledger.claim_for_sending([claimed.message_id])

    def shown() -> dict[str, Any]:
        result = notifier("status", FIRST, "--format", "json")
        assert result.exit_code == 0, result.output
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    with ledger.lease("send", "2020-04-29-update"):
        other = shown()  # another campaign is sending: this claim is a crash's
    with ledger.lease("send", FIRST):
        live = shown()  # this campaign is sending: its claim is in flight
        watching = notifier("status", FIRST).stdout
    assert (other["in_flight"], other["uncertain"]) == (0, [claimed.email])
    assert other["running"]["subject"] == "2020-04-29-update"
    assert (live["in_flight"], live["uncertain"]) == (1, [])
    # While it sends, status suggests nothing that would be refused: only how to watch.
    assert live["next_steps"] == [
        f"a send of {FIRST} is running: watch it with notifier status {FIRST}"
    ]
    assert "--resend-uncertain" not in watching and "notifier send" not in watching
    assert shown()["running"] is None


def test_no_import_while_a_send_runs_and_no_send_while_an_import_runs(
    notifier: Notifier, ledger: Ledger, sink: Sink, tmp_path: Path
) -> None:
    """An import changes the people a send is writing to (and holds the ledger's write
    lock while it runs): the two exclude each other, each refused at once, naming the
    other, with nothing done."""
    people = make_volunteers(3)
    add_volunteers(ledger, people)
    send(ledger, load_campaign(FIRST), people, sink.url, scope=SendScope(limit=0))
    waiting = ledger.state_counts(FIRST)
    roster = tmp_path / "volunteers.csv"
    roster.write_text(
        "email,family_name,exposure\r\nnew@example.org,New,published\r\n", encoding="utf-8"
    )
    imports_before = ledger.latest_import()

    with ledger.lease("send", FIRST):
        refused = notifier("roster", "import", str(roster))
    assert refused.exit_code == ExitCode.UNUSABLE
    assert f"another send is running on this ledger: send of {FIRST}" in refused.output
    assert "nothing was changed by this run" in refused.output
    assert ledger.latest_import() == imports_before

    with ledger.lease("roster import", roster.name):
        with pytest.raises(SendInProgress) as sending:
            send(ledger, load_campaign(FIRST), people, sink.url)
        status = notifier("status", FIRST)
        mailbox.Maildir(tmp_path / "received", create=True)  # received nothing
        settle = notifier("reconcile", FIRST, "--maildir", str(tmp_path / "received"))
    text = str(sending.value)
    assert "a roster import is running on this ledger: roster import of volunteers.csv" in text
    assert "nothing was sent by this run" in text
    assert ledger.state_counts(FIRST) == waiting and sink.messages == []
    assert "Running now: roster import of volunteers.csv" in status.output
    assert settle.exit_code == ExitCode.UNUSABLE
    assert "a roster import is running on this ledger" in settle.output

    assert notifier("roster", "import", str(roster)).exit_code == 0  # once it has ended


def _recorded(ledger: Ledger) -> dict[str, Any]:
    row = ledger.conn.execute("SELECT value FROM meta WHERE key = 'lease'").fetchone()
    assert row is not None
    value: dict[str, Any] = json.loads(row["value"])
    return value


def test_a_holder_on_another_machine_is_believed_while_its_heartbeat_is_fresh(
    ledger: Ledger,
) -> None:
    """Its process cannot be looked at from here: its heartbeat says whether it runs."""
    now = datetime.now(UTC)
    elsewhere = {
        "pid": 1,
        "host": "another-machine",
        "boot_id": "x",
        "started": "",
        "since": now.isoformat(timespec="seconds"),
        "command": "send",
        "subject": FIRST,
        "token": "theirs",
        "run": None,
    }
    for age, refused in ((10, True), (LEASE_TTL.total_seconds() + 10, False)):
        beat = (now - timedelta(seconds=age)).isoformat(timespec="seconds")
        with ledger.transaction():
            ledger.conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('lease', ?)",
                (json.dumps({**elsewhere, "heartbeat": beat}),),
            )
        if refused:
            with (
                pytest.raises(SendInProgress, match="on another-machine"),
                ledger.lease("send", FIRST),
            ):
                pass
        else:
            with ledger.lease("send", FIRST):  # gone quiet: taken over
                assert ledger.running() is not None
                assert ledger.running().host != "another-machine"  # type: ignore[union-attr]


def test_a_long_send_keeps_its_heartbeat_fresh(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "HEARTBEAT_EVERY", 0.0)
    with ledger.lease("send", FIRST) as holder:
        with ledger.transaction():  # as if it had last beaten long ago
            ledger.conn.execute(
                "UPDATE meta SET value = json_set(value, '$.heartbeat', ?) WHERE key = 'lease'",
                ("2020-01-01T00:00:00+00:00",),
            )
        journal = journal_module.ThreadedLedgerJournal(ledger.path, holder=holder)

        async def idle() -> None:
            await journal.open()
            journal.keep_alive()  # a slow send with nothing to write still beats
            await journal.close()

        asyncio.run(idle())
        assert _recorded(ledger)["heartbeat"] > "2020-01-01T00:00:00+00:00"
        assert _recorded(ledger)["token"] == holder.token
