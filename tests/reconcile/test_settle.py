"""Settling uncertain messages from evidence: the ledger side, and `notifier reconcile`.

Evidence is real: the Postfix log the end-to-end test's Postfix wrote, and a Maildir a
real SMTP server (our sink) wrote as it received a crashed send.
"""

from __future__ import annotations

import json
import mailbox
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Notifier
from smtp_helpers import (
    ScriptedHandler,
    add_volunteers,
    approve_shipped,
    make_volunteers,
    recipients,
)

from notifier.ledger import Ledger
from notifier.message import NewMessage
from notifier.reconcile import postfix_log_evidence
from notifier.sink import Sink

LOG = Path(__file__).resolve().parent.parent / "fixtures" / "reconcile" / "postfix-maillog"
CAMPAIGN = "2020-03-breach"
# Message-IDs the real Postfix log holds: sent, bounced; and one it never saw.
IN_LOG_SENT = "<gewnp3zznkefovlje6df4sc3xo@example.org>"
IN_LOG_BOUNCED = "<ux4rsw6tvg2cdnvbxsyz3ob6e6@example.org>"
NOT_IN_LOG = "<neverseen@example.org>"


def uncertain_ledger(ledger: Ledger, campaign: str = "c") -> None:
    """Three messages claimed by a send that died: IN_LOG_SENT, IN_LOG_BOUNCED, NOT_IN_LOG."""
    add_volunteers(ledger, make_volunteers(3))
    ledger.register_campaign(
        campaign, title="t", follows=None, definition={}, templates_sha256="0" * 64
    )
    ids = [IN_LOG_SENT, IN_LOG_BOUNCED, NOT_IN_LOG]
    ledger.ensure_messages(
        campaign, [NewMessage(m, f"HMR-{i:05d}", f"t{i}") for i, m in enumerate(ids)]
    )
    ledger.claim_for_sending(ids)


def test_settle_from_a_real_postfix_log(ledger: Ledger) -> None:
    uncertain_ledger(ledger)
    found = {mid: e.event_data() for mid, e in postfix_log_evidence(LOG).items()}
    settled = {s.message.message_id: s for s in ledger.settle_uncertain("c", found, str(LOG))}
    assert {m: s.state for m, s in settled.items()} == {
        IN_LOG_SENT: "sent",
        IN_LOG_BOUNCED: "sent",
        NOT_IN_LOG: "pending",
    }
    states = {m.message_id: m for m in ledger.messages("c")}
    assert states[IN_LOG_SENT].state == "sent" and states[IN_LOG_SENT].queue_id == "602F420E3D2"
    assert states[NOT_IN_LOG].state == "pending"
    events = {e.message_id: e for e in ledger.events(campaign_id="c", kinds=("sent", "pending"))}
    sent = events[IN_LOG_SENT].data
    assert sent["queue_id"] == "602F420E3D2" and sent["fate"] == "sent"
    path, line = sent["evidence"].rsplit(":", 1)
    assert path == str(LOG)
    assert IN_LOG_SENT.strip("<>") in LOG.read_text().splitlines()[int(line) - 1]
    assert events[IN_LOG_BOUNCED].data["fate"] == "bounced"
    assert events[NOT_IN_LOG].data["searched"] == str(LOG)
    # Every move has its event: claimed, marked uncertain, settled.
    kinds = [e.kind for e in ledger.events(message_id=NOT_IN_LOG)]
    assert kinds == ["queued", "sending", "uncertain", "pending"]
    assert ledger.verify().ok
    # Nothing left to settle: a second run changes nothing.
    assert ledger.settle_uncertain("c", found, str(LOG)) == []


def test_reconcile_refuses_while_a_send_holds_the_lock(
    notifier: Notifier, ledger_path: Path
) -> None:
    with Ledger(ledger_path) as led:
        uncertain_ledger(led, CAMPAIGN)
        with led.lease("send", CAMPAIGN):
            result = notifier("reconcile", CAMPAIGN, "--mta-log", str(LOG))
    assert result.exit_code == 2
    assert "another send is running on this ledger" in result.output
    assert f"process {os.getpid()}" in result.output
    with Ledger(ledger_path) as led:
        assert led.state_counts(CAMPAIGN) == {"sending": 3}  # nothing touched


