"""`notifier demo`: the README's main command, end to end on the example roster."""

from __future__ import annotations

import mailbox
import shutil
from pathlib import Path

from conftest import REPO, Notifier

from notifier.ledger import Ledger


def test_demo_runs_the_whole_job_and_is_safe_to_repeat(notifier: Notifier, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    first = notifier("demo")
    assert first.exit_code == 0, first.output
    for step in (
        "roster import",
        "check 2020-03-breach",
        "check 2020-04-29-update",
        "preview 2020-03-breach",
        "approve 2020-03-breach --by",
        "send 2020-03-breach",
        "status 2020-03-breach",
        "ledger verify",
    ):
        assert f"$ notifier {step}" in first.stdout
    assert "rejected" in first.stdout
    assert "Approved: 2020-03-breach by notifier demo (not a person" in first.stdout
    # Summaries, not the whole roster: counts, the rejected rows, one preview a language.
    assert "194 volunteers" in first.stdout and "HMR-0150" not in first.stdout
    assert len(first.stdout.splitlines()) < 330
    assert "chain intact" in first.stdout
    # No notifier.toml here: the demo uses the example contact point, writes no settings,
    # and both campaigns check green on the example roster.
    assert "uses the example organisation's contact point" in first.stdout
    assert not (tmp_path / "notifier.toml").exists()
    assert "2020-03-breach: 194 messages rendered (en 132, ja 62); no problems" in first.stdout
    assert "2020-04-29-update: 194 messages rendered (en 132, ja 62); no problems" in first.stdout
    with Ledger(notifier.ledger_path) as led:
        volunteers = led.count("volunteers")
        sent = led.state_counts("2020-03-breach")["sent"]
    assert volunteers > 150
    assert sent == volunteers  # the first notice goes to everyone on the roster
    assert len(mailbox.Maildir(tmp_path / "demo-sink", create=False)) == sent

    again = notifier("demo")
    assert again.exit_code == 0, again.output
    assert "Nothing to send" in again.stdout
    assert len(mailbox.Maildir(tmp_path / "demo-sink", create=False)) == sent
