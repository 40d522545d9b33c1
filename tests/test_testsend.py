"""Test sends: `send ID --test-to ADDRESS [--as VOLUNTEER ...]` sends the exact messages,
marked [TEST], to ADDRESS only, records them as their own events, and changes nothing
else: no message of the campaign, no volunteer's state, no count."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from conftest import REPO, Notifier, write_org_config

from notifier.campaign import apply_overrides, load_campaign
from notifier.check import check_campaign
from notifier.compose import build_message
from notifier.config import load_settings
from notifier.ledger import Ledger
from notifier.render import Renderer
from notifier.sink import Sink

CAMPAIGN = "2020-03-breach"
ME = "me@our-office.example"


@pytest.fixture
def imported(notifier: Notifier) -> Notifier:
    write_org_config(notifier.cwd)
    result = notifier("roster", "import", str(REPO / "examples" / "volunteers.csv"))
    assert result.exit_code == 0, result.output
    return notifier


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_named_volunteers_messages_go_to_me_only(imported: Notifier) -> None:
    with Sink() as sink:
        result = imported(
            "send",
            CAMPAIGN,
            "--test-to",
            ME,
            "--as",
            "HMR-0001",
            "--as",
            "sho.yamasaki@example.jp",
            "--smtp",
            sink.url,
        )
        assert result.exit_code == 0, result.output
        assert sink.handler.wait_for(2, timeout=10)
    received = sink.messages
    assert [m.rcpt_tos for m in received] == [(ME,), (ME,)]
    first, second = (parsed(m.data) for m in received)
    assert first["Subject"].startswith("[TEST] ") and second["Subject"].startswith("[TEST] ")
    assert first["Content-Language"] == "en" and second["Content-Language"] == "ja"
    # The exact message HMR-0001 would get: the same body as the real one.
    settings = load_settings(imported.cwd / "notifier.toml", env={})
    campaign = apply_overrides(load_campaign(CAMPAIGN), settings)
    with Ledger(imported.ledger_path) as led:
        real = parsed(
            build_message(
                Renderer(campaign),
                campaign,
                led.get_volunteer("HMR-0001"),
                date=first["Date"].datetime,
            ).data
        )
        assert first["Subject"] == "[TEST] " + real["Subject"]
        for kind in ("plain", "html"):
            sent_body, real_body = first.get_body((kind,)), real.get_body((kind,))
            assert sent_body is not None and real_body is not None
            assert sent_body.get_content() == real_body.get_content()
        # Recorded as test sends; the campaign has no messages and is not registered.
        tests = [e for e in led.events() if e.kind == "test_sent"]
        assert [(e.campaign_id, e.data["to"], e.data["as"]) for e in tests] == [
            (CAMPAIGN, ME, "HMR-0001"),
            (CAMPAIGN, ME, "HMR-0005"),
        ]
        assert all(e.volunteer_id is None and e.message_id is None for e in tests)
        assert led.state_counts(CAMPAIGN) == {}
        assert not led.campaign_is_registered(CAMPAIGN)
        assert led.verify().ok
    assert "has not been sent yet" in imported("status", CAMPAIGN).stdout
    assert "sent: HMR-0001's message (en, screened" in result.stdout


def test_without_as_one_message_of_each_shape(imported: Notifier) -> None:
    settings = load_settings(imported.cwd / "notifier.toml", env={})
    campaign = apply_overrides(load_campaign(CAMPAIGN), settings)
    with Ledger(imported.ledger_path) as led:
        shapes = check_campaign(led, campaign).shapes
    with Sink() as sink:
        result = imported("send", CAMPAIGN, "--test-to", ME, "--smtp", sink.url)
        assert result.exit_code == 0, result.output
        assert sink.handler.wait_for(len(shapes), timeout=10)
    assert len(sink.messages) == len(shapes)
    assert all(m.rcpt_tos == (ME,) for m in sink.messages)
    # After the tests, the real dry run still has everyone to send to.
    dry = imported("send", CAMPAIGN)
    assert "Would send 194 of 194" in dry.stdout


def test_a_test_needs_a_real_address(imported: Notifier) -> None:
    result = imported("send", CAMPAIGN, "--test-to", "me.example.org")
    assert result.exit_code == 2
    assert "--test-to" in result.stderr and "not an address" in result.stderr


def test_as_without_test_to_is_refused(imported: Notifier) -> None:
    result = imported("send", CAMPAIGN, "--as", "HMR-0001")
    assert result.exit_code == 2 and "--test-to" in result.stderr
