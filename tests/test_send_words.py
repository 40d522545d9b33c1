"""What a send says about itself: a slow run says why (deferred messages waiting to be
retried, how many and for how long), in words with singular and plural right."""

from __future__ import annotations

import pytest
from conftest import Notifier
from smtp_helpers import ScriptedHandler, add_volunteers, approve_shipped, make_volunteers

from notifier.ledger import Ledger
from notifier.sink import Sink

CAMPAIGN = "2020-03-breach"
BACKOFF = 1.5  # seconds before the retry of a deferred message


@pytest.fixture
def roster(ledger: Ledger) -> Ledger:
    add_volunteers(ledger, make_volunteers(6))
    approve_shipped(ledger, CAMPAIGN)
    return ledger


def summary_lines(output: str) -> list[str]:
    """The output's sentences: a line indented by two continues the one before it."""
    lines = output.splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    joined: list[str] = []
    for line in lines:
        if line.startswith("  ") and joined:
            joined[-1] += " " + line.strip()
        elif line.strip():
            joined.append(line)
    return joined


@pytest.mark.parametrize("deferred", [1, 2])
def test_a_run_held_by_deferrals_says_so(notifier: Notifier, roster: Ledger, deferred: int) -> None:
    people = make_volunteers(6)
    script = {p.email: ["451", "ok"] for p in people[:deferred]}
    with Sink(handler=ScriptedHandler(script)) as sink:
        result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--backoff", str(BACKOFF))
        assert len(sink.messages) == 6
    assert result.exit_code == 0, result.output
    assert roster.state_counts(CAMPAIGN) == {"sent": 6}
    lines = summary_lines(result.stdout)
    (why,) = [line for line in lines if line.startswith("The server deferred")]
    if deferred == 1:
        assert why.startswith("The server deferred 1 message (asked to try again later): ")
        assert "waiting to retry it held the run for " in why
    else:
        assert why.startswith("The server deferred 2 messages (asked to try again later): ")
        assert "waiting to retry them held the run for " in why
    held = float(why.split("held the run for ")[1].split(" s ")[0])
    assert BACKOFF * 0.9 <= held <= 30  # the backoff, then the retry itself


def test_a_run_without_deferrals_says_nothing_of_them(notifier: Notifier, roster: Ledger) -> None:
    with Sink() as sink:
        result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url)
    assert result.exit_code == 0, result.output
    assert "deferred" not in result.stdout
