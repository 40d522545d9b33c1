"""DKIM signing end to end: `[dkim] selector` / `key_file` in notifier.toml, messages signed
where they are composed (in this process for a small campaign, in the compose worker
processes for a large one), sent to a real SMTP sink, and verified there with dkimpy
against the test key's DNS record, as a receiving server would.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dkim
import pytest
from conftest import ORG_SETTINGS, Notifier
from smtp_helpers import (
    INTERNATIONAL,
    add_volunteers,
    approve_shipped,
    make_volunteers,
    recipients,
)
from smtp_helpers import send as send_fast
from tls_helpers import DkimTestKey, make_dkim_key, needs_openssl

from notifier.campaign import Campaign, load_campaign
from notifier.compose import DKIM_HEADERS
from notifier.compose_pool import compose_workers_for
from notifier.config import Settings
from notifier.ledger import Ledger
from notifier.pipeline import SendSummary
from notifier.sink import ReceivedMessage, Sink
from notifier.volunteer import Volunteer

pytestmark = needs_openssl

CAMPAIGN = "2020-03-breach"
SELECTOR = "hmr2020"
DOMAIN = "example.org"  # the campaign's sender domain: the signature's d=


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> DkimTestKey:
    return make_dkim_key(tmp_path_factory.mktemp("dkim"), bits=2048)


@pytest.fixture(scope="module")
def fast_key(tmp_path_factory: pytest.TempPathFactory) -> DkimTestKey:
    # For the 2,000-message campaign: dkimpy signs with a 2048-bit key in about 7 ms,
    # with a 1024-bit one (still the minimum receivers accept) in about 2 ms.
    return make_dkim_key(tmp_path_factory.mktemp("dkim-fast"), bits=1024)


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(CAMPAIGN)


@pytest.fixture
def sink() -> Any:
    with Sink() as server:
        yield server


def send(
    ledger: Ledger,
    campaign: Campaign,
    volunteers: Sequence[Volunteer],
    url: str,
    key: DkimTestKey,
    *,
    compose_workers: int | None = None,
) -> SendSummary:
    settings = Settings(
        ledger=ledger.path, smtp_url=url, dkim_selector=SELECTOR, dkim_key_file=key.private_file
    )
    return send_fast(
        ledger,
        campaign,
        volunteers,
        url,
        settings=settings,
        compose_workers=compose_workers,
        timeout=10.0,
        max_attempts=1,
    )


def verifies(data: bytes, key: DkimTestKey) -> bool:
    """Whether the signature verifies with the test key published for its own d= (the
    sender's domain: the shipped campaign's, or the one notifier.toml sets)."""
    domain = signature_tags(data)["d"]
    return bool(dkim.verify(data, dnsfunc=key.dnsfunc(SELECTOR, domain)))


def signature_tags(data: bytes) -> dict[str, str]:
    """The tags of the message's DKIM-Signature header, whitespace removed."""
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    value = re.sub(r"\s+", "", str(parsed["DKIM-Signature"]))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def assert_all_signed(messages: Sequence[ReceivedMessage], key: DkimTestKey) -> None:
    unsigned = [m.rcpt_tos for m in messages if not m.data.startswith(b"DKIM-Signature:")]
    assert unsigned == []
    failing = [m.rcpt_tos for m in messages if not verifies(m.data, key)]
    assert failing == []


def pem_body(key: DkimTestKey) -> bytes:
    """The private key's base64 body, joined: what a leak into the ledger would contain."""
    lines = key.private_file.read_bytes().splitlines()
    return b"".join(line for line in lines if not line.startswith(b"-----"))[:64]


def written_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


# --- in this process (a small campaign) ---------------------------------------------------


def test_dkim_small_campaign_is_signed_and_verifies(
    ledger: Ledger, campaign: Campaign, dkim_key: DkimTestKey, sink: Sink, tmp_path: Path
) -> None:
    volunteers = [*make_volunteers(6), *INTERNATIONAL]
    add_volunteers(ledger, volunteers)
    assert compose_workers_for(len(volunteers)) == 0  # composed and signed in this process

    summary = send(ledger, campaign, volunteers, sink.url, dkim_key)

    messages = sink.messages
    assert summary.counts == {"sent": 8}
    assert recipients(messages) == {v.email: 1 for v in volunteers}
    assert_all_signed(messages, dkim_key)
    sent = {e.message_id: e for e in ledger.events(campaign_id=CAMPAIGN, kinds=["sent"])}
    for received in messages:
        tags = signature_tags(received.data)
        assert (tags["d"], tags["s"], tags["a"]) == (DOMAIN, SELECTOR, "rsa-sha256")
        assert tags["c"] == "relaxed/simple"
        signed = tags["h"].lower().split(":")
        assert [h.lower() for h in DKIM_HEADERS] == signed
        # the signed message is the one the ledger says was sent, with the server's id
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert sent[str(parsed["Message-ID"])].data["queue_id"] == received.queue_id
    assert ledger.verify().ok
    # The key is used, never stored: not in the ledger, its WAL, or anything beside it.
    assert [p for p in written_files(tmp_path) if pem_body(dkim_key) in p.read_bytes()] == []


