"""Audience: who a campaign or a follow-up goes to, and why. One rule, in one place.

A person is in a campaign's audience when their exposure and locale pass the campaign's
`[audience]` filters and, for a follow-up, their message in the followed campaign is in
one of `follows_states` (by default sent, delivered or expired: a hard bounce or a refusal
means no e-mail reaches the person; a notice that expired in a mail system's queue may
not have reached them either, and the follow-up is worded for that).

`membership` is that rule, for one person, with the reason. Everything else asks it:
`select_audience` and `count_audience` (send, check, preview --all, campaign show), one
person's `membership_of` (preview warns about someone outside), and cohort.py, which
narrows the audience for one run and explains it person by person.

`history` says whether the follow-up rule applies: before the followed campaign has any
message in the ledger (`history_applies` is false) nobody has an outcome to be chosen
by, and check and preview look at everyone the attribute filters let through.
Suppressed addresses are in the audience: delivery skips them and records why, so the
ledger shows they were meant to be told.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from notifier.campaign import DEFAULT_FOLLOWS_STATES, Campaign
from notifier.ledger import Ledger, StateGroup, VolunteerQuery
from notifier.message import REACHED_STATES
from notifier.volunteer import Volunteer

# Which part of the rule left a person out: callers that word it their own way
# (check's "leaves out people whose notice is ...") branch on this, never on the text.
LeftOutBy = Literal["exposure", "locale", "no_followed_notice", "followed_state"]


@dataclass(frozen=True)
class Membership:
    """Whether one person is in a campaign's audience, and why (in words for people)."""

    included: bool
    reason: str
    left_out_by: LeftOutBy | None = None  # None when included


def followed_states(campaign: Campaign) -> tuple[str, ...]:
    """The states of the followed campaign's message that qualify a person."""
    return campaign.audience.follows_states or DEFAULT_FOLLOWS_STATES


def history_applies(ledger: Ledger, campaign: Campaign) -> bool:
    """Whether a follow-up can be chosen by the followed campaign's outcomes yet."""
    return campaign.follows is not None and ledger.has_messages(campaign.follows)


def membership(
    campaign: Campaign, volunteer: Volunteer, followed_state: str | None, *, history: bool = True
) -> Membership:
    """Whether `volunteer` is in the audience of `campaign`, and if not, why.

    `followed_state` is the state of their message in the campaign `campaign` follows
    (None: they have none); it is read only for a follow-up, and only with `history`.
    """
    return membership_by(
        campaign, volunteer.exposure, volunteer.locale, followed_state, history=history
    )


def membership_by(
    campaign: Campaign,
    exposure: str,
    locale: str,
    followed_state: str | None,
    *,
    history: bool = True,
) -> Membership:
    """`membership` from the only attributes the rule reads: so a count of people sharing
    them (ledger.count_with_states) is decided once per group, by the same rule."""
    audience = campaign.audience
    if audience.exposures and exposure not in audience.exposures:
        return Membership(False, f"exposure {exposure} is not in the audience", "exposure")
    if audience.locales and locale not in audience.locales:
        return Membership(False, f"locale {locale} is not in the audience", "locale")
    if campaign.follows and history:
        if followed_state is None:
            return Membership(False, f"has no {campaign.follows} notice", "no_followed_notice")
        if followed_state not in followed_states(campaign):
            reason = f"{campaign.follows} notice is {followed_state}"
            return Membership(False, reason, "followed_state")
        return Membership(True, f"{exposure}; {campaign.follows} notice {followed_state}")
    return Membership(True, f"{exposure}, {locale}")


def reached_variants(campaign: Campaign) -> tuple[bool | None, ...]:
    """The wordings a campaign can take by whether its earlier notice reached the reader
    (Renderer.render's `reached`): (None,) for a first notice; (True,) for a follow-up
    only to people it reached; (True, False) when `follows_states` also lets in people it
    did not (expired: a server was down)."""
    if not campaign.follows:
        return (None,)
    if all(state in REACHED_STATES for state in followed_states(campaign)):
        return (True,)
    return (True, False)


def earlier_reached(
    campaign: Campaign, followed_state: str | None, *, history: bool = True
) -> bool | None:
    """For a follow-up, whether the notice it follows reached this person (their message
    there sent or delivered); None for a first notice. Before the followed notice has
    gone out (no `history`), nobody has an outcome yet: a follow-up's reader is taken as
    reached (the wording most of its audience will get)."""
    if not campaign.follows:
        return None
    return not history or followed_state in REACHED_STATES


