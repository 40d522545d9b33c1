"""The guarantees against real processes and a real SMTP server: a deleted lock file, a
hard-linked ledger, two senders with the ledger's lease switched off (the conditional
claim alone holds), Ctrl-C and the command it prints, and commands run from another
folder."""

from __future__ import annotations

import email
import email.policy
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ORG_SETTINGS
from processes import clean_env, finished, notifier_command, run_notifier, start_notifier
from smtp_helpers import (
    ScriptedHandler,
    add_volunteers,
    approve_shipped,
    make_volunteers,
    recipients,
)

from notifier.ledger import Ledger
from notifier.sink import Sink

FIRST = "2020-03-breach"
COUNT = 40
PEOPLE = make_volunteers(COUNT)

pytestmark = pytest.mark.slow

# A `notifier` whose ledger lease never refuses: a test hook standing for every way
# around the lease (two machines on a shared folder, a bug). Only the conditional claim
# inside the ledger is left to keep each message to one sender.
LEASE_OFF = """
import sys
from notifier.ledger import lease
lease.live_holder = lambda conn: None
from notifier.cli import main
sys.argv = ["notifier", *sys.argv[1:]]
main()
"""


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    folder.mkdir()
    path = folder / "notifier.db"
    with Ledger(path) as led:
        add_volunteers(led, PEOPLE)
        approve_shipped(led, FIRST)  # with the example settings, beside the ledger
    return path


def test_deleting_the_lock_file_never_admits_a_second_sender(ledger_path: Path) -> None:
    handler = ScriptedHandler({PEOPLE[5].email: ["hold", "ok"]})
    with Sink(handler=handler) as sink:
        send = ("send", FIRST, "--yes", "--smtp", sink.url, "--rate", "40")
        first = start_notifier(ledger_path, *send)
        try:
            assert handler.holding.wait(60), "the first send never reached the held message"
            # Whatever an operator does to a lock file beside the ledger...
            lock = ledger_path.with_name("notifier.db.lock")
            lock.write_text("")
            lock.unlink()
            second = run_notifier(ledger_path, *send)
        finally:
            handler.release.set()
        code, _, _ = finished(first)
        got = recipients(sink.messages)
    assert code == 0
    assert second.returncode == 2, second.stderr
    assert "another send is running on this ledger" in second.stderr
    assert second.stderr.count("Error:") == 1 and "Traceback" not in second.stderr
    assert got == {v.email: 1 for v in PEOPLE}


def test_a_hard_linked_ledger_is_refused_by_every_name(ledger_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    os.link(ledger_path, other)
    with Sink() as sink:
        for name in (ledger_path, other):
            refused = run_notifier(name, "send", FIRST, "--yes", "--smtp", sink.url)
            assert refused.returncode == 2, refused.stderr
            assert "hard links" in refused.stderr
            assert refused.stderr.count("Error:") == 1 and "Traceback" not in refused.stderr
        assert sink.messages == []
    other.unlink()


def test_with_the_lease_switched_off_the_claims_alone_tell_everyone_once(
    ledger_path: Path,
) -> None:
    def hooked(url: str) -> subprocess.Popen[str]:
        args = ["send", FIRST, "--yes", "--smtp", url, "--rate", "60", "--concurrency", "2"]
        return subprocess.Popen(
            [sys.executable, "-c", LEASE_OFF, "--ledger", str(ledger_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ledger_path.parent,
            env=clean_env(),
        )

    with Sink() as sink:
        first, second = hooked(sink.url), hooked(sink.url)
        results = [finished(first), finished(second)]
        got = recipients(sink.messages)
    assert [code for code, _, _ in results] == [0, 0], results  # both ran: no lease
    assert got == {v.email: 1 for v in PEOPLE}  # and still nobody was told twice
    with Ledger(ledger_path) as led:
        states = led.state_counts(FIRST)
        assert states.get("sent", 0) + states.get("uncertain", 0) == COUNT
        assert led.verify().ok


def test_ctrl_c_prints_the_command_that_resumes_exactly_that_run(ledger_path: Path) -> None:
    """Stopped while sending to the Japanese readers only: the command it prints sends to
    the rest of them, and to no English reader."""
    japanese = {v.email for v in PEOPLE if v.locale == "ja"}
    with Sink() as sink:
        proc = start_notifier(
            ledger_path, "send", FIRST, "--yes", "--locale", "ja", "--smtp", sink.url,
            "--rate", "10",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(sink.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code, out, _ = finished(proc)
        stopped_at = len(sink.messages)
        assert code == 130 and 0 < stopped_at < len(japanese), out
        (line,) = [x for x in out.splitlines() if "To resume" in x]
        command = shlex.split(line.split(": ", 1)[1])
        assert command == ["notifier", "send", FIRST, "--resume"]
        status = run_notifier(ledger_path, "status", FIRST)
        resumed = run_notifier(ledger_path, *command[1:])
        got = recipients(sink.messages)
    assert resumed.returncode == 0, resumed.stderr
    assert got == dict.fromkeys(japanese, 1)  # every Japanese reader once, nobody else
    assert "notifier send 2020-03-breach --resume" in status.stdout  # status names it too


def test_commands_from_another_folder_use_the_settings_beside_the_ledger(
    ledger_path: Path, tmp_path: Path
) -> None:
    """Run from a folder holding another organisation's settings: approval still current,
    and the notice goes out with the ledger's own contact point."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notifier.toml").write_text(
        ORG_SETTINGS.read_text().replace("HMR", "Example Org"), encoding="utf-8"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            notifier_command(ledger_path, *args),
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=clean_env(),
            timeout=120,
            check=False,
        )

    status = run("status", FIRST)
    assert "the content has not changed since" in status.stdout, status.stdout
    with Sink() as sink:
        sent = run("send", FIRST, "--yes", "--smtp", sink.url)
        senders = [
            email.message_from_bytes(m.data, policy=email.policy.default)["From"]
            for m in sink.messages
        ]
    assert sent.returncode == 0, sent.stderr
    assert len(senders) == COUNT
    assert all("HMR" in str(s) and "Example Org" not in str(s) for s in senders)
