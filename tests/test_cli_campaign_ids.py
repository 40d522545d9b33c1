"""A mistyped campaign id is caught by every command that takes one: exit 2, the closest
known ids, and a message that starts with what is wrong, not with a file path."""

from __future__ import annotations

import pytest
from conftest import Notifier

from notifier.errors import ExitCode
from notifier.ledger import Ledger

TYPO = "2020-03-breech"
COMMANDS = (
    ("status", TYPO),
    ("status", TYPO, "--format", "json"),
    ("report", TYPO),
    ("report", TYPO, "--format", "html"),
    ("cohort", TYPO),
    ("check", TYPO),
    ("send", TYPO),
    ("send", TYPO, "--test-to", "me@example.org"),
    ("resend", TYPO, "--status", "bounced_soft"),
    ("preview", TYPO, "--volunteer", "HMR-0001"),
    ("campaign", "show", TYPO),
)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_unknown_campaign_id_exits_2_with_the_closest(
    ledger: Ledger, notifier: Notifier, args: tuple[str, ...]
) -> None:
    result = notifier(*args)
    assert result.exit_code == ExitCode.UNUSABLE, result.output
    assert result.stderr.startswith(f"Error: no campaign with id '{TYPO}'")
    assert "did you mean 2020-03-breach?" in result.stderr


def test_a_known_campaign_not_sent_yet_is_not_an_error_for_status(
    ledger: Ledger, notifier: Notifier
) -> None:
    result = notifier("status", "2020-03-breach")
    assert result.exit_code == 0
    assert "has not been sent yet" in result.stdout


def test_report_of_a_campaign_not_sent_yet_says_so(ledger: Ledger, notifier: Notifier) -> None:
    result = notifier("report", "2020-03-breach")
    assert result.exit_code == ExitCode.UNUSABLE
    assert result.stderr.startswith("Error: 2020-03-breach has not been sent yet")
