"""Exactly once under concurrency: real `notifier send` processes against one ledger and one
SMTP server. Whatever the operator starts at the same time, every volunteer is told once;
the late comers exit 2 at once, naming the running sender, and send nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from processes import finished, run_notifier, start_notifier
from smtp_helpers import (
    ScriptedHandler,
    add_volunteers,
    approve_shipped,
    make_volunteers,
    recipients,
)

from notifier.ledger import Ledger
from notifier.sink import Sink

CAMPAIGN = "2020-03-breach"
COUNT = 60

pytestmark = pytest.mark.slow


@pytest.fixture
def roster(ledger_path: Path) -> list[str]:
    volunteers = make_volunteers(COUNT)
    with Ledger(ledger_path) as led:
        add_volunteers(led, volunteers)
        approve_shipped(led, CAMPAIGN)
    return [v.email for v in volunteers]


def test_two_sends_started_together_tell_everyone_once(
    ledger_path: Path, roster: list[str]
) -> None:
    with Sink() as sink:
        send = ("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--rate", "40")
        first, second = start_notifier(ledger_path, *send), start_notifier(ledger_path, *send)
        results = [finished(first), finished(second)]
        got = recipients(sink.messages)
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    _, _, refused_err = next(r for r in results if r[0] == 2)
    assert "another send is running" in refused_err
    assert "Traceback" not in refused_err
    assert got == {email: 1 for email in roster}
    with Ledger(ledger_path) as led:
        assert led.state_counts(CAMPAIGN) == {"sent": COUNT}


def test_late_resend_uncertain_is_refused_quickly_and_status_shows_in_flight(
    ledger_path: Path, roster: list[str]
) -> None:
    # The server keeps one reply back, so the first send is surely still running while
    # the operator, in another terminal, looks at the status and tries again.
    handler = ScriptedHandler({roster[10]: ["hold", "ok"]})
    with Sink(handler=handler) as sink:
        sender = start_notifier(
            ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url, "--rate", "20"
        )
        try:
            assert handler.holding.wait(60), "the first send never reached the held message"
            status = run_notifier(ledger_path, "status", CAMPAIGN, "--format", "json")
            began = time.monotonic()
            late = run_notifier(
                ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url, "--resend-uncertain"
            )
            late_seconds = time.monotonic() - began
            resend = run_notifier(
                ledger_path, "resend", CAMPAIGN, "--status", "failed_temporary", "--yes"
            )
        finally:
            handler.release.set()
            code, _out, err = finished(sender)
        got = recipients(sink.messages)
    assert code == 0, err
    assert late.returncode == 2, late.stdout + late.stderr
    assert f"process {sender.pid}" in late.stderr
    assert late_seconds < 5
    assert resend.returncode == 2 and "another send is running" in resend.stderr
    shown = json.loads(status.stdout)
    assert shown["uncertain"] in (0, [])
    assert shown["in_flight"] >= 1  # at least the held one
    assert shown["running"]["pid"] == sender.pid and shown["running"]["since"]
    assert got == {email: 1 for email in roster}
