"""The cohort, the follow-up's audience and a campaign's standing, as the ledger answers
them (rows streamed in volunteer_id order, counts by GROUP BY), hold to the rule decided
person by person in Python.

One generated ledger with every kind of history a cohort is chosen by: notices sent,
deferred and refused by a real SMTP sink, reports that moved them (hard and soft bounces,
expiry, a block, delivery), suppressed addresses (one with a capital outside ASCII, which
SQLite's lower() does not fold), people added after the send (no notice), and a roster
re-imported with corrections, two addresses swapped and an address given to someone
else. Every filter combination the CLI offers is compared with a reference that reads
each person and asks `membership`, the one rule, about them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import Notifier, with_contact
from smtp_helpers import make_volunteers, send, suppress

from notifier.audience import (
    audience_states,
    audience_with_wording,
    count_audience,
    earlier_reached,
    history_applies,
    membership,
)
from notifier.campaign import Campaign, load_campaign
from notifier.cohort import (
    NOT_NAMED,
    CohortFilter,
    CohortMember,
    explain_cohort,
    narrow_campaign,
    select_cohort,
    summarise_cohort,
)
from notifier.event import EventKind
from notifier.ledger import Ledger, Move, address_key
from notifier.ledger.suppressions import is_suppressed
from notifier.message import UNREACHED_STATES, MessageState
from notifier.owed_counts import owed_counts
from notifier.report import owed
from notifier.roster import AcceptedRow, RosterResult
from notifier.sink import Sink
from notifier.told import WHAT_A_NOTICE_SAYS, SinceNotice, since_notice
from notifier.volunteer import TEXT_FIELDS, Volunteer

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
PEOPLE = make_volunteers(60)
# Reports that came back after the send, by position on the roster.
REPORTS = {
    3: MessageState.BOUNCED_HARD,
    7: MessageState.BOUNCED_SOFT,
    11: MessageState.EXPIRED,
    13: MessageState.BLOCKED,
    17: MessageState.DELIVERED,
    19: MessageState.DELIVERED,
    23: MessageState.BOUNCED_SOFT,
}
DEFERRED = (PEOPLE[5], PEOPLE[29])  # a 451 every time: deferred, or failed for now
REFUSED = (PEOPLE[9],)  # a 550: failed_permanent
LATE = Volunteer(  # added after the send: no notice; a capital outside ASCII
    volunteer_id="HMR-00900",
    email="Ünal@exämple.com",
    email_ascii="Ünal@xn--exmple-cua.com",  # the domain's A-label: the forms differ
    family_name="Doe",
    given_name="Ünal",
    locale="en",
    exposure="screened",
    data_held=("photo",),
)


def _import(ledger: Ledger, people: list[Volunteer], name: str) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    ledger.record_import(
        RosterResult(
            file=Path(name),
            sha256=digest,
            encoding="utf-8",
            rows_total=len(people),
            accepted=tuple(AcceptedRow(i, v) for i, v in enumerate(people, start=2)),
            problems=(),
        )
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    path = tmp_path_factory.mktemp("streaming") / "notifier.db"
    with Ledger(path) as led:
        _import(led, PEOPLE, "first.csv")
        campaign = with_contact(load_campaign(FIRST))
        defer = [v.email for v in DEFERRED]
        with Sink(defer=defer, reject=[v.email for v in REFUSED]) as sink:
            send(led, campaign, PEOPLE, sink.url, max_attempts=2)
        ids = led.message_ids(FIRST)
        moves = [
            Move(ids[PEOPLE[i].volunteer_id], EventKind(str(state)), {"detail": "t"}, state)
            for i, state in REPORTS.items()
        ]
        with led.transaction():
            led.move_messages(moves)
        suppress(led, PEOPLE[3].email, "hard bounce")
        suppress(led, "ünal@exämple.com", "hard bounce elsewhere")  # LATE's, folded
        suppress(led, PEOPLE[40].email.upper(), "asked us not to write")
        # The roster again: corrections, two addresses swapped, an address someone else
        # was sent at, and people new since the send.
        again = list(PEOPLE)
        again[1] = dataclasses.replace(again[1], exposure="published", family_name="Davies")
        again[2] = dataclasses.replace(again[2], data_held=("photo",))
        a, b = again[30], again[31]
        again[30] = dataclasses.replace(a, email=b.email, email_ascii=b.email_ascii)
        again[31] = dataclasses.replace(b, email=a.email, email_ascii=a.email_ascii)
        gone = again.pop(45)  # left the roster; their address goes to a newcomer
        newcomer = make_volunteers(1, start=70)[0]
        newcomer = dataclasses.replace(newcomer, email=gone.email, email_ascii=gone.email_ascii)
        _import(led, [*again, newcomer, LATE, *make_volunteers(3, start=80)], "second.csv")
        yield led


def test_the_history_has_every_kind_of_outcome(history: Ledger) -> None:
    states = set(history.state_counts(FIRST))
    assert {"sent", "delivered", "bounced_hard", "bounced_soft", "expired", "blocked"} <= states
    assert {"failed_permanent"} <= states and states & {"deferred", "failed_temporary"}
    assert len(list(since_notice(history, FIRST))) >= 3  # corrections and the swap


# --- a reference: each person read and decided in Python ------------------------------


def reference(ledger: Ledger, campaign: Campaign, cohort: CohortFilter) -> list[CohortMember]:
    narrowed = narrow_campaign(campaign, cohort)
    states = ledger.message_states(campaign.follows) if campaign.follows else {}
    suppressed = ledger.suppressed_addresses()
    members = []
    for volunteer in ledger.volunteers():
        state = states.get(volunteer.volunteer_id)
        verdict = membership(narrowed, volunteer, state)
        included, reason = verdict.included, verdict.reason
        named = cohort.ids is None or bool(
            {
                volunteer.volunteer_id.casefold(),
                volunteer.email.casefold(),
                volunteer.email_ascii.casefold(),
            }
            & cohort.ids
        )
        if verdict.left_out_by not in ("exposure", "locale") and not named:
            included, reason = False, NOT_NAMED
        members.append(
            CohortMember(volunteer, included, reason, state, is_suppressed(volunteer, suppressed))
        )
    return members


IDS = frozenset(
    x.casefold()
    for x in (
        PEOPLE[1].volunteer_id,
        PEOPLE[3].email,
        PEOPLE[7].volunteer_id,
        PEOPLE[12].email.upper(),
        PEOPLE[20].volunteer_id,
        PEOPLE[30].email,
        "ÜNAL@EXÄMPLE.COM",
        "nobody@example.org",
    )
)
FILTERS = [
    CohortFilter(exposures=e, locales=loc, statuses=s, ids=i)
    for e, loc, s, i in itertools.product(
        ((), ("published",), ("screened", "database_only")),
        ((), ("ja",), ("en",)),
        ((), ("bounced_soft", "failed_permanent"), ("sent", "delivered", "expired", "deferred")),
        (None, IDS),
    )
]


def _name(filt: CohortFilter) -> str:
    ids = "ids" if filt.ids is not None else ""
    return "-".join([*filt.exposures, *filt.locales, *filt.statuses, ids]) or "default"


@pytest.mark.parametrize("filt", FILTERS, ids=_name)
def test_cohort_members_and_counts_match_the_rule_person_by_person(
    history: Ledger, filt: CohortFilter
) -> None:
    update = load_campaign(UPDATE)
    expected = reference(history, update, filt)
    members = explain_cohort(history, update, filt)
    assert isinstance(members, Iterator)  # streamed, not a list of everyone
    assert list(members) == expected
    assert [v.volunteer_id for v in select_cohort(history, update, filt)] == [
        m.volunteer.volunteer_id for m in expected if m.included
    ]
    summary = summarise_cohort(history, update, filt)
    left_out = Counter(m.reason for m in expected if not m.included)
    assert summary.volunteers == len(expected)
    assert summary.included == sum(m.included for m in expected)
    assert dict(summary.left_out) == dict(left_out)
    assert [n for _, n in summary.left_out] == sorted(left_out.values(), reverse=True)
    assert summary.unreached == sum(
        not m.included and m.followed_state in UNREACHED_STATES and not m.suppressed
        for m in expected
    )
    assert summary.suppressed == sum(m.included and m.suppressed for m in expected)


@pytest.mark.parametrize("filt", [f for f in FILTERS if not f.statuses], ids=_name)
def test_a_first_notice_cohort_matches_too(history: Ledger, filt: CohortFilter) -> None:
    first = load_campaign(FIRST)
    expected = reference(history, first, filt)
    assert list(explain_cohort(history, first, filt)) == expected
    summary = summarise_cohort(history, first, filt)
    assert summary.included == sum(m.included for m in expected)
    assert dict(summary.left_out) == dict(Counter(m.reason for m in expected if not m.included))
    # Ünal (suppressed by their address's folded form) is in the first notice's cohort.
    assert summary.suppressed == sum(m.included and m.suppressed for m in expected)


def test_the_cohorts_edge_cases_are_in_the_history(history: Ledger) -> None:
    # The comparisons above cover what they claim: a suppressed person in the cohort,
    # one left out for having no notice, one named only by a folded non-ASCII address.
    members = {
        m.volunteer.volunteer_id: m
        for m in reference(history, load_campaign(UPDATE), CohortFilter(ids=IDS))
    }
    assert members[LATE.volunteer_id].suppressed
    assert members[LATE.volunteer_id].reason == f"has no {FIRST} notice"
    assert members[PEOPLE[20].volunteer_id].included
    assert address_key(LATE.email) != LATE.email  # Python's lower() folded the Ü


@pytest.mark.parametrize("campaign_id", [FIRST, UPDATE])
@pytest.mark.parametrize("history_on", [True, False])
def test_the_audience_and_its_wording_match(
    history: Ledger, campaign_id: str, history_on: bool
) -> None:
    campaign = load_campaign(campaign_id)
    states = history.message_states(FIRST) if history_on else {}
    expected = [
        (v, earlier_reached(campaign, states.get(v.volunteer_id), history=history_on))
        for v in history.volunteers()
        if membership(campaign, v, states.get(v.volunteer_id), history=history_on).included
    ]
    assert list(audience_with_wording(history, campaign, history_on)) == expected
    assert count_audience(history, campaign, history_on) == Counter(
        (v.locale, v.exposure) for v, _ in expected
    )
    if campaign.follows and history_on:  # both wordings are in use
        assert {reached for _, reached in expected} == {True, False}
    own = history.message_states(campaign_id)
    assert list(audience_states(history, campaign, campaign_id, history_on)) == [
        (v, own.get(v.volunteer_id)) for v, _ in expected
    ]


@pytest.mark.parametrize("campaign_id", [FIRST, UPDATE])
def test_status_counts_match_the_reports_list_of_who_is_owed(
    history: Ledger, campaign_id: str
) -> None:
    campaign = load_campaign(campaign_id)
    listed = owed(history, campaign, campaign_id)
    counted = owed_counts(history, campaign, campaign_id)
    assert (counted.audience, counted.sent, counted.count) == (
        listed.audience,
        listed.sent,
        listed.count,
    )
    assert counted.reasons == listed.reasons
    assert dict(counted.by_state) == dict(Counter(p.state for p in listed.people))
    assert history_applies(history, campaign) or campaign_id == FIRST
    # A campaign only the ledger knows: its messages are its audience.
    assert owed_counts(history, None, FIRST).count == owed(history, None, FIRST).count


# --- what changed since the notice ---------------------------------------------------


def reference_since_notice(ledger: Ledger, followed: str) -> list[SinceNotice]:
    """The comparison written out person by person from the chain's events."""
    first_sent: dict[str, Any] = {}
    for event in ledger.events(campaign_id=followed, kinds=[EventKind.SENT]):
        first_sent.setdefault(str(event.volunteer_id), event)
    if not first_sent:
        return []
    start = min(e.seq for e in first_sent.values())
    tracked = (*WHAT_A_NOTICE_SAYS, "email")
    updates: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for event in ledger.events(kinds=[EventKind.VOLUNTEER_UPDATED], after_seq=start - 1):
        changes = event.data.get("changes") or {}
        if any(f in changes for f in tracked):
            updates.setdefault(str(event.volunteer_id), []).append((event.seq, changes))
    found: dict[str, SinceNotice] = {}
    for vid in sorted(updates):
        if vid not in first_sent:
            continue
        volunteer = ledger.get_volunteer(vid)
        sent = first_sent[vid]
        told: dict[str, str] = {}
        for seq, changes in updates[vid]:
            for name in tracked:
                if seq > sent.seq and name not in told and name in changes:
                    told[name] = str(changes[name].get("old") or "")
        now = dict(zip(TEXT_FIELDS, volunteer.texts(), strict=True))
        corrected = tuple(f for f in WHAT_A_NOTICE_SAYS if f in told and told[f] != now[f])
        address_told = sent.data.get("recipient") or told.get("email", volunteer.email)
        moved = address_key(address_told) not in {
            address_key(volunteer.email),
            address_key(volunteer.email_ascii),
        }
        others = sorted(
            {
                str(e.volunteer_id)
                for e in ledger.events(campaign_id=followed, kinds=[EventKind.SENT])
                if moved
                and e.volunteer_id != vid
                and address_key(str(e.data.get("recipient") or "")) == address_key(volunteer.email)
            }
        )
        if corrected or moved:
            found[vid] = SinceNotice(vid, corrected, address_told, volunteer.email, tuple(others))
    return list(found.values())


