"""`notifier bounces ingest --imap URL` against a real IMAP server (a throwaway Dovecot).

The server's INBOX holds the hand-written DSN fixtures; the ledger holds the messages they
are about. Both `imaps://` (TLS from the first byte) and `imap://` (STARTTLS) are read,
with the server's self-signed certificate trusted through NOTIFIER_IMAP_CA_FILE.
Skipped, saying why, where Dovecot is not installed or we are not root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Notifier
from imap_server import DovecotInstance
from mta import wait_until
from test_bounces import (
    CAMPAIGN,
    FINAL_STATES,
    FIXTURES,
    HAND_WRITTEN,
    PEOPLE,
    seed_ledger,
    suppressed,
)
from test_cli_bounces import write_key

from notifier.ledger import Ledger
from notifier.outputs import redact_urls


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotInstance]:
    messages = [(FIXTURES / name).read_bytes() for name in HAND_WRITTEN]
    with DovecotInstance(messages) as server:
        yield server


@pytest.fixture
def ready(
    notifier: Notifier, dovecot: DovecotInstance, monkeypatch: pytest.MonkeyPatch
) -> Notifier:
    """A ledger holding the fixtures' messages, its VERP key, and the IMAP settings."""
    for var in ("NOTIFIER_SECRET_FILE", "NOTIFIER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    write_key(notifier.ledger_path)
    with Ledger(notifier.ledger_path) as led:
        seed_ledger(led)
    monkeypatch.setenv("NOTIFIER_IMAP_PASSWORD", dovecot.password)
    monkeypatch.setenv("NOTIFIER_IMAP_CA_FILE", str(dovecot.ca_file))
    return notifier


def report_count(notifier: Notifier) -> int:
    with Ledger(notifier.ledger_path) as led:
        return led.count("bounce_reports")


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_ingest_imap_records_each_report_once_and_reads_only(
    ready: Notifier, dovecot: DovecotInstance, scheme: str
) -> None:
    url = dovecot.url(scheme)
    logins_before = len(dovecot.logins())
    first = ready("bounces", "ingest", "--imap", url)
    assert first.exit_code == 0, first.output + dovecot.log_tail()
    assert first.stdout.startswith(
        "16 reports read (0 already recorded): 16 matched, 0 unmatched, 0 refused as forged; "
        "11 hard, 0 soft, 2 delayed (still being tried), "
        "1 expired (the mail system gave up; not suppressed), 2 delivered"
    ), first.stdout
    with Ledger(ready.ledger_path) as led:
        states = led.message_states(CAMPAIGN)
        assert {n: states[f"v-{n:06d}"] for n in PEOPLE} == FINAL_STATES
        hard = {PEOPLE[n] for n, s in FINAL_STATES.items() if s == "bounced_hard"}
        assert suppressed(led) == hard
        sources = [report.source for report in led.bounce_reports()]
        assert led.verify().ok
    # Each report names where it came from: the folder (with its port) and the message's UID.
    assert len(sources) == 16
    assert all(s.startswith(f"{url};UID=") for s in sources), sources

    second = ready("bounces", "ingest", "--imap", url)
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("16 reports read (16 already recorded): 0 matched, 0 unmatched")
    assert report_count(ready) == 16

    # Both logins were encrypted. Dovecot would take a plain-text password from
    # 127.0.0.1 (it counts the local host as secure), so only its log can tell.
    wait_until(
        lambda: len(dovecot.logins()) >= logins_before + 2,
        5,
        lambda: f"Dovecot logged no login for the two ingests:\n{dovecot.log_tail()}",
    )
    ours = dovecot.logins()[logins_before:]
    assert len(ours) == 2 and all(", TLS, " in line for line in ours), ours

    # Read-only: every message is still there, and none was marked as read.
    flags = dovecot.flags()
    assert len(flags) == len(HAND_WRITTEN)
    assert not [f for f in flags if "\\Seen" in f or "\\Deleted" in f], flags


def test_ingest_imap_refuses_a_certificate_it_cannot_verify(
    ready: Notifier, dovecot: DovecotInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the test CA the self-signed certificate must fail verification, on both
    # schemes, before any password is sent.
    monkeypatch.delenv("NOTIFIER_IMAP_CA_FILE")
    for scheme in ("imaps", "imap"):
        result = ready("bounces", "ingest", "--imap", dovecot.url(scheme))
        assert result.exit_code == 2, result.output
        # The URL is named, with its user-info hidden like any URL in an error.
        shown = redact_urls(dovecot.url(scheme))
        assert "***@" in shown
        assert result.stderr.startswith(f"Error: {shown}: cannot log in to IMAP:")
        assert "certificate verify failed" in result.stderr
        # The hint names the setting that fixes it.
        assert "[imap] ca_file" in result.stderr and "NOTIFIER_IMAP_CA_FILE" in result.stderr
        assert "Traceback" not in result.output
    assert report_count(ready) == 0


def test_ingest_imap_no_such_folder(ready: Notifier, dovecot: DovecotInstance) -> None:
    url = dovecot.url("imaps", folder="Nowhere")
    result = ready("bounces", "ingest", "--imap", url)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {redact_urls(url)}: no such IMAP folder"


# Last of the tests on the server: after a failed login Dovecot delays the next logins
# from the same address by a few seconds (its auth penalty), which cannot be turned off.
def test_ingest_imap_wrong_password_is_one_clean_error(
    ready: Notifier, dovecot: DovecotInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIER_IMAP_PASSWORD", "not-" + dovecot.password)
    result = ready("bounces", "ingest", "--imap", dovecot.url("imaps"))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: {redact_urls(dovecot.url('imaps'))}: cannot log in to IMAP: "
        "[AUTHENTICATIONFAILED] Authentication failed."
    ]
    assert "Traceback" not in result.output
    assert dovecot.password not in result.output
    assert report_count(ready) == 0


def test_ingest_imap_unreadable_ca_file_is_named(
    notifier: Notifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked before connecting: no server needed.
    write_key(notifier.ledger_path)
    monkeypatch.setenv("NOTIFIER_IMAP_PASSWORD", "secret")
    monkeypatch.setenv("NOTIFIER_IMAP_CA_FILE", str(tmp_path / "missing-ca.pem"))
    result = notifier("bounces", "ingest", "--imap", "imaps://bounces@127.0.0.1:1/INBOX")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: {tmp_path / 'missing-ca.pem'}: imap.ca_file: cannot load CA certificates"
    )
    assert "Traceback" not in result.output
