"""Cohorts: the people a campaign goes to, chosen by attributes and by ledger history.

A campaign file declares its default cohort (its audience: exposure and locale filters and,
for a follow-up, which outcomes of the followed campaign qualify). An operator can narrow
it for one run with a `CohortFilter` (`--exposure`, `--locale`, `--status`, `--ids FILE`),
never widen it: a narrowed selection is the campaign's audience with tighter filters,
decided by the one rule in `notifier.audience`, so `cohort` and `send` agree with `check`
and `preview`.

`explain_cohort` says, for every volunteer on the roster, whether they are in and why: the
answer a comms lead needs before sending a correction to "everyone who got the first
notice".
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from notifier.audience import followed_message_states, membership, select_audience
from notifier.campaign import Campaign
from notifier.errors import CohortError
from notifier.ledger import Ledger
from notifier.ledger.suppressions import is_suppressed
from notifier.message import MessageState
from notifier.volunteer import Volunteer


@dataclass(frozen=True)
class CohortFilter:
    """Narrowing for one run. Empty means "as the campaign says"."""

    exposures: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()  # states of the followed campaign's message
    ids: frozenset[str] | None = None  # volunteer ids or addresses (case-insensitive)


@dataclass(frozen=True)
class CohortMember:
    volunteer: Volunteer
    included: bool
    reason: str
    followed_state: str | None = None  # the person's message in the followed campaign
    suppressed: bool = False


def _narrowed(
    current: tuple[str, ...], wanted: tuple[str, ...], what: str, campaign: Campaign
) -> tuple[str, ...]:
    if not wanted:
        return current
    outside = [value for value in wanted if current and value not in current]
    if outside:
        raise CohortError(
            f"{', '.join(outside)} is not in the audience of {campaign.campaign_id} "
            f"({', '.join(current)}): options can narrow a cohort, not widen it",
            field=f"--{what}",
            hint=f"see who is in it with: notifier cohort {campaign.campaign_id}",
        )
    return tuple(wanted)


def narrow_campaign(campaign: Campaign, cohort: CohortFilter) -> Campaign:
    """The campaign with its audience narrowed by the filter (ids are applied separately)."""
    if cohort.statuses and not campaign.follows:
        raise CohortError(
            f"{campaign.campaign_id} follows no earlier campaign, so there is no status to "
            "choose by",
            field="--status",
            hint="--status applies to follow-ups such as 2020-04-29-update",
        )
    unknown = [s for s in cohort.statuses if s not in tuple(MessageState)]
    if unknown:
        raise CohortError(
            f"unknown message state {', '.join(unknown)}",
            field="--status",
            hint=f"states are: {', '.join(tuple(MessageState))}",
        )
    audience = campaign.audience
    narrowed = dataclasses.replace(
        audience,
        exposures=_narrowed(audience.exposures, cohort.exposures, "exposure", campaign),
        locales=_narrowed(audience.locales, cohort.locales, "locale", campaign),
        follows_states=cohort.statuses or audience.follows_states,
    )
    return dataclasses.replace(campaign, audience=narrowed)


def select_cohort(
    ledger: Ledger, campaign: Campaign, cohort: CohortFilter, *, history: bool = True
) -> list[Volunteer]:
    """The volunteers this run of the campaign goes to."""
    selected = select_audience(ledger, narrow_campaign(campaign, cohort), history=history)
    if cohort.ids is None:
        return list(selected)
    return [v for v in selected if _matches_ids(v, cohort.ids)]


def _matches_ids(volunteer: Volunteer, ids: frozenset[str]) -> bool:
    return (
        volunteer.volunteer_id.casefold() in ids
        or volunteer.email.casefold() in ids
        or volunteer.email_ascii.casefold() in ids
    )


def read_ids_file(path: Path) -> frozenset[str]:
    """Volunteer ids or addresses, one per line, or a CSV with a volunteer_id/email column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CohortError(
            f"cannot read the ids file ({exc})",
            file=path,
            hint="give a UTF-8 text file with one volunteer id or address per line",
        ) from exc
    rows = list(csv.reader(text.splitlines()))
    header = [cell.strip().casefold() for cell in rows[0]] if rows else []
    column = next(
        (header.index(name) for name in ("volunteer_id", "email") if name in header), None
    )
    if column is not None:
        values: Iterable[str] = (row[column] for row in rows[1:] if len(row) > column)
    else:
        values = (row[0] for row in rows if row)
    ids = frozenset(v.strip().casefold() for v in values if v.strip() and not v.startswith("#"))
    if not ids:
        raise CohortError(
            "the ids file names nobody", file=path, hint="one volunteer id or address per line"
        )
    return ids


def explain_cohort(
    ledger: Ledger, campaign: Campaign, cohort: CohortFilter = CohortFilter()
) -> list[CohortMember]:
    """Every volunteer on the roster, in or out of this cohort, with the reason."""
    narrowed = narrow_campaign(campaign, cohort)
    followed = followed_message_states(ledger, campaign)
    suppressed = ledger.suppressed_addresses()
    members = []
    for volunteer in ledger.volunteers():
        state = followed.get(volunteer.volunteer_id)
        included, reason = _decide(volunteer, narrowed, cohort, state)
        members.append(
            CohortMember(volunteer, included, reason, state, is_suppressed(volunteer, suppressed))
        )
    return members


def _decide(
    volunteer: Volunteer, campaign: Campaign, cohort: CohortFilter, followed_state: str | None
) -> tuple[bool, str]:
    """The audience's answer, with the --ids file applied after its attribute filters."""
    verdict = membership(campaign, volunteer, followed_state)
    if verdict.left_out_by in ("exposure", "locale"):
        return False, verdict.reason
    if cohort.ids is not None and not _matches_ids(volunteer, cohort.ids):
        return False, "not named in the --ids file"
    return verdict.included, verdict.reason
