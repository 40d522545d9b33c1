"""Messages composed ahead of the sending (in the worker processes, a few chunks at a time
as the send queues them) are exactly the ones sent."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from typing import Any

from smtp_helpers import add_volunteers, make_volunteers, recipients, send

from notifier.campaign import Campaign, load_campaign
from notifier.compose import message_id_for
from notifier.ledger import Ledger
from notifier.pipeline import SendScope, SendSummary
from notifier.sink import Sink
from notifier.volunteer import Volunteer

# More than the worker processes hold ahead (notifier.compose_pool.LOOKAHEAD_PER_WORKER
# chunks each), and more than a send's chunk of volunteers (pipeline.CHUNK_SIZE).
MANY = 2048


def _send(ledger: Ledger, volunteers: list[Volunteer], sink: Sink, **options: Any) -> SendSummary:
    campaign = load_campaign("2020-03-breach")
    limit = options.pop("limit", None)
    assert limit is None or isinstance(limit, int)
    return send(
        ledger, campaign, volunteers, sink.url, scope=SendScope(limit=limit), compose_workers=1,
        **options,
    )  # fmt: skip


def _message_ids(sink: Sink) -> list[str]:
    return [
        str(email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"])
        for m in sink.messages
    ]


def test_precompose_resumed_run_sends_each_remaining_message_once(ledger: Ledger) -> None:
    volunteers = make_volunteers(MANY + 200)
    add_volunteers(ledger, volunteers)
    campaign: Campaign = load_campaign("2020-03-breach")
    with Sink() as sink:
        first = _send(ledger, volunteers, sink, limit=150, concurrency=1)
        assert first.counts == {"sent": 150}
        # One connection: the server sees the messages in the order they were sent.
        assert _message_ids(sink) == [
            message_id_for(
                campaign.campaign_id, v.volunteer_id, "example.org", ledger.message_id_key()
            )
            for v in volunteers[:150]
        ]
    with Sink() as sink:
        # The 150 already sent are not composed or sent again.
        second = _send(ledger, volunteers, sink, concurrency=4)
        assert second.counts == {"sent": len(volunteers) - 150}
        assert recipients(sink.messages) == {v.email: 1 for v in volunteers[150:]}
    assert ledger.state_counts(campaign.campaign_id) == {"sent": len(volunteers)}
    assert ledger.verify().ok


def test_precompose_non_ascii_addresses_go_in_a_label_form(ledger: Ledger) -> None:
    """A server without SMTPUTF8: the non-ASCII addresses are composed and sent in A-label
    form (the server is known before anything is composed)."""
    volunteers = [
        replace(
            v, email=f"person{i}@bücher.example", email_ascii=f"person{i}@xn--bcher-kva.example"
        )
        if i % 10 == 0
        else v
        for i, v in enumerate(make_volunteers(300))
    ]
    add_volunteers(ledger, volunteers)
    with Sink(smtputf8=False) as sink:
        summary = _send(ledger, volunteers, sink, concurrency=2)
        assert summary.counts == {"sent": 300}
        got = recipients(sink.messages)
        assert got == {v.email_ascii: 1 for v in volunteers}
        for message in sink.messages:
            parsed = email.message_from_bytes(message.data, policy=email.policy.default)
            assert str(parsed["To"]).endswith(f"<{message.rcpt_tos[0]}>")
            assert not message.smtputf8


def test_precompose_limit_sends_only_the_first_messages(ledger: Ledger) -> None:
    volunteers = make_volunteers(MANY + 50)
    add_volunteers(ledger, volunteers)
    with Sink() as sink:
        summary = _send(ledger, volunteers, sink, limit=5)
        assert summary.counts == {"sent": 5}
        assert recipients(sink.messages) == {v.email: 1 for v in volunteers[:5]}
    assert ledger.state_counts("2020-03-breach") == {"pending": len(volunteers) - 5, "sent": 5}
