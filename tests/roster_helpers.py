"""Rosters read whole, and the decision an import makes for a whole roster at once: for
tests, which check what the streamed import (notifier.roster.open_roster,
notifier.roster_diff.ImportDiff) decides, one roster at a time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from notifier.config import ROSTER_MAX_BYTES
from notifier.roster import AcceptedRow, RosterMapping, RosterResult, RowProblem, open_roster
from notifier.roster_diff import (
    ImportDiff,
    StoredTexts,
    VolunteerUpdate,
    merge_problems,
    owners,
)
from notifier.volunteer import TEXT_FIELDS

_EMAIL = TEXT_FIELDS.index("email")


def read_roster(
    path: Path,
    *,
    mapping: RosterMapping | None = None,
    encoding: str = "auto",
    default_locale: str = "en",
    max_bytes: int = ROSTER_MAX_BYTES,
) -> RosterResult:
    """Read and check a roster file; every bad row becomes RowProblems, good rows volunteers.

    The whole roster at once: an import streams it instead (`open_roster`)."""
    with open_roster(
        path,
        mapping=mapping,
        encoding=encoding,
        default_locale=default_locale,
        max_bytes=max_bytes,
    ) as stream:
        accepted: list[AcceptedRow] = []
        problems: list[RowProblem] = []
        for chunk in stream.chunks():
            accepted.extend(chunk.accepted)
            problems.extend(chunk.problems)
        return RosterResult(
            file=path,
            sha256=stream.sha256,
            encoding=stream.encoding,
            rows_total=stream.rows_total,
            accepted=tuple(accepted),
            problems=tuple(problems),
            headers=dict(stream.headers),
        )


@dataclass(frozen=True)
class ImportPlan:
    added: tuple[AcceptedRow, ...]
    updated: tuple[VolunteerUpdate, ...]
    unchanged: int
    # Every problem, in row order: the roster's own, plus rows the ledger cannot take (an
    # address that already belongs to another volunteer_id).
    problems: tuple[RowProblem, ...]
    strict: bool  # planned to refuse everything if any row is bad ...
    refused: bool  # ... and some row was: nothing is to be applied

    @property
    def rejected(self) -> int:
        """Rows with at least one problem."""
        return len({p.row for p in self.problems})

    @property
    def changes_volunteers(self) -> bool:
        return bool(self.added or self.updated)

    @property
    def changes(self) -> tuple[tuple[str, str, str, str], ...]:
        """(volunteer_id, field, old, new) for every field an update changes."""
        return tuple(
            (u.volunteer.volunteer_id, name, old, new)
            for u in self.updated
            for name, (old, new) in u.changes.items()
        )


def plan_import(
    result: RosterResult, stored: Mapping[str, StoredTexts], *, strict: bool = False
) -> ImportPlan:
    """What recording `result` over the `stored` volunteers does.

    With `strict`, any problem refuses the whole import: nothing is added or updated (the
    problems are still recorded).
    """
    diff = ImportDiff(owners((vid, texts[_EMAIL]) for vid, texts in stored.items()), result.headers)
    added, updated = diff.compare(result.accepted, stored)
    outcome = diff.finish(roster_problems=bool(result.problems), strict=strict)
    problems = tuple(merge_problems(result.problems, outcome.conflicts))
    if outcome.refused:
        return ImportPlan((), (), 0, problems, strict=True, refused=True)
    return ImportPlan(
        added=tuple(
            p.accepted for p in added if diff.keeps(p.accepted.volunteer.volunteer_id, p.holder)
        ),
        updated=tuple(
            p.update for p in updated if diff.keeps(p.update.volunteer.volunteer_id, p.holder)
        ),
        unchanged=outcome.unchanged,
        problems=problems,
        strict=strict,
        refused=False,
    )
