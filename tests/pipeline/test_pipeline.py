"""Who gets a message: the one selection, checked directly and against what a real send
(a real SQLite ledger, aiosmtpd on 127.0.0.1 port 0) then does: a fresh send, a resumed
one, a resend of chosen states, --resend-uncertain, suppressed addresses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smtp_helpers import add_volunteers, make_volunteers, recipients, send, suppress

from notifier.campaign import Campaign, load_campaign
from notifier.cohort import CohortFilter
from notifier.config import Settings
from notifier.errors import CampaignError, CohortError
from notifier.ledger import Ledger
from notifier.message import MessageState
from notifier.pipeline import (
    SendPlan,
    SendRequest,
    SendScope,
    audience_chunks,
    plan_send,
    read_selection,
    resend_states,
    select_messages,
    send_audience,
)
from notifier.sink import Sink
from notifier.volunteer import Volunteer

S = MessageState

CAMPAIGN = "2020-03-breach"


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(CAMPAIGN)


@pytest.fixture
def people(ledger: Ledger) -> list[Volunteer]:
    volunteers = make_volunteers(8)
    add_volunteers(ledger, volunteers)
    return volunteers


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def ids(volunteers: tuple[Volunteer, ...] | list[Volunteer]) -> list[str]:
    return [v.volunteer_id for v in volunteers]


def plan(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer], scope: SendScope, url: str
) -> SendPlan:
    request = SendRequest(campaign, tuple(people), scope=scope, smtp_url=url)
    return plan_send(ledger, request, Settings(ledger=ledger.path))


def selected(ledger: Ledger, people: list[Volunteer], scope: SendScope) -> list[str]:
    return ids(read_selection(ledger, CAMPAIGN, people, scope).send)


def suppress_volunteer(ledger: Ledger, volunteer: Volunteer) -> None:
    suppress(ledger, volunteer.email.upper(), "hard bounce", event_seq=None)


# --- the selection on its own ---------------------------------------------------------


def test_pipeline_select_in_volunteer_order_with_limit_and_suppressions() -> None:
    people = make_volunteers(6)
    shuffled = [people[i] for i in (4, 1, 5, 0, 3, 2)]
    states = {people[0].volunteer_id: S.SENT, people[1].volunteer_id: S.DEFERRED}
    suppressed = {people[5].email.lower()}

    everyone = select_messages(shuffled, states, suppressed, SendScope())
    assert ids(everyone.send) == ids(people[1:5])  # no message yet counts as pending
    assert ids(everyone.suppressed) == [people[5].volunteer_id]

    limited = select_messages(shuffled, states, suppressed, SendScope(limit=2))
    assert ids(limited.send) == ids(people[1:3])
    assert ids(limited.suppressed) == [people[5].volunteer_id]  # whatever the limit


def test_pipeline_scope_states() -> None:
    assert SendScope().states == {"pending", "deferred"}
    assert SendScope(resend_states=(S.BOUNCED_SOFT,)).states == {
        "pending",
        "deferred",
        "bounced_soft",
    }
    # What a run finds in flight becomes uncertain before it selects.
    assert SendScope(resend_uncertain=True).states == {
        "pending",
        "deferred",
        "uncertain",
        "sending",
    }


@pytest.mark.parametrize("state", ["sent", "delivered", "bounced_hard", "pending", "nonsense"])
def test_pipeline_scope_refuses_states_that_cannot_be_resent(state: str) -> None:
    with pytest.raises(CohortError, match="cannot be re-sent") as caught:
        resend_states(["failed_temporary", state])
    assert caught.value.field == "--status"


# --- the selection, the plan and the send agree -----------------------------------------


def test_pipeline_fresh_send_sends_what_the_plan_said(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer], sink: Sink
) -> None:
    events_before = ledger.count("events")
    shown = plan(ledger, campaign, people, SendScope(), sink.url)
    assert (shown.audience, shown.to_send, shown.suppressed) == (8, 8, 0)
    assert sum(shown.by_group.values()) == 8
    assert shown.target == sink.url
    assert ledger.count("events") == events_before  # a dry run writes nothing
    assert selected(ledger, people, SendScope()) == ids(people)

    summary = send(ledger, campaign, people, sink.url, concurrency=1)

    assert summary.planned == shown.to_send
    assert summary.counts == {"sent": 8}
    assert [m.rcpt_tos[0] for m in sink.messages] == [v.email for v in people]  # in order
    assert selected(ledger, people, SendScope()) == []  # nothing left


def test_pipeline_resumed_send_picks_up_where_the_limit_stopped(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer], sink: Sink
) -> None:
    first = send(ledger, campaign, people, sink.url, scope=SendScope(limit=3), concurrency=1)
    assert first.counts == {"sent": 3}
    assert ledger.state_counts(CAMPAIGN) == {"pending": 5, "sent": 3}

    assert selected(ledger, people, SendScope()) == ids(people[3:])
    assert plan(ledger, campaign, people, SendScope(), sink.url).to_send == 5
    assert selected(ledger, people, SendScope(limit=2)) == ids(people[3:5])

    send(ledger, campaign, people, sink.url, scope=SendScope(limit=2), concurrency=1)
    send(ledger, campaign, people, sink.url, concurrency=1)
    assert [m.rcpt_tos[0] for m in sink.messages] == [v.email for v in people]
    assert recipients(sink.messages) == {v.email: 1 for v in people}


def test_pipeline_resend_selects_only_the_chosen_states(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer]
) -> None:
    refused, greylisted = people[2], people[5]
    with Sink(reject=[refused.email], defer=[greylisted.email]) as first_sink:
        first = send(ledger, campaign, people, first_sink.url, max_attempts=1)
    assert first.counts == {"sent": 6, "failed_permanent": 1, "failed_temporary": 1}

    temporary = SendScope(resend_states=(S.FAILED_TEMPORARY,))
    both = SendScope(resend_states=(S.FAILED_TEMPORARY, S.FAILED_PERMANENT))
    assert selected(ledger, people, SendScope()) == []
    assert selected(ledger, people, temporary) == [greylisted.volunteer_id]
    assert selected(ledger, people, both) == ids([refused, greylisted])

    with Sink() as second_sink:
        shown = plan(ledger, campaign, people, temporary, second_sink.url)
        assert shown.to_send == 1
        summary = send(ledger, campaign, people, second_sink.url, scope=temporary)
        assert [m.rcpt_tos for m in second_sink.messages] == [(greylisted.email,)]
    assert summary.counts == {"sent": 1}
    rows = {m.volunteer_id: m for m in ledger.campaign_messages(CAMPAIGN)}
    assert (rows[greylisted.volunteer_id].state, rows[greylisted.volunteer_id].attempts) == (
        "sent",
        2,
    )
    assert rows[refused.volunteer_id].state == "failed_permanent"  # not chosen: left alone


def test_pipeline_resend_uncertain_selects_what_a_crash_left_in_flight(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer], sink: Sink
) -> None:
    # Register everything, then claim two messages as a run killed mid-send would leave them.
    send(ledger, campaign, people, sink.url, scope=SendScope(limit=0))
    in_flight = people[1], people[6]
    messages = {m.volunteer_id: m.message_id for m in ledger.campaign_messages(CAMPAIGN)}
    ledger.claim_for_sending([messages[v.volunteer_id] for v in in_flight])
    uncertain = SendScope(resend_uncertain=True)

    assert selected(ledger, people, SendScope()) == ids([p for p in people if p not in in_flight])
    assert selected(ledger, people, uncertain) == ids(people)
    shown = plan(ledger, campaign, people, SendScope(), sink.url)
    assert (shown.to_send, shown.uncertain) == (6, 2)

    resumed = send(ledger, campaign, people, sink.url)
    assert resumed.newly_uncertain == 2
    assert {m.volunteer_id for m in resumed.uncertain} == set(ids(list(in_flight)))
    assert ledger.state_counts(CAMPAIGN) == {"sent": 6, "uncertain": 2}
    assert selected(ledger, people, SendScope()) == []
    assert selected(ledger, people, uncertain) == ids(list(in_flight))

    final = send(ledger, campaign, people, sink.url, scope=uncertain)
    assert final.counts == {"sent": 2}
    assert recipients(sink.messages) == {v.email: 1 for v in people}
    assert ledger.verify().ok


def test_pipeline_suppressed_addresses_are_skipped_and_recorded(
    ledger: Ledger, campaign: Campaign, people: list[Volunteer], sink: Sink
) -> None:
    bounced = people[4]
    suppress_volunteer(ledger, bounced)
    selection = read_selection(ledger, CAMPAIGN, people, SendScope(limit=3))
    assert ids(selection.suppressed) == [bounced.volunteer_id]
    assert plan(ledger, campaign, people, SendScope(), sink.url).suppressed == 1

    summary = send(ledger, campaign, people, sink.url)

    assert (summary.counts, summary.suppressed) == ({"sent": 7}, 1)
    assert bounced.email not in recipients(sink.messages)
    kinds = [e.kind for e in ledger.events(volunteer_id=bounced.volunteer_id) if e.message_id]
    assert kinds == ["queued", "suppressed"]
    assert selected(ledger, people, SendScope()) == []  # suppressed is final


def test_pipeline_follow_up_is_refused_before_its_first_notice(
    ledger: Ledger, people: list[Volunteer], sink: Sink
) -> None:
    update = load_campaign("2020-04-29-update")
    with pytest.raises(CampaignError, match="has not been sent yet"):
        send_audience(ledger, update, CohortFilter())
    send(ledger, load_campaign(CAMPAIGN), people, sink.url)
    audience = [
        v
        for chunk in audience_chunks(ledger, update, send_audience(ledger, update, CohortFilter()))
        for v in chunk
    ]
    # Everyone whose first notice was sent: it promised to write again.
    assert audience and {v.exposure for v in audience} <= {"published", "screened", "database_only"}
