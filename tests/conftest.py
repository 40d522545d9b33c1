"""Shared fixtures: a fresh ledger file per test, and a CLI runner bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from notifier.campaign import Campaign, apply_overrides
from notifier.cli import cli
from notifier.config import Settings, load_settings
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger

REPO = Path(__file__).resolve().parent.parent
# The shipped example's settings: stand-ins (example.org, a drama phone number) that
# `check` refuses; only the demo sends with them, into its own sink.
EXAMPLE_SETTINGS = REPO / "examples" / "notifier.toml"
# The organisation the tests send as (its own sender, contact point and statements).
ORG_SETTINGS = REPO / "tests" / "fixtures" / "organisation.toml"


def example_settings() -> Settings:
    return load_settings(EXAMPLE_SETTINGS, env={})


def org_settings() -> Settings:
    return load_settings(ORG_SETTINGS, env={})


def with_contact(campaign: Campaign) -> Campaign:
    """The campaign as the tests' organisation sends it: its sender, contact point and
    statements."""
    return apply_overrides(campaign, org_settings())


def write_org_config(directory: Path) -> Path:
    """notifier.toml with the tests' organisation, where the CLI will read it."""
    path = directory / "notifier.toml"
    path.write_text(ORG_SETTINGS.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def fact(label: object = "", **data: object) -> EventDraft:
    """An event that records a fact and builds no table (a test send, here): what
    `Ledger.record` appends, for tests of the chain itself."""
    return EventDraft(EventKind.TEST_SENT, campaign_id="c", data={"label": label, **data})


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "notifier.db"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    with Ledger(ledger_path) as led:
        yield led


class Notifier:
    """Runs `notifier --ledger <tmp> ...` in-process and returns click's Result."""

    def __init__(self, ledger_path: Path, cwd: Path) -> None:
        self.ledger_path = ledger_path
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(
            cli, ["--ledger", str(self.ledger_path), *args], input=input, catch_exceptions=False
        )


@pytest.fixture
def notifier(ledger_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    monkeypatch.chdir(tmp_path)
    for var in ("NOTIFIER_LEDGER", "NOTIFIER_CONFIG", "NOTIFIER_SMTP_URL", "NOTIFIER_RATE"):
        monkeypatch.delenv(var, raising=False)
    return Notifier(ledger_path, tmp_path)
