"""A send's plan (who it would send to, how many are suppressed, how large the audience
is) is counted by the database, not by a pass over everyone in Python: the counts are the
ones the old walk gave, person by person, on a ledger with every kind of history.

The history is test_cohort_streaming's (notices sent, deferred, refused; reports that
moved them; suppressed addresses, one folded outside ASCII; people added after the send;
a roster re-imported with corrections and swapped addresses). The reference reads each
person, asks the audience rule (`membership`) about them and selects with
`select_messages`, as the sending walk does.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from test_cohort_streaming import FILTERS, FIRST, UPDATE, history, reference

from notifier.campaign import Campaign, load_campaign
from notifier.cohort import CohortFilter
from notifier.config import Settings
from notifier.ledger import Ledger
from notifier.message import MessageState
from notifier.pipeline import (
    Selection,
    SendPlan,
    SendRequest,
    SendScope,
    audience_chunks,
    plan_send,
    read_selection,
    send_audience,
)
from notifier.volunteer import Volunteer

__all__ = ["history"]  # the module's fixture, shared
S = MessageState

SCOPES = {
    "send": SendScope(),
    "resend": SendScope(resend_states=(S.BOUNCED_SOFT, S.FAILED_PERMANENT, S.BLOCKED)),
    "uncertain": SendScope(resend_uncertain=True),
    "limit": SendScope(limit=4),
    "limit-resend": SendScope(resend_states=(S.EXPIRED, S.BOUNCED_SOFT), limit=1),
    "limit-0": SendScope(limit=0),
}


def expected(ledger: Ledger, campaign: Campaign, filt: CohortFilter, scope: SendScope) -> Selection:
    """The selection as the walk made it: each person decided by the rule, one at a time."""
    audience = [m.volunteer for m in reference(ledger, campaign, filt) if m.included]
    return read_selection(ledger, campaign.campaign_id, audience, scope)


def audience_size(ledger: Ledger, campaign: Campaign, filt: CohortFilter) -> int:
    return sum(m.included for m in reference(ledger, campaign, filt))


def planned(
    ledger: Ledger, campaign: Campaign, filt: CohortFilter, scope: SendScope, *, chunk: int = 7
) -> SendPlan:
    request = SendRequest(
        campaign, send_audience(ledger, campaign, filt), scope=scope, chunk_size=chunk
    )
    return plan_send(ledger, request, Settings(ledger=ledger.path), chosen=True)


def by_group(people: tuple[Volunteer, ...]) -> dict[tuple[str, str], int]:
    return dict(Counter((v.locale, v.exposure) for v in people))


def assert_same(plan: SendPlan, selection: Selection, audience: int) -> None:
    assert plan.audience == audience
    assert plan.to_send == len(selection.send)
    assert plan.suppressed == len(selection.suppressed)
    assert plan.by_group == by_group(selection.send)
    assert plan.chosen == tuple(v.volunteer_id for v in selection.send)


CASES = [
    (filt, name)
    for filt, name in itertools.product(FILTERS[::3], ["send", "limit", "limit-0"])
    if not filt.statuses or name == "send"
]


@pytest.mark.parametrize(("filt", "scope_name"), CASES)
def test_a_follow_ups_plan_is_the_walks(
    history: Ledger, filt: CohortFilter, scope_name: str
) -> None:
    update = load_campaign(UPDATE)
    scope = SCOPES[scope_name]
    plan = planned(history, update, filt, scope)
    assert_same(plan, expected(history, update, filt, scope), audience_size(history, update, filt))


@pytest.mark.parametrize("scope_name", list(SCOPES))
@pytest.mark.parametrize("filt", [f for f in FILTERS if not f.statuses][::2])
def test_a_first_notices_plan_over_mixed_states_is_the_walks(
    history: Ledger, filt: CohortFilter, scope_name: str
) -> None:
    first = load_campaign(FIRST)
    scope = SCOPES[scope_name]
    plan = planned(history, first, filt, scope, chunk=5)
    assert_same(plan, expected(history, first, filt, scope), audience_size(history, first, filt))


def test_the_cases_cover_what_they_claim(history: Ledger) -> None:
    # Suppressed people due a message, people left to send, resendable states, ids.
    first = load_campaign(FIRST)
    plain = expected(history, first, CohortFilter(), SendScope())
    assert plain.send and plain.suppressed
    resend = expected(history, first, CohortFilter(), SCOPES["resend"])
    states = history.message_states(FIRST)
    assert {states.get(v.volunteer_id) for v in resend.send} >= {
        MessageState.BOUNCED_SOFT,
        MessageState.FAILED_PERMANENT,
    }
    update = load_campaign(UPDATE)
    assert expected(history, update, CohortFilter(), SendScope()).suppressed
    assert len(expected(history, update, CohortFilter(), SCOPES["limit"]).send) == 4


def test_the_plan_reads_the_same_people_the_send_walks(history: Ledger) -> None:
    # The counted audience is the one the send's chunks give, whatever the chunk size.
    update = load_campaign(UPDATE)
    for filt in FILTERS[::5]:
        audience = send_audience(history, update, filt)
        walked = [v for chunk in audience_chunks(history, update, audience, 4) for v in chunk]
        assert planned(history, update, filt, SendScope()).audience == len(walked)
