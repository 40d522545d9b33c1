"""The audience of a campaign or a follow-up: the one predicate, and the listing built on
it, against a real SQLite ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest

from notifier.audience import (
    Membership,
    count_audience,
    followed_states,
    history_applies,
    membership,
    membership_of,
    select_audience,
)
from notifier.campaign import DEFAULT_FOLLOWS_STATES, Campaign, load_campaign
from notifier.ledger import Ledger, volunteer_to_row
from notifier.message import MessageState
from notifier.volunteer import EXPOSURES, Volunteer

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"


def volunteer(n: int, locale: str, exposure: str) -> Volunteer:
    email = f"person{n}@example.com"
    return Volunteer(f"v{n:03d}", email, email, "Family", "Given", locale, exposure)


def add_volunteers(ledger: Ledger, people: list[Volunteer]) -> None:
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])


def add_first_notice(ledger: Ledger, states: dict[int, str]) -> None:
    """Messages of the first notice to volunteers n, in the given states."""
    ledger.db.table("campaigns").insert({"campaign_id": FIRST, "title": "first"})
    ledger.db.table("messages").insert_all(
        {
            "message_id": f"<m{n}@example.org>",
            "campaign_id": FIRST,
            "volunteer_id": f"v{n:03d}",
            "verp_token": f"t{n}",
            "state": state,
        }
        for n, state in states.items()
    )


def with_audience(campaign: Campaign, **changes: tuple[str, ...]) -> Campaign:
    return dataclasses.replace(campaign, audience=dataclasses.replace(campaign.audience, **changes))


def ids(people: Iterable[Volunteer]) -> list[str]:
    return [v.volunteer_id for v in people]


# --- the predicate --------------------------------------------------------------------


@pytest.mark.parametrize("exposure", EXPOSURES)
def test_each_exposure_is_in_when_listed_and_out_with_its_name_when_not(exposure: str) -> None:
    person = volunteer(1, "en", exposure)
    first = load_campaign(FIRST)
    assert membership(first, person, None) == Membership(True, f"{exposure}, en")
    others = tuple(e for e in EXPOSURES if e != exposure)
    verdict = membership(with_audience(first, exposures=others), person, None)
    assert verdict == Membership(
        False, f"exposure {exposure} is not in the audience", left_out_by="exposure"
    )


def test_no_exposure_or_locale_filter_lets_everyone_in() -> None:
    open_to_all = with_audience(load_campaign(FIRST), exposures=(), locales=())
    for n, exposure in enumerate(EXPOSURES):
        for locale in ("en", "ja"):
            assert membership(open_to_all, volunteer(n, locale, exposure), None).included


def test_locale_filter_says_which_locale_left_a_person_out() -> None:
    japanese_only = with_audience(load_campaign(FIRST), locales=("ja",))
    assert membership(japanese_only, volunteer(1, "ja", "screened"), None).included
    verdict = membership(japanese_only, volunteer(2, "en", "screened"), None)
    assert verdict == Membership(False, "locale en is not in the audience", "locale")


def test_exposure_is_asked_before_locale() -> None:
    narrow = with_audience(load_campaign(FIRST), exposures=("published",), locales=("ja",))
    assert membership(narrow, volunteer(1, "en", "screened"), None).left_out_by == "exposure"


@pytest.mark.parametrize("state", tuple(MessageState))
def test_follow_up_takes_only_the_followed_states(state: MessageState) -> None:
    update = load_campaign(UPDATE)
    # Reached, and expired in a mail system's queue (a server was down: the address is
    # fine, and the correction must not miss them for that).
    assert followed_states(update) == ("sent", "delivered", "expired")
    verdict = membership(update, volunteer(1, "en", "screened"), state)
    if state in ("sent", "delivered", "expired"):
        assert verdict == Membership(True, f"screened; {FIRST} notice {state}")
    else:
        assert verdict == Membership(False, f"{FIRST} notice is {state}", "followed_state")


def test_follow_up_leaves_out_people_the_followed_campaign_never_wrote_to() -> None:
    verdict = membership(load_campaign(UPDATE), volunteer(1, "ja", "published"), None)
    assert verdict == Membership(False, f"has no {FIRST} notice", "no_followed_notice")


def test_follow_up_states_chosen_in_the_file_replace_the_default() -> None:
    soft = with_audience(load_campaign(UPDATE), follows_states=("bounced_soft",))
    person = volunteer(1, "en", "database_only")
    assert membership(soft, person, "bounced_soft").included
    assert not membership(soft, person, "sent").included
    # A follow-up built without follows_states falls back to the reached states.
    default = with_audience(load_campaign(UPDATE), follows_states=())
    assert followed_states(default) == DEFAULT_FOLLOWS_STATES
    assert membership(default, person, "delivered").included


def test_without_history_a_follow_up_is_its_attribute_filters() -> None:
    update = with_audience(load_campaign(UPDATE), locales=("en",))
    assert membership(update, volunteer(1, "en", "screened"), None, history=False).included
    assert membership(
        update, volunteer(2, "en", "screened"), "bounced_hard", history=False
    ).included
    assert not membership(update, volunteer(3, "ja", "screened"), "sent", history=False).included


def test_first_notice_ignores_any_followed_state() -> None:
    first = load_campaign(FIRST)
    assert membership(first, volunteer(1, "en", "screened"), "bounced_hard").included


# --- the predicate and the listing, on a ledger -----------------------------------------


def test_campaign_audience_filters_by_exposure_and_locale(ledger: Ledger) -> None:
    people = [
        volunteer(1, "en", "published"),
        volunteer(2, "ja", "screened"),
        volunteer(3, "en", "database_only"),
        volunteer(4, "ja", "database_only"),
    ]
    add_volunteers(ledger, people)
    first = load_campaign(FIRST)
    assert ids(select_audience(ledger, first)) == ["v001", "v002", "v003", "v004"]
    update = load_campaign(UPDATE)
    # Nothing sent yet: history narrows to nobody, the attribute filters to everyone (the
    # update goes to every exposure: the first notice promised them all to write again).
    assert not ledger.has_messages(FIRST)
    assert not history_applies(ledger, update)
    assert list(select_audience(ledger, update)) == []
    assert ids(select_audience(ledger, update, history=False)) == [
        "v001",
        "v002",
        "v003",
        "v004",
    ]
    assert count_audience(ledger, update, history=False) == {
        ("en", "published"): 1,
        ("ja", "screened"): 1,
        ("en", "database_only"): 1,
        ("ja", "database_only"): 1,
    }
    # An exposure filter narrows: the Japanese screened and database-only people only.
    narrowed = with_audience(update, exposures=("screened", "database_only"), locales=("ja",))
    assert ids(select_audience(ledger, narrowed, history=False)) == ["v002", "v004"]


def test_campaign_follow_up_selects_by_outcome_of_earlier_notice(ledger: Ledger) -> None:
    states = {1: "sent", 2: "delivered", 3: "bounced_hard", 4: "failed_permanent", 5: "sent"}
    people = [volunteer(n, "en", "screened") for n in states]
    people.append(volunteer(6, "en", "screened"))  # never sent the first notice
    people[4] = volunteer(5, "en", "published")  # reached: published people get the update too
    add_volunteers(ledger, people)
    add_first_notice(ledger, states)
    update = load_campaign(UPDATE)
    assert history_applies(ledger, update)
    assert ids(select_audience(ledger, update)) == ["v001", "v002", "v005"]
    assert count_audience(ledger, update) == {("en", "screened"): 2, ("en", "published"): 1}
    everyone = ids(select_audience(ledger, update, history=False))
    assert everyone == ["v001", "v002", "v003", "v004", "v005", "v006"]

    def member(vid: str, history: bool = True) -> Membership:
        return membership_of(ledger, update, ledger.get_volunteer(vid), history=history)

    assert member("v002").included and not member("v003").included
    assert member("v003").reason == f"{FIRST} notice is bounced_hard"
    assert member("v003", history=False).included
    assert member("v006") == Membership(False, f"has no {FIRST} notice", "no_followed_notice")


def test_listing_and_predicate_agree_for_everyone_on_the_roster(ledger: Ledger) -> None:
    locales = ("en", "ja")
    people = [volunteer(n, locales[n % 2], EXPOSURES[n % 3]) for n in range(1, 25)]
    add_volunteers(ledger, people)
    # Every state of the first notice, and people it never wrote to (every tenth).
    states = list(MessageState)
    add_first_notice(ledger, {n: states[n % len(states)] for n in range(1, 25) if n % 10})
    followed = ledger.message_states(FIRST)
    update = load_campaign(UPDATE)
    for campaign in (
        update,
        with_audience(update, locales=("ja",)),
        with_audience(update, exposures=("screened",), follows_states=("bounced_soft", "sent")),
    ):
        for history in (True, False):
            listed = ids(select_audience(ledger, campaign, history))
            decided = [
                v.volunteer_id
                for v in people
                if membership(campaign, v, followed.get(v.volunteer_id), history=history).included
            ]
            assert listed == decided
            assert sum(count_audience(ledger, campaign, history).values()) == len(listed)
