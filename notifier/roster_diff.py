"""What importing a roster changes: who is added, who is updated and how, who is refused.

The decision is made here, from the roster as read (`RosterResult`) and the volunteers the
ledger already holds, as text (`Volunteer.texts()`, keyed by volunteer_id). The ledger
reads the one and writes what is decided, in the same transaction (`Ledger.record_import`),
a chunk of rows at a time (`ImportDiff`). An import adds and updates volunteers; it never
deletes one (a person missing from a later roster was still told, or still needs telling).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from notifier.roster import AcceptedRow, RowProblem
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


def merge_problems(
    roster_problems: Iterable[RowProblem], conflicts: Iterable[RowProblem]
) -> Iterator[RowProblem]:
    """An import's problems in row order: the roster's own and the ledger's refusals
    (`DiffOutcome.conflicts`), each already in row order; read as they go."""
    return heapq.merge(roster_problems, conflicts, key=_row_of)


def _row_of(problem: RowProblem) -> int:
    return problem.row


def owners(stored: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Address (casefolded) -> the volunteer_id holding it, from the ledger's volunteers'
    (volunteer_id, email)."""
    return {email.casefold(): vid for vid, email in stored if email}


@dataclass(frozen=True)
class PendingAdd:
    """A row to add, unless its address turns out to belong to `holder` (see ImportDiff)."""

    accepted: AcceptedRow
    holder: str | None = None


@dataclass(frozen=True)
class PendingUpdate:
    update: VolunteerUpdate
    holder: str | None = None


@dataclass(frozen=True)
class DiffOutcome:
    added: int
    updated: int
    unchanged: int
    # Rows the ledger refuses (an address another volunteer keeps), in row order: each
    # one an accepted row of the roster, so never a row with a problem of its own.
    conflicts: tuple[RowProblem, ...]
    refused: bool


class ImportDiff:
    """plan_import a chunk of rows at a time, holding only what the whole file decides.

    An address already in the ledger under another volunteer_id is refused, unless that
    volunteer is in this roster too, moving to another address, and that move goes ahead
    (it may itself wait on another holder who stays): which is known only at the file's
    end. So such a row is kept pending with the address's `holder`, and `keeps()` tells,
    after `finish()`, whether it goes ahead.
    """

    def __init__(self, owners: Mapping[str, str], headers: Mapping[str, str]) -> None:
        self._owners = owners
        self._email_header = headers.get("email", "email")
        self._present: set[str] = set()  # ids in this roster that the ledger holds
        # (kind, volunteer_id, holder, problem) of each row whose address has a holder.
        self._pending: list[tuple[str, str, str, RowProblem]] = []
        self._refused: set[str] = set()  # volunteer_ids of the pending rows refused
        # Rows whose id, made from their address, is that of a volunteer who has since
        # moved to another address: someone else, refused at once (see _stranger).
        self._strangers: list[RowProblem] = []
        self._id_header = headers.get("volunteer_id", "volunteer_id")
        self._counts = {"added": 0, "updated": 0, "unchanged": 0}
        self._finished = False

    def compare(
        self, accepted: Iterable[AcceptedRow], stored: Mapping[str, StoredTexts]
    ) -> tuple[list[PendingAdd], list[PendingUpdate]]:
        """Rows to add and to update (in row order) among `accepted`, given the ledger's
        volunteers with those rows' ids (`stored`; others may be left out)."""
        added: list[PendingAdd] = []
        updated: list[PendingUpdate] = []
        owners, counts = self._owners, self._counts
        for row in accepted:
            volunteer = row.volunteer
            vid = volunteer.volunteer_id
            old = stored.get(vid)
            if old is not None and row.id_from_address and _moved_away(old, volunteer):
                self._strangers.append(_stranger(row, self._id_header))
                continue
            holder = owners.get(volunteer.email.casefold()) if owners else None
            if holder == vid:
                holder = None
            if old is not None and old[_EMAIL]:
                self._present.add(vid)
            if old is None:
                kind = "added"
                added.append(PendingAdd(row, holder))
            else:
                changes = field_changes(old, volunteer.texts())
                if changes:
                    kind = "updated"
                    updated.append(
                        PendingUpdate(VolunteerUpdate(row.row, volunteer, changes), holder)
                    )
                else:
                    kind = "unchanged"
            counts[kind] += 1
            if holder is not None:
                self._pending.append(
                    (
                        kind,
                        vid,
                        holder,
                        RowProblem(
                            row.row,
                            self._email_header,
                            volunteer.email,
                            f"already in the ledger as volunteer {holder}: "
                            "one address, one volunteer",
                            "email",
                            who=_who(row),
                        ),
                    )
                )
        return added, updated

    def keeps(self, volunteer_id: str, holder: str | None) -> bool:
        """Whether a row (its volunteer_id, and its address's `holder`) goes ahead, once
        finish() has run: yes unless its address is held by a volunteer who keeps it."""
        if not self._finished:
            raise RuntimeError("keeps() is known only once the whole roster is compared")
        return holder is None or volunteer_id not in self._refused

    def finish(self, *, roster_problems: bool, strict: bool) -> DiffOutcome:
        """The import's counts and the ledger's refusals; `roster_problems`: whether the
        roster itself had any bad row (with `strict`, that refuses the import too)."""
        self._finished = True
        self._refused = self._refusals()
        counts = dict(self._counts)
        conflicts = list(self._strangers)
        for kind, vid, _holder, problem in self._pending:
            if vid in self._refused:
                counts[kind] -= 1
                conflicts.append(problem)
        conflicts.sort(key=_row_of)  # stable: each row has one refusal
        if strict and (roster_problems or conflicts):
            return DiffOutcome(0, 0, 0, tuple(conflicts), refused=True)
        return DiffOutcome(
            counts["added"], counts["updated"], counts["unchanged"], tuple(conflicts), False
        )

    def _refusals(self) -> set[str]:
        """The pending rows refused: those whose holder is not in the roster, then, one
        link at a time, those whose holder's own move was refused (so the holder keeps the
        address). A chain of moves ending at someone who stays is refused whole; a ring
        of moves (a swap) goes ahead."""
        waiting_on: dict[str, list[str]] = {}  # holder -> the rows that need it to move
        for _kind, vid, holder, _problem in self._pending:
            waiting_on.setdefault(holder, []).append(vid)
        refused: set[str] = set()
        # Each volunteer_id is refused at most once: bounded by the pending rows.
        stack = [vid for _k, vid, holder, _p in self._pending if holder not in self._present]
        while stack:
            vid = stack.pop()
            if vid not in refused:
                refused.add(vid)
                stack.extend(waiting_on.get(vid, ()))
        return refused


