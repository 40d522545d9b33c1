"""What importing a roster changes: who is added, who is updated and how, who is refused.

The decision is made here, from the roster as read (`RosterResult`) and the volunteers the
ledger already holds, as text (`Volunteer.texts()`, keyed by volunteer_id). The ledger
reads the one and writes what `plan_import` decides, in the same transaction
(`Ledger.record_import`). An import adds and updates volunteers; it never deletes one (a
person missing from a later roster was still told, or still needs telling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from notifier.roster import AcceptedRow, RosterResult, RowProblem
from notifier.volunteer import TEXT_FIELDS, Volunteer

# A volunteer as the ledger holds it: the TEXT_FIELDS in order, None where nothing is stored.
StoredTexts = Sequence[str | None]

_EMAIL = TEXT_FIELDS.index("email")


@dataclass(frozen=True)
class VolunteerUpdate:
    """An accepted row that changes a volunteer already in the ledger."""

    row: int  # spreadsheet row
    volunteer: Volunteer  # as the roster now has them
    changes: Mapping[str, tuple[str, str]]  # field -> (old, new) text, in TEXT_FIELDS order


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
    accepted, conflicts = _claimable(result, stored)
    problems = tuple(sorted((*result.problems, *conflicts), key=lambda p: p.row))
    if strict and problems:
        return ImportPlan((), (), 0, problems, strict=True, refused=True)
    added: list[AcceptedRow] = []
    updated: list[VolunteerUpdate] = []
    unchanged = 0
    for accepted_row in accepted:
        volunteer = accepted_row.volunteer
        old = stored.get(volunteer.volunteer_id)
        if old is None:
            added.append(accepted_row)
            continue
        changes = field_changes(old, volunteer.texts())
        if changes:
            updated.append(VolunteerUpdate(accepted_row.row, volunteer, changes))
        else:
            unchanged += 1
    return ImportPlan(
        added=tuple(added),
        updated=tuple(updated),
        unchanged=unchanged,
        problems=problems,
        strict=strict,
        refused=False,
    )


def field_changes(old: StoredTexts, new: Sequence[str]) -> dict[str, tuple[str, str]]:
    """field -> (old, new) for each of the TEXT_FIELDS that differs; nothing stored reads
    as empty (as `{}` for the extra columns)."""
    changes: dict[str, tuple[str, str]] = {}
    for name, stored, text in zip(TEXT_FIELDS, old, new, strict=True):
        before = stored or ("{}" if name == "extra" else "")
        if before != text:
            changes[name] = (str(before), text)
    return changes


def _claimable(
    result: RosterResult, stored: Mapping[str, StoredTexts]
) -> tuple[Sequence[AcceptedRow], list[RowProblem]]:
    """Accepted rows the ledger can take, and problems for those whose address belongs to
    another volunteer_id already in the ledger (e.g. a roster that now carries its own ids)."""
    owner = {str(texts[_EMAIL]).casefold(): vid for vid, texts in stored.items() if texts[_EMAIL]}
    if not owner:  # a first import: the roster already refused duplicates within the file
        return result.accepted, []
    # Addresses of volunteers updated by this import are about to move, so free them first.
    for accepted in result.accepted:
        old = stored.get(accepted.volunteer.volunteer_id)
        if old is not None and old[_EMAIL]:
            owner.pop(str(old[_EMAIL]).casefold(), None)
    ok: list[AcceptedRow] = []
    problems: list[RowProblem] = []
    for accepted in result.accepted:
        volunteer = accepted.volunteer
        holder = owner.setdefault(volunteer.email.casefold(), volunteer.volunteer_id)
        if holder != volunteer.volunteer_id:
            problems.append(
                RowProblem(
                    accepted.row,
                    result.headers.get("email", "email"),
                    volunteer.email,
                    f"already in the ledger as volunteer {holder}: one address, one volunteer",
                    "email",
                    who=_who(volunteer),
                )
            )
        else:
            ok.append(accepted)
    return ok, problems


def _who(volunteer: Volunteer) -> tuple[tuple[str, str], ...]:
    """A refused row's identity cells (see RowProblem.who), from its parsed volunteer."""
    cells = (
        ("volunteer_id", volunteer.volunteer_id),
        ("family_name", volunteer.family_name),
        ("given_name", volunteer.given_name),
        ("email", volunteer.email),
        ("postal_address", volunteer.postal_address),
        ("locale", volunteer.locale),
    )
    return tuple((name, value) for name, value in cells if value)
