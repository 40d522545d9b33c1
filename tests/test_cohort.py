"""Cohorts: the default cohort of a follow-up, narrowing options, and the reasons shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Notifier

from notifier.campaign import load_campaign
from notifier.cohort import (
    CohortFilter,
    explain_cohort,
    narrow_campaign,
    read_ids_file,
    select_cohort,
)
from notifier.errors import CohortError
from notifier.ledger import Ledger, volunteer_to_row
from notifier.volunteer import Volunteer

FIRST = "2020-03-breach"

# volunteer id, locale, exposure, state of their first notice (None: never sent)
PEOPLE = [
    ("v01", "en", "published", "sent"),
    ("v02", "en", "screened", "sent"),
    ("v03", "ja", "screened", "delivered"),
    ("v04", "en", "screened", "bounced_hard"),
    ("v05", "en", "database_only", "sent"),
    ("v06", "ja", "database_only", "failed_permanent"),
    ("v07", "ja", "database_only", "sent"),
    ("v08", "en", "screened", None),
    ("v09", "en", "database_only", "bounced_soft"),
]


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    ledger.db.table("volunteers").insert_all(
        volunteer_to_row(
            Volunteer(
                vid, f"{vid}@example.org", f"{vid}@example.org", "Doe", "Jo", locale, exposure
            )
        )
        for vid, locale, exposure, _ in PEOPLE
    )
    ledger.db.table("campaigns").insert({"campaign_id": FIRST, "title": "first"})
    ledger.db.table("messages").insert_all(
        {
            "message_id": f"<{vid}@example.org>",
            "campaign_id": FIRST,
            "volunteer_id": vid,
            "verp_token": vid,
            "state": state,
        }
        for vid, _, _, state in PEOPLE
        if state is not None
    )
    return ledger


def ids(volunteers: list[Volunteer]) -> list[str]:
    return [v.volunteer_id for v in volunteers]


def test_update_default_cohort_is_everyone_the_first_notice_reached(history: Ledger) -> None:
    # The first notice promised everyone "we will write to you again": published, screened
    # and database-only people whose first notice was sent or delivered get the update;
    # not a hard bounce, a failure, a soft bounce, or someone never sent it.
    update = load_campaign("2020-04-29-update")
    assert ids(select_cohort(history, update, CohortFilter())) == [
        "v01",
        "v02",
        "v03",
        "v05",
        "v07",
    ]
    assert {v.exposure for v in select_cohort(history, update, CohortFilter())} == {
        "published",
        "screened",
        "database_only",
    }


def test_narrowing_by_exposure_locale_and_status(history: Ledger) -> None:
    update = load_campaign("2020-04-29-update")
    assert ids(select_cohort(history, update, CohortFilter(exposures=("database_only",)))) == [
        "v05",
        "v07",
    ]
    assert ids(select_cohort(history, update, CohortFilter(locales=("ja",)))) == ["v03", "v07"]
    soft = CohortFilter(statuses=("bounced_soft", "failed_permanent"))
    assert ids(select_cohort(history, update, soft)) == ["v06", "v09"]


def test_narrowing_by_ids_file_with_ids_or_addresses(history: Ledger, tmp_path: Path) -> None:
    plain = tmp_path / "ids.txt"
    plain.write_text("v02\nV05@EXAMPLE.ORG\n# a comment\n\nv04\n", encoding="utf-8")
    update = load_campaign("2020-04-29-update")
    # v04 is named but is not in the update's cohort (a hard bounce): narrowing never widens.
    assert ids(select_cohort(history, update, CohortFilter(ids=read_ids_file(plain)))) == [
        "v02",
        "v05",
    ]
    table = tmp_path / "ids.csv"
    table.write_text("name,volunteer_id\nJo,v07\n", encoding="utf-8")
    assert read_ids_file(table) == frozenset({"v07"})


def test_options_cannot_widen_the_cohort(history: Ledger) -> None:
    update = load_campaign("2020-04-29-update")
    narrower = narrow_campaign(update, CohortFilter(exposures=("screened",)))
    with pytest.raises(CohortError, match="not in the audience") as caught:
        narrow_campaign(narrower, CohortFilter(exposures=("published",)))
    assert caught.value.field == "--exposure"


def test_status_only_applies_to_follow_ups_and_must_be_a_state() -> None:
    with pytest.raises(CohortError, match="follows no earlier campaign"):
        narrow_campaign(load_campaign(FIRST), CohortFilter(statuses=("sent",)))
    with pytest.raises(CohortError, match="unknown message state"):
        narrow_campaign(load_campaign("2020-04-29-update"), CohortFilter(statuses=("snet",)))


def test_empty_ids_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "ids.txt"
    empty.write_text("# nobody\n", encoding="utf-8")
    with pytest.raises(CohortError, match="names nobody"):
        read_ids_file(empty)
    with pytest.raises(CohortError, match="cannot read"):
        read_ids_file(tmp_path / "absent.txt")


def test_explain_gives_everyone_a_reason(history: Ledger) -> None:
    members = {
        m.volunteer.volunteer_id: m
        for m in explain_cohort(history, load_campaign("2020-04-29-update"))
    }
    assert len(members) == len(PEOPLE)
    assert members["v02"].included and "sent" in members["v02"].reason
    assert members["v01"].included and "published" in members["v01"].reason
    assert not members["v04"].included and "bounced_hard" in members["v04"].reason
    assert not members["v08"].included and "has no 2020-03-breach notice" in members["v08"].reason
    assert members["v06"].followed_state == "failed_permanent"
    included = sorted(vid for vid, m in members.items() if m.included)
    assert included == ids(
        select_cohort(history, load_campaign("2020-04-29-update"), CohortFilter())
    )


def test_cli_cohort_lists_members_and_reasons(notifier: Notifier, history: Ledger) -> None:
    result = notifier("cohort", "2020-04-29-update", "--format", "json")
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.stdout)
    assert {r["volunteer_id"] for r in rows if r["included"]} == {"v01", "v02", "v03", "v05", "v07"}
    assert {
        "volunteer_id",
        "email",
        "locale",
        "exposure",
        "included",
        "reason",
        "followed_state",
        "suppressed",
    } <= set(rows[0])
    table = notifier("cohort", "2020-04-29-update")
    assert table.exit_code == 0
    assert "5 of 9 volunteers" in table.stdout
    assert "bounced_hard" in table.stdout  # the excluded reasons are summarised
    bad = notifier("cohort", "2020-04-29-update", "--status", "snet")
    assert bad.exit_code == 2
    assert "unknown message state" in bad.stderr