def field_changes(old: StoredTexts, new: Sequence[str]) -> dict[str, tuple[str, str]]:
    """field -> (old, new) for each of the TEXT_FIELDS that differs; nothing stored reads
    as empty (as `{}` for the extra columns)."""
    changes: dict[str, tuple[str, str]] = {}
    for name, stored, text in zip(TEXT_FIELDS, old, new, strict=True):
        before = stored or ("{}" if name == "extra" else "")
        if before != text:
            changes[name] = (str(before), text)
    return changes


def _moved_away(old: StoredTexts, volunteer: Volunteer) -> bool:
    """Whether the ledger's volunteer with this id now has another address than the row."""
    stored = old[_EMAIL] or ""
    return stored.casefold() != volunteer.email.casefold()


def _stranger(row: AcceptedRow, id_header: str) -> RowProblem:
    """A row without an id whose address once made the id of a volunteer who has moved
    on: taking it for that volunteer would overwrite them with someone else."""
    vid = row.volunteer.volunteer_id
    return RowProblem(
        row.row,
        id_header,
        "",
        f"empty, and the id made from the address ({vid}) is volunteer {vid}'s, who now "
        "has another address: give this row an id of its own (or that volunteer's id, if "
        "it is the same person moving back)",
        "volunteer_id",
        who=_who(row),
    )


def _who(row: AcceptedRow) -> tuple[tuple[str, str], ...]:
    """A refused row's identity cells (see RowProblem.who), from its parsed volunteer; an
    id made from the address is not the file's, and would tie the row to whoever that id
    now belongs to (the unreachable list matches rows to people by it)."""
    volunteer = row.volunteer
    cells = (
        ("volunteer_id", "" if row.id_from_address else volunteer.volunteer_id),
        ("family_name", volunteer.family_name),
        ("given_name", volunteer.given_name),
        ("email", volunteer.email),
        ("postal_address", volunteer.postal_address),
        ("locale", volunteer.locale),
    )
    return tuple((name, value) for name, value in cells if value)