def test_since_notice_matches_the_chain_read_person_by_person(history: Ledger) -> None:
    streamed = since_notice(history, FIRST)
    assert isinstance(streamed, Iterator)
    changes = list(streamed)
    assert changes == reference_since_notice(history, FIRST)
    by_id = {c.volunteer_id: c for c in changes}
    assert by_id[PEOPLE[1].volunteer_id].corrected == ("exposure",)
    assert by_id[PEOPLE[2].volunteer_id].corrected == ("data_held",)
    assert by_id[PEOPLE[30].volunteer_id].address_was_told_to == (PEOPLE[31].volunteer_id,)
    assert list(since_notice(history, UPDATE)) == []  # never sent: nothing to compare


# --- the command line writes what it reads ------------------------------------------


@pytest.fixture
def on_history(history: Ledger, notifier: Notifier, ledger_path: Path) -> Notifier:
    history.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger_path.write_bytes(history.path.read_bytes())
    return notifier


def test_cohort_csv_and_json_are_the_reference_written_out(on_history: Notifier) -> None:
    expected = reference_records(on_history.ledger_path)
    shown = json.loads(on_history("cohort", UPDATE, "--format", "json").stdout)
    assert shown == expected
    csv_out = on_history("cohort", UPDATE, "--format", "csv").stdout.splitlines()
    assert csv_out[0].split(",") == list(expected[0])
    assert len(csv_out) == 1 + len(expected)
    empty = on_history("cohort", UPDATE, "--format", "json", "--ids", str(nobody(on_history)))
    nobody_in = json.loads(empty.stdout)  # everyone, each left out: named by nobody
    assert [r["volunteer_id"] for r in nobody_in] == [r["volunteer_id"] for r in expected]
    assert {r["reason"] for r in nobody_in if not r["included"]} >= {NOT_NAMED}
    assert not any(r["included"] for r in nobody_in)


