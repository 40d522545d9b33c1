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
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from notifier.audience import membership, membership_by, select_audience
from notifier.campaign import Campaign
from notifier.errors import CohortError
from notifier.ledger import Ledger, VolunteerQuery
from notifier.ledger.suppressions import is_suppressed
from notifier.message import UNREACHED_STATES, MessageState
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
) -> Iterator[CohortMember]:
    """Every volunteer on the roster, in or out of this cohort, with the reason, in
    volunteer_id order: streamed from the ledger (the roster joined with each person's
    followed message), never held whole. The filter is checked before the first row."""
    narrowed = narrow_campaign(campaign, cohort)
    follows = (campaign.follows,) if campaign.follows else ()
    suppressed = ledger.suppressed_addresses()

    def members() -> Iterator[CohortMember]:
        for volunteer, states in ledger.volunteers_with_states(VolunteerQuery(), follows):
            state = states[0] if follows else None
            included, reason = _decide(volunteer, narrowed, cohort, state)
            yield CohortMember(
                volunteer, included, reason, state, is_suppressed(volunteer, suppressed)
            )

    return members()


@dataclass(frozen=True)
class CohortSummary:
    """The cohort in numbers, as `explain_cohort` would count them: answered by the ledger
    (GROUP BY), so a million-person roster costs one scan in SQLite."""

    volunteers: int  # on the roster
    included: int
    # (reason, how many) for the people left out: most first, then by reason.
    left_out: tuple[tuple[str, int], ...]
    # Left out because the followed notice has not reached them yet (not suppressed):
    # the people to reach first.
    unreached: int
    # In the cohort but with a suppressed address: a send skips them.
    suppressed: int


def summarise_cohort(
    ledger: Ledger, campaign: Campaign, cohort: CohortFilter = CohortFilter()
) -> CohortSummary:
    """`explain_cohort` counted: who is in, who is left out and why, by the one rule."""
    narrowed = narrow_campaign(campaign, cohort)
    follows = (campaign.follows,) if campaign.follows else ()
    groups = ledger.count_with_states(
        VolunteerQuery(), follows, suppressed=ledger.suppressed_addresses(), ids=cohort.ids
    )
    total = included = unreached = suppressed = 0
    left_out: Counter[str] = Counter()
    for group in groups:
        state = group.states[0] if follows else None
        verdict = membership_by(narrowed, group.exposure, group.locale, state)
        total += group.count
        if verdict.left_out_by not in ("exposure", "locale") and not group.named:
            left_out[NOT_NAMED] += group.count
        elif verdict.included:
            included += group.count
            suppressed += group.count if group.suppressed else 0
        else:
            left_out[verdict.reason] += group.count
        if not _waiting(verdict.included and group.named, state, group.suppressed):
            continue
        unreached += group.count
    return CohortSummary(
        volunteers=total,
        included=included,
        left_out=tuple(sorted(left_out.items(), key=lambda item: (-item[1], item[0]))),
        unreached=unreached,
        suppressed=suppressed,
    )


def is_waiting(member: CohortMember) -> bool:
    """Left out because the notice the campaign follows has not reached them yet
    (soft-bounced, not sent yet, ...), and not suppressed: someone to reach first."""
    return _waiting(member.included, member.followed_state, member.suppressed)


def _waiting(included: bool, followed_state: str | None, suppressed: bool) -> bool:
    return not included and followed_state in UNREACHED_STATES and not suppressed


NOT_NAMED = "not named in the --ids file"


def _decide(
    volunteer: Volunteer, campaign: Campaign, cohort: CohortFilter, followed_state: str | None
) -> tuple[bool, str]:
    """The audience's answer, with the --ids file applied after its attribute filters."""
    verdict = membership(campaign, volunteer, followed_state)
    if verdict.left_out_by in ("exposure", "locale"):
        return False, verdict.reason
    if cohort.ids is not None and not _matches_ids(volunteer, cohort.ids):
        return False, NOT_NAMED
    return verdict.included, verdict.reason
