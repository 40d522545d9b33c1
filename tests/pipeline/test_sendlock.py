"""One sender at a time: the lock is exclusive, names its holder, and dies with its process."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Notifier
from smtp_helpers import add_volunteers, make_volunteers, send

from notifier.campaign import load_campaign
from notifier.errors import ExitCode, SendInProgress
from notifier.ledger import Ledger
from notifier.pipeline import SendScope
from notifier.sendlock import SendLock, lock_path, running_sender
from notifier.sink import Sink

FIRST = "2020-03-breach"

HOLD = """
import sys, time
from pathlib import Path
from notifier.sendlock import SendLock
with SendLock(Path(sys.argv[1]), "2020-03-breach", "send"):
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


def test_a_second_sender_is_refused_and_named(tmp_path: Path) -> None:
    ledger = tmp_path / "notifier.db"
    with SendLock(ledger, "2020-03-breach", "send"):
        started = time.monotonic()
        with pytest.raises(SendInProgress) as refused:
            SendLock(ledger, "2020-03-breach", "resend").acquire()
        assert time.monotonic() - started < 2
    assert refused.value.exit_code == ExitCode.UNUSABLE
    text = str(refused.value)
    assert f"process {os.getpid()}" in text
    assert "send of 2020-03-breach" in text
    assert "since" in text


def test_lock_released_on_exit_and_file_private(tmp_path: Path) -> None:
    ledger = tmp_path / "notifier.db"
    with SendLock(ledger, "c", "send"):
        assert lock_path(ledger).stat().st_mode & 0o777 == 0o600
        holder = running_sender(ledger)
        assert holder is not None and holder.pid == os.getpid() and holder.campaign_id == "c"
    assert running_sender(ledger) is None
    with SendLock(ledger, "c", "send"):  # can be taken again
        pass


def test_no_lock_file_means_no_sender(tmp_path: Path) -> None:
    assert running_sender(tmp_path / "notifier.db") is None


def test_other_process_holds_it_until_killed(tmp_path: Path) -> None:
    ledger = tmp_path / "notifier.db"
    proc = hold_in_subprocess(ledger)
    try:
        holder = running_sender(ledger)
        assert holder is not None and holder.pid == proc.pid
        with pytest.raises(SendInProgress, match=f"process {proc.pid}"):
            SendLock(ledger, "c").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # The kernel dropped the lock with the process: no stale lock to clear by hand.
    assert running_sender(ledger) is None
    with SendLock(ledger, "c"):
        assert running_sender(ledger) is not None


def test_a_status_probe_does_not_refuse_a_starting_sender(tmp_path: Path) -> None:
    ledger = tmp_path / "notifier.db"
    lock_path(ledger).touch()
    for _ in range(50):  # probes and acquisitions interleaved, as status in a loop would
        assert running_sender(ledger) is None
        with SendLock(ledger, "c"):
            pass


def test_one_lock_whatever_path_names_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "data" / "notifier.db"
    ledger.parent.mkdir()
    ledger.touch()
    link = tmp_path / "link.db"
    link.symlink_to(ledger)
    with SendLock(ledger, "c"), pytest.raises(SendInProgress):
        SendLock(link, "c").acquire()
    assert lock_path(link) == lock_path(ledger)


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

    with SendLock(ledger.path, "2020-04-29-update", "send"):
        other = shown()  # another campaign is sending: this claim is a crash's
    with SendLock(ledger.path, FIRST, "send"):
        live = shown()  # this campaign is sending: its claim is in flight
    assert (other["in_flight"], other["uncertain"]) == (0, [claimed.email])
    assert other["running"]["campaign_id"] == "2020-04-29-update"
    assert (live["in_flight"], live["uncertain"]) == (1, [])
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

    with SendLock(ledger.path, FIRST, "send"):
        refused = notifier("roster", "import", str(roster))
    assert refused.exit_code == ExitCode.UNUSABLE
    assert f"another send is running on this ledger: send of {FIRST}" in refused.output
    assert "nothing was changed by this run" in refused.output
    assert ledger.latest_import() == imports_before

    with SendLock(ledger.path, roster.name, "roster import"):
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