def test_reconcile_needs_evidence_that_can_be_read(notifier: Notifier, tmp_path: Path) -> None:
    assert notifier("reconcile", CAMPAIGN).exit_code == 2
    missing = notifier("reconcile", CAMPAIGN, "--mta-log", str(tmp_path / "nope.log"))
    assert missing.exit_code == 2 and "cannot read the MTA log" in missing.output
    not_maildir = notifier("reconcile", CAMPAIGN, "--maildir", str(tmp_path))
    assert not_maildir.exit_code == 2 and "not a Maildir" in not_maildir.output


def test_reconcile_cli_with_a_postfix_log(notifier: Notifier, ledger_path: Path) -> None:
    with Ledger(ledger_path) as led:
        uncertain_ledger(led, CAMPAIGN)
    result = notifier("reconcile", CAMPAIGN, "--mta-log", str(LOG))
    assert result.exit_code == 0, result.output
    assert "2 received (now sent), 1 not received (back to pending)" in result.output
    assert f"notifier send {CAMPAIGN} --yes" in result.output
    with Ledger(ledger_path) as led:
        assert led.state_counts(CAMPAIGN) == {"pending": 1, "sent": 2}


# --- a real crash, settled from the Maildir of the server that received it -----------------


def _run(ledger_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", "--ledger", str(ledger_path), *args],
        capture_output=True,
        text=True,
        cwd=ledger_path.parent,
        env={k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")},
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_after_a_crash_reconcile_then_resume_tells_everyone_once(
    ledger_path: Path, tmp_path: Path
) -> None:
    volunteers = make_volunteers(30)
    with Ledger(ledger_path) as led:
        add_volunteers(led, volunteers)
        approve_shipped(led, CAMPAIGN)
    held = volunteers[8]
    received = tmp_path / "received"
    # The server stores this message, then keeps its reply back: it is surely in flight,
    # and received, when the sender is killed.
    handler = ScriptedHandler({held.email: ["hold", "ok"]}, maildir=received)
    with Sink(handler=handler) as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "notifier", "--ledger", str(ledger_path), "send"),
                *(CAMPAIGN, "--yes", "--smtp", sink.url, "--rate", "50", "--concurrency", "2"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")},
        )
        try:
            assert handler.holding.wait(60), "the send never reached the held message"
        finally:
            proc.kill()
            proc.wait(10)
            handler.release.set()
        assert proc.returncode == -signal.SIGKILL
        with Ledger(ledger_path) as led:
            assert led.state_counts(CAMPAIGN).get("sending", 0) >= 1

        settled = _run(ledger_path, "reconcile", CAMPAIGN, "--maildir", str(received))
        assert settled.returncode == 0, settled.stderr
        with Ledger(ledger_path) as led:
            states = led.message_states(CAMPAIGN)
            assert "uncertain" not in states.values() and "sending" not in states.values()
            assert states[held.volunteer_id] == "sent"
            evidence = [e.data for e in led.events(volunteer_id=held.volunteer_id, kinds=("sent",))]
            assert evidence[-1]["evidence"].startswith(str(received))

        # A plain resume, without --resend-uncertain.
        resumed = _run(ledger_path, "send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert resumed.returncode == 0, resumed.stderr
        got = recipients(sink.messages)
    assert got == {v.email: 1 for v in volunteers}, "somebody missed, or told twice"
    assert len(mailbox.Maildir(received, create=False)) == len(volunteers)
    status = json.loads(_run(ledger_path, "status", CAMPAIGN, "--format", "json").stdout)
    assert status["counts"] == {"sent": len(volunteers)}
    with Ledger(ledger_path) as led:
        assert led.verify().ok
