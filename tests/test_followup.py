"""Follow-ups and re-sends, end to end through a real SMTP sink and a real ledger.

The 29 April correction goes to the cohort chosen by the first notice's outcomes, threads
under each person's first notice, and can be narrowed; `resend` sends chosen failures
again as new attempts of the same message.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Notifier, write_org_config
from smtp_helpers import add_volunteers, approve_shipped, make_volunteers

from notifier.ledger import Ledger
from notifier.sink import ReceivedMessage, Sink

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
FAST = ("--max-attempts", "1", "--backoff", "0", "--timeout", "5")


@pytest.fixture
def roster(ledger: Ledger) -> Ledger:
    # 12 people: exposures cycle published / screened / database_only, locales en / ja.
    add_volunteers(ledger, make_volunteers(12))
    approve_shipped(ledger, FIRST, UPDATE)
    return ledger


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def parsed(message: ReceivedMessage) -> email.message.EmailMessage:
    return email.message_from_bytes(message.data, policy=email.policy.default)


def test_follow_up_cannot_be_sent_before_the_notice_it_follows(
    notifier: Notifier, roster: Ledger, sink: Sink
) -> None:
    result = notifier("send", UPDATE, "--yes", "--smtp", sink.url)
    assert result.exit_code == 2
    assert "has not been sent yet" in result.stderr
    assert sink.messages == []
    # ... but it can be checked already, against everyone matching its filters.
    write_org_config(notifier.cwd)
    checked = notifier("check", UPDATE)
    assert checked.exit_code == 0, checked.output


def test_update_goes_to_its_cohort_threaded_under_the_first_notice(
    notifier: Notifier, roster: Ledger, tmp_path: Path
) -> None:
    refused = "person4@example.com"  # screened, en: 550 on the first notice
    with Sink(reject=[refused]) as first_sink:
        sent = notifier("send", FIRST, "--yes", "--smtp", first_sink.url, *FAST)
        assert sent.exit_code == 0, sent.output
        first_ids = {m.rcpt_tos[0]: parsed(m)["Message-ID"] for m in first_sink.messages}
    assert roster.message_states(FIRST)["HMR-00004"] == "failed_permanent"

    with Sink() as update_sink:
        result = notifier("send", UPDATE, "--yes", "--smtp", update_sink.url, *FAST)
        assert result.exit_code == 0, result.output
        received = {m.rcpt_tos[0]: parsed(m) for m in update_sink.messages}

    # everyone whose first notice was sent, as it promised (published, screened and
    # database-only); not the 550 one.
    expected = {v.email for v in make_volunteers(12) if v.email != refused}
    assert {v.exposure for v in make_volunteers(12)} == {"published", "screened", "database_only"}
    assert set(received) == expected
    for address, message in received.items():
        assert message["In-Reply-To"] == first_ids[address]
        assert message["References"] == first_ids[address]
        assert message["Message-ID"] != first_ids[address]

    again = notifier("send", UPDATE, "--yes", "--smtp", "smtp://127.0.0.1:9")
    assert "Nothing to send" in again.stdout


def test_send_narrowed_by_locale_and_ids(
    notifier: Notifier, roster: Ledger, sink: Sink, tmp_path: Path
) -> None:
    assert notifier("send", FIRST, "--yes", "--smtp", sink.url, *FAST).exit_code == 0
    first_count = len(sink.messages)
    ja = notifier("send", UPDATE, "--yes", "--smtp", sink.url, "--locale", "ja", *FAST)
    assert ja.exit_code == 0, ja.output
    update_rcpts = [m.rcpt_tos[0] for m in sink.messages[first_count:]]
    assert update_rcpts and all(r.endswith("@example.jp") for r in update_rcpts)

    ids = tmp_path / "ids.txt"
    ids.write_text("HMR-00002\n", encoding="utf-8")  # database_only, en
    events_before = roster.count("events")
    plan = notifier("send", UPDATE, "--ids", str(ids))
    assert plan.exit_code == 0
    assert "Would send 1 of 1" in plan.stdout
    assert roster.count("events") == events_before  # a dry run writes nothing

    published = notifier("send", UPDATE, "--exposure", "published")
    assert published.exit_code == 0, published.output  # published people get it too
    assert "Would send" in published.stdout


def test_resend_is_a_new_attempt_of_the_same_message(notifier: Notifier, roster: Ledger) -> None:
    flaky = "person1@example.jp"
    with Sink(defer=[flaky]) as first_sink:
        result = notifier("send", FIRST, "--yes", "--smtp", first_sink.url, *FAST)
        assert result.exit_code == 0, result.output
    assert roster.message_states(FIRST)["HMR-00001"] == "failed_temporary"
    (message,) = (m for m in roster.campaign_messages(FIRST) if m.volunteer_id == "HMR-00001")
    message_id = message.message_id

    with Sink() as second_sink:
        dry = notifier("resend", FIRST, "--status", "failed_temporary", "--smtp", second_sink.url)
        assert "Would send 1 of" in dry.stdout and second_sink.messages == []
        assert "run the same command again with --yes" in dry.stdout
        result = notifier(
            "resend",
            FIRST,
            "--status",
            "failed_temporary,bounced_soft",
            "--yes",
            "--smtp",
            second_sink.url,
            *FAST,
        )
        assert result.exit_code == 0, result.output
        assert [m.rcpt_tos for m in second_sink.messages] == [(flaky,)]
        assert parsed(second_sink.messages[0])["Message-ID"] == message_id

    (message,) = (m for m in roster.campaign_messages(FIRST) if m.message_id == message_id)
    assert (message.state, message.attempts) == ("sent", 2)
    kinds = [e.kind for e in roster.events(message_id=message_id)]
    assert kinds.count("sending") == 2
    assert "failed_temporary" in kinds and kinds[-1] == "sent"
    assert roster.verify().ok


def test_resend_refuses_states_that_would_tell_someone_twice(
    notifier: Notifier, roster: Ledger
) -> None:
    result = notifier("resend", FIRST, "--status", "sent")
    assert result.exit_code == 2
    assert "cannot be re-sent" in result.output
