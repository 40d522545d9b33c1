"""Test sends: `send ID --test-to ADDRESS [--as VOLUNTEER ...]` sends the exact messages,
marked [TEST], to ADDRESS only, records them as their own events, and changes nothing
else: no message of the campaign, no volunteer's state, no count."""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import REPO, Notifier, write_org_config

from notifier.campaign import apply_overrides, load_campaign
from notifier.check import check_campaign
from notifier.cli import cli
from notifier.compose import build_message
from notifier.config import load_settings
from notifier.ledger import Ledger
from notifier.render import Renderer
from notifier.sink import Sink
from notifier.smtp.protocol import esmtp_parameters

CAMPAIGN = "2020-03-breach"
ME = "me@our-office.example"


@pytest.fixture
def imported(notifier: Notifier) -> Notifier:
    write_org_config(notifier.cwd)
    result = notifier("roster", "import", str(REPO / "examples" / "volunteers.csv"))
    assert result.exit_code == 0, result.output
    return notifier


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def first_paragraph(html: str) -> str:
    """The first <p> after <body ...>: where a test message says whose message it is."""
    after_body = html.split("<body", 1)[1].split(">", 1)[1]
    start = after_body.index("<p")
    return after_body[start : after_body.index("</p>", start) + len("</p>")]


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
    # Named in the subject tag; addressed To the tester, so reply-all reaches nobody else.
    assert first["Subject"].startswith("[TEST HMR-0001] ")
    assert second["Subject"].startswith("[TEST HMR-0005] ")
    assert [str(first["To"]), str(second["To"])] == [ME, ME]
    assert first["Content-Language"] == "en" and second["Content-Language"] == "ja"
    # The message HMR-0001 would get: the same body as the real one, after a first line
    # naming whose message it is.
    settings = load_settings(imported.cwd / "notifier.toml", env={})
    campaign = apply_overrides(load_campaign(CAMPAIGN), settings)
    with Ledger(imported.ledger_path) as led:
        volunteer = led.get_volunteer("HMR-0001")
        real = parsed(
            build_message(Renderer(campaign), campaign, volunteer, date=first["Date"].datetime).data
        )
        assert first["Subject"] == "[TEST HMR-0001] " + real["Subject"]
        assert first["From"] == real["From"] and first["Reply-To"] == real["Reply-To"]
        banner, blank, *rest = body(first, "plain").splitlines()
        assert banner.startswith("TEST: the message HMR-0001 (") and blank == ""
        assert volunteer.email in banner and volunteer.display_name in banner
        assert rest == body(real, "plain").splitlines()
        html = body(first, "html")
        banner_html = first_paragraph(html)
        assert "TEST: the message HMR-0001 (" in banner_html
        without = [line for line in html.splitlines() if line != banner_html]
        assert without == body(real, "html").splitlines()
        ja_banner = body(second, "plain").splitlines()[0]
        assert (
            ja_banner.startswith("【テスト送信】HMR-0005（")
            and "sho.yamasaki@example.jp" in ja_banner
        )
        assert "【テスト送信】HMR-0005（" in first_paragraph(body(second, "html"))
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
    assert f"Sent 2 test messages (as the volunteers named) to {ME}" in result.stdout


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


# --- against any standard server ---------------------------------------------------------


def test_a_test_send_offers_no_empty_esmtp_parameter(imported: Notifier) -> None:
    """A test message has no DSN envelope id: ENVID is left out, never sent empty (Postfix
    answers `501 5.5.4 Bad ENVID parameter syntax`, and so does the sink now)."""
    with Sink() as sink:
        result = imported("send", CAMPAIGN, "--test-to", ME, "--as", "HMR-0001", "--smtp", sink.url)
        assert result.exit_code == 0, result.output
        (message,) = sink.messages
    options = [*message.mail_options, *message.rcpt_options]
    assert options and not [o for o in options if o.endswith("=")], options
    assert not [o for o in message.mail_options if o.upper().startswith("ENVID")]
    assert "NOTIFY=FAILURE,DELAY" in message.rcpt_options


def test_the_sink_refuses_an_empty_parameter_like_postfix() -> None:
    with Sink() as sink, smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        code, text = client.docmd("MAIL FROM:<a@hmr.test> ENVID= RET=HDRS")
        assert (code, text) == (501, b"5.5.4 Bad ENVID parameter syntax")
        assert client.docmd("MAIL FROM:<a@hmr.test> ENVID=x RET=HDRS")[0] == 250
        assert client.docmd("RCPT TO:<b@hmr.test> NOTIFY=")[0] == 501


