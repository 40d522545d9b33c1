"""The shipped example's stand-ins never reach a real send.

example.org addresses, Ofcom's drama phone numbers and the made-up XX1 1XX postcode let
the demo run without pretending to be anyone. In a real organisation's settings they
would give a frightened person a number nobody answers: `check` and `approve` name each
field and exit 1, and the service sends messages carrying them nowhere but a sink of
notifier's own (whatever approval exists, whoever calls). The demo still runs, and says so.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink as DiscardingHandler
from conftest import EXAMPLE_SETTINGS, REPO, Notifier
from mta import free_port
from smtp_helpers import add_volunteers, make_volunteers

from notifier.config import load_settings
from notifier.errors import CheckFailed
from notifier.ledger import Ledger
from notifier.placeholders import stand_in
from notifier.service import SendSpec, Workspace
from notifier.sink import Sink, is_running_sink

FIRST = "2020-03-breach"


@pytest.mark.parametrize(
    ("text", "stand_in_for"),
    [
        ("dpo@example.org", "domain"),
        ("volunteers@example.jp", "domain"),
        ("info@example.co.jp", "domain"),
        ("HMR Data Protection <dpo@Example.COM>", "domain"),
        ("someone@mail.hmr.example", "domain"),
        ("+44 20 7946 0123", "telephone"),
        ("020 7946 0999", "telephone"),
        ("(0161) 496 0000", "telephone"),
        ("07700 900 123", "telephone"),
        ("London XX1 1XX", "postcode"),
        ("dpo@hmr.test", None),
        ("dpo@example.org.uk", None),
        ("someone@myexample.org", None),
        ("1 Example Street", None),
        ("020 7946 1000", None),  # outside the drama range
        ("0300 123 2040", None),  # Action Fraud's real number
        ("London NW10 7EW", None),
    ],
)
def test_stand_ins_are_told_from_real_details(text: str, stand_in_for: str | None) -> None:
    why = stand_in(text)
    if stand_in_for is None:
        assert why is None
    else:
        assert why is not None and stand_in_for in why


def test_check_and_approve_name_every_stand_in_and_exit_1(
    notifier: Notifier, tmp_path: Path
) -> None:
    with Ledger(notifier.ledger_path) as led:
        add_volunteers(led, make_volunteers(6))
    config = ("--config", str(EXAMPLE_SETTINGS))
    checked = notifier(*config, "check", FIRST)
    assert checked.exit_code == 1, checked.output
    for field in (
        "sender.from",
        "sender.reply_to.en",
        "sender.reply_to.ja",
        "contact.en.email",
        "contact.ja.email",
        "contact.phone",
        "contact.postal_address",
    ):
        assert f"problem: {field} is the shipped example's" in checked.stdout, field
    assert "'+44 20 7946 0123' (a telephone number reserved for drama" in checked.stdout
    assert "'London XX1 1XX' (a postcode that does not exist)" in checked.stdout
    approved = notifier(*config, "approve", FIRST, "--by", "Jane Doe, DPO")
    assert approved.exit_code == 1
    assert "nothing was approved" in approved.output
    assert "contact.phone is the shipped example's" in approved.output


@pytest.fixture
def outside_server() -> Iterator[Controller]:
    """An SMTP server that is not notifier's sink: to the service, a real one."""
    controller = Controller(DiscardingHandler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def test_an_example_approval_still_sends_nowhere_but_the_sink(
    tmp_path: Path, outside_server: Controller
) -> None:
    """Approved in the demo's way (stand-ins allowed), the campaign is then sent by a
    caller that is not the demo: the service refuses every target but a running sink."""
    ledger_path = tmp_path / "notifier.db"
    with Ledger(ledger_path) as led:
        add_volunteers(led, make_volunteers(6))
    settings = load_settings(EXAMPLE_SETTINGS, env={}, ledger=ledger_path)
    with Workspace(dataclasses.replace(settings, demo=True)) as demo:
        demo.approve(FIRST, "notifier demo")
    outside = f"smtp://127.0.0.1:{outside_server.port}"
    assert not is_running_sink("127.0.0.1", outside_server.port)
    for caller_settings in (settings, dataclasses.replace(settings, demo=True)):
        with Workspace(caller_settings) as ws, pytest.raises(CheckFailed) as refused:
            ws.send(FIRST, SendSpec(smtp_url=outside), handle_signals=False)
        assert f"nothing was sent to {outside}" in str(refused.value)
        assert "contact.phone" in str(refused.value)
        with pytest.raises(CheckFailed):
            ws.test_send(FIRST, "me@hmr-volunteers.co.uk", smtp_url=outside)
    with Ledger(ledger_path) as led:
        assert led.count("messages") == 0  # not even registered
    with Sink() as sink, Workspace(dataclasses.replace(settings, demo=True)) as ws:
        summary = ws.send(FIRST, SendSpec(smtp_url=sink.url), handle_signals=False)
        assert summary.counts["sent"] == 6 and len(sink.messages) == 6
    assert not is_running_sink("127.0.0.1", sink.port)  # a stopped sink is no exception


def test_the_demo_runs_on_the_example_and_says_so(notifier: Notifier, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    result = notifier("demo")
    assert result.exit_code == 0, result.output
    assert "its addresses (example.org) and phone number are stand-ins" in result.stdout
    assert "note: the messages carry the example organisation's stand-ins" in result.output
