"""Delivery against real SMTP servers (aiosmtpd on 127.0.0.1, port 0) that misbehave on
purpose: retries, throttling, pipelining, TLS-less AUTH, SMTPUTF8.

Each test sends the shipped 2020-03-breach campaign to a few volunteers in a real ledger
file, then checks what the server received and what the ledger recorded. The engine on
its own, with plain messages, is in test_engine.py.
"""

from __future__ import annotations

import email
import email.policy
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult
from smtp_helpers import (
    INTERNATIONAL,
    ScriptedHandler,
    add_volunteers,
    make_volunteers,
    recipients,
    send,
    suppress,
)

from notifier.campaign import Campaign, load_campaign
from notifier.errors import DeliveryError
from notifier.ledger import Event, Ledger
from notifier.pipeline import SendScope
from notifier.sink import Sink
from notifier.verp import token_is_authentic, token_number
from notifier.volunteer import Volunteer


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign("2020-03-breach")


@pytest.fixture
def people(ledger: Ledger) -> list[Volunteer]:
    volunteers = make_volunteers(8)
    add_volunteers(ledger, volunteers)
    return volunteers


@pytest.fixture(params=["lockstep", "pipelining"])
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """A scripted server, once without PIPELINING (every command waits for its reply)
    and once with it (envelopes in one write, the next one behind this content)."""
    handler = ScriptedHandler(pipelining=request.param == "pipelining")
    with Sink(handler=handler) as server:
        yield server


def pipelining(sink: Sink) -> bool:
    handler = sink.handler
    assert isinstance(handler, ScriptedHandler)
    return handler.pipelining


def message_events(ledger: Ledger, volunteer: Volunteer) -> list[Event]:
    return [e for e in ledger.events(volunteer_id=volunteer.volunteer_id) if e.message_id]


def kinds(events: Sequence[Event]) -> list[str]:
    return [e.kind for e in events]


def script(sink: Sink, address: str, *steps: str) -> None:
    handler = sink.handler
    assert isinstance(handler, ScriptedHandler)
    handler.script[address.casefold()] = list(steps)


def tries(sink: Sink, address: str) -> int:
    handler = sink.handler
    assert isinstance(handler, ScriptedHandler)
    return handler.tries[address.casefold()]


# --- sending ---------------------------------------------------------------------------


