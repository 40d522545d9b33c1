"""One redaction rule for anything that may hold a URL or credentials: no password typed
into an SMTP or IMAP URL, however mistyped, comes back in any output (stdout or stderr),
whether it came from the command line, the environment or notifier.toml."""

from __future__ import annotations

import pytest
from click.testing import Result
from conftest import REPO, Notifier, write_org_config

from notifier.errors import DeliveryError
from notifier.outputs import redact_urls, url_without_credentials
from notifier.smtp.target import parse_smtp_url

CAMPAIGN = "2020-03-breach"
PASSWORD = "hunter2"
# Each way a password has been seen echoed back, and how the rule shows it.
MISTYPED_SMTP = {
    "smtp:/bob:hunter2@127.0.0.1:25": "smtp:/***@127.0.0.1:25",
    "smtp//bob:hunter2@127.0.0.1:25": "smtp//***@127.0.0.1:25",
    "bob:hunter2@127.0.0.1:25": "***@127.0.0.1:25",
    "mailto:bob:hunter2@127.0.0.1": "mailto:***@127.0.0.1",
    "smtp://bob:hun/ter2@127.0.0.1:25": "smtp://***@127.0.0.1:25",
    "smtp://bob:hunter2@127.0.0.1:25": "smtp://***@127.0.0.1:25",
    "smtps://bob:hun@ter2@127.0.0.1": "smtps://***@127.0.0.1",
}
SECRETS = ("hunter2", "hun/ter2", "ter2", "hun@")


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.mark.parametrize(("url", "shown"), MISTYPED_SMTP.items())
def test_the_rule_hides_every_mistyped_password(url: str, shown: str) -> None:
    for text in (url, f"bad port in {url!r}", f"not an SMTP URL: {url}."):
        redacted = redact_urls(text)
        assert not leaks(redacted), redacted
        assert shown in redacted


@pytest.mark.parametrize(
    "text",
    [
        "mail bob@example.org",
        "mailto:alice@example.org",
        "row 3: the address a@b.example is taken",
        "/data/x@y/letters.csv: cannot write",
        "smtp://[::1]:25 refused",
    ],
)
def test_the_rule_leaves_what_holds_no_password(text: str) -> None:
    assert redact_urls(text) == text


def test_a_url_with_credentials_is_shown_without_anything_before_its_last_at() -> None:
    assert url_without_credentials("smtp://bob:p'w d@host:25") == "smtp://***@host:25"
    assert url_without_credentials("bob:pw@host") == "***@host"


@pytest.mark.parametrize("url", MISTYPED_SMTP)
def test_smtp_url_errors_never_quote_the_value(url: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        parse_smtp_url(url)
    assert not leaks(str(caught.value)), str(caught.value)
    assert "credentials do not belong in the SMTP URL" in caught.value.message


@pytest.mark.parametrize(
    "url",
    ["smtp:/127.0.0.1:25", "smtp//127.0.0.1:25", "127.0.0.1:25", "smtp://host:hunter2", "x"],
)
def test_other_bad_smtp_urls_are_explained_without_the_value(url: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        parse_smtp_url(url)
    message = caught.value.message
    assert "hunter2" not in str(caught.value) and url not in message
    assert "SMTP URL" in message


# --- through the command line ------------------------------------------------------------


@pytest.fixture
def imported(notifier: Notifier) -> Notifier:
    write_org_config(notifier.cwd)
    assert notifier("roster", "import", str(REPO / "examples" / "volunteers.csv")).exit_code == 0
    return notifier


def assert_one_clean_error(result: Result, field: str) -> None:
    assert result.exit_code == 2, result.output
    output = result.stdout + result.stderr
    assert not leaks(output), output
    assert result.stderr.startswith(f"Error: {field}: "), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert "Traceback" not in output


COMMANDS = {
    "dry run": ("send", CAMPAIGN),
    "send": ("send", CAMPAIGN, "--yes"),
    "test send": ("send", CAMPAIGN, "--test-to", "me@office.test"),
    "resend": ("resend", CAMPAIGN, "--status", "failed_temporary", "--yes"),
}


@pytest.mark.parametrize("url", MISTYPED_SMTP)
@pytest.mark.parametrize("command", COMMANDS)
def test_no_password_from_the_command_line_in_any_output(
    imported: Notifier, url: str, command: str
) -> None:
    result = imported(*COMMANDS[command], "--smtp", url)
    assert_one_clean_error(result, "--smtp")


@pytest.mark.parametrize("url", MISTYPED_SMTP)
@pytest.mark.parametrize("command", ["dry run", "test send"])
def test_no_password_from_the_environment_in_any_output(
    imported: Notifier, url: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIER_SMTP_URL", url)
    result = imported(*COMMANDS[command])
    assert_one_clean_error(result, "NOTIFIER_SMTP_URL or [smtp] url")


def test_no_password_from_the_settings_file_in_any_output(imported: Notifier) -> None:
    config = imported.cwd / "notifier.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text + '\n[smtp]\nurl = "smtp://bob:hun/ter2@127.0.0.1:25"\n', "utf-8")
    result = imported("send", CAMPAIGN)
    assert_one_clean_error(result, "NOTIFIER_SMTP_URL or [smtp] url")
    assert "smtp://***@127.0.0.1:25" in result.stderr


MISTYPED_IMAP = [
    "imaps://bob:hunter2@127.0.0.1/INBOX",
    "imaps:/bob:hunter2@127.0.0.1/INBOX",
    "imaps//bob:hunter2@127.0.0.1/INBOX",
    "bob:hunter2@127.0.0.1:993",
    "mailto:bob:hunter2@127.0.0.1",
    "imaps://bob:hun/ter2@127.0.0.1:993/INBOX",
    "imaps://bob:hunter2@[::1/INBOX",
]


@pytest.mark.parametrize("url", MISTYPED_IMAP)
def test_no_imap_password_in_any_output(
    imported: Notifier, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIER_IMAP_PASSWORD", "not-the-one-typed")
    result = imported("bounces", "ingest", "--imap", url)
    assert_one_clean_error(result, "--imap")