def test_esmtp_parameters_leave_out_empty_values() -> None:
    params = [("SMTPUTF8", None), ("ENVID", ""), ("RET", "HDRS"), ("ORCPT", "rfc822;a@b")]
    assert esmtp_parameters(params) == " SMTPUTF8 RET=HDRS ORCPT=rfc822;a@b"
    assert esmtp_parameters([]) == ""


@pytest.mark.parametrize("address", ["me@office.test", "Me@Intranet.LOCAL", "dpo@hmr.test"])
def test_a_reserved_name_is_a_test_address_with_a_note(imported: Notifier, address: str) -> None:
    """An office on an internal domain tests to itself: the address is accepted (the same
    domain is accepted as the sender), with a note that only its own server delivers it."""
    with Sink() as sink:
        result = imported(
            "send", CAMPAIGN, "--test-to", address, "--as", "HMR-0001", "--smtp", sink.url
        )
        assert result.exit_code == 0, result.output
        (message,) = sink.messages
    local, _, domain = address.partition("@")
    expected = f"{local}@{domain.lower()}"
    assert message.rcpt_tos == (expected,)
    assert str(parsed(message.data)["To"]) == expected
    assert f"Note: {domain.lower()} is a reserved name" in result.stdout


@pytest.mark.parametrize("address", ["me.example.org", "me@", "me@@office.test", "a b@office.test"])
def test_a_test_address_must_still_be_an_address(imported: Notifier, address: str) -> None:
    result = imported("send", CAMPAIGN, "--test-to", address)
    assert result.exit_code == 2, result.output
    assert "--test-to" in result.stderr and "not an address" in result.stderr


# --- what it prints ----------------------------------------------------------------------


def lines_of(text: str) -> list[str]:
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    return lines


@pytest.mark.parametrize("verbose", [(), ("--verbose",), ("-v",)])
def test_the_output_is_a_summary_and_verbose_lists_each_message(
    imported: Notifier, verbose: tuple[str, ...]
) -> None:
    root, flag = (verbose, ()) if verbose == ("-v",) else ((), verbose)
    with Sink() as sink:
        args = ("send", CAMPAIGN, "--test-to", ME, "--smtp", sink.url, *flag)
        result = imported.runner.invoke(
            cli, [*root, "--ledger", str(imported.ledger_path), *args], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        count = len(sink.messages)
    assert count > 20  # one for each version of the notice in the example roster
    lines = lines_of(result.stdout)
    said = " ".join(line.strip() for line in lines)
    assert said.startswith(
        f"Sent {count} test messages (one for each version of the notice) to {ME}"
    )
    each = [line for line in lines if line.startswith("  sent HMR-")]
    if verbose:
        assert len(each) == count
        assert "--verbose lists" not in result.stdout
    else:
        assert each == [] and "--verbose lists each message" in said
        assert len(lines) <= 7
    assert lines[-1] == f"When they read right: notifier send {CAMPAIGN}"


def test_refused_test_messages_are_listed_and_say_nothing_reached_you(imported: Notifier) -> None:
    with Sink(reject=[ME]) as sink:
        result = imported("send", CAMPAIGN, "--test-to", ME, "--as", "HMR-0001", "--smtp", sink.url)
        assert sink.messages == []
    assert result.exit_code == 1, result.output
    lines = lines_of(result.stdout)
    assert lines[0].startswith("Sent 0 of 1 test messages")
    said = " ".join(line.strip() for line in lines)
    assert any(line.startswith("  REFUSED HMR-0001 (en,") for line in lines)
    assert "550 5.1.1" in result.stdout
    assert "The server refused 1 test message:" in said
    assert "When they read right" not in result.stdout


# --- a ledger that cannot record it ------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for this test only, to be remounted read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def refused_before_sending(run: Notifier) -> None:
    with Sink() as sink:
        result = run("send", CAMPAIGN, "--test-to", ME, "--smtp", sink.url)
        assert sink.messages == []  # refused before the first message
    assert result.exit_code == 2, result.output
    assert "the ledger is read-only" in result.stderr
    assert "cannot record a test send, so nothing was sent" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the error and its hint
    assert "Traceback" not in result.output


def test_a_read_only_ledger_folder_refuses_a_test_send_before_sending(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("NOTIFIER_LEDGER", "NOTIFIER_CONFIG", "NOTIFIER_SMTP_URL"):
        monkeypatch.delenv(var, raising=False)
    run = Notifier(small_fs / "notifier.db", tmp_path)
    write_org_config(small_fs)
    assert run("roster", "import", str(REPO / "examples" / "volunteers.csv")).exit_code == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    refused_before_sending(run)


def test_an_immutable_ledger_file_refuses_a_test_send_before_sending(
    imported: Notifier,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root")
    path = imported.ledger_path
    if subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        refused_before_sending(imported)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