def test_delivery_sends_each_message_once_with_verp_dsn_and_queue_id(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    summary = send(ledger, campaign, people, sink.url, concurrency=2)

    assert summary.counts == {"sent": 8}
    assert ledger.state_counts(campaign.campaign_id) == {"sent": 8}
    assert recipients(sink.messages) == {v.email: 1 for v in people}
    key = ledger.verp_key()
    by_recipient = {m.rcpt_tos[0]: m for m in sink.messages}
    tokens = {
        row.message_id: row.verp_token for row in ledger.campaign_messages(campaign.campaign_id)
    }
    for volunteer in people:
        received = by_recipient[volunteer.email]
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        message_id = str(parsed["Message-ID"])
        token = tokens[message_id]
        # VERP return path with the authentic token the ledger issued to this message, and
        # the DSN parameters (sink offers DSN)
        assert received.mail_from == f"bounces+{token}@example.org"
        assert token_is_authentic(key, token) and token_number(token) is not None
        assert f"ENVID={token}" in received.mail_options
        assert "RET=HDRS" in received.mail_options
        assert "NOTIFY=FAILURE,DELAY" in received.rcpt_options
        events = message_events(ledger, volunteer)
        # write-ahead: `sending` is committed before `sent`
        assert kinds(events) == ["queued", "sending", "sent"]
        assert events[-1].data["queue_id"] == received.queue_id
        assert events[-1].data["code"] == 250
        assert events[-1].message_id == message_id
    # many messages per connection, with RSET between them
    assert sink.handler.rsets >= 8 - 2
    assert ledger.verify().ok


def test_delivery_refused_recipient_fails_permanently_and_others_go(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    refused = people[3]
    script(sink, refused.email, "550")

    summary = send(ledger, campaign, people, sink.url)

    assert summary.counts == {"sent": 7, "failed_permanent": 1}
    assert tries(sink, refused.email) == 1  # 5xx: no retry
    assert refused.email not in recipients(sink.messages)
    events = message_events(ledger, refused)
    assert kinds(events) == ["queued", "sending", "failed_permanent"]
    assert events[-1].data["code"] == 550
    assert "no such user" in events[-1].data["reply"]


def test_delivery_greylisted_recipient_is_retried_then_sent(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    greylisted = people[0]
    script(sink, greylisted.email, "451", "ok")

    summary = send(ledger, campaign, people, sink.url)

    assert summary.counts == {"sent": 8}
    events = message_events(ledger, greylisted)
    assert kinds(events) == ["queued", "sending", "deferred", "sending", "sent"]
    assert [e.data.get("attempt") for e in events[1:]] == [1, 1, 2, 2]
    assert events[2].data["code"] == 451
    attempts = {m.volunteer_id: m.attempts for m in ledger.campaign_messages("2020-03-breach")}
    assert attempts[greylisted.volunteer_id] == 2
    assert recipients(sink.messages)[greylisted.email] == 1


def test_delivery_gives_up_after_max_attempts(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    stuck = people[1]
    script(sink, stuck.email, "451")

    summary = send(ledger, campaign, people, sink.url, max_attempts=3)

    assert summary.counts == {"sent": 7, "failed_temporary": 1}
    assert tries(sink, stuck.email) == 3
    assert kinds(message_events(ledger, stuck)) == [
        "queued",
        *["sending", "deferred"] * 2,
        "sending",
        "failed_temporary",
    ]


@pytest.mark.parametrize("failure", ["421", "drop", "data451"])
def test_delivery_transient_failure_is_deferred_and_retried(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink, failure: str
) -> None:
    unlucky = people[2]
    script(sink, unlucky.email, failure, "ok")

    summary = send(ledger, campaign, people, sink.url, concurrency=1)

    assert summary.counts == {"sent": 8}
    assert recipients(sink.messages) == {v.email: 1 for v in people}
    events = message_events(ledger, unlucky)
    assert kinds(events) == ["queued", "sending", "deferred", "sending", "sent"]
    if failure == "drop":
        assert events[2].data["code"] is None  # no reply at all: the connection went away
    # Pipelined, the next message's envelope went out behind the failed one: it was not
    # an attempt, and went once, on the next connection.
    for other in people:
        if other is not unlucky:
            assert kinds(message_events(ledger, other)) == ["queued", "sending", "sent"]


def test_delivery_stalled_server_times_out_and_retries(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    slow = people[4]
    script(sink, slow.email, "stall", "ok")

    summary = send(ledger, campaign, people, sink.url, timeout=0.5)

    assert summary.counts == {"sent": 8}
    events = message_events(ledger, slow)
    assert kinds(events) == ["queued", "sending", "deferred", "sending", "sent"]
    assert events[2].data["code"] is None
    assert "imed out" in events[2].data["reply"]


def test_delivery_refusal_at_end_of_data_is_final_and_judged_as_a_report_would_be(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    """`554 5.7.1 message refused` is a policy refusal: blocked (the address is fine, the
    sender must act), as the same status in a delivery report is; never retried."""
    script(sink, people[5].email, "data554")
    summary = send(ledger, campaign, people, sink.url)
    assert summary.counts == {"sent": 7, "blocked": 1}
    assert tries(sink, people[5].email) == 1
    (event,) = ledger.events(kinds=["blocked"])
    assert event.data["moved_to"] == "blocked" and event.data["code"] == 554
    assert ledger.verify().ok


def test_delivery_no_dsn_parameters_when_server_does_not_offer_dsn(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign
) -> None:
    with Sink(dsn=False) as plain:
        summary = send(ledger, campaign, people, plain.url)
        messages = plain.messages
    assert summary.counts == {"sent": 8}
    for received in messages:
        assert received.mail_from.startswith("bounces+")
        assert not any(o.startswith(("ENVID=", "RET=")) for o in received.mail_options)
        assert received.rcpt_options == ()


def test_delivery_non_ascii_addresses_go_with_smtputf8_when_offered(
    ledger: Ledger, campaign: Campaign
) -> None:
    add_volunteers(ledger, INTERNATIONAL)
    with Sink(smtputf8=True) as server:
        summary = send(ledger, campaign, INTERNATIONAL, server.url)
        messages = server.messages
    assert summary.counts == {"sent": 2}
    by_rcpt = {m.rcpt_tos[0]: m for m in messages}
    assert set(by_rcpt) == {"すずき@例え.jp", "jane@bücher.example"}
    assert all(m.smtputf8 for m in messages)
    # RFC 6532: the header is raw UTF-8, which the bytes parser would not decode.
    raw = by_rcpt["すずき@例え.jp"].data.decode("utf-8")
    parsed = email.message_from_string(raw, policy=email.policy.default)
    assert parsed["To"].addresses[0].addr_spec == "すずき@例え.jp"


def test_delivery_without_smtputf8_uses_a_labels_or_fails_that_recipient(
    ledger: Ledger, campaign: Campaign
) -> None:
    add_volunteers(ledger, INTERNATIONAL)
    with Sink(smtputf8=False) as server:
        summary = send(ledger, campaign, INTERNATIONAL, server.url)
        messages = server.messages
    assert summary.counts == {"sent": 1, "failed_permanent": 1}
    assert [m.rcpt_tos for m in messages] == [("jane@xn--bcher-kva.example",)]
    assert not messages[0].smtputf8
    failed = message_events(ledger, INTERNATIONAL[0])[-1]
    assert failed.kind == "failed_permanent"
    assert "SMTPUTF8" in failed.data["reason"]


def test_delivery_skips_suppressed_addresses_with_an_event(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    bounced = people[6]
    suppress(ledger, bounced.email.upper(), "hard bounce", event_seq=None)
    summary = send(ledger, campaign, people, sink.url)
    assert summary.counts == {"sent": 7}
    assert summary.suppressed == 1
    assert bounced.email not in recipients(sink.messages)
    assert kinds(message_events(ledger, bounced)) == ["queued", "suppressed"]


def test_delivery_finished_campaign_sends_nothing_again(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    send(ledger, campaign, people, sink.url)
    again = send(ledger, campaign, people, sink.url)
    assert again.nothing_to_send
    assert again.counts == {}
    assert len(sink.messages) == 8


def test_delivery_limit_sends_only_n_then_resumes(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    first = send(ledger, campaign, people, sink.url, scope=SendScope(limit=3))
    assert first.counts == {"sent": 3}
    assert ledger.state_counts(campaign.campaign_id) == {"pending": 5, "sent": 3}
    send(ledger, campaign, people, sink.url)
    assert recipients(sink.messages) == {v.email: 1 for v in people}


def test_delivery_require_tls_refuses_a_server_without_starttls(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    with pytest.raises(DeliveryError, match="STARTTLS"):
        send(ledger, campaign, people, sink.url, require_tls=True)
    assert sink.messages == []
    assert ledger.state_counts(campaign.campaign_id) == {"pending": 8}  # nothing claimed


def test_delivery_unreachable_server_fails_before_claiming(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    with pytest.raises(DeliveryError, match="notifier sink"):
        send(ledger, campaign, people, f"smtp://127.0.0.1:{port}", timeout=2.0)
    assert ledger.state_counts(campaign.campaign_id) == {"pending": 8}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_delivery_authenticates_with_credentials_from_the_environment(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    monkeypatch.setenv("NOTIFIER_SMTP_USER", "notifier")
    monkeypatch.setenv("NOTIFIER_SMTP_PASSWORD", "s3cret")
    options = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    with Sink(smtp_options=options) as server:
        summary = send(ledger, campaign, people, server.url, concurrency=2)
    assert summary.counts == {"sent": 8}
    assert logins and set(logins) == {(b"notifier", b"s3cret")}


def test_delivery_rate_limit_spaces_messages(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    # 8 messages at 20/s with a burst of 2: at least 6 waits of 1/20 s.
    summary = send(ledger, campaign, people, sink.url, rate=20.0)
    times = sorted(m.received_at for m in sink.messages)
    assert summary.counts == {"sent": 8}
    assert (times[-1] - times[0]).total_seconds() >= 6 / 20 * 0.8


def test_delivery_batches_pause_between_them(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    send(ledger, campaign, people, sink.url, batch_size=4, batch_pause=0.4)
    times = sorted(m.received_at for m in sink.messages)
    gap = (times[4] - times[3]).total_seconds()
    assert gap >= 0.4 * 0.9


def test_delivery_composes_in_worker_processes(
    ledger: Ledger, campaign: Campaign, sink: Sink
) -> None:
    volunteers = make_volunteers(300)
    add_volunteers(ledger, volunteers)
    summary = send(ledger, campaign, volunteers, sink.url, compose_workers=2)
    assert summary.counts == {"sent": 300}
    assert recipients(sink.messages) == {v.email: 1 for v in volunteers}
    assert ledger.verify().ok


def test_delivery_status_is_readable_by_another_connection(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink, ledger_path: Path
) -> None:
    send(ledger, campaign, people, sink.url, scope=SendScope(limit=2))
    other = sqlite3.connect(ledger_path)
    try:
        rows = other.execute(
            "SELECT state, count(*) FROM messages GROUP BY state ORDER BY state"
        ).fetchall()
    finally:
        other.close()
    assert rows == [("pending", 6), ("sent", 2)]


# --- pipelining ----------------------------------------------------------------------


def test_delivery_pipelines_envelopes_only_when_the_server_offers_it(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    summary = send(ledger, campaign, people, sink.url, concurrency=2)

    assert summary.counts == {"sent": 8}
    assert summary.server is not None and summary.server.pipelining == pipelining(sink)
    handler = sink.handler
    assert isinstance(handler, ScriptedHandler)
    # With PIPELINING, RCPT is on its way before the server answers MAIL; without, the
    # client waits for each reply.
    assert handler.rcpt_before_mail_reply == [pipelining(sink)] * 8
    assert recipients(sink.messages) == {v.email: 1 for v in people}
    assert handler.rsets >= 8 - 2  # RSET between messages, pipelined or not


def test_delivery_pipelined_refusals_are_read_reply_by_reply(
    ledger: Ledger, people: list[Volunteer], campaign: Campaign, sink: Sink
) -> None:
    """A 550 on RCPT is that recipient's outcome, not the 503 the server then gives DATA;
    the messages around it, whose envelopes share its writes, go as usual."""
    refused, greylisted, late = people[2], people[3], people[5]
    script(sink, refused.email, "550")
    script(sink, greylisted.email, "451", "ok")
    script(sink, late.email, "data554")

    summary = send(ledger, campaign, people, sink.url, concurrency=1)

    assert summary.counts == {"sent": 6, "failed_permanent": 1, "blocked": 1}
    assert recipients(sink.messages) == {v.email: 1 for v in people if v not in (refused, late)}
    failed = message_events(ledger, refused)
    assert kinds(failed) == ["queued", "sending", "failed_permanent"]
    assert failed[-1].data["code"] == 550 and "no such user" in failed[-1].data["reply"]
    deferred = message_events(ledger, greylisted)
    assert kinds(deferred) == ["queued", "sending", "deferred", "sending", "sent"]
    assert deferred[2].data["code"] == 451
    assert message_events(ledger, late)[-1].data["code"] == 554
    for other in people:
        if other not in (refused, greylisted, late):
            assert kinds(message_events(ledger, other)) == ["queued", "sending", "sent"]
    assert ledger.verify().ok


def test_delivery_pipelined_connection_dropped_in_data_with_the_next_envelope_sent(
    ledger: Ledger, campaign: Campaign
) -> None:
    """Several drops in a row, pipelined: each dropped message is deferred and retried,
    and the message whose envelope was already on the wire goes once, on a new
    connection, without an attempt counted."""
    people = make_volunteers(6)
    add_volunteers(ledger, people)
    handler = ScriptedHandler({p.email: ["drop", "ok"] for p in people[1:4]}, pipelining=True)
    with Sink(handler=handler) as server:
        summary = send(ledger, campaign, people, server.url, concurrency=1)
        received = server.messages
    assert summary.counts == {"sent": 6}
    assert recipients(received) == {v.email: 1 for v in people}
    for person in people:
        expected = ["queued", "sending", "sent"]
        if person in people[1:4]:
            expected = ["queued", "sending", "deferred", "sending", "sent"]
        assert kinds(message_events(ledger, person)) == expected
    attempts = {m.volunteer_id: m.attempts for m in ledger.campaign_messages(campaign.campaign_id)}
    assert attempts == {p.volunteer_id: 2 if p in people[1:4] else 1 for p in people}
