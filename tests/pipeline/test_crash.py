"""Crash safety, for real: `notifier send` in a subprocess, killed with SIGKILL or stopped
with Ctrl-C (SIGINT) mid-campaign, then resumed. The SMTP server's own record says who got
the notice; nobody may get it twice, and nobody may be missed, apart from the messages the
ledger reports as uncertain (then --resend-uncertain completes them).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from processes import run_notifier, start_notifier
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
COUNT = 40

pytestmark = pytest.mark.slow


def start_send(ledger_path: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return start_notifier(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", url, *extra)


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_crash_sigkill_then_resume_reaches_everyone_once(ledger_path: Path) -> None:
    volunteers = make_volunteers(COUNT)
    with Ledger(ledger_path) as led:
        add_volunteers(led, volunteers)
        approve_shipped(led, CAMPAIGN)
    held = volunteers[10]
    # The server takes this message, then keeps its reply back: it is surely in flight
    # when the sender is killed.
    handler = ScriptedHandler({held.email: ["hold", "ok"]})
    with Sink(handler=handler) as sink:
        proc = start_send(ledger_path, sink.url, "--rate", "50", "--concurrency", "2")
        try:
            assert handler.holding.wait(60), "the send never reached the held message"
            proc.kill()
            proc.wait(10)
        finally:
            finish(proc)
            handler.release.set()
        assert proc.returncode == -signal.SIGKILL

        with Ledger(ledger_path) as led:
            after_kill = led.state_counts(CAMPAIGN)
        assert after_kill.get("sending", 0) >= 1
        assert after_kill.get("pending", 0) >= 1  # killed mid-campaign, not after it

        resumed = run_notifier(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert resumed.returncode == 0, resumed.stderr
        with Ledger(ledger_path) as led:
            uncertain = {m.email for m in led.claimed_messages(CAMPAIGN)}
            states = led.state_counts(CAMPAIGN)
        assert held.email in uncertain
        assert len(uncertain) <= after_kill["sending"]
        assert states == {"sent": COUNT - len(uncertain), "uncertain": len(uncertain)}
        got = recipients(sink.messages)
        assert max(got.values()) == 1, "somebody got the notice twice"
        missed = {v.email for v in volunteers if got[v.email] == 0}
        assert missed <= uncertain, "somebody was missed without being reported"
        assert "--resend-uncertain" in resumed.stdout

        status = run_notifier(ledger_path, "status", CAMPAIGN, "--format", "json")
        report = json.loads(status.stdout)
        assert report["campaign"] == CAMPAIGN
        assert report["counts"] == states
        assert set(report["uncertain"]) == uncertain

        final = run_notifier(
            ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url, "--resend-uncertain"
        )
        assert final.returncode == 0, final.stderr
        got = recipients(sink.messages)

    assert all(got[v.email] >= 1 for v in volunteers)
    assert {a for a, n in got.items() if n > 1} <= uncertain  # only where we said so
    with Ledger(ledger_path) as led:
        assert led.state_counts(CAMPAIGN) == {"sent": COUNT}
        assert led.verify().ok
        history = [e.kind for e in led.events(volunteer_id=held.volunteer_id) if e.message_id]
    # The ledger keeps both facts: the uncertain attempt and the re-send.
    assert history == ["queued", "sending", "uncertain", "sending", "sent"]


def test_crash_ctrl_c_stops_cleanly_and_resumes(ledger_path: Path) -> None:
    volunteers = make_volunteers(COUNT)
    with Ledger(ledger_path) as led:
        add_volunteers(led, volunteers)
        approve_shipped(led, CAMPAIGN)
    with Sink() as sink:
        proc = start_send(ledger_path, sink.url, "--rate", "20")
        try:
            assert sink.handler.wait_for(5, timeout=60)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            finish(proc)
        assert proc.returncode == 130, err
        assert f"To resume exactly this run: notifier send {CAMPAIGN} --resume" in out
        assert "Traceback" not in err

        with Ledger(ledger_path) as led:
            states = led.state_counts(CAMPAIGN)
            assert led.verify().ok
        received = len(sink.messages)
        # Everything that went out was recorded as sent; nothing is left in flight.
        assert states == {"sent": received, "pending": COUNT - received}

        resumed = run_notifier(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert resumed.returncode == 0, resumed.stderr
        got = recipients(sink.messages)
    assert got == {v.email: 1 for v in volunteers}
    again = run_notifier(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url)
    assert "Nothing to send" in again.stdout


@pytest.mark.parametrize("resolve", ["reconcile", "resend-uncertain"])
def test_crash_throttled_sigkill_leaves_at_most_two_claims_per_connection(
    ledger_path: Path, tmp_path: Path, resolve: str
) -> None:
    """At --rate 400 a message is claimed only as a connection is about to write it, so a
    SIGKILL leaves at most two per connection in `sending` (the one awaiting its reply,
    and the one whose envelope is pipelined behind it), however far the run had got. No
    constant on top: a claim writes the outcomes recorded before it in its own
    transaction, so the ledger never holds more. Then reconcile (or --resend-uncertain)
    tells everyone."""
    count, concurrency = 300, 4
    volunteers = make_volunteers(count)
    with Ledger(ledger_path) as led:
        add_volunteers(led, volunteers)
        approve_shipped(led, CAMPAIGN)
    held = volunteers[40]
    maildir = tmp_path / "received"
    handler = ScriptedHandler({held.email: ["hold", "ok"]}, pipelining=True, maildir=maildir)
    with Sink(handler=handler) as sink:
        proc = start_send(ledger_path, sink.url, "--rate", "400", "--concurrency", str(concurrency))
        try:
            assert handler.holding.wait(60), "the send never reached the held message"
            # The other connections go on while this one waits for its reply.
            assert sink.handler.wait_for(80, timeout=30)
            proc.kill()
            proc.wait(10)
        finally:
            finish(proc)
            handler.release.set()
        assert proc.returncode == -signal.SIGKILL

        with Ledger(ledger_path) as led:
            after_kill = led.state_counts(CAMPAIGN)
            in_flight = {m.email for m in led.claimed_messages(CAMPAIGN)}
        assert held.email in in_flight
        assert after_kill.get("pending", 0) >= 1  # killed mid-campaign, not after it
        assert 1 <= after_kill["sending"] <= 2 * concurrency

        if resolve == "reconcile":
            settled = run_notifier(ledger_path, "reconcile", CAMPAIGN, "--maildir", str(maildir))
            assert settled.returncode == 0, settled.stderr
            resumed = run_notifier(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url)
        else:
            resumed = run_notifier(
                ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url, "--resend-uncertain"
            )
        assert resumed.returncode == 0, resumed.stderr
        got = recipients(sink.messages)

    assert all(got[v.email] >= 1 for v in volunteers), "somebody was missed"
    twice = {a for a, n in got.items() if n > 1}
    if resolve == "reconcile":
        assert not twice  # the Maildir said who had it: exactly once each
    else:
        assert twice <= in_flight  # only where the ledger said it could not know
    with Ledger(ledger_path) as led:
        assert led.state_counts(CAMPAIGN) == {"sent": count}
        assert led.verify().ok
