"""Who a campaign is for, was sent and is still owed, in numbers: what `status` shows.

The same figures as `report.owed`, counted by the ledger (GROUP BY over the roster joined
with each person's messages) rather than listed person by person, so `status` costs the
same for a million people as for a hundred and never holds them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from notifier.audience import count_audience_states, history_applies
from notifier.campaign import Campaign
from notifier.ledger import Ledger, VolunteerQuery
from notifier.message import REACHED_STATES, STATE_WORDS, MessageState
from notifier.message import MessageState as S

# Why a person of the audience is still owed the notice: the state of their message in
# the words every output uses (STATE_WORDS), and what to do where e-mail cannot reach them.
_WRITE_TO_THEM = " (write to them)"
OWED_REASONS: Mapping[str | None, str] = {
    None: STATE_WORDS[S.PENDING],  # no message yet: as good as pending
    **{
        state: STATE_WORDS[state]
        + (_WRITE_TO_THEM if state in (S.FAILED_PERMANENT, S.SUPPRESSED, S.BOUNCED_HARD) else "")
        for state in MessageState
        if state not in REACHED_STATES
    },
}


def ordered_reasons(counted: Mapping[str, int]) -> dict[str, int]:
    """`counted` (people owed, by reason) in the order of OWED_REASONS, others after."""
    order = [r for r in OWED_REASONS.values() if r in counted]
    return {reason: counted[reason] for reason in [*order, *sorted(set(counted) - set(order))]}


@dataclass(frozen=True)
class OwedCounts:
    """`report.Owed` without the people: the audience now, how many the notice reached,
    and how many are still owed it, by the state of their message (None: none yet)."""

    audience: int
    sent: int
    by_state: Mapping[str | None, int]  # of the people still owed it

    @property
    def count(self) -> int:
        return self.audience - self.sent

    @property
    def reasons(self) -> dict[str, int]:
        """How many are owed for each reason, in the order of OWED_REASONS (as
        `report.Owed.reasons`)."""
        counted: Counter[str] = Counter()
        for state, n in self.by_state.items():
            counted[OWED_REASONS.get(state, str(state))] += n
        return ordered_reasons(counted)


def owed_counts(ledger: Ledger, campaign: Campaign | None, campaign_id: str) -> OwedCounts:
    """`report.owed` counted by the ledger: the campaign's audience (as `send` and `check`
    choose it; for a campaign only the ledger knows, the people it has messages for) by
    the state of their message in it."""
    if campaign is None:
        own = (campaign_id,)
        groups = ledger.count_with_states(VolunteerQuery(in_campaign=campaign_id), own)
        states: Counter[str | None] = Counter()
        for group in groups:
            states[group.states[0]] += group.count
    else:
        states = count_audience_states(
            ledger, campaign, campaign_id, history_applies(ledger, campaign)
        )
    owed = {state: n for state, n in states.items() if state not in REACHED_STATES and n}
    audience = sum(states.values())
    return OwedCounts(audience, audience - sum(owed.values()), owed)
