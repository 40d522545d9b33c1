"""`notifier cohort ID`: who a campaign goes to, and why; the narrowing options it shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from notifier.cli.app import (
    AppContext,
    cli,
    echo_data,
    echo_json,
    echo_table,
    format_option,
    pass_app,
)
from notifier.layout import Column
from notifier.message import UNREACHED_STATES, state_words
from notifier.outputs import counted, csv_text
from notifier.service import CohortMember, cohort_filter
from notifier.volunteer import EXPOSURES, LOCALES

F = TypeVar("F", bound=Callable[..., Any])
# Without --verbose, the people a summary line stands for are named up to this many.
MAX_NAMED = 20


def cohort_options(*, with_status: bool = True) -> Callable[[F], F]:
    """The options that narrow a campaign's cohort for one run (never widen it).

    `--status` (states of the followed campaign's message) is left out where a command
    gives the option another meaning, as `resend` does.
    """
    decorators = [
        click.option(
            "--exposure",
            "exposures",
            multiple=True,
            type=click.Choice(EXPOSURES),
            help="Only these exposure categories (repeatable).",
        ),
        click.option(
            "--locale",
            "locales",
            multiple=True,
            type=click.Choice(LOCALES),
            help="Only these languages (repeatable).",
        ),
        click.option(
            "--ids",
            "ids_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Only the volunteers named in this file (ids or "
            "addresses, one per line, or a CSV with a volunteer_id or email column).",
        ),
    ]
    if with_status:
        decorators.append(
            click.option(
                "--status",
                "statuses",
                default="",
                metavar="STATE[,STATE...]",
                help="For a follow-up: only people whose message in the followed "
                "campaign is in one of these states, e.g. sent,delivered.",
            )
        )

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _record(member: CohortMember) -> dict[str, Any]:
    v = member.volunteer
    return {
        "volunteer_id": v.volunteer_id,
        "display_name": v.display_name,
        "email": v.email,
        "locale": v.locale,
        "exposure": v.exposure,
        "included": member.included,
        "reason": member.reason,
        "followed_state": member.followed_state,
        "suppressed": member.suppressed,
    }


@cli.command()
@click.argument("campaign_id", metavar="ID")
@cohort_options()
@format_option("table", "csv", "json")
@click.option("--excluded", is_flag=True, help="In the table, list the people left out too.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Name everyone left out because the earlier notice has not reached them "
    f"(by default the first {MAX_NAMED}).",
)
@pass_app
def cohort(
    app: AppContext,
    campaign_id: str,
    exposures: tuple[str, ...],
    locales: tuple[str, ...],
    statuses: str,
    ids_file: Path | None,
    fmt: str,
    excluded: bool,
    verbose: bool,
) -> None:
    """Show who campaign ID goes to and why, and who is left out and why.

    \b
    For a follow-up, the cohort comes from ledger history: the 2020-04-29-update
    goes to everyone (published, screened and database_only) whom the
    2020-03-breach notice reached (sent or delivered), and to those it expired on
    the way to (a server was down), as its [audience] follows_states says. The
    same options narrow `notifier send`:
      notifier cohort 2020-04-29-update --locale ja
      notifier cohort 2020-04-29-update --status bounced_soft --format csv
    """
    filt = cohort_filter(exposures, locales, statuses, ids_file)
    with app.workspace() as ws:
        members = ws.cohort(campaign_id, filt)
    records = [_record(m) for m in members]
    if fmt == "json":
        echo_json(records)
        return
    if fmt == "csv":
        columns = list(_record(members[0])) if members else ["volunteer_id"]
        echo_data(csv_text(columns, ([r[c] for c in columns] for r in records)))
        return
    _print_table(campaign_id, members, excluded, verbose)


COHORT_COLUMNS = (Column("id", breaks=False), "name", "locale", "exposure", "in", "why")


def _print_table(
    campaign_id: str, members: list[CohortMember], excluded: bool, verbose: bool
) -> None:
    inside = [m for m in members if m.included]
    rows = []
    for member in members if excluded else inside:
        v = member.volunteer
        why = member.reason + (
            " (address suppressed: will be skipped)" if member.suppressed else ""
        )
        into = "yes" if member.included else "no"
        rows.append((v.volunteer_id, v.display_name, v.locale, v.exposure, into, why))
    echo_table(COHORT_COLUMNS, rows, title=f"{campaign_id}: who it goes to")
    click.echo(f"{len(inside)} of {counted(len(members), 'volunteer')} are in the cohort.")
    left_out = Counter(m.reason for m in members if not m.included)
    if left_out:
        click.echo("Left out:")
        for reason, count in left_out.most_common():
            click.echo(f"  {count:>6}  {reason}")
    _print_unreached(campaign_id, members, excluded or verbose, verbose)


def _print_unreached(
    campaign_id: str, members: list[CohortMember], excluded: bool, verbose: bool = False
) -> None:
    """For a follow-up: the people left out because the notice it follows has not reached
    them (soft-bounced, not sent yet, ...), named with --excluded, and how to reach them."""
    waiting = [
        m
        for m in members
        if not m.included and m.followed_state in UNREACHED_STATES and not m.suppressed
    ]
    if not waiting:
        return
    click.echo(
        f"{len(waiting)} left out because the earlier notice has not reached them: "
        "reach them first (notifier status on that campaign says how), or write to them "
        "(notifier export unreachable)."
    )
    if excluded:
        shown = waiting if verbose else waiting[:MAX_NAMED]
        for m in shown:
            state = m.followed_state or ""
            click.echo(
                f"  {m.volunteer.volunteer_id}  {m.volunteer.display_name}: "
                f"{state} ({state_words(state)})"
            )
        if len(shown) < len(waiting):
            click.echo(f"  ... and {len(waiting) - len(shown)} more: all of them with --verbose")
