"""What a roster import changes, decided apart from the ledger: plan_import and field_changes."""

from __future__ import annotations

from pathlib import Path

from roster_helpers import plan_import

from notifier.roster import AcceptedRow, RosterResult, RowProblem
from notifier.roster_diff import StoredTexts, field_changes
from notifier.volunteer import TEXT_FIELDS, Volunteer


def volunteer(vid: str, email: str, exposure: str = "screened", **extra: str) -> Volunteer:
    return Volunteer(vid, email, email, "Doe", "Jo", "en", exposure, ("photo",), "", extra)


def roster(*rows: Volunteer, problems: tuple[RowProblem, ...] = ()) -> RosterResult:
    return RosterResult(
        file=Path("roster.csv"),
        sha256="s" * 64,
        encoding="utf-8",
        rows_total=len(rows) + len({p.row for p in problems}),
        accepted=tuple(AcceptedRow(n, v) for n, v in enumerate(rows, start=2)),
        problems=problems,
        headers={"email": "E-mail"},
    )


def stored(*people: Volunteer) -> dict[str, StoredTexts]:
    return {v.volunteer_id: v.texts() for v in people}


def test_first_import_adds_everyone() -> None:
    bad = RowProblem(4, "E-mail", "x@", "not an address", "email")
    result = roster(
        volunteer("a", "a@example.org"), volunteer("b", "b@example.org"), problems=(bad,)
    )
    plan = plan_import(result, {})
    assert plan.added == result.accepted
    assert (plan.updated, plan.unchanged, plan.problems, plan.rejected) == ((), 0, (bad,), 1)
    assert plan.changes_volunteers and not plan.refused and plan.changes == ()


def test_changed_unchanged_and_new_volunteers() -> None:
    before = [volunteer("a", "a@example.org"), volunteer("b", "b@example.org")]
    after = roster(
        volunteer("a", "a@example.org"),
        volunteer("b", "b.new@example.org", "published", note="call"),
        volunteer("c", "c@example.org"),
    )
    plan = plan_import(after, stored(*before))
    assert [a.volunteer.volunteer_id for a in plan.added] == ["c"]
    assert plan.unchanged == 1
    (update,) = plan.updated
    assert (update.row, update.volunteer.volunteer_id) == (3, "b")
    assert list(update.changes) == ["email", "email_ascii", "exposure", "extra"]  # field order
    assert plan.changes == (
        ("b", "email", "b@example.org", "b.new@example.org"),
        ("b", "email_ascii", "b@example.org", "b.new@example.org"),
        ("b", "exposure", "screened", "published"),
        ("b", "extra", "{}", '{"note":"call"}'),
    )


def test_an_address_owned_by_another_volunteer_is_refused() -> None:
    plan = plan_import(
        roster(volunteer("new", "A@example.org"), volunteer("b", "b@example.org")),
        stored(volunteer("a", "a@example.org")),
    )
    (problem,) = plan.problems
    assert (problem.row, problem.column, problem.value, problem.field) == (
        2,
        "E-mail",
        "A@example.org",
        "email",
    )
    assert "volunteer a" in problem.reason
    assert [a.volunteer.volunteer_id for a in plan.added] == ["b"]


def test_two_volunteers_may_swap_addresses() -> None:
    plan = plan_import(
        roster(volunteer("a", "b@example.org"), volunteer("b", "a@example.org")),
        stored(volunteer("a", "a@example.org"), volunteer("b", "b@example.org")),
    )
    assert plan.problems == () and len(plan.updated) == 2


def test_strict_refuses_everything_when_any_row_is_bad() -> None:
    bad = RowProblem(3, "exposure", "?", "unknown exposure", "exposure")
    plan = plan_import(roster(volunteer("a", "a@example.org"), problems=(bad,)), {}, strict=True)
    assert plan.strict and plan.refused and plan.problems == (bad,)
    assert (plan.added, plan.updated, plan.unchanged) == ((), (), 0)
    assert not plan.changes_volunteers
    clean = plan_import(roster(volunteer("a", "a@example.org")), {}, strict=True)
    assert clean.strict and not clean.refused and len(clean.added) == 1


def test_nothing_stored_reads_as_empty() -> None:
    new = volunteer("a", "a@example.org")
    old: list[str | None] = list(new.texts())
    old[TEXT_FIELDS.index("postal_address")] = None
    old[TEXT_FIELDS.index("extra")] = None
    assert field_changes(old, new.texts()) == {}
    old[TEXT_FIELDS.index("given_name")] = None
    assert field_changes(old, new.texts()) == {"given_name": ("", "Jo")}