def earlier_reached_of(
    ledger: Ledger, campaign: Campaign, volunteer_ids: Collection[str] | None = None
) -> Callable[[str], bool | None]:
    """volunteer_id -> `earlier_reached` for them, from the ledger (reading only these
    volunteers' messages when given)."""
    if not campaign.follows:
        return lambda _vid: None
    history = history_applies(ledger, campaign)
    states = followed_message_states(ledger, campaign, volunteer_ids) if history else {}
    return lambda vid: earlier_reached(campaign, states.get(vid), history=history)


def followed_message_states(
    ledger: Ledger, campaign: Campaign, volunteer_ids: Collection[str] | None = None
) -> Mapping[str, str]:
    """volunteer_id -> state of their message in the campaign `campaign` follows (of
    these volunteers only, when given)."""
    if not campaign.follows:
        return {}
    return ledger.message_states(campaign.follows, volunteer_ids=volunteer_ids)


def membership_of(
    ledger: Ledger, campaign: Campaign, volunteer: Volunteer, *, history: bool = True
) -> Membership:
    """`membership` for one person, with their followed message's state from the ledger."""
    vid = volunteer.volunteer_id
    state = followed_message_states(ledger, campaign, [vid]).get(vid)
    return membership(campaign, volunteer, state, history=history)


def select_audience(
    ledger: Ledger, campaign: Campaign, history: bool = True
) -> Iterator[Volunteer]:
    """The volunteers a campaign goes to, in volunteer_id order, streamed from the ledger."""
    return (volunteer for volunteer, _reached in audience_with_wording(ledger, campaign, history))


def audience_with_wording(
    ledger: Ledger, campaign: Campaign, history: bool = True
) -> Iterator[tuple[Volunteer, bool | None]]:
    """The audience as `select_audience` gives it, each with `earlier_reached` (which
    wording of a follow-up they get): one streamed read of the roster joined with each
    person's followed message, in volunteer_id order."""
    for volunteer, followed, _states in _audience_rows(ledger, campaign, history, ()):
        yield volunteer, earlier_reached(campaign, followed, history=history)


def audience_states(
    ledger: Ledger, campaign: Campaign, campaign_id: str, history: bool = True
) -> Iterator[tuple[Volunteer, str | None]]:
    """The audience as `select_audience` gives it, each with the state of their message
    in `campaign_id` (None: none), streamed in volunteer_id order."""
    for volunteer, _followed, states in _audience_rows(ledger, campaign, history, (campaign_id,)):
        yield volunteer, states[0]


def _audience_rows(
    ledger: Ledger, campaign: Campaign, history: bool, also: tuple[str, ...]
) -> Iterator[tuple[Volunteer, str | None, tuple[str | None, ...]]]:
    """(volunteer, followed state, states in `also`) of each person in the audience."""
    follows = _follows(campaign, history)
    # The ledger reads only the exposures and locales the audience can have, so a
    # campaign for a few people does not read the whole roster; `membership` decides.
    for volunteer, states in ledger.volunteers_with_states(_scan(campaign), (*follows, *also)):
        followed = states[0] if follows else None
        if membership(campaign, volunteer, followed, history=history).included:
            yield volunteer, followed, states[len(follows) :]


def _follows(campaign: Campaign, history: bool) -> tuple[str, ...]:
    """The campaign whose message states decide the audience: the followed one, if any."""
    return (campaign.follows,) if campaign.follows and history else ()


def _scan(campaign: Campaign) -> VolunteerQuery:
    return VolunteerQuery(exposures=campaign.audience.exposures, locales=campaign.audience.locales)


def count_audience(
    ledger: Ledger, campaign: Campaign, history: bool = True
) -> Counter[tuple[str, str]]:
    """How many volunteers the campaign goes to, by (locale, exposure): counted by the
    ledger (GROUP BY), each group decided by `membership`."""
    counts: Counter[tuple[str, str]] = Counter()
    for group, _state in _audience_groups(ledger, campaign, history, ()):
        counts[(group.locale, group.exposure)] += group.count
    return counts


def count_audience_states(
    ledger: Ledger, campaign: Campaign, campaign_id: str, history: bool = True
) -> Counter[str | None]:
    """How many of the campaign's audience have their message in `campaign_id` in each
    state (None: no message yet), counted by the ledger."""
    counts: Counter[str | None] = Counter()
    for group, states in _audience_groups(ledger, campaign, history, (campaign_id,)):
        counts[states[0]] += group.count
    return counts


def _audience_groups(
    ledger: Ledger, campaign: Campaign, history: bool, also: tuple[str, ...]
) -> Iterator[tuple[StateGroup, tuple[str | None, ...]]]:
    """The ledger's groups of people in the audience, with their states in `also`."""
    follows = _follows(campaign, history)
    for group in ledger.count_with_states(_scan(campaign), (*follows, *also)):
        followed = group.states[0] if follows else None
        verdict = membership_by(campaign, group.exposure, group.locale, followed, history=history)
        if verdict.included:
            yield group, group.states[len(follows) :]