def test_dkim_signature_breaks_when_a_signed_part_changes(
    ledger: Ledger, campaign: Campaign, dkim_key: DkimTestKey, sink: Sink
) -> None:
    """The verification above means something: any change to a signed header or the
    body fails it."""
    volunteers = make_volunteers(1)
    add_volunteers(ledger, volunteers)
    send(ledger, campaign, volunteers, sink.url, dkim_key)
    [received] = sink.messages
    data = received.data
    assert verifies(data, dkim_key)
    assert not verifies(data.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1), dkim_key)
    assert not verifies(data.replace(b"\r\nTo: ", b"\r\nTo: x", 1), dkim_key)
    assert not verifies(data[:-2] + b"!\r\n", dkim_key)
    # A header listed in h= but absent (In-Reply-To on a first notice) cannot be added.
    added = data.replace(b"\r\nSubject: ", b"\r\nIn-Reply-To: <x@example.net>\r\nSubject: ", 1)
    assert not verifies(added, dkim_key)


# --- in the compose worker processes -----------------------------------------------------


def test_dkim_signing_in_forced_compose_workers(
    ledger: Ledger, campaign: Campaign, dkim_key: DkimTestKey, sink: Sink
) -> None:
    volunteers = make_volunteers(150)
    add_volunteers(ledger, volunteers)

    summary = send(ledger, campaign, volunteers, sink.url, dkim_key, compose_workers=2)

    assert summary.counts == {"sent": 150}
    messages = sink.messages
    assert recipients(messages) == {v.email: 1 for v in volunteers}
    assert_all_signed(messages, dkim_key)


@pytest.mark.slow
def test_dkim_cli_large_campaign_signs_in_worker_processes(
    notifier: Notifier,
    ledger: Ledger,
    fast_key: DkimTestKey,
    sink: Sink,
    tmp_path: Path,
) -> None:
    """`notifier send` as an operator runs it: the key in notifier.toml, a campaign big
    enough that composing (and so signing) goes to the worker processes by itself."""
    count = 2000
    assert compose_workers_for(count) > 0
    volunteers = make_volunteers(count)
    add_volunteers(ledger, volunteers)
    (tmp_path / "notifier.toml").write_text(
        ORG_SETTINGS.read_text(encoding="utf-8")
        + f'[dkim]\nselector = "{SELECTOR}"\nkey_file = "{fast_key.private_file.as_posix()}"\n',
        encoding="utf-8",
    )
    approve_shipped(ledger, CAMPAIGN)

    result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--timeout", "10")

    assert result.exit_code == 0, result.output
    messages = sink.messages
    assert len(messages) == count
    assert recipients(messages) == {v.email: 1 for v in volunteers}
    assert_all_signed(messages, fast_key)
    status = json.loads(notifier("status", CAMPAIGN, "--format", "json").stdout)
    assert status["counts"] == {"sent": count}


# --- configuration mistakes: one clean error, nothing sent ------------------------------


def assert_clean_refusal(
    result: Any, sink: Sink, ledger: Ledger, *expected: str, up_front: bool = True
) -> None:
    """Exit 2, an `Error:` line (the first thing on stderr when the mistake is caught
    `up_front`, before connecting), no traceback, and nothing claimed or sent."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    if up_front:
        assert result.stderr.startswith("Error: "), result.stderr
    for text in expected:
        assert text in result.stderr
    assert sink.messages == []
    states = ledger.state_counts(CAMPAIGN)
    assert set(states) <= {"pending"}, states  # nothing claimed, nothing sent


@pytest.mark.parametrize(
    "table",
    ['[dkim]\nselector = "hmr2020"\n', '[dkim]\nkey_file = "{key}"\n'],
    ids=["selector-only", "key-file-only"],
)
def test_dkim_half_configured_is_one_clean_error_before_sending(
    notifier: Notifier,
    ledger: Ledger,
    dkim_key: DkimTestKey,
    sink: Sink,
    tmp_path: Path,
    table: str,
) -> None:
    add_volunteers(ledger, make_volunteers(4))
    (tmp_path / "notifier.toml").write_text(
        ORG_SETTINGS.read_text(encoding="utf-8")
        + table.format(key=dkim_key.private_file.as_posix()),
        encoding="utf-8",
    )
    approve_shipped(ledger, CAMPAIGN)
    result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--timeout", "5")
    assert_clean_refusal(result, sink, ledger, "dkim", "selector and a key_file")


def test_dkim_missing_key_file_is_one_clean_error_before_sending(
    notifier: Notifier, ledger: Ledger, sink: Sink, tmp_path: Path
) -> None:
    add_volunteers(ledger, make_volunteers(4))
    missing = tmp_path / "keys" / "absent.pem"
    (tmp_path / "notifier.toml").write_text(
        ORG_SETTINGS.read_text(encoding="utf-8")
        + f'[dkim]\nselector = "{SELECTOR}"\nkey_file = "{missing.as_posix()}"\n',
        encoding="utf-8",
    )
    approve_shipped(ledger, CAMPAIGN)
    result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--timeout", "5")
    assert_clean_refusal(result, sink, ledger, "cannot read the DKIM key", "absent.pem")


def test_dkim_unusable_key_is_one_clean_error_before_sending(
    notifier: Notifier, ledger: Ledger, sink: Sink, tmp_path: Path
) -> None:
    add_volunteers(ledger, make_volunteers(4))
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    (tmp_path / "notifier.toml").write_text(
        ORG_SETTINGS.read_text(encoding="utf-8")
        + f'[dkim]\nselector = "{SELECTOR}"\nkey_file = "{bad.as_posix()}"\n',
        encoding="utf-8",
    )
    approve_shipped(ledger, CAMPAIGN)
    result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url, "--timeout", "5")
    # The key is tried before anything connects: one error line, nothing sent.
    assert_clean_refusal(result, sink, ledger, "cannot be used for signing", "not-a-key.pem")
