"""`notifier cohort ID`: who a campaign goes to, and why; the narrowing options it shares."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from notifier.cli.app import (
    AppContext,
    cli,
    echo_data_pieces,
    echo_table,
    format_option,
    pass_app,
)
from notifier.layout import Column
from notifier.message import state_words
from notifier.outputs import counted, csv_lines, json_array_lines
from notifier.service import CohortMember, CohortSummary, cohort_filter, is_waiting
from notifier.volunteer import EXPOSURES, LOCALES

F = TypeVar("F", bound=Callable[..., Any])
# Without --verbose, the people a summary line stands for are named up to this many.
MAX_NAMED = 20
# The table lists this many people (laid out this many at a time with --all): a terminal
# is no place for a million rows, and CSV or JSON have everyone.
TABLE_ROWS = 1000


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
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help=f"In the table, list everyone (by default the first {TABLE_ROWS:,}; "
    "--format csv or json always has everyone).",
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
    show_all: bool,
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

    The table lists the first 1,000 people (--all: everyone) and counts them all;
    CSV and JSON are written as they are read, whatever the size of the roster.
    """
    filt = cohort_filter(exposures, locales, statuses, ids_file)
    with app.workspace() as ws:
        if fmt == "json":
            records = (_record(m) for m in ws.cohort(campaign_id, filt))
            echo_data_pieces(itertools.chain(json_array_lines(records), ["\n"]))
            return
        if fmt == "csv":
            echo_data_pieces(csv_lines(COHORT_FIELDS, _csv_rows(ws.cohort(campaign_id, filt))))
            return
        summary = ws.cohort_summary(campaign_id, filt)
        _print_table(campaign_id, ws.cohort(campaign_id, filt), summary, excluded, show_all)
        _print_summary(summary)
        if summary.unreached:
            waiting = (m for m in ws.cohort(campaign_id, filt) if is_waiting(m))
            _print_unreached(summary.unreached, waiting, excluded or verbose, verbose)


# The columns of --format csv and the keys of --format json, in order.
COHORT_FIELDS = (
    "volunteer_id",
    "display_name",
    "email",
    "locale",
    "exposure",
    "included",
    "reason",
    "followed_state",
    "suppressed",
)
COHORT_COLUMNS = (Column("id", breaks=False), "name", "locale", "exposure", "in", "why")


def _csv_rows(members: Iterator[CohortMember]) -> Iterator[list[Any]]:
    for member in members:
        record = _record(member)
        yield [record[c] for c in COHORT_FIELDS]


def _print_table(
    campaign_id: str,
    members: Iterator[CohortMember],
    summary: CohortSummary,
    excluded: bool,
    show_all: bool,
) -> None:
    """The people (in, or everyone with --excluded), a page of TABLE_ROWS at a time: the
    first page only unless --all, then how many more there are."""
    listed = (m for m in members if excluded or m.included)
    title: str | None = f"{campaign_id}: who it goes to"
    shown = 0
    while page := list(itertools.islice(listed, TABLE_ROWS)):
        echo_table(COHORT_COLUMNS, [_row(m) for m in page], title=title)
        title = None
        shown += len(page)
        if not show_all:
            break
    if not shown:
        echo_table(COHORT_COLUMNS, [], title=title)
    more = (summary.volunteers if excluded else summary.included) - shown
    if more > 0:
        click.echo(
            f"... and {counted(more, 'more person', 'more people')}: all of them with --all, "
            "or --format csv"
        )


def _row(member: CohortMember) -> tuple[str, ...]:
    v = member.volunteer
    why = member.reason + (" (address suppressed: will be skipped)" if member.suppressed else "")
    into = "yes" if member.included else "no"
    return (v.volunteer_id, v.display_name, v.locale, v.exposure, into, why)


def _print_summary(summary: CohortSummary) -> None:
    click.echo(
        f"{summary.included} of {counted(summary.volunteers, 'volunteer')} are in the cohort."
    )
    if summary.left_out:
        click.echo("Left out:")
        for reason, count in summary.left_out:
            click.echo(f"  {count:>6}  {reason}")


def _print_unreached(
    count: int, waiting: Iterator[CohortMember], excluded: bool, verbose: bool = False
) -> None:
    """For a follow-up: the people left out because the notice it follows has not reached
    them (soft-bounced, not sent yet, ...), named with --excluded, and how to reach them."""
    click.echo(
        f"{count} left out because the earlier notice has not reached them: "
        "reach them first (notifier status on that campaign says how), or write to them "
        "(notifier export unreachable)."
    )
    if not excluded:
        return
    shown = 0
    for m in waiting if verbose else itertools.islice(waiting, MAX_NAMED):
        state = m.followed_state or ""
        click.echo(
            f"  {m.volunteer.volunteer_id}  {m.volunteer.display_name}: "
            f"{state} ({state_words(state)})"
        )
        shown += 1
    if shown < count:
        click.echo(f"  ... and {count - shown} more: all of them with --verbose")