def reference_records(path: Path) -> list[dict[str, Any]]:
    with Ledger(path) as led:
        return [
            {
                "volunteer_id": m.volunteer.volunteer_id,
                "display_name": m.volunteer.display_name,
                "email": m.volunteer.email,
                "locale": m.volunteer.locale,
                "exposure": m.volunteer.exposure,
                "included": m.included,
                "reason": m.reason,
                "followed_state": m.followed_state,
                "suppressed": m.suppressed,
            }
            for m in reference(led, load_campaign(UPDATE), CohortFilter())
        ]


def nobody(notifier: Notifier) -> Path:
    path = notifier.ledger_path.parent / "nobody.txt"
    path.write_text("nobody@example.org\n", encoding="utf-8")
    return path


def test_the_table_lists_a_page_and_counts_everyone(
    on_history: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifier.cli import cohort as cohort_cli

    expected = reference_records(on_history.ledger_path)
    inside = [r for r in expected if r["included"]]
    monkeypatch.setattr(cohort_cli, "TABLE_ROWS", 10)
    out = on_history("cohort", UPDATE).stdout
    listed = [r["volunteer_id"] for r in inside if r["volunteer_id"] in out]
    assert listed == [r["volunteer_id"] for r in inside[:10]]
    assert f"... and {len(inside) - 10} more people: all of them with --all" in out
    assert f"{len(inside)} of {len(expected)} volunteers are in the cohort." in out
    left_out = Counter(r["reason"] for r in expected if not r["included"])
    for reason, n in left_out.items():
        assert f"{n:>6}  {reason}" in out
    everyone = on_history("cohort", UPDATE, "--all", "--excluded").stdout
    assert all(r["volunteer_id"] in everyone for r in expected)
    assert "more people" not in everyone
